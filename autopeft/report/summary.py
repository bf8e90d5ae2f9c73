"""The report's front page: what was searched, how trials ended, and the best configurations."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

from autopeft.report import fmt
from autopeft.report.files import REPORT_FILES
from autopeft.report.tables import DEV_SCORE, STATE_INFEASIBLE, row_knobs
from autopeft.study import StudySetup, study_setup

# Every state a trial row can have, in reading order, with what it means for the user.
STATE_MEANINGS: dict[str, str] = {
    TrialState.COMPLETE.name: "trained and evaluated",
    TrialState.PRUNED.name: "stopped early by the pruner",
    STATE_INFEASIBLE: "over the budget, never trained",
    TrialState.FAIL.name: "crashed or interrupted",
    TrialState.RUNNING.name: "still running",
    TrialState.WAITING.name: "queued",
}


def render_summary(study: optuna.Study, trials: pd.DataFrame, pareto: pd.DataFrame) -> str:
    """Markdown that a reader can act on without opening the CSVs."""
    setup = study_setup(study)
    sections = [
        f"# AutoPEFT report: {study.study_name}",
        _setup_table(setup),
        _trial_counts(trials),
        _best(pareto, setup),
        _front_table(pareto),
        _files(),
        _dev_note(),
    ]
    return "\n\n".join(sections) + "\n"


def _setup_table(setup: StudySetup) -> str:
    share = setup.budget_params / setup.backbone_params if setup.backbone_params else None
    budget = (
        f"`{setup.budget_spec}` = {fmt.count(setup.budget_params)} stored parameters "
        f"({fmt.percent(share, 3)} of {fmt.count(setup.backbone_params)} backbone parameters)"
    )
    rows = [
        ("Task", setup.task),
        ("Model", setup.model),
        ("Budget", budget),
        ("Primary metric", setup.primary_metric),
        ("Methods searched", ", ".join(setup.methods) or fmt.MISSING),
        ("Data source", setup.data_source or fmt.MISSING),
        ("Selection split", f"{fmt.percent(setup.selection_fraction)} of the training data"),
        ("Epochs per trial", str(setup.epochs)),
        ("Seed", str(setup.seed)),
    ]
    return _table(["setting", "value"], rows)


def _trial_counts(trials: pd.DataFrame) -> str:
    counts = trials["state"].value_counts()
    states = [*STATE_MEANINGS, *sorted(set(counts.index) - set(STATE_MEANINGS))]
    rows = [(s, STATE_MEANINGS.get(s, ""), str(int(counts.get(s, 0)))) for s in states]
    infeasible = int(counts.get(STATE_INFEASIBLE, 0))
    lines = [
        "## Trials",
        f"{len(trials)} trials in total.",
        _table(["state", "meaning", "trials"], rows),
        f"{infeasible} candidate{'s were' if infeasible != 1 else ' was'} infeasible "
        "(over the stored-parameter budget) and never trained.",
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
        f"dev score {fmt.score(row[DEV_SCORE])}.\n\n"
        f"Knobs: {fmt.knobs(row_knobs(row))}."
    )
    return f"## Best selection score\n\n{text}"


def _front_table(pareto: pd.DataFrame) -> str:
    title = "## Pareto front (within budget, cheapest first)"
    if pareto.empty:
        return f"{title}\n\nEmpty: no completed trial within the budget yet."
    header = [
        "trial",
        "method",
        "stored params",
        "% of budget",
        "selection score",
        "dev score",
        "key knobs",
    ]
    rows = [
        (
            f"#{row['trial']}",
            str(row["method"]),
            fmt.count(row["stored_params"]),
            fmt.percent(row["budget_used"]),
            fmt.score(row["score"]),
            fmt.score(row[DEV_SCORE]),
            fmt.knobs(row_knobs(row)),
        )
        for _, row in pareto.iterrows()
    ]
    return f"{title}\n\n{_table(header, rows)}"


def _files() -> str:
    lines = [f"- `{name}`: {what}" for name, what in REPORT_FILES.items()]
    return "## Files\n\n" + "\n".join(lines)


def _dev_note() -> str:
    return (
        "## About the dev set\n\n"
        "The search and the Pareto front use only the selection split (held out from the "
        "training data). The dev set was used only to report the Pareto points above, never to "
        "choose them, so the dev scores are not inflated by the search."
    )


def _table(header: list[str], rows: list[tuple[str, ...]]) -> str:
    lines = [_row(header), _row(["---"] * len(header))]
    lines += [_row(list(r)) for r in rows]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
