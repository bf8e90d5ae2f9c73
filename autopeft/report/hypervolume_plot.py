"""Hypervolume versus trials: is the search still finding better or cheaper configurations?

A curve that has gone flat says more trials are unlikely to help; one still climbing says the
opposite. Interactive for index.html, and the same picture as a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from matplotlib.ticker import MaxNLocator

from autopeft.report.style import FRONT_COLOUR, NOTE_COLOUR, PLOTLY_TEMPLATE, png_figure, save_png

TITLE = "Search progress: hypervolume after each trial"
X_LABEL = "trial number"
Y_LABEL = "hypervolume (higher is better, at most 1)"
NO_TRIALS_NOTE = "no trials yet"


def hypervolume_figure(curve: pd.DataFrame, note: str) -> go.Figure:
    """The step curve of `hypervolume_curve`, with its reference point (`note`) on the figure."""
    fig = go.Figure(
        go.Scatter(
            x=curve["trial"],
            y=curve["hypervolume"],
            mode="lines+markers",
            line={"shape": "hv", "color": FRONT_COLOUR, "width": 2},
            marker={"size": 6},
            name="hypervolume",
            hovertemplate="after trial #%{x}: %{y:.4f}<extra></extra>",
        )
    )
    fig.add_annotation(
        x=0, xref="paper", y=1, yref="paper", xanchor="left", yanchor="bottom",
        text=note, showarrow=False, font={"color": NOTE_COLOUR},
    )
    if curve.empty:
        fig.add_annotation(x=0.5, y=0.5, xref="paper", yref="paper", text=NO_TRIALS_NOTE,
                           showarrow=False, font={"size": 18, "color": NOTE_COLOUR})
    fig.update_layout(
        title=TITLE,
        xaxis={"title": X_LABEL, "tick0": 0, "dtick": _tick_step(curve)},
        yaxis={"title": Y_LABEL, "rangemode": "tozero"},
        template=PLOTLY_TEMPLATE,
        showlegend=False,
    )
    return fig


def write_hypervolume_png(curve: pd.DataFrame, note: str, path: Path) -> None:
    """The same curve as a static image."""
    fig = png_figure(height=4.5)
    ax = fig.add_subplot()
    if curve.empty:
        ax.text(0.5, 0.5, NO_TRIALS_NOTE, transform=ax.transAxes, ha="center", va="center",
                fontsize=14, color=NOTE_COLOUR)
    else:
        ax.step(curve["trial"], curve["hypervolume"], where="post", color=FRONT_COLOUR,
                linewidth=1.8, marker="o", markersize=4)
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    ax.set_title(f"{TITLE}\n{note}", fontsize=11)
    ax.grid(True, alpha=0.25)
    save_png(fig, path)


def _tick_step(curve: pd.DataFrame) -> int:
    """Whole trial numbers only, about ten ticks at most."""
    return max(1, math.ceil(len(curve) / 10))
