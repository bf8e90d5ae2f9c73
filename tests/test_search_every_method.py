"""Every registered method goes through a real `autopeft search` (Ray, Optuna, training,
artifacts, report), and one search runs on the bundled MiniLM, as a user's would.

The unit tests apply and train each method directly; only a search catches what the search
path adds: the space's sampling of its knobs, budget fitting, the trainable on Ray, the trial
record and the report.
"""

from __future__ import annotations

import pandas as pd
import pytest

from autopeft import study as records
from autopeft.methods import METHODS
from autopeft.testing import keyword_task
from tests.helpers import run_cli

FAILS_ONLY_AS_EMPTY = "stores nothing beyond the head"  # EmptyDelta: a FAIL with a reason


@pytest.fixture(scope="module")
def every_method(tmp_path_factory, tiny_bert, mrpc_dir):
    """One trial per registered method at its defaults (each method's first, coverage trial),
    at a budget of the whole backbone so that every method fits (full fine-tuning too)."""
    work = tmp_path_factory.mktemp("every-method")
    data = keyword_task(work / "keywords", mrpc_dir / "train.tsv", train_size=200, dev_size=40)
    args = ["search", "--task", "mrpc", "--budget", "100%", "--model", str(tiny_bert),
            "--data-dir", str(data), "--trials", str(len(METHODS)), "--epochs", "1",
            "--batch-size", "16", "--sampler", "random", "--study", "all", "--final-seeds", "0",
            "--portfolio", "none", "--concurrency", "2"]
    result = run_cli(*args, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    study = records.open_study("all", records.make_storage(None, work / "studies" / "all"), None)
    return work, study, result


def test_every_registered_method_ran_in_the_search(every_method):
    _, study, result = every_method
    ran = {t.params.get("method"): t for t in study.trials if t.state.is_finished()}
    assert set(ran) == set(METHODS), (set(METHODS) - set(ran), result.stderr[-2000:])
    for method, trial in ran.items():
        assert trial.state.name == "COMPLETE" or FAILS_ONLY_AS_EMPTY in str(
            trial.user_attrs.get(records.ATTR_ERROR)), (method, trial.state,
                                                         trial.user_attrs.get(records.ATTR_ERROR))


def test_every_completed_method_left_an_artifact_and_a_report_row(every_method):
    work, study, _ = every_method
    trials = pd.read_csv(work / "reports" / "all" / "trials.csv")
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name == "COMPLETE":
            assert (work / "studies" / "all" / trial.user_attrs[records.ATTR_ARTIFACT]).is_dir()
            row = trials[trials.trial == trial.number].iloc[0]
            assert row.method == trial.params["method"] and row.stored_params > 0


def test_a_search_on_the_bundled_minilm_over_a_slice_of_mrpc(tmp_path, mrpc_dir):
    args = ["search", "--task", "mrpc", "--budget", "0.5%", "--data-dir", str(mrpc_dir),
            "--methods", "lora", "--trials", "1", "--epochs", "1", "--max-train-samples", "64",
            "--final-seeds", "1", "--final-epochs", "1", "--study", "minilm"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mean pooling" in result.stderr  # the sentence-transformers checkpoint's pooling
    front = pd.read_csv(tmp_path / "reports" / "minilm" / "pareto.csv")
    assert len(front) == 1 and front.method[0] == "lora"
    assert front.stored_params[0] == 73_728  # r=8 on q,v of 6 layers: 6·2·8·(384+384)
