"""Several studies (tasks, models, budgets) side by side: one page, one plot, one table.

Answers "which method wins where": every study's feasible front on one score-vs-stored-params
plot (one colour per study, each with its own budget line), each study's best point per method,
and links to each study's own report.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import optuna
import pandas as pd
import plotly.graph_objects as go

from autopeft.report import fmt, page, views
from autopeft.report.collect import StudyViews, collect
from autopeft.report.files import INDEX_HTML, SUMMARY_MD, atomic_path, write_text_atomic
from autopeft.report.plots import budget_label, hover_text, plotted_rows, short_model
from autopeft.report.style import PLOTLY_TEMPLATE, colour_map, png_figure, save_png
from autopeft.report.summary import markdown_table

FRONTS_PNG = "fronts.png"
BEST_CSV = "best_per_method.csv"
FRONTS_DIV = "fronts-plot"
TITLE = "Pareto fronts: selection score vs stored parameters"
Y_LABEL = "selection score (each study's primary metric)"
X_LABEL = "stored parameters (log scale)"
STUDIES_HEADER = ["study", "task", "model", "budget", "metric", "trials", "Pareto points",
                  "hypervolume"]
_MAX_NAME = 120  # directory names past this get a hash instead of the full list


def comparison_name(names: list[str]) -> str:
    """`compare-a-vs-b`: readable, and stable for the same studies in the same order."""
    name = "compare-" + "-vs-".join(names)
    if len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:10]
    return f"{name[:_MAX_NAME - 11]}-{digest}"


def build_comparison(studies: list[optuna.Study], report_dirs: list[Path], out_dir: Path) -> Path:
    """Write index.html, summary.md, fronts.png and best_per_method.csv into `out_dir`.

    `report_dirs[i]` is where study i's own report is; the pages link to it relatively, so the
    reports directory can be moved or zipped as a whole.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = [collect(s) for s in studies]
    links = [Path(os.path.relpath(Path(d), out_dir)).as_posix() for d in report_dirs]
    colours = colour_map(d.name for d in data)

    write_text_atomic(out_dir / BEST_CSV, _best_frame(data).to_csv(index=False))
    with atomic_path(out_dir / FRONTS_PNG) as tmp:
        write_fronts_png(data, colours, tmp)
    write_text_atomic(out_dir / INDEX_HTML, _render_index(data, links, colours))
    write_text_atomic(out_dir / SUMMARY_MD, _render_summary(data, links))
    return out_dir


def fronts_figure(data: list[StudyViews], colours: dict[str, str]) -> go.Figure:
    """Every study's feasible front and budget line, one colour per study; hover: the config."""
    fig = go.Figure()
    for study in data:
        front, colour = plotted_rows(study.pareto), colours[study.name]
        fig.add_trace(go.Scatter(
            x=front["stored_params"].astype(float),
            y=front["score"],
            mode="lines+markers",
            line={"shape": "hv", "color": colour, "width": 2},
            marker={"size": 10, "color": colour},
            name=_legend(study),
            text=[f"<b>{study.name}</b><br>{hover_text(row, study.setup)}"
                  for _, row in front.iterrows()],
            hovertemplate="%{text}<extra></extra>",
        ))
        fig.add_shape(type="line", xref="x", yref="paper", x0=study.setup.budget_params,
                      x1=study.setup.budget_params, y0=0, y1=1,
                      line={"color": colour, "dash": "dash", "width": 1.5})
    fig.update_layout(
        title=TITLE,
        xaxis={"type": "log", "title": X_LABEL, "range": _log_range(data)},
        yaxis={"title": Y_LABEL},
        legend={"title": "study (dashed: its budget)"},
        template=PLOTLY_TEMPLATE,
        hovermode="closest",
    )
    return fig


def _log_range(data: list[StudyViews]) -> list[float]:
    """Every front and every budget line in view, with a margin (log10 units, as plotly wants)."""
    values = [float(v) for d in data for v in plotted_rows(d.pareto)["stored_params"]]
    values += [float(d.setup.budget_params) for d in data]
    return [math.log10(min(values) / 1.5), math.log10(max(values) * 1.5)]


def write_fronts_png(data: list[StudyViews], colours: dict[str, str], path: Path) -> None:
    """The comparison plot as a static image."""
    fig = png_figure(width=10, height=6)
    ax = fig.add_subplot()
    for study in data:
        front, colour = plotted_rows(study.pareto), colours[study.name]
        if not front.empty:
            ax.step(front["stored_params"].astype(float), front["score"], where="post",
                    color=colour, marker="o", linewidth=1.8, label=_legend(study))
        ax.axvline(study.setup.budget_params, color=colour, linestyle="--", linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    ax.set_title(f"{TITLE}\n(dashed: each study's budget)", fontsize=11)
    ax.grid(True, which="both", alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    save_png(fig, path)


def _legend(study: StudyViews) -> str:
    setup = study.setup
    return f"{study.name} ({setup.task}, {short_model(setup)}, {setup.budget_spec})"


def _study_rows(data: list[StudyViews]) -> views.Rows:
    return [
        (d.name, d.setup.task, d.setup.model, budget_label(d.setup).removeprefix("budget "),
         d.setup.primary_metric, str(len(d.trials)), str(len(d.pareto)),
         fmt.score(d.curve["hypervolume"].iloc[-1] if not d.curve.empty else 0.0))
        for d in data
    ]


def _best_rows(data: list[StudyViews]) -> tuple[list[str], views.Rows]:
    """Each study's best-per-method rows, the study's name in front."""
    header = views.best_table(pd.DataFrame())[0]  # plain "dev score": K shows in each cell
    rows = [(study.name, *row) for study in data for row in views.best_table(study.best)[1]]
    return ["study", *header], rows


def _best_frame(data: list[StudyViews]) -> pd.DataFrame:
    """Each study's best trial per method, the study's name in front (the CSV)."""
    frames = [study.best.assign(study=study.name) for study in data]
    frame = pd.concat([f for f in frames if not f.empty] or [pd.DataFrame({"study": []})])
    return frame[["study", *(c for c in frame.columns if c != "study")]]


def _render_index(data: list[StudyViews], links: list[str], colours: dict[str, str]) -> str:
    header, rows = _best_rows(data)
    numeric = tuple(i + 1 for i in views.BEST_NUMERIC)
    own_reports = [(f"{link}/{INDEX_HTML}", f"{d.name}: its own report")
                   for d, link in zip(data, links, strict=True)]
    sections = [
        ("studies", "Studies", page.table(STUDIES_HEADER, _study_rows(data), numeric=(5, 6, 7))),
        ("fronts", "Pareto fronts", "\n".join([
            page.paragraph("Each study's Pareto front within its budget (dashed line, same "
                           "colour). Scores are each study's own primary metric on its "
                           "selection split: compare methods within a task, trends across."),
            page.figure(fronts_figure(data, colours), FRONTS_DIV),
        ])),
        ("best-per-method", "Best per method (within each study's budget)",
         page.table(header, rows, numeric=numeric)),
        ("reports", "Each study's report", page.links(own_reports)),
    ]
    return page.render_page(f"AutoPEFT comparison: {', '.join(d.name for d in data)}", sections)


def _render_summary(data: list[StudyViews], links: list[str]) -> str:
    studies = [(f"[{row[0]}]({link}/{SUMMARY_MD})", *row[1:])
               for row, link in zip(_study_rows(data), links, strict=True)]
    parts = [
        f"# AutoPEFT comparison: {', '.join(d.name for d in data)}",
        markdown_table(STUDIES_HEADER, studies),
        f"## Pareto fronts\n\n![{TITLE}]({FRONTS_PNG})",
        "## Best per method (within each study's budget)\n\n" + markdown_table(*_best_rows(data)),
        f"## Files\n\n- `{INDEX_HTML}`: this comparison as one interactive page (opens offline)\n"
        f"- `{FRONTS_PNG}`: the fronts as a static image\n"
        f"- `{BEST_CSV}`: each study's best trial per method",
    ]
    return "\n\n".join(parts) + "\n"
