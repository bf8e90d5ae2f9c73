"""Rebuild a human-readable report (tables, plots, summary) from an Optuna study alone.

Only optuna, pandas, numpy, plotly and matplotlib are imported here, never torch or ray, so a
report can be built on a laptop from a study copied off the cluster.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from autopeft.report.files import (
    PARETO_CSV,
    PARETO_HTML,
    PARETO_PNG,
    SUMMARY_MD,
    TRIALS_CSV,
    atomic_path,
    write_text_atomic,
)
from autopeft.report.plots import write_pareto_html, write_pareto_png
from autopeft.report.summary import render_summary
from autopeft.report.tables import pareto_frame, trials_frame
from autopeft.study import study_setup

__all__ = ["build_report", "pareto_frame", "render_summary", "trials_frame"]


def build_report(study: optuna.Study, out_dir: Path) -> Path:
    """Write trials.csv, pareto.csv, summary.md, pareto.html and pareto.png into `out_dir`.

    Each file is replaced atomically, so a crash leaves the previous version, never half a file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    setup = study_setup(study)
    trials = trials_frame(study)
    pareto = pareto_frame(study)

    write_text_atomic(out_dir / TRIALS_CSV, trials.to_csv(index=False))
    write_text_atomic(out_dir / PARETO_CSV, pareto.to_csv(index=False))
    with atomic_path(out_dir / PARETO_HTML) as tmp:
        write_pareto_html(trials, pareto, setup, tmp)
    with atomic_path(out_dir / PARETO_PNG) as tmp:
        write_pareto_png(trials, pareto, setup, tmp)
    # The summary last: it lists the other files, so it should only appear once they exist.
    write_text_atomic(out_dir / SUMMARY_MD, render_summary(study, trials, pareto))
    return out_dir
