"""Per-layer allocation heatmaps of the Pareto points: which layers and modules each one changed.

One interactive heatmap per point for index.html, and all of them in one PNG. Each heatmap has
its own colour scale (a sparse point changes 0.01%, LoRA 100% of its matrices), and every cell
is labelled with its value, so points still compare by the numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from autopeft.report import fmt
from autopeft.report.allocation import MARGINS_ONLY_NOTE, AllocationGrid
from autopeft.report.style import (
    HEATMAP_COLOURS,
    NOTE_COLOUR,
    PLOTLY_TEMPLATE,
    png_figure,
    save_png,
)

NO_ALLOCATION_NOTE = "no allocation recorded for the Pareto points"
COLOUR_LABEL = "share of entries changed"
_PNG_COLUMNS = 3
_PNG_DIGITS = 2  # significant digits in the PNG's cells, where space is tight


def allocation_figure(grid: AllocationGrid) -> go.Figure:
    """Layers down, module types across, plus the per-layer and per-type totals as margins."""
    table = grid.with_margins()
    values = table.to_numpy(dtype="float64")
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=list(table.columns),
            y=_row_labels(table),
            text=_cell_labels(values),
            texttemplate="%{text}",
            colorscale=HEATMAP_COLOURS,
            zmin=0.0,
            zmax=_top(values),
            colorbar={"title": {"text": COLOUR_LABEL, "side": "right"}, "tickformat": ".1%"},
            hovertemplate="%{y} · %{x}: %{text}<extra></extra>",
            hoverongaps=False,
        )
    )
    if not grid.detailed:
        fig.add_annotation(x=0, xref="paper", y=-0.12, yref="paper", xanchor="left",
                           yanchor="top", text=MARGINS_ONLY_NOTE, showarrow=False,
                           font={"color": NOTE_COLOUR})
    fig.update_layout(
        title=_title(grid),
        xaxis={"type": "category", "side": "top"},
        yaxis={"type": "category", "autorange": "reversed"},
        template=PLOTLY_TEMPLATE,
        height=180 + 28 * len(table),
    )
    return fig


def write_allocation_png(grids: list[AllocationGrid], path: Path) -> None:
    """Every Pareto point's heatmap on one image, cheapest point first."""
    columns = max(1, min(_PNG_COLUMNS, len(grids)))
    rows = max(1, math.ceil(len(grids) / columns))
    height = max((len(g.cells) + 1 for g in grids), default=4) * 0.32 + 1.6
    fig = png_figure(width=5.8 * columns, height=height * rows)
    if not grids:
        fig.text(0.5, 0.5, NO_ALLOCATION_NOTE, ha="center", va="center", fontsize=14,
                 color=NOTE_COLOUR)
    for index, grid in enumerate(grids):
        _draw_panel(fig.add_subplot(rows, columns, index + 1), grid)
    save_png(fig, path)


def _draw_panel(ax: Axes, grid: AllocationGrid) -> None:
    table = grid.with_margins()
    values = table.to_numpy(dtype="float64")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=HEATMAP_COLOURS, vmin=0.0,
                      vmax=_top(values), aspect="auto")
    ax.set_xticks(range(len(table.columns)), list(table.columns), rotation=45, ha="left",
                  fontsize=7)
    ax.set_yticks(range(len(table)), _row_labels(table), fontsize=7)
    ax.xaxis.tick_top()
    for (i, j), value in np.ndenumerate(values):
        if not math.isnan(value):
            dark = value > 0.6 * _top(values)
            ax.text(j, i, fmt.share(value, _PNG_DIGITS), ha="center", va="center", fontsize=6,
                    color="white" if dark else "black")
    ax.set_title(_title(grid) + ("" if grid.detailed else "\n(totals only: older record)"),
                 fontsize=9)
    ax.figure.colorbar(image, ax=ax, shrink=0.8, format=FuncFormatter(lambda v, _: fmt.share(v)))


def _title(grid: AllocationGrid) -> str:
    return f"trial #{grid.trial} ({grid.method}): {COLOUR_LABEL}"


def _row_labels(table: pd.DataFrame) -> list[str]:
    """`layer 3` rather than `3`, so a layer never reads as a number."""
    return [f"layer {row}" if str(row).isdigit() else str(row) for row in table.index]


def _cell_labels(values: np.ndarray) -> list[list[str]]:
    return [["" if math.isnan(v) else fmt.share(v) for v in row] for row in values]


def _top(values: np.ndarray) -> float:
    """The colour scale's top: the largest value, or 1 when nothing was changed."""
    finite = values[~np.isnan(values)]
    top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0
