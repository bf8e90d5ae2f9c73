"""The report rebuilds from the study alone; tables, front, plots and summary agree."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from PIL import Image
from plotly.offline import get_plotlyjs

from autopeft.errors import AutoPeftError
from autopeft.report import (
    best_per_method,
    build_report,
    pareto_frame,
    render_summary,
    trials_frame,
)
from autopeft.report.files import FIGURES, REPORT_FILES, atomic_path
from autopeft.report.index import PARETO_DIV, PROGRESS_DIV, SECTIONS, allocation_div
from autopeft.study import DEV_SCORES_KEY, STATUS_INFEASIBLE, STATUS_OK
from tests.helpers import BUDGET, REPO_ROOT, add_trial, fill_example, new_study, trial_params

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Trial numbers of the fixture study, by role.
FRONT = [1, 7, 0]  # cheapest first
DOMINATED, OVER_BUDGET, INFEASIBLE, PRUNED, ERRORED = 2, 3, 4, 5, 6


@pytest.fixture()
def study() -> optuna.Study:
    return fill_example(new_study())


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
    for name in FIGURES:  # pasteable into a README or PR next to the images
        assert re.search(rf"!\[[^\]]+\]\({re.escape(name)}\)", summary), name


def test_every_png_is_a_real_image(study: optuna.Study, tmp_path: Path) -> None:
    out = build_report(study, tmp_path)

    for name in [n for n in REPORT_FILES if n.endswith(".png")]:
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE), name
        with Image.open(out / name) as image:
            image.verify()  # a truncated or corrupt file raises
        with Image.open(out / name) as image:
            assert image.width >= 600 and image.height >= 300, (name, image.size)
            colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
            assert len(colours) > 50, f"{name} is (nearly) blank"


def test_index_html_has_every_section_and_is_self_contained(
    study: optuna.Study, tmp_path: Path
) -> None:
    html = (build_report(study, tmp_path) / "index.html").read_text(encoding="utf-8")

    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in html, anchor
    for div in (PARETO_DIV, PROGRESS_DIV, *(allocation_div(n) for n in FRONT)):
        assert f'id="{div}"' in html, div
    assert html.count(get_plotlyjs()) == 1  # plotly.js inlined exactly once
    assert html.count("plotly.js v") == 1
    assert not re.search(r"<script[^>]*\bsrc\s*=", html)  # nothing loaded from elsewhere
    ours = html.replace(get_plotlyjs(), "")  # the bundle's own strings mention its website
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", ours)
    assert "cdn." not in ours
    # hover text carries the full configuration; tables carry the best of each method
    assert "lora.learning_rate" not in html and "learning_rate: 5.00e-04" in html
    assert "hypervolume of (1 − score, stored/budget), reference point (1, 1)" in html
    best = html[html.index('<section id="best-per-method">'):]
    best = best[: best.index("</section>")]
    assert best.count("<tr>") == 3  # header + lora + bitfit
    assert "#0" in best and "#1" in best and "0.7900" in best
    # the older record is still drawn, with its note
    assert "only the totals per layer and per module type are known" in html


def test_best_per_method_is_each_methods_best_trial_within_budget(study: optuna.Study) -> None:
    best = best_per_method(study)

    # lora's best overall is trial 3 (0.90) but it is over the budget; bitfit's pruned trial 5
    # never counts.
    assert list(best["method"]) == ["lora", "bitfit"]
    assert list(best["trial"]) == [0, 1]
    assert list(best["dev_score"]) == pytest.approx([0.79, 0.68])


def test_best_per_method_prefers_fewer_params_on_a_tie(study: optuna.Study) -> None:
    add_trial(study, TrialState.COMPLETE, trial_params("lora", 2e-3, r=2), 1_500, STATUS_OK,
              0.80, epochs=2)  # 8: as good as trial 0, cheaper, never evaluated on dev
    best = best_per_method(study).set_index("method")

    assert best.loc["lora", "trial"] == 8
    assert math.isnan(best.loc["lora", "dev_score"])


def test_build_report_overwrites_a_previous_report(study: optuna.Study, tmp_path: Path) -> None:
    build_report(study, tmp_path)
    add_trial(study, TrialState.COMPLETE, trial_params("bitfit", 2e-3), 1_000, STATUS_OK, 0.72,
              epochs=1)
    build_report(study, tmp_path)

    assert len(pd.read_csv(tmp_path / "trials.csv")) == 9
    assert pd.read_csv(tmp_path / "pareto.csv")["trial"].iloc[0] == 8


@pytest.mark.parametrize("with_infeasible", [False, True])
def test_report_without_completed_trials(with_infeasible: bool, tmp_path: Path) -> None:
    study = new_study()
    if with_infeasible:
        add_trial(study, TrialState.FAIL, trial_params("lora", 1e-3, r=64), 80_000,
                  STATUS_INFEASIBLE)

    out = build_report(study, tmp_path)

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == int(with_infeasible)
    assert {"trial", "state", "stored_params", "score", "budget_used"} <= set(trials.columns)
    pareto = pd.read_csv(out / "pareto.csv")
    assert pareto.empty and "dev_score" in pareto.columns
    for name in ("pareto.png", "hypervolume.png", "allocation.png"):
        assert (out / name).read_bytes().startswith(PNG_SIGNATURE), name
    assert "no completed trials yet" in (out / "pareto.html").read_text(encoding="utf-8")
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "no allocation recorded for the Pareto points" in index
    assert "no completed trials yet" in index
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
