"""index.html: the whole report of one study on one page that opens offline.

Everything comes from the same tables and figure functions as the CSVs, summary.md and PNGs, so
the page and the files always agree.
"""

from __future__ import annotations

from autopeft.report import page, views
from autopeft.report.collect import StudyViews
from autopeft.report.files import INDEX_HTML, REPORT_FILES, SUMMARY_MD
from autopeft.report.heatmaps import NO_ALLOCATION_NOTE, allocation_figure
from autopeft.report.hypervolume import reference_note
from autopeft.report.hypervolume_plot import hypervolume_figure
from autopeft.report.plots import pareto_figure

# The page's section anchors, in order; tests and the browser check find sections by these.
SECTIONS = ("setup", "pareto", "progress", "best-per-method", "allocation", "files")
PARETO_DIV = "pareto-plot"
PROGRESS_DIV = "hypervolume-plot"
ALLOCATION_DIV_PREFIX = "allocation-trial-"


def render_index(data: StudyViews) -> str:
    """The page: setup, Pareto plot and front, search progress, best per method, heatmaps."""
    contents = {
        "setup": ("Setup", _setup(data)),
        "pareto": ("Pareto front", _pareto(data)),
        "progress": ("Search progress", _progress(data)),
        "best-per-method": ("Best per method (within budget)", _best(data)),
        "allocation": ("Where the Pareto points changed the backbone", _allocation(data)),
        "files": ("Files", _files()),
    }
    sections = [(anchor, *contents[anchor]) for anchor in SECTIONS]
    return page.render_page(f"AutoPEFT report: {data.name}", sections)


def allocation_div(trial: int) -> str:
    """The id of a Pareto point's heatmap div."""
    return f"{ALLOCATION_DIV_PREFIX}{trial:04d}"


def _setup(data: StudyViews) -> str:
    dropped = views.dropped_rows_note(data.setup)
    return "\n".join([
        page.table(views.SETUP_HEADER, views.setup_rows(data.setup)),
        *([page.paragraph(dropped)] if dropped else []),
        page.paragraph(f"{len(data.trials)} trials in total."),
        page.table(views.STATE_HEADER, views.state_rows(data.trials), numeric=(2,)),
    ])


def _pareto(data: StudyViews) -> str:
    parts = [
        page.paragraph("Every completed trial, coloured by method; hover a point for its full "
                       "configuration. The ringed points are the Pareto front within the budget "
                       "(dashed line). Scores are on the selection split, never on dev."),
        page.figure(pareto_figure(data.trials, data.pareto, data.setup), PARETO_DIV),
    ]
    if data.pareto.empty:
        parts.append(page.paragraph("No completed trial within the budget yet.", note=True))
    else:
        header, rows = views.front_table(data.pareto)
        parts.append(page.table(header, rows, numeric=views.FRONT_NUMERIC))
    return "\n".join(parts)


def _progress(data: StudyViews) -> str:
    final = float(data.curve["hypervolume"].iloc[-1]) if not data.curve.empty else 0.0
    note = reference_note(data.hv_reference)
    return "\n".join([
        page.paragraph(f"The {note}, over the completed trials within the budget so "
                       f"far; now {final:.4f}. A flat tail means more trials are unlikely to "
                       "improve the front."),
        page.figure(hypervolume_figure(data.curve, note), PROGRESS_DIV),
    ])


def _best(data: StudyViews) -> str:
    if data.best.empty:
        return page.paragraph("No completed trial within the budget yet.", note=True)
    header, rows = views.best_table(data.best)
    return page.table(header, rows, numeric=views.BEST_NUMERIC)


def _allocation(data: StudyViews) -> str:
    if not data.grids:
        return page.paragraph(NO_ALLOCATION_NOTE, note=True)
    parts = [page.paragraph(
        "Share of each group's backbone entries that the configuration changed: rows are "
        "layers, columns module types; the margins are the totals per layer and per type. "
        "An empty cell: the layer has no such module.")]
    parts += [page.figure(allocation_figure(grid), allocation_div(grid.trial))
              for grid in data.grids]
    return "\n".join(parts)


def _files() -> str:
    described = {**REPORT_FILES, SUMMARY_MD: "this report in Markdown with the PNG figures, "
                                             "ready to paste into a README or PR"}
    items = [(name, f"{name}: {what}") for name, what in described.items() if name != INDEX_HTML]
    return page.links(items)
