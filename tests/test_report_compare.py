"""`autopeft report --study A --study B`: several stored studies compared in one report."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from PIL import Image

from autopeft import api
from autopeft import study as records
from autopeft.errors import AutoPeftError
from autopeft.report import comparison_name
from autopeft.report.collect import collect
from autopeft.report.compare import BEST_CSV, FRONTS_PNG, fronts_figure
from autopeft.study import STATUS_OK
from tests.helpers import add_trial, fill_example, new_study, run_cli, trial_params

MRPC, SST2 = "mrpc-test", "sst2-big"


def _stored(studies: Path, name: str, **setup) -> optuna.Study:
    """A study in its journal, where `search` would have put it."""
    storage = records.make_storage(None, studies / name)
    return new_study(name, storage, **setup)


@pytest.fixture()
def studies(tmp_path: Path) -> Path:
    """Two stored studies on different tasks, models and budgets."""
    directory = tmp_path / "studies"
    fill_example(_stored(directory, MRPC))
    other = _stored(directory, SST2, task="sst2", model="roberta-base", budget_spec="1%",
                    budget_params=50_000, backbone_params=5_000_000, primary_metric="accuracy")
    add_trial(other, TrialState.COMPLETE, trial_params("lora", 1e-3, r=8), 40_000, STATUS_OK,
              0.91, epochs=1)
    add_trial(other, TrialState.COMPLETE, trial_params("bitfit", 1e-3), 12_000, STATUS_OK, 0.88,
              epochs=1)
    return directory


def _report(studies: Path, names: list[str], out: Path | None = None) -> Path:
    return api.report(names, studies_dir=str(studies),
                      reports_dir=str(studies.parent / "reports"),
                      out=None if out is None else str(out))


def test_comparison_shows_both_studies_and_links_their_reports(studies: Path) -> None:
    out = _report(studies, [MRPC, SST2])

    assert out == studies.parent / "reports" / comparison_name([MRPC, SST2])
    assert out.name == f"compare-{MRPC}-vs-{SST2}"
    html = (out / "index.html").read_text(encoding="utf-8")
    for name in (MRPC, SST2):
        own = studies.parent / "reports" / name
        assert (own / "index.html").exists() and (own / "summary.md").exists()  # rebuilt
        assert f'href="../{name}/index.html"' in html
        assert f"{name} (" in html  # a legend entry on the fronts plot
    assert html.count('id="fronts-plot"') == 1
    assert "0.5% = 10,000 params" in html and "1% = 50,000 params" in html  # each budget
    assert "roberta-base" in html and "sentence-transformers/all-MiniLM-L6-v2" in html

    best = pd.read_csv(out / BEST_CSV)
    assert list(zip(best["study"], best["method"], best["trial"], strict=True)) == [
        (MRPC, "lora", 0), (MRPC, "bitfit", 1), (SST2, "lora", 0), (SST2, "bitfit", 1)]
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert f"[{MRPC}](../{MRPC}/summary.md)" in summary and f"({FRONTS_PNG})" in summary
    assert "| sst2-big | lora | #0 | 0.9100 |" in summary
    with Image.open(out / FRONTS_PNG) as image:
        image.verify()


def test_comparison_plot_has_one_front_per_study(studies: Path) -> None:
    data = [collect(records.read_study(n, None, studies)) for n in (MRPC, SST2)]
    fig = fronts_figure(data, {MRPC: "#111111", SST2: "#222222"})

    assert [len(trace.x) for trace in fig.data] == [3, 2]  # each study's feasible front
    assert {shape.x0 for shape in fig.layout.shapes} == {10_000, 50_000}  # each budget


def test_out_puts_the_comparison_elsewhere_with_working_links(studies: Path,
                                                              tmp_path: Path) -> None:
    out = _report(studies, [SST2, MRPC], out=tmp_path / "deep" / "cmp")

    html = (out / "index.html").read_text(encoding="utf-8")
    link = f"../../reports/{MRPC}/index.html"
    assert f'href="{link}"' in html
    assert (out / link).resolve().exists()


def test_one_study_keeps_its_own_report(studies: Path) -> None:
    out = _report(studies, [MRPC, MRPC])  # a repeated name is one study
    assert out == studies.parent / "reports" / MRPC
    assert not list((studies.parent / "reports").glob("compare-*"))


def test_an_unknown_study_among_several_is_a_one_line_error(studies: Path) -> None:
    with pytest.raises(AutoPeftError, match="no study 'nope'"):
        _report(studies, [MRPC, "nope"])
    assert not (studies.parent / "reports").exists()  # nothing half-built


def test_cli_compares_repeated_study_options(studies: Path) -> None:
    work = studies.parent
    result = run_cli("report", "--study", MRPC, "--study", SST2, cwd=work)

    assert result.returncode == 0, result.stderr
    assert f"comparison written to reports/compare-{MRPC}-vs-{SST2}/" in result.stdout
    assert (work / "reports" / f"compare-{MRPC}-vs-{SST2}" / "index.html").exists()


def test_long_names_still_make_a_short_directory() -> None:
    names = [f"study-{i}-" + "x" * 40 for i in range(5)]
    name = comparison_name(names)
    assert len(name) <= 120 and name.startswith("compare-study-0")
    assert name != comparison_name(names[::-1])
