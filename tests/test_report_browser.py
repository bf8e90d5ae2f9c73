"""The report of a real (tiny) search: what the trials recorded, a rebuild from the study alone,
and index.html as a person sees it in headless Chromium.

One search serves every test here. The browser test needs Chromium at /usr/bin/chromium
(`apt-get install -y chromium`) and the `playwright` package (the `dev` extra); without either
it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from autopeft import study as records
from autopeft.report import pareto_frame
from autopeft.report.allocation import front_allocations
from autopeft.report.index import PARETO_DIV, PROGRESS_DIV, allocation_div
from tests.helpers import SMALL_QV_SPACE, run_cli  # test_export searches the same space

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
STUDY = "tiny-report"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_bert, mrpc_dir) -> Path:
    """A finished 3-trial search (BitFit, LoRA on q/v), its report written; the work dir."""
    work = tmp_path_factory.mktemp("report-search")
    (work / "space.yaml").write_text(SMALL_QV_SPACE)
    result = run_cli("search", "--task", "mrpc", "--budget", "2%", "--model", str(tiny_bert),
                     "--data-dir", str(mrpc_dir), "--space", "space.yaml", "--trials", "3",
                     "--max-train-samples", "64", "--batch-size", "16", "--sampler", "random",
                     "--seed", "1", "--study", STUDY, "--final-seeds", "0", "--epochs", "1",
                     cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def _study(work: Path):
    return records.read_study(STUDY, None, work / "studies")


def test_trials_record_the_layer_by_type_allocation(searched: Path) -> None:
    study = _study(searched)
    complete = [t for t in study.trials if t.user_attrs.get(records.ATTR_STATUS) == "ok"]
    assert {t.params["method"] for t in complete} == {"bitfit", "lora"}
    for trial in complete:
        record = trial.user_attrs[records.ATTR_ALLOCATION]
        grid = record["by_layer_type"]
        assert set(grid) == set(record["by_layer"]) and {"0", "1"} <= set(grid)
        changed = {"bitfit": "bias", "lora": ("attn_q", "attn_v")}[trial.params["method"]]
        for layer in ("0", "1"):
            for kind, fraction in grid[layer].items():
                assert fraction == (1.0 if kind in changed else 0.0), (trial.number, layer, kind)

    # the report's heatmaps hold exactly those numbers
    for heatmap in front_allocations(study, pareto_frame(study)):
        record = study.trials[heatmap.trial].user_attrs[records.ATTR_ALLOCATION]
        assert heatmap.detailed
        for layer, kinds in record["by_layer_type"].items():
            for kind, fraction in kinds.items():
                assert heatmap.cells.loc[layer, kind] == fraction


def test_report_rebuilds_from_the_storage_alone(searched: Path) -> None:
    report = searched / "reports" / STUDY
    before = {name: (report / name).read_text() for name in ("trials.csv", "pareto.csv")}
    shutil.rmtree(searched / "studies" / STUDY / "artifacts")
    shutil.rmtree(report)

    result = run_cli("report", "--study", STUDY, cwd=searched)

    assert result.returncode == 0, result.stderr
    for name, text in before.items():
        assert (report / name).read_text() == text, name
    html = (report / "index.html").read_text(encoding="utf-8")
    trials = pd.read_csv(report / "trials.csv")
    for number in trials[trials.state == "COMPLETE"].trial:
        assert f"trial #{number}" in html
    for name in ("pareto.png", "hypervolume.png", "allocation.png"):
        assert (report / name).read_bytes().startswith(PNG_SIGNATURE)


def test_index_html_renders_in_headless_chromium(searched: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        why = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
        if os.environ.get("CI"):  # .ci/run installs it: there a missing browser is a failure
            pytest.fail(why)
        pytest.skip(why)
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright not installed (pip install -e .[dev])")
    index = searched / "reports" / STUDY / "index.html"
    front = pd.read_csv(index.parent / "pareto.csv")
    completed = (pd.read_csv(index.parent / "trials.csv").state == "COMPLETE").sum()
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: r.url.startswith("file:")
                    or problems.append(f"request: {r.url}"))
            page.goto(index.as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3")
            plots = page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('.js-plotly-plot')]
                    .map(d => [d.id, {
                        types: d._fullData.map(t => t.type),
                        points: d.querySelectorAll('.scatterlayer .point').length,
                        heatmaps: d.querySelectorAll('.heatmaplayer image').length,
                        svgs: d.querySelectorAll('svg.main-svg').length,
                    }]))"""
            )
            shot = tmp_path / "index.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    assert problems == []
    pareto = plots[PARETO_DIV]
    assert pareto["svgs"] >= 1 and set(pareto["types"]) == {"scatter"}
    assert pareto["points"] >= completed + len(front)  # every trial, then the front again
    assert plots[PROGRESS_DIV]["points"] >= 3  # one marker per trial
    for number in front.trial:
        heatmap = plots[allocation_div(int(number))]
        assert heatmap["types"] == ["heatmap"] and heatmap["heatmaps"] == 1
    png = shot.read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 50_000
    with Image.open(shot) as image:
        assert image.width == 1280 and image.height > 2_000  # the whole page, not the viewport
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 200
