"""The report's file names, and atomic writes so a crash never leaves a half-written file."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

TRIALS_CSV = "trials.csv"
PARETO_CSV = "pareto.csv"
SUMMARY_MD = "summary.md"
PARETO_HTML = "pareto.html"
PARETO_PNG = "pareto.png"
INDEX_HTML = "index.html"
HYPERVOLUME_PNG = "hypervolume.png"
ALLOCATION_PNG = "allocation.png"

# What each file holds, in the order the summary lists them.
REPORT_FILES: dict[str, str] = {
    SUMMARY_MD: "this summary",
    INDEX_HTML: "the whole report on one page: interactive plots, tables, heatmaps (opens offline)",
    TRIALS_CSV: "every trial: state, cost, selection metrics, timings and knobs",
    PARETO_CSV: "the feasible Pareto front with dev-set scores (mean, std, per seed)",
    PARETO_HTML: "interactive score-vs-stored-parameters plot alone (opens offline)",
    PARETO_PNG: "the score-vs-stored-parameters plot as a static image",
    HYPERVOLUME_PNG: "hypervolume after each trial: is the search still improving?",
    ALLOCATION_PNG: "per-layer × module-type share of entries each Pareto point changed",
}
# The static figures, with the caption the summary shows above each.
FIGURES: dict[str, str] = {
    PARETO_PNG: "Selection score vs stored parameters",
    HYPERVOLUME_PNG: "Hypervolume after each trial",
    ALLOCATION_PNG: "Where each Pareto point changed the backbone",
}


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; move it over `path` only if the block succeeds.

    The temporary file sits in the same directory so `os.replace` is a same-filesystem rename,
    which is atomic: readers see either the old file or the complete new one. It keeps the
    target's suffix because some writers (matplotlib) pick the format from it.
    """
    # A unique name the writer creates itself, so the file gets the usual umask permissions
    # (mkstemp would make it owner-only).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
