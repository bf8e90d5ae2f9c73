"""A sweep's combined report: many studies (task × budget × model) read as one experiment.

Answers "how does each method family trade score for stored parameters": per task, the best
selection score of each family at each budget of the sweep (like the sparsity curves of the
diff-pruning paper), the winner of every study, and links to each study's own report. The
family comes from each trial's `family` column, so this module never imports the methods (torch).
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import plotly.graph_objects as go
from matplotlib.ticker import NullLocator

from autopeft.report import fmt, page
from autopeft.report.collect import StudyViews, collect
from autopeft.report.files import INDEX_HTML, SUMMARY_MD, atomic_path, write_text_atomic
from autopeft.report.plots import hover_text, short_model
from autopeft.report.style import NOTE_COLOUR, PLOTLY_TEMPLATE, colour_map, png_figure, save_png
from autopeft.report.summary import markdown_table
from autopeft.report.tables import (
    DEV_SCORE,
    DEV_SEEDS,
    DEV_STD,
    FAMILY,
    knob_columns,
    row_knobs,
)
from autopeft.report.views import dev
from autopeft.study import StudySetup

WINNERS_CSV = "winners.csv"
PNG_PREFIX = "score_vs_budget-"
DIV_PREFIX = "score-vs-budget-"
NO_FEASIBLE = "no feasible trial"
X_LABEL = "stored-parameter budget (% of the backbone, log scale)"
# The columns every sweep table shares: which study, and where it sits in the sweep.
STUDY_COLUMNS = ["study", "task", "model", "budget_spec", "budget_params", "budget_percent",
                 "metric"]
# The winning (or family-best) configuration of a study.
POINT_COLUMNS = ["method", FAMILY, "trial", "stored_params", "budget_used", "score", DEV_SCORE,
                 DEV_STD, DEV_SEEDS]
WINNERS_COLUMNS = [*STUDY_COLUMNS, "outcome", *POINT_COLUMNS, "knobs"]
WINNERS_HEADER = ["task", "model", "budget", "best method", "family", "stored params",
                  "% of budget", "selection score", "dev score", "study report"]
WINNERS_NUMERIC = (5, 6, 7, 8)
# One line style and marker per model of a task, in plotly and matplotlib.
_DASHES = ("solid", "dash", "dot", "dashdot", "longdash")
_SYMBOLS = ("circle", "square", "triangle-up", "diamond", "triangle-down")
_MARKERS = ("o", "s", "^", "D", "v")
_NUM_TD = '<td class="num">'  # a right-aligned cell, as page.table writes it
_LINESTYLES = ("-", "--", ":", "-.", (0, (8, 3)))


def build_sweep_report(name: str, studies: list[optuna.Study], report_dirs: list[Path],
                       out_dir: Path) -> Path:
    """Write index.html, summary.md, winners.csv and one PNG per task into `out_dir`.

    `report_dirs[i]` is where study i's own report is; the pages link to it relatively, so the
    reports directory can be moved or zipped as a whole.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = [collect(s) for s in studies]
    links = {d.name: Path(os.path.relpath(Path(r), out_dir)).as_posix()
             for d, r in zip(data, report_dirs, strict=True)}
    curves, winning = best_by_budget(data), winners(data)
    tasks = list(dict.fromkeys(d.setup.task for d in data))
    pngs = png_names(tasks)

    write_text_atomic(out_dir / WINNERS_CSV, winning.to_csv(index=False))
    for task in tasks:
        with atomic_path(out_dir / pngs[task]) as tmp:
            write_score_png(curves, data, task, tmp)
    write_text_atomic(out_dir / INDEX_HTML, _render_index(name, data, curves, winning, links,
                                                          pngs))
    # The summary last: it points at the other files, so it should only appear once they exist.
    write_text_atomic(out_dir / SUMMARY_MD, _render_summary(name, data, curves, winning, links,
                                                            pngs))
    return out_dir


def budget_percent(views: StudyViews) -> float:
    """The study's budget as % of its backbone, to 3 significant digits.

    Rounded so that one budget spec (0.1%) lands on one x position for every model, although
    each model's budget is a whole number of parameters.
    """
    setup = views.setup
    if setup.backbone_params <= 0 or setup.budget_params <= 0:
        return math.nan
    return float(f"{100 * setup.budget_params / setup.backbone_params:.3g}")


def best_by_budget(data: list[StudyViews]) -> pd.DataFrame:
    """Each family's best feasible trial per (task, model, budget): the curves' points.

    Read from each study's best per method (COMPLETE, within budget, ties: fewer stored
    params), so a family's point is the best configuration of any of its methods. Two studies
    at the same (task, model, budget) share a point: the better one. Sorted by task and model
    in sweep order, then family and budget; the knob columns of every method follow.
    """
    frames = [
        _with_study(d.best.assign(**{FAMILY: _family(d.best)}), d)
        for d in data if not d.best.empty
    ]
    if not frames:
        return pd.DataFrame(columns=[*STUDY_COLUMNS, *POINT_COLUMNS])
    frame = pd.concat(frames, ignore_index=True)
    ranked = frame.sort_values(["score", "stored_params"], ascending=[False, True],
                               kind="stable")
    best = ranked.drop_duplicates(["task", "model", "budget_percent", FAMILY])
    ordered = _sweep_order(best, data, [FAMILY, "budget_percent"])
    knobs = [c for c in knob_columns(ordered) if c not in STUDY_COLUMNS]
    return ordered[[*STUDY_COLUMNS, *POINT_COLUMNS, *knobs]]


def winners(data: list[StudyViews]) -> pd.DataFrame:
    """One row per study: its best feasible trial, or the outcome `no feasible trial`."""
    rows = []
    for d in data:
        study = _study_values(d)
        if d.best.empty:
            rows.append({**study, "outcome": NO_FEASIBLE})
            continue
        top = d.best.iloc[0]  # best_per_method: best score first, ties: fewer stored params
        point = {c: top.get(c) for c in POINT_COLUMNS}
        point[FAMILY] = _family(d.best).iloc[0]
        rows.append({**study, "outcome": "ok", **point, "knobs": fmt.knobs(row_knobs(top))})
    frame = pd.DataFrame(rows, columns=WINNERS_COLUMNS)
    frame = frame.astype({"trial": "Int64", "stored_params": "Int64", DEV_SEEDS: "Int64",
                          "budget_params": "Int64"})
    return _sweep_order(frame, data, [])


def png_names(tasks: list[str]) -> dict[str, str]:
    """`score_vs_budget-mrpc-shuffled.png`: each task's PNG, file-name safe and distinct."""
    names: dict[str, str] = {}
    for task in tasks:
        stem = f"{PNG_PREFIX}{_slug(task)}"
        candidate, n = stem, 1
        while f"{candidate}.png" in names.values():
            n += 1
            candidate = f"{stem}-{n}"
        names[task] = f"{candidate}.png"
    return names


def figure_div(png: str) -> str:
    """The id of a task's figure on the page: `score-vs-budget-mrpc-shuffled`, as its PNG."""
    return DIV_PREFIX + png.removeprefix(PNG_PREFIX).removesuffix(".png")


def score_figure(curves: pd.DataFrame, data: list[StudyViews], task: str) -> go.Figure:
    """One task: best score per family (colour) and model (dash) at each budget of the sweep."""
    budgets, labels = _budget_ticks(data)
    families = colour_map(str(f) for f in curves[FAMILY])
    setups = {d.name: d.setup for d in data}
    fig = go.Figure()
    for family, line, style in _lines(curves, task):
        fig.add_trace(go.Scatter(
            x=line["budget_percent"],
            y=line["score"],
            mode="lines+markers",
            name=_line_label(family, line, style, setups),
            legendgroup=family,
            line={"color": families[family], "width": 2,
                  "dash": _DASHES[(style or 0) % len(_DASHES)]},
            marker={"size": 9, "color": families[family],
                    "symbol": _SYMBOLS[(style or 0) % len(_SYMBOLS)]},
            text=[_hover(row, setups[row["study"]]) for _, row in line.iterrows()],
            hovertemplate="%{text}<extra></extra>",
        ))
    if not fig.data:
        fig.add_annotation(x=0.5, y=0.5, xref="paper", yref="paper", text=NO_FEASIBLE,
                           showarrow=False, font={"size": 18, "color": NOTE_COLOUR})
    fig.update_layout(
        title=f"{task}: best selection score per method family vs budget",
        xaxis={"type": "log", "title": X_LABEL, "tickvals": budgets, "ticktext": labels,
               "range": _log_range(budgets)},
        yaxis={"title": _y_label(data, task)},
        legend={"title": "method family"},
        template=PLOTLY_TEMPLATE,
        hovermode="closest",
    )
    return fig


def write_score_png(curves: pd.DataFrame, data: list[StudyViews], task: str, path: Path) -> None:
    """The task's score-versus-budget figure as a static image."""
    budgets, labels = _budget_ticks(data)
    families = colour_map(str(f) for f in curves[FAMILY])
    setups = {d.name: d.setup for d in data}
    fig = png_figure(width=9, height=5.5)
    ax = fig.add_subplot()
    for family, line, style in _lines(curves, task):
        ax.plot(line["budget_percent"], line["score"], color=families[family],
                marker=_MARKERS[(style or 0) % len(_MARKERS)],
                linestyle=_LINESTYLES[(style or 0) % len(_LINESTYLES)], linewidth=1.8,
                label=_line_label(family, line, style, setups))
    if not ax.lines:
        ax.text(0.5, 0.5, NO_FEASIBLE, transform=ax.transAxes, ha="center", va="center",
                fontsize=14, color=NOTE_COLOUR)
    ax.set_xscale("log")
    if budgets:
        low, high = _log_range(budgets)
        ax.set_xlim(10 ** low, 10 ** high)
        ax.set_xticks(budgets, labels)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(_y_label(data, task))
    ax.set_title(f"{task}: best selection score per method family vs budget", fontsize=11)
    ax.grid(True, alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.9, title="method family")
    save_png(fig, path)


def _lines(curves: pd.DataFrame, task: str) -> Iterator[tuple[str, pd.DataFrame, int | None]]:
    """(family, its points by budget, model index) for each of one task's lines.

    The model index picks the line style; it is None when the task has one model, whose lines
    are solid and named by the family alone.
    """
    points = curves[(curves["task"] == task) & curves["budget_percent"].notna()]
    models = list(dict.fromkeys(points["model"]))
    for (family, model), line in points.groupby([FAMILY, "model"], sort=False):
        style = models.index(model) if len(models) > 1 else None
        yield str(family), line.sort_values("budget_percent"), style


def _line_label(family: str, line: pd.DataFrame, style: int | None,
                setups: dict[str, StudySetup]) -> str:
    """The family, and the model too when the task has several."""
    if style is None:
        return family
    return f"{family} ({short_model(setups[line['study'].iloc[0]])})"


def _hover(row: pd.Series, setup: StudySetup) -> str:
    return f"<b>{row[FAMILY]}</b> at budget {setup.budget_spec}<br>{hover_text(row, setup)}"


def _budget_ticks(data: list[StudyViews]) -> tuple[list[float], list[str]]:
    """Every budget of the sweep (one x position each) and its label: the spec when shared."""
    specs: dict[float, set[str]] = {}
    for d in data:
        x = budget_percent(d)
        if not math.isnan(x):
            specs.setdefault(x, set()).add(d.setup.budget_spec.strip())
    budgets = sorted(specs)
    labels = [next(iter(specs[x])) if len(specs[x]) == 1 and next(iter(specs[x])).endswith("%")
              else f"{x:g}%" for x in budgets]
    return budgets, labels


def _log_range(budgets: list[float]) -> list[float]:
    if not budgets:
        return [-2.0, 1.0]
    return [math.log10(min(budgets) / 1.5), math.log10(max(budgets) * 1.5)]


def _y_label(data: list[StudyViews], task: str) -> str:
    metrics = sorted({d.setup.primary_metric for d in data if d.setup.task == task})
    return f"best selection score ({' / '.join(metrics)})"


def _family(best: pd.DataFrame) -> pd.Series:
    """The rows' family; the method itself where none was recorded."""
    family = best[FAMILY] if FAMILY in best else pd.Series(None, index=best.index, dtype=object)
    return family.where(family.notna(), best["method"]).astype(str)


def _study_values(d: StudyViews) -> dict:
    setup = d.setup
    return {"study": d.name, "task": setup.task, "model": setup.model,
            "budget_spec": setup.budget_spec, "budget_params": setup.budget_params,
            "budget_percent": budget_percent(d), "metric": setup.primary_metric}


def _with_study(frame: pd.DataFrame, d: StudyViews) -> pd.DataFrame:
    return frame.assign(**_study_values(d))


def _sweep_order(frame: pd.DataFrame, data: list[StudyViews], then: list[str]) -> pd.DataFrame:
    """Tasks and models in the order the sweep lists them, then `then`, budget and study."""
    tasks = {t: i for i, t in enumerate(dict.fromkeys(d.setup.task for d in data))}
    models = {m: i for i, m in enumerate(dict.fromkeys(d.setup.model for d in data))}
    keyed = frame.assign(_task=frame["task"].map(tasks), _model=frame["model"].map(models))
    keys = ["_task", "_model", *then, *(k for k in ("budget_percent", "study") if k not in then)]
    ordered = keyed.sort_values(keys, kind="stable").drop(columns=["_task", "_model"])
    return ordered.reset_index(drop=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "task"


def _winner_cells(row: pd.Series) -> tuple[str, ...]:
    """A winners row's cells without the study report (HTML and Markdown link it differently)."""
    budget = f"{row['budget_spec']} ({fmt.count(row['budget_params'])} params)"
    model = row["model"].rstrip("/").rsplit("/", 1)[-1]
    if row["outcome"] != "ok":
        return (row["task"], model, budget, NO_FEASIBLE, *[fmt.MISSING] * 5)
    return (row["task"], model, budget, str(row["method"]), str(row[FAMILY]),
            fmt.count(row["stored_params"]), fmt.percent(row["budget_used"]),
            fmt.score(row["score"]), dev(row))


def _curve_table(curves: pd.DataFrame, data: list[StudyViews],
                 task: str) -> tuple[list[str], list[tuple[str, ...]]]:
    """The figure's numbers: one row per line, one column per budget of the sweep."""
    budgets, labels = _budget_ticks(data)
    setups = {d.name: d.setup for d in data}
    rows = []
    for family, line, style in _lines(curves, task):
        scores = dict(zip(line["budget_percent"], line["score"], strict=True))
        rows.append((_line_label(family, line, style, setups),
                     *(fmt.score(scores.get(x)) for x in budgets)))
    return ["method family", *labels], rows


def _links_table(winning: pd.DataFrame, links: dict[str, str]) -> str:
    """The winners table in HTML, its last cell a link to the study's own report."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in WINNERS_HEADER)
    body = []
    for _, row in winning.iterrows():
        cells = "".join(f"{_NUM_TD if i in WINNERS_NUMERIC else '<td>'}{html.escape(v)}</td>"
                        for i, v in enumerate(_winner_cells(row)))
        own = page.link(f"{links[row['study']]}/{INDEX_HTML}", row["study"])
        body.append(f"<tr>{cells}<td>{own}</td></tr>")
    rows = "\n".join(body)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def _overview(data: list[StudyViews]) -> str:
    tasks = ", ".join(dict.fromkeys(d.setup.task for d in data))
    models = ", ".join(dict.fromkeys(d.setup.model for d in data))
    budgets = ", ".join(_budget_ticks(data)[1])
    return (f"{len(data)} studies. Tasks: {tasks}. Models: {models}. Budgets (% of the "
            f"backbone): {budgets}.")


def _render_index(name: str, data: list[StudyViews], curves: pd.DataFrame,
                  winning: pd.DataFrame, links: dict[str, str], pngs: dict[str, str]) -> str:
    plots = [page.paragraph(
        "Per task, the best selection score (each study's primary metric on its selection "
        "split) of each method family at each budget: the best configuration of any of the "
        "family's methods within that budget. Hover a point for its configuration.")]
    for task in pngs:
        header, rows = _curve_table(curves, data, task)
        plots += [page.heading(task),
                  page.figure(score_figure(curves, data, task), figure_div(pngs[task]))]
        plots.append(page.table(header, rows, numeric=tuple(range(1, len(header))))
                     if rows else page.paragraph(f"{task}: {NO_FEASIBLE} in any study.",
                                                 note=True))
    own = [(f"{links[d.name]}/{INDEX_HTML}", f"{d.name}: its own report") for d in data]
    files = [(SUMMARY_MD, f"{SUMMARY_MD}: this report in Markdown, ready to paste into a PR"),
             (WINNERS_CSV, f"{WINNERS_CSV}: each study's best trial")]
    files += [(png, f"{png}: {task}, score versus budget") for task, png in pngs.items()]
    sections = [
        ("overview", "Sweep", page.paragraph(_overview(data))),
        ("score-vs-budget", "Score versus budget", "\n".join(plots)),
        ("winners", "Winners (best within each study's budget)", _links_table(winning, links)),
        ("reports", "Each study's report", page.links(own)),
        ("files", "Files", page.links(files)),
    ]
    return page.render_page(f"AutoPEFT sweep: {name}", sections)


def _render_summary(name: str, data: list[StudyViews], curves: pd.DataFrame,
                    winning: pd.DataFrame, links: dict[str, str], pngs: dict[str, str]) -> str:
    rows = [(*_winner_cells(row), f"[{row['study']}]({links[row['study']]}/{SUMMARY_MD})")
            for _, row in winning.iterrows()]
    parts = [f"# AutoPEFT sweep: {name}", _overview(data),
             "## Winners (best within each study's budget)\n\n"
             + markdown_table(WINNERS_HEADER, rows),
             "## Score versus budget\n\nBest selection score of each method family per budget."]
    for task, png in pngs.items():
        header, curve_rows = _curve_table(curves, data, task)
        table = markdown_table(header, curve_rows) if curve_rows else f"{NO_FEASIBLE} in any study."
        parts.append(f"### {task}\n\n{table}\n\n![{task}: score versus budget]({png})")
    parts.append(f"## Files\n\n- `{INDEX_HTML}`: this report as one interactive page (opens "
                 f"offline)\n- `{WINNERS_CSV}`: each study's best trial\n"
                 + "\n".join(f"- `{png}`: {task}, score versus budget"
                             for task, png in pngs.items()))
    return "\n\n".join(parts) + "\n"
