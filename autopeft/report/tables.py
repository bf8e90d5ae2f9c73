"""Flatten a study into tables: one row per trial, and the feasible Pareto front with dev scores.

The tables are the single input of the plots and the summary, so every view of a study agrees.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from autopeft.study import (
    ATTR_CHANCE,
    ATTR_CURVE,
    ATTR_DERIVED,
    ATTR_ERROR,
    ATTR_EVAL_SECONDS,
    ATTR_FAMILY,
    ATTR_HEAD,
    ATTR_METHOD,
    ATTR_METRICS,
    ATTR_REUSED,
    ATTR_STATUS,
    ATTR_STORED,
    ATTR_STORED_BYTES,
    ATTR_TRAIN_SECONDS,
    ATTR_TRIAL_SECONDS,
    CONSTRAINT_BEATS_CHANCE,
    STATUS_INFEASIBLE,
    dev_scores,
    feasible_front,
    final_runs,
    final_seed_runs,
    final_skips,
    study_setup,
)

# The sampled method is stored as a param under the same name as its user attr.
METHOD_PARAM = ATTR_METHOD
# The method's family (lora, sparse, ...): its user attr, or the method itself for trials
# recorded before families existed.
FAMILY = ATTR_FAMILY
# The key that holds the primary metric inside a metrics dict (selection or dev).
SCORE_KEY = "score"

STATE_INFEASIBLE = "INFEASIBLE"
STATE_COMPLETE = TrialState.COMPLETE.name

SELECTION_PREFIX = "selection_"
DEV_PREFIX = "dev_"
DEV_SCORE = f"{DEV_PREFIX}{SCORE_KEY}"
DEV_STD = f"{DEV_SCORE}_std"  # sample std over the retrained seeds (NaN under two seeds)
DEV_SEEDS = f"{DEV_PREFIX}seeds"  # K retrained seeds; 0: the trial artifact was evaluated
DEV_SEED_SCORES = f"{DEV_PREFIX}seed_scores"  # "0.8012;0.8123": each seed's score, in order
CHANCE_SCORE = ATTR_CHANCE  # what always answering one label scores on the selection split
DEV_NOTE = f"{DEV_PREFIX}note"  # why a point has no dev numbers, when it is known
AT_CHANCE_NOTE = "at chance: not retrained"  # a point at chance with no dev numbers

# Integer columns use pandas' nullable Int64 so a missing count stays missing, not 0 or a float.
_INT_COLUMNS = ("trial", "stored_params", "stored_bytes", "head_params", "epochs")
_LEAD_COLUMNS = ["trial", "state", "method", "stored_params", "stored_bytes", "head_params",
                 "budget_used", "score", CHANCE_SCORE]
_TAIL_COLUMNS = ["train_seconds", "eval_seconds", "trial_seconds", "epochs", "error",
                 "reused_from"]


def trial_state(trial: FrozenTrial) -> str:
    """Optuna's state name, except over-budget candidates, which are FAIL but were never tried."""
    if trial.state == TrialState.FAIL and trial.user_attrs.get(ATTR_STATUS) == STATUS_INFEASIBLE:
        return STATE_INFEASIBLE
    return trial.state.name


def at_chance(trial: FrozenTrial) -> bool:
    """Whether the trial learned nothing: its selection score is at or below its chance score
    (the `beats_chance` constraint `study.record_chance` sets is violated). Without a recorded
    chance score it is not known to be at chance. The final runs skip such points."""
    return trial.constraints.get(CONSTRAINT_BEATS_CHANCE, 0.0) > 0


def chance_level(trials: pd.DataFrame) -> float | None:
    """The study's chance score (what learning nothing scores), if its trials recorded it."""
    known = trials[CHANCE_SCORE].dropna() if CHANCE_SCORE in trials else pd.Series()
    return float(known.max()) if len(known) else None


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial with its outcome, cost, timings and every sampled knob."""
    budget = study_setup(study).budget_params
    trials = study.get_trials(deepcopy=False)
    metrics = sorted({m for t in trials for m in _metrics(t) if m != SCORE_KEY})
    knobs = sorted({p for t in trials for p in _knob_values(t) if p != METHOD_PARAM})
    columns = [
        *_LEAD_COLUMNS,
        FAMILY,
        *(f"{SELECTION_PREFIX}{m}" for m in metrics),
        *_TAIL_COLUMNS,
        *knobs,
    ]
    rows = [_trial_row(t, budget, metrics) for t in trials]
    return _typed(pd.DataFrame(rows, columns=columns))


def pareto_frame(study: optuna.Study, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """The feasible front's rows, cheapest first, with the dev scores reported for them.

    A point retrained with K seeds (``--final-seeds``) gets the mean over its seeds in the dev
    columns, the sample std in `dev_score_std`, K in `dev_seeds` and each seed's score in
    `dev_seed_scores`; otherwise its trial artifact's dev metrics with `dev_seeds` 0. A point
    without dev numbers because it is `at_chance` says so in `dev_note`.
    `trials` (the study's `trials_frame`) saves reading the study again.
    """
    front = [t.number for t in feasible_front(study)]
    pareto = _with_dev(trials_frame(study) if trials is None else trials, front, study)
    # Stable sort keeps feasible_front's tie-break (higher score first at equal cost).
    return pareto.sort_values("stored_params", kind="stable").reset_index(drop=True)


def best_per_method(study: optuna.Study, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each method's best COMPLETE trial within the budget (ties: fewer stored params).

    What a reader asks after "what won": how good did each method get under the same budget.
    Dev columns as in `pareto_frame`, filled when that trial was evaluated on dev.
    """
    trials = trials_frame(study) if trials is None else trials
    feasible = trials[
        (trials["state"] == STATE_COMPLETE)
        & trials["score"].notna()
        & (trials["stored_params"] <= study_setup(study).budget_params).fillna(False)
    ]
    ranked = feasible.sort_values(["score", "stored_params"], ascending=[False, True],
                                  kind="stable")
    best = ranked.drop_duplicates("method").sort_values("score", ascending=False, kind="stable")
    return _with_dev(trials, [int(n) for n in best["trial"]], study)


def _with_dev(trials: pd.DataFrame, numbers: list[int], study: optuna.Study) -> pd.DataFrame:
    """The rows of trials `numbers`, in that order, with their dev columns."""
    dev = {n: _dev_of_point(n, study) for n in numbers}
    dev_metrics = sorted({m for n in numbers for m in dev[n][0] if m != SCORE_KEY})
    dev_columns = [DEV_SCORE, *(f"{DEV_PREFIX}{m}" for m in dev_metrics)]

    rows = trials.set_index("trial", drop=False).loc[numbers].reset_index(drop=True)
    for column in dev_columns:
        key = column.removeprefix(DEV_PREFIX)
        rows[column] = [_number(dev[n][0].get(key)) for n in numbers]
    rows = rows.astype({c: "float64" for c in dev_columns})
    rows[DEV_STD] = pd.Series([_number(dev[n][1]) for n in numbers], dtype="float64")
    rows[DEV_SEEDS] = pd.Series([dev[n][2] for n in numbers], dtype="Int64")
    rows[DEV_SEED_SCORES] = pd.Series([dev[n][3] for n in numbers], dtype="object")
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    skipped = final_skips(study)
    rows[DEV_NOTE] = pd.Series(
        [None if dev[n][0] else AT_CHANCE_NOTE if at_chance(by_number[n]) else skipped.get(n)
         for n in numbers],
        dtype="object")
    return rows


def best_point(front: pd.DataFrame) -> pd.Series | None:
    """The study's answer: the front's point with the best selection score, ties to the
    cheaper. Dev never picks it (dev only reports it), and a point at chance wins only when
    every point is at chance. The one rule for the search's winner and `export --best`."""
    if front.empty:
        return None
    learned = ~(front["score"] <= front[CHANCE_SCORE]).fillna(False) if CHANCE_SCORE in front \
        else pd.Series(True, index=front.index)
    pool = front[learned] if learned.any() else front
    return pool.sort_values(["score", "stored_params"], ascending=[False, True],
                            kind="stable").iloc[0]


def _dev_of_point(number: int, study: optuna.Study) -> tuple[dict[str, Any], Any, int, str]:
    """(mean dev metrics, std of the score, seeds, per-seed scores) of one Pareto point."""
    point = final_runs(study).get(number)
    runs = final_seed_runs(point) if point else []
    if not runs:
        return dev_scores(study).get(number, {}), None, 0, ""
    metrics = sorted({m for r in runs for m in r["metrics"]})
    means = {m: sum(_number(r["metrics"].get(m)) for r in runs) / len(runs) for m in metrics}
    per_seed = ";".join(f"{_number(r['metrics'].get(SCORE_KEY)):.4f}" for r in runs)
    return means, point.get("score_std"), len(runs), per_seed


def knob_columns(frame: pd.DataFrame) -> list[str]:
    """The sampled-knob columns (``<method>.<knob>``) of a trials or Pareto frame."""
    fixed = {*_LEAD_COLUMNS, FAMILY, *_TAIL_COLUMNS}
    return [
        c
        for c in frame.columns
        if c not in fixed and not c.startswith((SELECTION_PREFIX, DEV_PREFIX))
    ]


def row_knobs(row: pd.Series) -> dict[str, Any]:
    """The knobs this row's method sampled, without the ``<method>.`` prefix."""
    prefix = f"{row['method']}."
    return {
        name.removeprefix(prefix): value
        for name, value in row.items()
        if isinstance(name, str) and name.startswith(prefix) and not _missing(value)
    }


def _trial_row(trial: FrozenTrial, budget: int, metrics: list[str]) -> dict[str, Any]:
    attrs = trial.user_attrs
    selection = _metrics(trial)
    stored = attrs.get(ATTR_STORED)
    if stored is None and trial.values is not None:
        stored = trial.values[1]
    score = trial.values[0] if trial.values is not None else selection.get(SCORE_KEY)
    curve = attrs.get(ATTR_CURVE)
    method = trial.params.get(METHOD_PARAM, attrs.get(ATTR_METHOD))
    row: dict[str, Any] = {
        "trial": trial.number,
        "state": trial_state(trial),
        "method": method,
        FAMILY: attrs.get(ATTR_FAMILY) or method,
        "stored_params": None if stored is None else int(stored),
        "stored_bytes": attrs.get(ATTR_STORED_BYTES),
        "head_params": attrs.get(ATTR_HEAD),
        "budget_used": float("nan") if stored is None or budget <= 0 else stored / budget,
        "score": _number(score),
        # what always answering one label scores: a trial at or below it learned nothing
        CHANCE_SCORE: _number(attrs.get(ATTR_CHANCE)),
        "train_seconds": _number(attrs.get(ATTR_TRAIN_SECONDS)),
        "eval_seconds": _number(attrs.get(ATTR_EVAL_SECONDS)),
        "trial_seconds": _number(attrs.get(ATTR_TRIAL_SECONDS)),
        "epochs": len(curve) if isinstance(curve, list) else 0,
        "error": attrs.get(ATTR_ERROR),
        # a sweep's trial trained in a sibling budget's study ("study#trial"), counted here too
        "reused_from": _reused_from(attrs.get(ATTR_REUSED)),
    }
    row.update({f"{SELECTION_PREFIX}{m}": _number(selection.get(m)) for m in metrics})
    row.update({k: v for k, v in _knob_values(trial).items() if k != METHOD_PARAM})
    return row


def _reused_from(mark: Any) -> str | None:
    return f"{mark['study']}#{mark['trial']}" if isinstance(mark, dict) else None


def _knob_values(trial: FrozenTrial) -> dict[str, Any]:
    """Sampled params plus the knobs fit to the budget (derived from `<method>.budget_fraction`)."""
    derived = trial.user_attrs.get(ATTR_DERIVED)
    return {**trial.params, **(derived if isinstance(derived, dict) else {})}


def _metrics(trial: FrozenTrial) -> dict[str, Any]:
    metrics = trial.user_attrs.get(ATTR_METRICS)
    return metrics if isinstance(metrics, dict) else {}


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    types: dict[str, str] = {c: "Int64" for c in _INT_COLUMNS}
    types.update({c: "float64" for c in frame.columns if _is_float_column(c)})
    return frame.astype(types)


def _is_float_column(column: str) -> bool:
    return (
        column in ("budget_used", "score", CHANCE_SCORE)
        or column.endswith("_seconds")
        or column.startswith(SELECTION_PREFIX)
    )


def _number(value: Any) -> float:
    """A metric as a float; anything missing or non-numeric becomes NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
