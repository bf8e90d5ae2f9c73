"""Warm start: another study's Pareto configurations, adapted to this space and budget, go first."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from autopeft import study as records
from autopeft.backbones.models import resolve_model
from autopeft.engine.searcher import BudgetedOptunaSearch
from autopeft.errors import AutoPeftError
from autopeft.search.seeding import enqueue_uncovered_methods
from autopeft.search.warm_start import load_front, warm_start
from autopeft.space.sizing import Sizer
from autopeft.space.space import load_space
from tests.helpers import assert_one_line_error, run_cli

# tiny BERT: LoRA on every projection stores 1,792 params per rank, on q,v 512
BUDGET = 5000
SPACE = """
methods:
  bitfit:
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
  lora:
    r: {choices: [1, 2, 4, 8, 16]}
    targets: {choices: [qv, all]}
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
"""
LR = FloatDistribution(1e-5, 1e-1, log=True)
R = CategoricalDistribution([1, 2, 4, 8, 16, 64])
TARGETS = CategoricalDistribution(["qv", "attn", "all"])
METHOD = CategoricalDistribution(["bitfit", "lora", "adapter_houlsby"])
SOURCE_FRONT = [  # (params, score), by stored params (measured): 512, 1,280, 14,336, ...
    ({"method": "lora", "lora.r": 1, "lora.targets": "qv", "lora.learning_rate": 0.05}, 0.70),
    ({"method": "bitfit", "bitfit.learning_rate": 5e-3}, 0.72),
    ({"method": "lora", "lora.r": 8, "lora.targets": "all", "lora.learning_rate": 4e-3}, 0.80),
    ({"method": "adapter_houlsby"}, 0.81),  # 33,280
    ({"method": "lora", "lora.r": 64, "lora.targets": "all", "lora.learning_rate": 4e-3}, 0.85),
]


@pytest.fixture(scope="module")
def sizer(tiny_bert):
    return Sizer(resolve_model(str(tiny_bert)), num_labels=2)


def _distribution(name: str):
    return {"method": METHOD, "lora.r": R, "lora.targets": TARGETS}.get(name, LR)


def _source_study(studies_dir, sizer, name="src") -> optuna.Study:
    """A finished study at a large budget, written the way a search writes one."""
    setup = records.StudySetup(task="rte", model="other-model", budget_spec="10%",
                               budget_params=10**6, backbone_params=10**7,
                               primary_metric="accuracy", methods=["bitfit", "lora"])
    study = records.open_study(name, records.make_storage(None, studies_dir / name), setup)
    for params, score in SOURCE_FRONT:
        method = params["method"]
        knobs = {k.split(".", 1)[1]: v for k, v in params.items() if "." in k}
        stored = (sizer.measure(method, {"bottleneck": 64}).stored_params
                  if method == "adapter_houlsby" else sizer.measure(method, knobs).stored_params)
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: _distribution(k) for k in params},
            values=[score, stored], user_attrs={records.ATTR_STATUS: records.STATUS_OK}))
    return study


@pytest.fixture
def target(tmp_path, sizer):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="new", storage=storage, directions=list(records.DIRECTIONS))
    return load_space(path), storage


def test_front_is_adapted_to_the_space_and_budget_and_proposed_first(tmp_path, sizer, target):
    space, storage = target
    _source_study(tmp_path / "studies", sizer)
    front = load_front("src", None, tmp_path / "studies")
    assert len(front) == len(SOURCE_FRONT)
    study = optuna.load_study(study_name="new", storage=storage)
    outcome = warm_start(study, "src", front, space, sizer, BUDGET)

    # r=8 and r=64 on every projection both shrink to r=2 (3,584 ≤ 5,000 < r=4's 7,168): one
    assert outcome.enqueued == 3 and len(outcome.dropped) == 1
    assert "adapter_houlsby: not in this search" in outcome.dropped[0]
    assert outcome.shrunk == ["trial 2 lora r 8→2"]
    line = outcome.describe()
    assert line.startswith("warm start from 'src': 3 configuration(s) enqueued (1 shrunk")
    assert line.count("\n") == 0 and "1 dropped" in line

    search = BudgetedOptunaSearch(space.for_budget(sizer, BUDGET),
                                  optuna.load_study(study_name="new", storage=storage),
                                  optuna.samplers.RandomSampler(seed=0))
    search.set_search_properties(None, None, {})
    first = [search.suggest(f"t{i}") for i in range(3)]
    assert [c["method"] for c in first] == ["lora", "bitfit", "lora"]
    assert first[0]["knobs"] == {"r": 1, "targets": "qv", "learning_rate": 1e-2}  # clipped
    assert first[1]["knobs"] == {"learning_rate": 5e-3}
    assert first[2]["knobs"] == {"r": 2, "targets": "all", "learning_rate": 4e-3}  # shrunk
    assert search.infeasible == 0
    assert all(sizer.measure(c["method"], c["knobs"]).stored_params <= BUDGET for c in first)

    # warm-starting again (a resumed search) adds nothing twice
    again = warm_start(study, "src", front, space, sizer, BUDGET)
    assert again.enqueued == 0 and again.already == 3


def test_warm_started_methods_get_no_extra_first_try(tmp_path, sizer, target):
    """Each method's first try at its defaults is skipped when the warm start covers it."""
    space, storage = target
    _source_study(tmp_path / "studies", sizer)
    study = optuna.load_study(study_name="new", storage=storage)
    warm_start(study, "src", load_front("src", None, tmp_path / "studies"), space, sizer, BUDGET)
    waiting = len(study.get_trials(states=(optuna.trial.TrialState.WAITING,)))
    enqueue_uncovered_methods(study, space, sizer, BUDGET)
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == waiting


def test_configuration_that_cannot_fit_is_dropped_with_the_reason(tmp_path, sizer, target):
    space, storage = target
    _source_study(tmp_path / "studies", sizer)
    study = optuna.load_study(study_name="new", storage=storage)
    # r=1 on every projection stores 1,792: only the q,v configuration and BitFit still fit
    outcome = warm_start(study, "src", load_front("src", None, tmp_path / "studies"), space,
                         sizer, 1500)
    assert outcome.enqueued == 2
    assert any("trial 2 lora: stores 1,792 params at its smallest, over 1,500" in d
               for d in outcome.dropped)


def test_unknown_study_is_one_line_naming_where_it_looked(tmp_path):
    with pytest.raises(AutoPeftError) as info:
        load_front("nope", None, tmp_path / "studies")
    assert str(info.value) == ("--warm-start: no study 'nope' (looked in "
                               f"{tmp_path / 'studies' / 'nope' / 'optuna.journal'})")
    assert not (tmp_path / "studies").exists()  # reading never creates anything


def test_cli_unknown_warm_start_study(tmp_path, tiny_bert, mrpc_dir):
    result = run_cli("search", "--task", "mrpc", "--budget", "1%", "--model", str(tiny_bert),
                     "--data-dir", str(mrpc_dir), "--warm-start", "nope", cwd=tmp_path)
    assert_one_line_error(result, "--warm-start: no study 'nope'",
                          "studies/nope/optuna.journal")
    assert not (tmp_path / "studies").exists()


def test_search_trains_the_warm_started_configurations_first(tmp_path, tiny_bert, mrpc_dir,
                                                             sizer):
    _source_study(tmp_path / "studies", sizer)
    (tmp_path / "space.yaml").write_text(SPACE)
    result = run_cli("search", "--task", "mrpc", "--budget", str(BUDGET), "--model",
                     str(tiny_bert), "--data-dir", str(mrpc_dir), "--space", "space.yaml",
                     "--warm-start", "src", "--trials", "3", "--max-train-samples", "64",
                     "--study", "new", "--final-seeds", "0", "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("warm start from 'src': 3 configuration(s) enqueued (1 shrunk to fit: trial 2 "
            "lora r 8→2), 1 dropped (trial 3 adapter_houlsby: not in this search)"
            in result.stderr)
    study = records.open_study("new", records.make_storage(None, tmp_path / "studies" / "new"),
                               None)
    trained = sorted(study.trials, key=lambda t: t.number)[:3]
    assert [t.params for t in trained] == [
        {"method": "lora", "lora.r": 1, "lora.targets": "qv", "lora.learning_rate": 1e-2},
        {"method": "bitfit", "bitfit.learning_rate": 5e-3},
        {"method": "lora", "lora.r": 2, "lora.targets": "all", "lora.learning_rate": 4e-3},
    ]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trained)


def test_budget_derived_knob_is_asked_for_the_source_size(tmp_path, sizer):
    # with `fit_budget`, r is derived from a budget fraction: the source's size, capped at 1
    _source_study(tmp_path / "studies", sizer)
    path = tmp_path / "fit.yaml"
    path.write_text("methods: {lora: {r: {fit_budget: true, high: 16}, "
                    "targets: {choices: [qv, all]}}}")
    space = load_space(path)
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="new", storage=storage, directions=list(records.DIRECTIONS))
    study = optuna.load_study(study_name="new", storage=storage)
    outcome = warm_start(study, "src", load_front("src", None, tmp_path / "studies"), space,
                         sizer, BUDGET)
    assert outcome.enqueued == 2 and outcome.shrunk == ["trial 2 lora r 8→2"]
    search = BudgetedOptunaSearch(space.for_budget(sizer, BUDGET),
                                  optuna.load_study(study_name="new", storage=storage),
                                  optuna.samplers.RandomSampler(seed=0))
    search.set_search_properties(None, None, {})
    assert [search.suggest(f"t{i}")["knobs"] for i in range(2)] == [
        {"targets": "qv", "r": 1}, {"targets": "all", "r": 2}]
