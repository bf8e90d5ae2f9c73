"""A sweep's combined report: score versus budget per method family, and each study's winner."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from PIL import Image

from autopeft import study as records
from autopeft.report.collect import StudyViews, collect
from autopeft.report.sweep_report import (
    NO_FEASIBLE,
    WINNERS_CSV,
    best_by_budget,
    build_sweep_report,
    png_names,
    score_figure,
    winners,
)
from autopeft.report.tables import trials_frame
from tests.helpers import REPO_ROOT, new_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

BACKBONE = 1_000_000
METHODS = ["lora", "dylora", "bitfit", "diff_pruning", "adapter_houlsby"]
DISTRIBUTIONS = {
    "method": CategoricalDistribution(METHODS),
    **{f"{m}.learning_rate": FloatDistribution(1e-5, 1e-2, log=True) for m in METHODS},
}
FAMILY_OF = {"lora": "lora", "dylora": "lora", "bitfit": "bitfit", "diff_pruning": "sparse",
             "adapter_houlsby": "adapter"}
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SWEEP = "glue-small"
FIDELITY = {"epochs": 1, "batch_size": 16, "train_samples": 64}


def _study(name: str, task: str, spec: str, fraction: float, model: str = MODEL,
           backbone: int = BACKBONE) -> optuna.Study:
    return new_study(name, task=task, model=model, budget_spec=spec,
                     budget_params=round(fraction * backbone), backbone_params=backbone,
                     primary_metric="f1", methods=METHODS)


def _trial(study: optuna.Study, method: str, stored: int, score: float | None,
           state: TrialState = TrialState.COMPLETE, family: bool = True,
           lr: float = 1e-3) -> int:
    """Add one trial as the searcher records it; `family=False`: an older trial without it."""
    attrs: dict = {records.ATTR_METHOD: method, records.ATTR_STORED: stored,
                   records.ATTR_STATUS: records.STATUS_OK}
    if family:
        attrs[records.ATTR_FAMILY] = FAMILY_OF[method]
    if score is not None:
        attrs[records.ATTR_METRICS] = {"f1": score, "score": score}
    if state == TrialState.FAIL:
        attrs[records.ATTR_STATUS] = records.STATUS_INFEASIBLE
    params = {"method": method, f"{method}.learning_rate": lr}
    study.add_trial(create_trial(
        state=state, values=[score, float(stored)] if state == TrialState.COMPLETE else None,
        params=params, distributions={k: DISTRIBUTIONS[k] for k in params}, user_attrs=attrs))
    return len(study.trials) - 1


def _final_runs(study: optuna.Study, trial: int, scores: list[float]) -> None:
    for index, score in enumerate(scores):
        run = {"seed": index, "metrics": {"score": score, "f1": score}, "seconds": 1.0,
               "finished_at": "now"}
        records.record_final_run(study, trial, index, run, FIDELITY)


def _sweep() -> list[optuna.Study]:
    """2 tasks × 2 budgets, listed out of order; shuffled labels at 1% has no feasible trial."""
    small = _study("mrpc-0_1pct", "mrpc", "0.1%", 0.001)  # budget 1,000
    _trial(small, "lora", 900, 0.70)
    winner = _trial(small, "dylora", 800, 0.74, lr=3e-4)
    _trial(small, "diff_pruning", 950, 0.72)
    _trial(small, "bitfit", 500, 0.60, family=False)  # recorded before families existed
    _trial(small, "lora", 2_000, 0.95)  # over budget: not eligible
    _trial(small, "lora", 700, 0.99, state=TrialState.PRUNED)
    records.record_dev_scores(small, {winner: {"score": 0.73, "f1": 0.73}})

    big = _study("mrpc-1pct", "mrpc", "1%", 0.01)  # budget 10,000
    _trial(big, "lora", 9_000, 0.80)
    winner = _trial(big, "diff_pruning", 5_000, 0.83)
    _trial(big, "bitfit", 500, 0.61)
    _trial(big, "adapter_houlsby", 9_500, 0.78)
    _trial(big, "lora", 6_000, 0.80)  # ties lora's 0.80 with fewer params
    _final_runs(big, winner, [0.80, 0.82, 0.84])

    control = _study("mrpc-shuffled-0_1pct", "mrpc:shuffled", "0.1%", 0.001)
    _trial(control, "lora", 900, 0.52)
    _trial(control, "bitfit", 500, 0.55)

    empty = _study("mrpc-shuffled-1pct", "mrpc:shuffled", "1%", 0.01)
    _trial(empty, "lora", 50_000, None, state=TrialState.FAIL)  # infeasible, never trained
    return [big, small, control, empty]


@pytest.fixture(scope="module")
def sweep() -> list[optuna.Study]:
    return _sweep()


@pytest.fixture(scope="module")
def data(sweep: list[optuna.Study]) -> list[StudyViews]:
    return [collect(s) for s in sweep]


@pytest.fixture(scope="module")
def built(sweep: list[optuna.Study], tmp_path_factory) -> Path:
    """The report written under reports/, next to each study's own report directory."""
    reports = tmp_path_factory.mktemp("work") / "reports"
    dirs = [reports / s.study_name for s in sweep]
    for directory in dirs:
        directory.mkdir(parents=True)
    return build_sweep_report(SWEEP, sweep, dirs, reports / f"sweep-{SWEEP}")


def _curve(curves: pd.DataFrame, task: str, family: str) -> dict[float, float]:
    line = curves[(curves["task"] == task) & (curves["family"] == family)]
    return dict(zip(line["budget_percent"], line["score"], strict=True))


def test_best_by_budget_is_each_familys_best_feasible_score(data: list[StudyViews]) -> None:
    curves = best_by_budget(data)

    assert _curve(curves, "mrpc", "lora") == {0.1: 0.74, 1.0: 0.80}  # dylora beats lora
    assert _curve(curves, "mrpc", "sparse") == {0.1: 0.72, 1.0: 0.83}
    assert _curve(curves, "mrpc", "bitfit") == {0.1: 0.60, 1.0: 0.61}  # old trial: its method
    assert _curve(curves, "mrpc", "adapter") == {1.0: 0.78}
    assert _curve(curves, "mrpc:shuffled", "lora") == {0.1: 0.52}
    assert _curve(curves, "mrpc:shuffled", "bitfit") == {0.1: 0.55}
    assert len(curves) == 9  # nothing from the study without a feasible trial
    rows = curves.set_index(["task", "family", "budget_percent"])
    assert rows.loc[("mrpc", "lora", 0.1), "method"] == "dylora"
    assert rows.loc[("mrpc", "lora", 1.0), "stored_params"] == 6_000  # the tie: fewer params
    assert rows.loc[("mrpc", "lora", 0.1), "dylora.learning_rate"] == pytest.approx(3e-4)
    assert list(curves["task"].drop_duplicates()) == ["mrpc", "mrpc:shuffled"]  # sweep order


def test_winners_are_each_studys_best_trial(data: list[StudyViews]) -> None:
    table = winners(data)

    got = list(zip(table["study"], table["method"].fillna(""), table["family"].fillna(""),
                   table["score"].fillna(-1), strict=True))
    assert got == [("mrpc-0_1pct", "dylora", "lora", 0.74),
                   ("mrpc-1pct", "diff_pruning", "sparse", 0.83),
                   ("mrpc-shuffled-0_1pct", "bitfit", "bitfit", 0.55),
                   ("mrpc-shuffled-1pct", "", "", -1)]
    assert list(table["outcome"]) == ["ok", "ok", "ok", NO_FEASIBLE]
    best = table.set_index("study").loc["mrpc-1pct"]
    assert best["dev_score"] == pytest.approx(0.82)
    assert best["dev_score_std"] == pytest.approx(0.02)
    assert best["dev_seeds"] == 3


def test_figure_has_one_line_per_family_with_its_best_scores(data: list[StudyViews]) -> None:
    curves = best_by_budget(data)
    fig = score_figure(curves, data, "mrpc")

    lines = {t.name: dict(zip(t.x, t.y, strict=True)) for t in fig.data}
    assert lines == {"lora": {0.1: 0.74, 1.0: 0.80}, "sparse": {0.1: 0.72, 1.0: 0.83},
                     "bitfit": {0.1: 0.60, 1.0: 0.61}, "adapter": {1.0: 0.78}}
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.tickvals) == [0.1, 1.0]
    assert list(fig.layout.xaxis.ticktext) == ["0.1%", "1%"]
    hover = next(t for t in fig.data if t.name == "sparse").text[1]
    assert "diff_pruning" in hover and "0.8200 ± 0.0200 (K=3)" in hover
    assert "learning_rate" in hover


def test_several_models_get_one_line_per_family_and_model(data: list[StudyViews]) -> None:
    other = _study("mrpc-roberta-1pct", "mrpc", "1%", 0.01, model="roberta-base",
                   backbone=5_000_000)
    _trial(other, "lora", 40_000, 0.85)
    more = [*data, collect(other)]
    fig = score_figure(best_by_budget(more), more, "mrpc")

    lines = {t.name: dict(zip(t.x, t.y, strict=True)) for t in fig.data}
    assert lines["lora (roberta-base)"] == {1.0: 0.85}  # 1% of another backbone: same x
    assert lines["lora (all-MiniLM-L6-v2)"] == {0.1: 0.74, 1.0: 0.80}
    assert len(lines) == 5
    dashes = {t.name: t.line.dash for t in fig.data}
    assert dashes["lora (roberta-base)"] != dashes["lora (all-MiniLM-L6-v2)"]


def test_report_files_and_content(built: Path) -> None:
    names = {"index.html", "summary.md", WINNERS_CSV, "score_vs_budget-mrpc.png",
             "score_vs_budget-mrpc-shuffled.png"}
    assert {p.name for p in built.iterdir()} == names  # no temporary files left
    for png in ("score_vs_budget-mrpc.png", "score_vs_budget-mrpc-shuffled.png"):
        with Image.open(built / png) as image:
            image.verify()

    csv = pd.read_csv(built / WINNERS_CSV)
    assert list(csv["method"].fillna("")) == ["dylora", "diff_pruning", "bitfit", ""]
    assert list(csv["score"].fillna(-1)) == [0.74, 0.83, 0.55, -1]
    assert list(csv["stored_params"].fillna(0)) == [800, 5_000, 500, 0]

    page = (built / "index.html").read_text(encoding="utf-8")
    assert "<title>AutoPEFT sweep: glue-small</title>" in page
    for div in ("score-vs-budget-mrpc", "score-vs-budget-mrpc-shuffled"):
        assert page.count(f'id="{div}"') == 1
    for family in ("lora", "sparse", "bitfit", "adapter"):
        assert f'"name":"{family}"' in page  # a trace of the mrpc figure
    assert NO_FEASIBLE in page and "https://" not in page.split("</script>")[-1]

    summary = (built / "summary.md").read_text(encoding="utf-8")
    assert ("| mrpc | all-MiniLM-L6-v2 | 1% (10,000 params) | diff_pruning | sparse | 5,000 | "
            "50.0% | 0.8300 | 0.8200 ± 0.0200 (K=3) | [mrpc-1pct](../mrpc-1pct/summary.md) |"
            ) in summary
    assert "| mrpc | all-MiniLM-L6-v2 | 0.1% (1,000 params) | dylora | lora | 800 | 80.0% | "\
           "0.7400 | 0.7300 |" in summary
    assert f"| mrpc:shuffled | all-MiniLM-L6-v2 | 1% (10,000 params) | {NO_FEASIBLE} |" in summary
    assert "| sparse | 0.7200 | 0.8300 |" in summary  # the figure's numbers
    assert "![mrpc:shuffled: score versus budget](score_vs_budget-mrpc-shuffled.png)" in summary


def test_links_reach_each_studys_report(built: Path, sweep: list[optuna.Study]) -> None:
    page = (built / "index.html").read_text(encoding="utf-8")
    hrefs = set(re.findall(r'href="([^"#]+/index\.html)"', page))

    assert hrefs == {f"../{s.study_name}/index.html" for s in sweep}
    for href in hrefs:
        assert (built / href).parent.resolve().is_dir()
    winners_section = page.split('id="winners"')[1].split("</section>")[0]
    assert winners_section.count("/index.html") == len(sweep)  # one link per winners row


def test_png_names_are_safe_and_distinct() -> None:
    names = png_names(["mrpc:shuffled", "mrpc/shuffled", "mrpc"])
    assert names == {"mrpc:shuffled": "score_vs_budget-mrpc-shuffled.png",
                     "mrpc/shuffled": "score_vs_budget-mrpc-shuffled-2.png",
                     "mrpc": "score_vs_budget-mrpc.png"}


def test_a_sweep_without_any_feasible_trial(tmp_path: Path) -> None:
    empty = _study("empty", "sst2", "1%", 0.01)
    out = build_sweep_report("nothing", [empty], [tmp_path / "empty"], tmp_path / "sweep")

    assert NO_FEASIBLE in (out / "summary.md").read_text(encoding="utf-8")
    assert pd.read_csv(out / WINNERS_CSV)["outcome"].tolist() == [NO_FEASIBLE]
    assert (out / "score_vs_budget-sst2.png").exists()


def test_trials_frame_family_falls_back_to_the_method(sweep: list[optuna.Study]) -> None:
    frame = trials_frame(sweep[1]).set_index("trial")
    assert list(frame["family"]) == ["lora", "lora", "sparse", "bitfit", "lora", "lora"]


def test_every_registered_method_has_a_family() -> None:
    from autopeft.methods import METHODS as REGISTERED  # torch: only this test pays for it
    from autopeft.methods.registry import METHOD_FAMILIES

    assert set(METHOD_FAMILIES) == set(REGISTERED)
    assert set(METHOD_FAMILIES.values()) == {"lora", "sparse", "bitfit", "adapter", "prompt",
                                             "spt", "side", "full"}
    assert {m: METHOD_FAMILIES[m] for m in FAMILY_OF} == FAMILY_OF


def test_sweep_report_does_not_import_torch_or_ray() -> None:
    code = ("import autopeft.report.sweep_report, sys; "
            "assert 'torch' not in sys.modules and 'ray' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
