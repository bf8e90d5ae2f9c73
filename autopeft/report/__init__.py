"""Rebuild a human-readable report (tables, plots, summary, one HTML page) from Optuna studies.

Only optuna, pandas, numpy, plotly and matplotlib are imported here, never torch or ray, so a
report can be built on a laptop from a study copied off the cluster.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from autopeft.report.collect import StudyViews, collect
from autopeft.report.compare import build_comparison, comparison_name
from autopeft.report.files import (
    ALLOCATION_PNG,
    HYPERVOLUME_PNG,
    INDEX_HTML,
    PARETO_CSV,
    PARETO_HTML,
    PARETO_PNG,
    SUMMARY_MD,
    TRIALS_CSV,
    atomic_path,
    write_text_atomic,
)
from autopeft.report.heatmaps import write_allocation_png
from autopeft.report.hypervolume import reference_note
from autopeft.report.hypervolume_plot import write_hypervolume_png
from autopeft.report.index import render_index
from autopeft.report.plots import write_pareto_html, write_pareto_png
from autopeft.report.summary import render_summary
from autopeft.report.tables import best_per_method, pareto_frame, trials_frame

__all__ = [
    "StudyViews",
    "best_per_method",
    "build_comparison",
    "build_report",
    "collect",
    "comparison_name",
    "pareto_frame",
    "render_summary",
    "trials_frame",
]


def build_report(study: optuna.Study, out_dir: Path) -> Path:
    """Write the CSVs, PNGs, pareto.html, index.html and summary.md into `out_dir`.

    Each file is replaced atomically, so a crash leaves the previous version, never half a file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = collect(study)

    write_text_atomic(out_dir / TRIALS_CSV, data.trials.to_csv(index=False))
    write_text_atomic(out_dir / PARETO_CSV, data.pareto.to_csv(index=False))
    with atomic_path(out_dir / PARETO_HTML) as tmp:
        write_pareto_html(data.trials, data.pareto, data.setup, tmp)
    with atomic_path(out_dir / PARETO_PNG) as tmp:
        write_pareto_png(data.trials, data.pareto, data.setup, tmp)
    with atomic_path(out_dir / HYPERVOLUME_PNG) as tmp:
        write_hypervolume_png(data.curve, reference_note(data.hv_reference), tmp)
    with atomic_path(out_dir / ALLOCATION_PNG) as tmp:
        write_allocation_png(data.grids, tmp)
    write_text_atomic(out_dir / INDEX_HTML, render_index(data))
    # The summary last: it lists the other files, so it should only appear once they exist.
    write_text_atomic(out_dir / SUMMARY_MD,
                      render_summary(study, data.trials, data.pareto, data.best))
    return out_dir
