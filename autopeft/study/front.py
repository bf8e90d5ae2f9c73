"""What a study's trials add up to: the trials that count toward a target, and the front."""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from autopeft.study.schema import ATTR_ERROR, ATTR_STATUS, STATUS_ERROR, study_setup


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial ran to an outcome: COMPLETE, PRUNED or failed in training.

    Over-budget candidates never trained, and trials whose search process stopped first
    ("interrupted") did not finish: neither counts toward a trial target, so a resumed run
    trains them anew.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return (trial.state == TrialState.FAIL
            and trial.user_attrs.get(ATTR_STATUS) == STATUS_ERROR
            and not str(trial.user_attrs.get(ATTR_ERROR, "")).startswith("interrupted"))


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward a study's trial target (`counts`)."""
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def feasible_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated COMPLETE trials within budget, sorted by stored parameters.

    Trials at chance stay in: the front shows what was found; only the samplers skip them
    (`record_chance`). Optuna's `best_trials` would drop them, as it honours constraints, so
    the 2-D front is a sort and a sweep here: sorted cheapest first (ties: best score first),
    a trial is on it when it beats every cheaper one, or equals the point it ties with.
    """
    budget = study_setup(study).budget_params
    ranked = sorted(
        (t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
         if t.values is not None and not math.isnan(t.values[0]) and t.values[1] <= budget),
        key=lambda t: (t.values[1], -t.values[0]),
    )
    front: list[optuna.trial.FrozenTrial] = []
    for trial in ranked:
        if not front or trial.values[0] > front[-1].values[0] or trial.values == front[-1].values:
            front.append(trial)
    return front
