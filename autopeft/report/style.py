"""Colours and the matplotlib canvas shared by every figure, so the HTML and PNG views agree.

The PNGs are drawn with matplotlib, not plotly: plotly's static export (kaleido) needs a Chrome
install, which offline machines and clusters do not have. Matplotlib's Agg backend needs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

# matplotlib's tab10 as hex, so both renderings give a method (or a study) the same colour.
PALETTE = tuple(to_hex(c) for c in colormaps["tab10"].colors)
BUDGET_COLOUR = "#c0392b"
FRONT_COLOUR = "#111111"
NOTE_COLOUR = "#666666"
OVER_BUDGET_ALPHA = 0.07
HEATMAP_COLOURS = "Blues"  # the same sequential map in plotly and matplotlib
PLOTLY_TEMPLATE = "plotly_white"
PNG_DPI = 150


def colour_map(names: Iterable[str]) -> dict[str, str]:
    """One palette colour per name, in sorted order, so a name keeps its colour as data grows."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


def png_figure(width: float = 9, height: float = 5.5) -> Figure:
    """A matplotlib figure on the Agg canvas: no display, no global pyplot state."""
    fig = Figure(figsize=(width, height), dpi=PNG_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> None:
    """Always PNG, whatever the path's suffix (a caller may write to a temporary name)."""
    fig.savefig(path, format="png")
