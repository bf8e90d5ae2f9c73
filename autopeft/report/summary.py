"""The report's front page: what was searched, how trials ended, and the best configurations."""

from __future__ import annotations

import optuna
import pandas as pd

from autopeft.report import fmt, views
from autopeft.report.files import FIGURES, REPORT_FILES
from autopeft.report.tables import (
    DEV_NOTE,
    DEV_SEEDS,
    STATE_INFEASIBLE,
    best_per_method,
    row_knobs,
)
from autopeft.study import StudySetup, final_runs, study_setup


def render_summary(study: optuna.Study, trials: pd.DataFrame, pareto: pd.DataFrame,
                   best: pd.DataFrame | None = None) -> str:
    """Markdown that a reader can act on without opening the CSVs, and paste into a PR."""
    setup = study_setup(study)
    best = best_per_method(study) if best is None else best
    sections = [
        f"# AutoPEFT report: {study.study_name}",
        markdown_table(views.SETUP_HEADER, views.setup_rows(setup)),
        *filter(None, [views.dropped_rows_note(setup)]),
        _trial_counts(trials),
        _best(pareto, setup),
        _front_table(pareto),
        _best_per_method(best),
        _figures(),
        _files(),
        _dev_note(study, pareto),
    ]
    return "\n\n".join(sections) + "\n"


def _trial_counts(trials: pd.DataFrame) -> str:
    counts = trials["state"].value_counts()
    infeasible = int(counts.get(STATE_INFEASIBLE, 0))
    lines = [
        "## Trials",
        f"{len(trials)} trials in total.",
        markdown_table(views.STATE_HEADER, views.state_rows(trials)),
        f"{infeasible} candidate{'s were' if infeasible != 1 else ' was'} infeasible "
        "(over the stored-parameter budget, or storing nothing beyond the task head) and never "
        "trained.",
    ]
    return "\n\n".join(lines)


def _best(pareto: pd.DataFrame, setup: StudySetup) -> str:
    if pareto.empty:
        return "## Best selection score\n\nNo completed trial within the budget yet."
    row = pareto.loc[pareto["score"].idxmax()]
    text = (
        f"Trial #{row['trial']} ({row['method']}) reached a selection {setup.primary_metric} "
        f"of **{fmt.score(row['score'])}** with {fmt.count(row['stored_params'])} stored "
        f"parameters ({fmt.percent(row['budget_used'])} of the budget); "
        f"dev score {views.dev(row)}.\n\n"
        f"Knobs: {fmt.knobs(row_knobs(row))}."
    )
    return f"## Best selection score\n\n{text}"


def _front_table(pareto: pd.DataFrame) -> str:
    title = "## Pareto front (within budget, cheapest first)"
    if pareto.empty:
        return f"{title}\n\nEmpty: no completed trial within the budget yet."
    return f"{title}\n\n{markdown_table(*views.front_table(pareto))}"


def _best_per_method(best: pd.DataFrame) -> str:
    title = "## Best per method (within budget)"
    if best.empty:
        return f"{title}\n\nNo completed trial within the budget yet."
    return f"{title}\n\n{markdown_table(*views.best_table(best))}"


def _figures() -> str:
    images = [f"**{caption}**\n\n![{caption}]({name})" for name, caption in FIGURES.items()]
    return "## Figures\n\n" + "\n\n".join(images)


def _files() -> str:
    lines = [f"- `{name}`: {what}" for name, what in REPORT_FILES.items()]
    return "## Files\n\n" + "\n".join(lines)


def _dev_note(study: optuna.Study, pareto: pd.DataFrame) -> str:
    text = (
        "## About the dev set\n\n"
        "The search and the Pareto front use only the selection split (held out from the "
        "training data). The dev set was used only to report the Pareto points above, never to "
        "choose them, so the dev scores are not inflated by the search."
    )
    seeds = pareto[DEV_SEEDS].fillna(0)
    points = final_runs(study)
    retrained = [points[int(n)] for n, k in zip(pareto["trial"], seeds, strict=True)
                 if k > 0 and int(n) in points]
    if retrained:
        fidelity = "; ".join(sorted({
            f"{p['train_samples']:,} examples, {p['epochs']} epoch(s), batch size {p['batch_size']}"
            for p in retrained}))
        text += (
            "\n\nEach point with K seeds was retrained from scratch on the full training data "
            f"(train + selection split; {fidelity}) once per seed, and each run was scored on "
            "dev: the dev column is the mean ± sample standard deviation over the K runs "
            "(`pareto.csv` has each seed's score). The selection score is the search's own "
            "trial, trained without the selection split."
        )
    unscored = (pareto[DEV_NOTE].notna() if DEV_NOTE in pareto
                else pd.Series(False, index=pareto.index))
    if ((seeds == 0) & ~unscored).any():
        text += ("\n\nA dev score without K is the search trial's own artifact evaluated on "
                 "dev (`--final-seeds 0`).")
    if unscored.any():
        count = int(unscored.sum())
        text += (
            f"\n\n{count} Pareto point{'s' if count != 1 else ''} scored at or below chance "
            "on the selection split (no better than always answering one label): "
            f"{'they' if count != 1 else 'it'} learned nothing, so the final runs did not "
            "retrain " + ("them" if count != 1 else "it") + " (`at chance: not retrained`)."
        )
    return text


def markdown_table(header: list[str], rows: list[tuple[str, ...]]) -> str:
    """A GitHub-flavoured Markdown table; pipes inside cells are escaped."""
    lines = [_row(header), _row(["---"] * len(header))]
    lines += [_row(list(r)) for r in rows]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
