"""The report's tables as rows of formatted text, shared by summary.md and index.html.

Both files show the same setup, front and best-per-method tables; building the cells once keeps
them from drifting apart. Each function returns (header, rows).
"""

from __future__ import annotations

import pandas as pd
from optuna.trial import TrialState

from autopeft.report import fmt
from autopeft.report.tables import (
    DEV_NOTE,
    DEV_SCORE,
    DEV_SEEDS,
    DEV_STD,
    STATE_INFEASIBLE,
    row_knobs,
)
from autopeft.study import StudySetup

Rows = list[tuple[str, ...]]

SETUP_HEADER = ["setting", "value"]
STATE_HEADER = ["state", "meaning", "trials"]
# Every state a trial row can have, in reading order, with what it means for the user.
STATE_MEANINGS: dict[str, str] = {
    TrialState.COMPLETE.name: "trained and evaluated",
    TrialState.PRUNED.name: "stopped early by the pruner",
    STATE_INFEASIBLE: "over the budget, never trained",
    TrialState.FAIL.name: "crashed or interrupted",
    TrialState.RUNNING.name: "still running",
    TrialState.WAITING.name: "queued",
}
# Column indices holding numbers, right-aligned in HTML.
FRONT_NUMERIC = (2, 3, 4, 5)
BEST_NUMERIC = (2, 3, 4, 5)


def setup_rows(setup: StudySetup) -> Rows:
    """What was searched: task, model, budget (spec, count, share), metric, protocol."""
    share = setup.budget_params / setup.backbone_params if setup.backbone_params else None
    budget = (
        f"{setup.budget_spec} = {fmt.count(setup.budget_params)} stored parameters "
        f"({fmt.percent(share, 3)} of {fmt.count(setup.backbone_params)} backbone parameters)"
    )
    task = setup.task
    if setup.task_spec:  # a custom task: its problem type (its files are in Data source)
        task = f"{task} (own data, {setup.task_spec.get('problem_type', 'custom')})"
    return [
        ("Task", task),
        ("Model", setup.model),
        ("Budget", budget),
        ("Primary metric", setup.primary_metric),
        ("Methods searched", ", ".join(setup.methods) or fmt.MISSING),
        ("Data source", setup.data_source or fmt.MISSING),
        ("Selection split", f"{fmt.percent(setup.selection_fraction)} of the training data"),
        ("Epochs per trial", str(setup.epochs)),
        ("Seed", str(setup.seed)),
    ]


def dropped_rows_note(setup: StudySetup) -> str | None:
    """`3 invalid rows dropped from train, 0 from dev (--drop-invalid-rows)`; None when the
    study was not run with that flag (then no row was dropped: an invalid one is an error)."""
    dropped = setup.dropped_rows
    if dropped is None:
        return None
    train = int(dropped.get("train", 0))
    return (f"{train} invalid row{'' if train == 1 else 's'} dropped from train, "
            f"{int(dropped.get('dev', 0))} from dev (--drop-invalid-rows)")


def state_rows(trials: pd.DataFrame) -> Rows:
    """How many trials ended in each state, every known state listed (zeros too)."""
    counts = trials["state"].value_counts()
    states = [*STATE_MEANINGS, *sorted(set(counts.index) - set(STATE_MEANINGS))]
    return [(s, STATE_MEANINGS.get(s, ""), str(int(counts.get(s, 0)))) for s in states]


def front_table(pareto: pd.DataFrame) -> tuple[list[str], Rows]:
    """The Pareto points, cheapest first, with selection and dev scores and their knobs."""
    header = ["trial", "method", "stored params", "% of budget", "selection score",
              _dev_header(pareto), "key knobs"]
    rows = [
        (f"#{row['trial']}", str(row["method"]), fmt.count(row["stored_params"]),
         fmt.percent(row["budget_used"]), fmt.score(row["score"]), dev(row),
         fmt.knobs(row_knobs(row)))
        for _, row in pareto.iterrows()
    ]
    return header, rows


def best_table(best: pd.DataFrame) -> tuple[list[str], Rows]:
    """Each method's best trial within the budget, best score first."""
    header = ["method", "trial", "selection score", _dev_header(best), "stored params",
              "% of budget", "knobs"]
    rows = [
        (str(row["method"]), f"#{row['trial']}", fmt.score(row["score"]), dev(row),
         fmt.count(row["stored_params"]), fmt.percent(row["budget_used"]),
         fmt.knobs(row_knobs(row)))
        for _, row in best.iterrows()
    ]
    return header, rows


def dev(row: pd.Series) -> str:
    """The row's dev score as `mean ± std (K=k)`; else why it has none where that is known
    (`at chance: not retrained`), or — when it was never evaluated on dev."""
    note = row.get(DEV_NOTE)
    if isinstance(note, str):
        return note
    return fmt.dev_score(row.get(DEV_SCORE), row.get(DEV_STD), row.get(DEV_SEEDS, 0))


def _dev_header(frame: pd.DataFrame) -> str:
    retrained = DEV_SEEDS in frame and bool((frame[DEV_SEEDS].fillna(0) > 0).any())
    return "dev score (mean ± std, K seeds)" if retrained else "dev score"
