"""The report rebuilds from the study alone; tables, front, plots and summary agree."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from autopeft.errors import AutoPeftError
from autopeft.report import build_report, pareto_frame, render_summary, trials_frame
from autopeft.report.files import REPORT_FILES, atomic_path
from autopeft.study import (
    ATTR_BUDGET_USED,
    ATTR_CURVE,
    ATTR_ERROR,
    ATTR_EVAL_SECONDS,
    ATTR_HEAD,
    ATTR_METHOD,
    ATTR_METRICS,
    ATTR_STATUS,
    ATTR_STORED,
    ATTR_TRAIN_SECONDS,
    ATTR_TRIAL_SECONDS,
    DEV_SCORES_KEY,
    SETUP_KEY,
    STATUS_ERROR,
    STATUS_INFEASIBLE,
    STATUS_OK,
    STATUS_PRUNED,
    StudySetup,
    record_dev_scores,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

BUDGET = 10_000
REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

DISTRIBUTIONS = {
    "method": CategoricalDistribution(["lora", "bitfit"]),
    "lora.r": CategoricalDistribution([2, 4, 8, 16, 64]),
    "lora.learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    "bitfit.learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
}
# Trial numbers of the fixture study, by role.
FRONT = [1, 7, 0]  # cheapest first
DOMINATED, OVER_BUDGET, INFEASIBLE, PRUNED, ERRORED = 2, 3, 4, 5, 6


def _setup() -> StudySetup:
    return StudySetup(
        task="mrpc",
        model="sentence-transformers/all-MiniLM-L6-v2",
        budget_spec="0.5%",
        budget_params=BUDGET,
        backbone_params=2_000_000,
        primary_metric="f1",
        methods=["lora", "bitfit"],
        data_source="glue/mrpc (local copy)",
    )


def _new_study() -> optuna.Study:
    study = optuna.create_study(
        study_name="mrpc-test", directions=["maximize", "minimize"], storage=None
    )
    study.set_user_attr(SETUP_KEY, asdict(_setup()))
    study.set_user_attr(DEV_SCORES_KEY, {})
    return study


def _params(method: str, lr: float, r: int | None = None) -> dict:
    params = {"method": method, f"{method}.learning_rate": lr}
    if r is not None:
        params["lora.r"] = r
    return params


def _add(
    study: optuna.Study,
    state: TrialState,
    params: dict,
    stored: int,
    status: str,
    score: float | None = None,
    epochs: int = 0,
    error: str | None = None,
) -> None:
    attrs: dict = {
        ATTR_METHOD: params["method"],
        ATTR_STATUS: status,
        ATTR_STORED: stored,
        ATTR_HEAD: 1_538,
        ATTR_BUDGET_USED: stored / BUDGET,
    }
    if score is not None:
        attrs[ATTR_METRICS] = {"f1": score, "accuracy": score + 0.01, "score": score}
        attrs[ATTR_CURVE] = [{"epoch": e + 1, "score": score} for e in range(epochs)]
        attrs[ATTR_TRAIN_SECONDS] = 12.5
        attrs[ATTR_EVAL_SECONDS] = 1.5
    attrs[ATTR_TRIAL_SECONDS] = 15.0
    if error is not None:
        attrs[ATTR_ERROR] = error
    values = [score, float(stored)] if state == TrialState.COMPLETE else None
    study.add_trial(
        create_trial(
            state=state,
            values=values,
            params=params,
            distributions={k: DISTRIBUTIONS[k] for k in params},
            user_attrs=attrs,
        )
    )


@pytest.fixture()
def study() -> optuna.Study:
    s = _new_study()
    complete = TrialState.COMPLETE
    _add(s, complete, _params("lora", 1e-3, r=4), 5_000, STATUS_OK, 0.80, epochs=2)  # 0 front
    _add(s, complete, _params("bitfit", 1e-3), 2_000, STATUS_OK, 0.70, epochs=2)  # 1 front
    _add(s, complete, _params("lora", 3e-4, r=8), 8_000, STATUS_OK, 0.75, epochs=2)  # 2 dominated
    _add(s, complete, _params("lora", 3e-4, r=16), 20_000, STATUS_OK, 0.90, epochs=2)  # 3 over
    _add(s, TrialState.FAIL, _params("lora", 1e-3, r=64), 80_000, STATUS_INFEASIBLE)  # 4
    _add(s, TrialState.PRUNED, _params("bitfit", 1e-4), 2_000, STATUS_PRUNED, 0.5, epochs=1)  # 5
    _add(s, TrialState.FAIL, _params("lora", 1e-2, r=2), 3_000, STATUS_ERROR, error="CUDA OOM")
    _add(s, complete, _params("lora", 5e-4, r=2), 3_000, STATUS_OK, 0.78, epochs=2)  # 7 front
    record_dev_scores(
        s,
        {
            0: {"f1": 0.79, "accuracy": 0.82, "score": 0.79},
            1: {"f1": 0.68, "accuracy": 0.71, "score": 0.68},
            7: {"f1": 0.77, "accuracy": 0.80, "score": 0.77},
        },
    )
    return s


def test_trials_frame_has_one_typed_row_per_trial(study: optuna.Study) -> None:
    frame = trials_frame(study)

    assert len(frame) == 8
    lead = ["trial", "state", "method", "stored_params", "stored_bytes", "head_params",
            "budget_used", "score"]
    assert list(frame.columns[: len(lead)]) == lead
    knobs = ["bitfit.learning_rate", "lora.learning_rate", "lora.r"]
    assert list(frame.columns[-3:]) == knobs
    for column in ["selection_accuracy", "selection_f1", "train_seconds", "eval_seconds"]:
        assert column in frame.columns
    assert "selection_score" not in frame.columns  # the primary metric is `score` already
    assert "method" not in frame.columns[len(lead) :]

    states = dict(zip(frame["trial"], frame["state"], strict=True))
    assert states[INFEASIBLE] == "INFEASIBLE"
    assert states[ERRORED] == "FAIL"
    assert states[PRUNED] == "PRUNED"
    assert [states[n] for n in (0, 1, 2, 3, 7)] == ["COMPLETE"] * 5


def test_trials_frame_values(study: optuna.Study) -> None:
    frame = trials_frame(study).set_index("trial")

    assert (frame["budget_used"] == frame["stored_params"] / BUDGET).all()
    assert frame.loc[INFEASIBLE, "stored_params"] == 80_000
    assert math.isnan(frame.loc[INFEASIBLE, "score"])
    assert frame.loc[INFEASIBLE, "epochs"] == 0
    assert frame.loc[0, "score"] == pytest.approx(0.80)
    assert frame.loc[0, "selection_accuracy"] == pytest.approx(0.81)
    assert frame.loc[0, "epochs"] == 2
    assert frame.loc[PRUNED, "epochs"] == 1
    assert frame.loc[ERRORED, "error"] == "CUDA OOM"
    assert frame.loc[1, "bitfit.learning_rate"] == pytest.approx(1e-3)
    assert pd.isna(frame.loc[1, "lora.r"])  # a bitfit trial has no LoRA knobs


def test_pareto_frame_is_the_feasible_non_dominated_set(study: optuna.Study) -> None:
    trials = trials_frame(study)
    pareto = pareto_frame(study)

    assert list(pareto["trial"]) == FRONT
    assert pareto["stored_params"].is_monotonic_increasing
    assert list(pareto.columns[: len(trials.columns)]) == list(trials.columns)
    assert {DOMINATED, OVER_BUDGET, INFEASIBLE, PRUNED, ERRORED}.isdisjoint(pareto["trial"])

    feasible = trials[(trials["state"] == "COMPLETE") & (trials["stored_params"] <= BUDGET)]
    for _, point in pareto.iterrows():
        assert point["stored_params"] <= BUDGET
        dominating = feasible[
            (feasible["score"] >= point["score"])
            & (feasible["stored_params"] <= point["stored_params"])
            & (
                (feasible["score"] > point["score"])
                | (feasible["stored_params"] < point["stored_params"])
            )
        ]
        assert dominating.empty, f"trial {point['trial']} is dominated"


def test_pareto_frame_carries_dev_scores(study: optuna.Study) -> None:
    pareto = pareto_frame(study).set_index("trial")

    assert {"dev_score", "dev_f1", "dev_accuracy"} <= set(pareto.columns)
    assert pareto.loc[0, "dev_score"] == pytest.approx(0.79)
    assert pareto.loc[7, "dev_accuracy"] == pytest.approx(0.80)
    assert pareto["dev_score"].notna().all()


def test_missing_dev_scores_are_nan(study: optuna.Study) -> None:
    study.set_user_attr(DEV_SCORES_KEY, {})
    pareto = pareto_frame(study)

    assert "dev_score" in pareto.columns
    assert pareto["dev_score"].isna().all()


def test_summary_reports_counts_best_and_front(study: optuna.Study) -> None:
    text = render_summary(study, trials_frame(study), pareto_frame(study))

    assert "# AutoPEFT report: mrpc-test" in text
    assert "sentence-transformers/all-MiniLM-L6-v2" in text
    assert "10,000 stored parameters" in text and "0.500% of 2,000,000" in text
    assert "| COMPLETE | trained and evaluated | 5 |" in text
    assert "| INFEASIBLE | over the budget, never trained | 1 |" in text
    assert "| PRUNED | stopped early by the pruner | 1 |" in text
    assert "| FAIL | crashed or interrupted | 1 |" in text
    assert "1 candidate was infeasible" in text and "never trained" in text
    # Best within the budget is trial 0 (0.80); over-budget trial 3 (0.90) is not eligible.
    assert "Trial #0 (lora)" in text and "**0.8000**" in text and "dev score 0.7900" in text
    assert "0.9000" not in text
    assert "| #7 | lora | 3,000 | 30.0% | 0.7800 | 0.7700 |" in text
    assert "only to report the Pareto points" in text and "never to" in text
    for name in REPORT_FILES:
        assert f"`{name}`" in text


def test_build_report_writes_every_file(study: optuna.Study, tmp_path: Path) -> None:
    out = build_report(study, tmp_path / "nested" / "report")

    assert out == tmp_path / "nested" / "report"
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)  # no temp files left

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 8
    assert list(trials.columns) == list(trials_frame(study).columns)
    assert (trials["state"] == "INFEASIBLE").sum() == 1

    pareto = pd.read_csv(out / "pareto.csv")
    assert list(pareto["trial"]) == FRONT
    assert pareto["dev_score"].notna().all()

    png = (out / "pareto.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    assert len(png) > 20_000

    html = (out / "pareto.html").read_text(encoding="utf-8")
    assert len(html) > 1_000_000  # plotly.js embedded: opens offline
    assert "trial #7" in html and "trial #3" in html
    assert "Pareto front" in html
    assert "budget 0.5% = 10,000 params" in html

    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "**0.8000**" in summary


def test_build_report_overwrites_a_previous_report(study: optuna.Study, tmp_path: Path) -> None:
    build_report(study, tmp_path)
    _add(study, TrialState.COMPLETE, _params("bitfit", 2e-3), 1_000, STATUS_OK, 0.72, epochs=1)
    build_report(study, tmp_path)

    assert len(pd.read_csv(tmp_path / "trials.csv")) == 9
    assert pd.read_csv(tmp_path / "pareto.csv")["trial"].iloc[0] == 8


@pytest.mark.parametrize("with_infeasible", [False, True])
def test_report_without_completed_trials(with_infeasible: bool, tmp_path: Path) -> None:
    study = _new_study()
    if with_infeasible:
        _add(study, TrialState.FAIL, _params("lora", 1e-3, r=64), 80_000, STATUS_INFEASIBLE)

    out = build_report(study, tmp_path)

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == int(with_infeasible)
    assert {"trial", "state", "stored_params", "score", "budget_used"} <= set(trials.columns)
    pareto = pd.read_csv(out / "pareto.csv")
    assert pareto.empty and "dev_score" in pareto.columns
    assert (out / "pareto.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "no completed trials yet" in (out / "pareto.html").read_text(encoding="utf-8")
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "No completed trial within the budget yet." in summary
    assert f"| INFEASIBLE | over the budget, never trained | {int(with_infeasible)} |" in summary


def test_report_needs_an_autopeft_study(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(AutoPeftError):
        build_report(study, tmp_path)


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "summary.md"
    target.write_text("old", encoding="utf-8")

    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half", encoding="utf-8")
        raise RuntimeError("crash mid-write")

    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]


def test_report_does_not_import_torch_or_ray() -> None:
    code = (
        "import autopeft.report, sys; "
        "assert 'torch' not in sys.modules and 'ray' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
