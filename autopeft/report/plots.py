"""Score vs stored parameters: one interactive figure (pareto.html and index.html) and its PNG."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from autopeft.report import fmt
from autopeft.report.style import (
    BUDGET_COLOUR,
    FRONT_COLOUR,
    NOTE_COLOUR,
    OVER_BUDGET_ALPHA,
    PLOTLY_TEMPLATE,
    colour_map,
    png_figure,
    save_png,
)
from autopeft.report.tables import (
    DEV_SCORE,
    DEV_SEEDS,
    DEV_STD,
    STATE_COMPLETE,
    chance_level,
    row_knobs,
)
from autopeft.study import StudySetup

NO_TRIALS_NOTE = "no completed trials yet"


def write_pareto_html(
    trials: pd.DataFrame, pareto: pd.DataFrame, setup: StudySetup, path: Path
) -> None:
    """The Pareto figure alone in a page, plotly.js embedded so it opens offline."""
    pareto_figure(trials, pareto, setup).write_html(str(path), include_plotlyjs=True,
                                                    full_html=True)


CHANCE_LABEL = "chance (a constant prediction)"


def pareto_figure(trials: pd.DataFrame, pareto: pd.DataFrame, setup: StudySetup) -> go.Figure:
    """Every completed trial coloured by method, the front, and the budget; hover: the config."""
    points, front = plotted_rows(trials), plotted_rows(pareto)
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
                text=[hover_text(row, setup) for _, row in group.iterrows()],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    if not front.empty:
        fig.add_trace(
            go.Scatter(
                x=front["stored_params"].astype(float),
                y=front["score"],
                mode="lines+markers",
                line={"shape": "hv", "color": FRONT_COLOUR, "width": 1.5},
                marker={"size": 15, "color": "rgba(0,0,0,0)", "line": {"width": 2}},
                name="Pareto front (within budget)",
                text=[hover_text(row, setup) for _, row in front.iterrows()],
                hovertemplate="<b>Pareto</b><br>%{text}<extra></extra>",
            )
        )
    chance = chance_level(trials)
    if chance is not None:
        fig.add_hline(y=chance, line={"color": NOTE_COLOUR, "dash": "dot", "width": 1.5},
                      annotation_text=CHANCE_LABEL, annotation_position="bottom right",
                      annotation_font={"color": NOTE_COLOUR})
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
        fillcolor=BUDGET_COLOUR,
        opacity=OVER_BUDGET_ALPHA,
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
        line={"color": BUDGET_COLOUR, "dash": "dash", "width": 2},
    )
    fig.add_annotation(
        x=math.log10(setup.budget_params),
        xref="x",
        y=1,
        yref="paper",
        yanchor="bottom",
        text=budget_label(setup),
        showarrow=False,
        font={"color": BUDGET_COLOUR},
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
            font={"size": 18, "color": NOTE_COLOUR},
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
        template=PLOTLY_TEMPLATE,
        hovermode="closest",
    )
    return fig


def write_pareto_png(
    trials: pd.DataFrame, pareto: pd.DataFrame, setup: StudySetup, path: Path
) -> None:
    """A static copy of the plot for papers, READMEs and terminals without a browser."""
    points, front = plotted_rows(trials), plotted_rows(pareto)
    colours = _method_colours(trials)
    fig = png_figure()
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
        ax.step(xs, ys, where="post", color=FRONT_COLOUR, linewidth=1.2, zorder=2)
        ax.scatter(
            xs,
            ys,
            s=130,
            facecolors="none",
            edgecolors=FRONT_COLOUR,
            linewidths=1.6,
            label="Pareto front (within budget)",
            zorder=4,
        )
        for x, y, n in zip(xs, ys, front["trial"], strict=True):
            ax.annotate(f"#{n}", (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8)
    ax.axvline(
        setup.budget_params,
        color=BUDGET_COLOUR,
        linestyle="--",
        linewidth=1.8,
        label=budget_label(setup),
        zorder=1,
    )
    chance = chance_level(trials)
    if chance is not None:
        ax.axhline(chance, color=NOTE_COLOUR, linestyle=":", linewidth=1.4, label=CHANCE_LABEL,
                   zorder=1)
    low, high = _x_range(points, setup.budget_params)
    ax.axvspan(setup.budget_params, high, color=BUDGET_COLOUR, alpha=OVER_BUDGET_ALPHA, lw=0)
    ax.text(
        setup.budget_params,
        0.99,
        " over budget",
        transform=ax.get_xaxis_transform(),
        color=BUDGET_COLOUR,
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
            color=NOTE_COLOUR,
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
    save_png(fig, path)


def plotted_rows(frame: pd.DataFrame) -> pd.DataFrame:
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
    return colour_map(str(m) for m in trials["method"] if not fmt.is_missing(m))


def _x_range(points: pd.DataFrame, budget: int) -> tuple[float, float]:
    """Data and budget line both in view, with some margin on the log axis."""
    if points.empty:
        return budget / 10.0, budget * 10.0
    values = [float(budget), *points["stored_params"].astype(float)]
    return min(values) / 2.0, max(values) * 2.0


def hover_text(row: pd.Series, setup: StudySetup) -> str:
    """Everything needed to reproduce a point: outcome, cost, dev score and every knob."""
    lines = [
        f"trial #{row['trial']}",
        f"method: {row['method']}",
        f"score ({setup.primary_metric}): {fmt.score(row['score'])}",
        f"stored: {fmt.count(row['stored_params'])} ({fmt.percent(row['budget_used'])} of budget)",
    ]
    if not fmt.is_missing(row.get(DEV_SCORE)):
        dev = fmt.dev_score(row[DEV_SCORE], row.get(DEV_STD), row.get(DEV_SEEDS, 0))
        lines.append(f"dev score: {dev}")
    lines += [f"{name}: {fmt.knob(v)}" for name, v in sorted(row_knobs(row).items())]
    return "<br>".join(lines)


def budget_label(setup: StudySetup) -> str:
    """`budget 0.5% = 10,000 params`: the spec the user typed and what it resolved to."""
    return f"budget {setup.budget_spec} = {setup.budget_params:,} params"


def short_model(setup: StudySetup) -> str:
    """The model's last path component: `all-MiniLM-L6-v2`."""
    return setup.model.rstrip("/").rsplit("/", 1)[-1]


def _title(setup: StudySetup) -> str:
    return f"{setup.task} / {short_model(setup)}: selection score vs stored parameters"


def _y_label(setup: StudySetup) -> str:
    return f"selection score ({setup.primary_metric})"
