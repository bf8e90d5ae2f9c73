"""The report's front page: what was searched, how trials ended, and the best configurations."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

from autopeft.report import fmt
from autopeft.report.files import REPORT_FILES
from autopeft.report.tables import (
    DEV_SCORE,
    DEV_SEEDS,
    DEV_STD,
    STATE_INFEASIBLE,
    row_knobs,
)
from autopeft.study import StudySetup, final_runs, study_setup

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
        _dev_note(study, pareto),
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
        f"dev score {_dev(row)}.\n\n"
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
        "dev score (mean ± std, K seeds)" if (pareto[DEV_SEEDS] > 0).any() else "dev score",
        "key knobs",
    ]
    rows = [
        (
            f"#{row['trial']}",
            str(row["method"]),
            fmt.count(row["stored_params"]),
            fmt.percent(row["budget_used"]),
            fmt.score(row["score"]),
            _dev(row),
            fmt.knobs(row_knobs(row)),
        )
        for _, row in pareto.iterrows()
    ]
    return f"{title}\n\n{_table(header, rows)}"


def _files() -> str:
    lines = [f"- `{name}`: {what}" for name, what in REPORT_FILES.items()]
    return "## Files\n\n" + "\n".join(lines)


def _dev(row: pd.Series) -> str:
    return fmt.dev_score(row[DEV_SCORE], row.get(DEV_STD), row.get(DEV_SEEDS, 0))


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
    if (seeds == 0).any() and not pareto.empty:
        text += ("\n\nA dev score without K is the search trial's own artifact evaluated on "
                 "dev (`--final-seeds 0`).")
    return text


def _table(header: list[str], rows: list[tuple[str, ...]]) -> str:
    lines = [_row(header), _row(["---"] * len(header))]
    lines += [_row(list(r)) for r in rows]
    return "\n".join(lines)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
