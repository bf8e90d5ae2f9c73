"""Score vs stored parameters: an interactive HTML plot and a static PNG of the same picture.

The PNG is drawn with matplotlib, not plotly: plotly's static export (kaleido) needs a Chrome
install, which offline machines and clusters do not have. Matplotlib's Agg backend needs nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from autopeft.report import fmt
from autopeft.report.tables import STATE_COMPLETE, row_knobs
from autopeft.study import StudySetup

NO_TRIALS_NOTE = "no completed trials yet"
# matplotlib's tab10 as hex, so both plots give a method the same colour.
_PALETTE = tuple(to_hex(c) for c in colormaps["tab10"].colors)
_BUDGET_COLOUR = "#c0392b"
_FRONT_COLOUR = "#111111"
_OVER_BUDGET_ALPHA = 0.07


def write_pareto_html(
    trials: pd.DataFrame, pareto: pd.DataFrame, setup: StudySetup, path: Path
) -> None:
    """An interactive plot with hover details, plotly.js embedded so it opens offline."""
    points, front = _plotted(trials), _plotted(pareto)
    colours = _method_colours(trials)
    fig = go.Figure()
    for method, group in points.groupby("method", sort=True):
        fig.add_trace(
            go.Scatter(
                x=group["stored_params"].astype(float),
                y=group["score"],
                mode="markers",
                name=str(method),
                marker={"color": colours[method], "size": 9, "opacity": 0.75},
                text=[_hover(row, setup) for _, row in group.iterrows()],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    if not front.empty:
        fig.add_trace(
            go.Scatter(
                x=front["stored_params"].astype(float),
                y=front["score"],
                mode="lines+markers",
                line={"shape": "hv", "color": _FRONT_COLOUR, "width": 1.5},
                marker={"size": 15, "color": "rgba(0,0,0,0)", "line": {"width": 2}},
                name="Pareto front (within budget)",
                text=[_hover(row, setup) for _, row in front.iterrows()],
                hovertemplate="<b>Pareto</b><br>%{text}<extra></extra>",
            )
        )
    low, high = _x_range(points, setup.budget_params)
    # Shapes take data values on a log axis; annotations take log10 of them.
    fig.add_shape(
        type="rect",
        xref="x",
        yref="paper",
        x0=setup.budget_params,
        x1=high,
        y0=0,
        y1=1,
        fillcolor=_BUDGET_COLOUR,
        opacity=_OVER_BUDGET_ALPHA,
        line={"width": 0},
        layer="below",
    )
    fig.add_shape(
        type="line",
        xref="x",
        yref="paper",
        x0=setup.budget_params,
        x1=setup.budget_params,
        y0=0,
        y1=1,
        line={"color": _BUDGET_COLOUR, "dash": "dash", "width": 2},
    )
    fig.add_annotation(
        x=math.log10(setup.budget_params),
        xref="x",
        y=1,
        yref="paper",
        yanchor="bottom",
        text=_budget_label(setup),
        showarrow=False,
        font={"color": _BUDGET_COLOUR},
    )
    if points.empty:
        fig.add_annotation(
            x=0.5,
            y=0.5,
            xref="paper",
            yref="paper",
            text=NO_TRIALS_NOTE,
            showarrow=False,
            bgcolor="white",
            font={"size": 18, "color": "#666666"},
        )
    fig.update_layout(
        title=_title(setup),
        xaxis={
            "type": "log",
            "title": "stored parameters (log scale)",
            "range": [math.log10(low), math.log10(high)],
        },
        yaxis={"title": _y_label(setup)},
        legend={"title": "method"},
        template="plotly_white",
        hovermode="closest",
    )
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)


def write_pareto_png(
    trials: pd.DataFrame, pareto: pd.DataFrame, setup: StudySetup, path: Path
) -> None:
    """A static copy of the plot for papers, READMEs and terminals without a browser."""
    points, front = _plotted(trials), _plotted(pareto)
    colours = _method_colours(trials)
    fig = Figure(figsize=(9, 5.5), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)  # Agg explicitly: no display, no global pyplot state
    ax = fig.add_subplot()
    for method, group in points.groupby("method", sort=True):
        ax.scatter(
            group["stored_params"].astype(float),
            group["score"],
            s=36,
            alpha=0.75,
            color=colours[method],
            label=str(method),
            zorder=3,
        )
    if not front.empty:
        xs, ys = front["stored_params"].astype(float), front["score"]
        ax.step(xs, ys, where="post", color=_FRONT_COLOUR, linewidth=1.2, zorder=2)
        ax.scatter(
            xs,
            ys,
            s=130,
            facecolors="none",
            edgecolors=_FRONT_COLOUR,
            linewidths=1.6,
            label="Pareto front (within budget)",
            zorder=4,
        )
        for x, y, n in zip(xs, ys, front["trial"], strict=True):
            ax.annotate(f"#{n}", (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8)
    ax.axvline(
        setup.budget_params,
        color=_BUDGET_COLOUR,
        linestyle="--",
        linewidth=1.8,
        label=_budget_label(setup),
        zorder=1,
    )
    low, high = _x_range(points, setup.budget_params)
    ax.axvspan(setup.budget_params, high, color=_BUDGET_COLOUR, alpha=_OVER_BUDGET_ALPHA, lw=0)
    ax.text(
        setup.budget_params,
        0.99,
        " over budget",
        transform=ax.get_xaxis_transform(),
        color=_BUDGET_COLOUR,
        ha="left",
        va="top",
        fontsize=9,
    )
    if points.empty:
        ax.text(
            0.5,
            0.5,
            NO_TRIALS_NOTE,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=14,
            color="#666666",
            bbox={"facecolor": "white", "edgecolor": "none"},
            zorder=5,
        )
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.set_xlabel("stored parameters (log scale)")
    ax.set_ylabel(_y_label(setup))
    ax.set_title(_title(setup))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    fig.savefig(path, format="png")


def _plotted(frame: pd.DataFrame) -> pd.DataFrame:
    """COMPLETE rows with a score and a positive cost: the only ones a log-x plot can show."""
    keep = (
        (frame["state"] == STATE_COMPLETE)
        & frame["score"].notna()
        & frame["stored_params"].notna()
        & (frame["stored_params"].fillna(0) > 0)
    )
    return frame[keep].sort_values("stored_params", kind="stable")


def _method_colours(trials: pd.DataFrame) -> dict[str, str]:
    """Colour by method over all trials, so a method keeps its colour as the study grows."""
    methods = sorted({str(m) for m in trials["method"] if not fmt.is_missing(m)})
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(methods)}


def _x_range(points: pd.DataFrame, budget: int) -> tuple[float, float]:
    """Data and budget line both in view, with some margin on the log axis."""
    if points.empty:
        return budget / 10.0, budget * 10.0
    values = [float(budget), *points["stored_params"].astype(float)]
    return min(values) / 2.0, max(values) * 2.0


def _hover(row: pd.Series, setup: StudySetup) -> str:
    lines = [
        f"trial #{row['trial']}",
        f"method: {row['method']}",
        f"score ({setup.primary_metric}): {fmt.score(row['score'])}",
        f"stored: {fmt.count(row['stored_params'])} ({fmt.percent(row['budget_used'])} of budget)",
    ]
    lines += [f"{name}: {fmt.knob(v)}" for name, v in sorted(row_knobs(row).items())]
    return "<br>".join(lines)


def _budget_label(setup: StudySetup) -> str:
    return f"budget {setup.budget_spec} = {setup.budget_params:,} params"


def _title(setup: StudySetup) -> str:
    model = setup.model.rstrip("/").rsplit("/", 1)[-1]
    return f"{setup.task} / {model}: selection score vs stored parameters"


def _y_label(setup: StudySetup) -> str:
    return f"selection score ({setup.primary_metric})"
