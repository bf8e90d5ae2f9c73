"""The only writer of a study's record: its setup, each trial's attributes and state, final runs
and dev scores. Everything else reads (`schema.py`, `front.py`) or maps its events onto these
calls (the Ray searcher, the sweep's sharing, the first-trial seeding), so the layout documented
in `schema.py` is kept in one place.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

import optuna
from optuna.trial import TrialState

from autopeft.study import schema
from autopeft.study.schema import StudySetup

_NOT_ABOVE = 1e-9  # a score equal to chance violates the beats-chance constraint by this much


def record_setup(study: optuna.Study, setup: StudySetup) -> None:
    """A new study's setup (what a resumed one must match) and its empty dev-score table."""
    study.set_user_attr(schema.SETUP_KEY, asdict(setup))
    study.set_user_attr(schema.DEV_SCORES_KEY, {})


def record_chance(trial: optuna.Trial | optuna.trial.FrozenTrial, score: float,
                  chance: float | None) -> None:
    """Record the trial's chance level, and as an Optuna constraint whether it beat it.

    A trial that scores no better than always answering one label learned nothing, yet it is
    often the cheapest and so Pareto-optimal on size alone; TPE, NSGA-II and GP treat a
    violated constraint as infeasible, so such trials do not pull the search towards more of
    them (the report still lists them). Feasible means strictly above chance.
    """
    if chance is None:
        return
    trial.set_user_attr(schema.ATTR_CHANCE, chance)
    trial.set_constraint(schema.CONSTRAINT_BEATS_CHANCE, chance - score + _NOT_ABOVE)


def record_dev_scores(study: optuna.Study, scores: dict[int, dict[str, float]]) -> None:
    merged = {str(k): v for k, v in schema.dev_scores(study).items()}
    merged.update({str(k): v for k, v in scores.items()})
    study.set_user_attr(schema.DEV_SCORES_KEY, merged)


def record_final_run(study: optuna.Study, trial_number: int, index: int, run: dict[str, Any],
                     fidelity: dict[str, int]) -> dict[str, Any]:
    """Store one finished seed of a point and refresh the point's mean/std; returns the point.

    Runs recorded at another fidelity (other epochs, batch size or train size) are dropped:
    one point's seeds are always comparable.
    """
    points = {str(k): v for k, v in schema.final_runs(study).items()}
    point = points.get(str(trial_number))
    if point is None or any(point.get(k) != fidelity[k] for k in schema.FINAL_FIDELITY):
        point = {**{k: fidelity[k] for k in schema.FINAL_FIDELITY}, "runs": {}}
    runs = {**point["runs"], str(index): run}
    scores = [float(r["metrics"]["score"]) for _, r in sorted(runs.items(), key=schema.by_index)]
    point = {
        **point,
        "runs": runs,
        "seeds": len(scores),
        "score_mean": statistics.fmean(scores),
        "score_std": statistics.stdev(scores) if len(scores) > 1 else None,
    }
    points[str(trial_number)] = point
    study.set_user_attr(schema.FINAL_RUNS_KEY, points)
    return point


def record_final_skips(study: optuna.Study, notes: dict[int, str]) -> None:
    """Say why points are not retrained; a point retrained later keeps its dev numbers."""
    if notes:
        merged = {str(k): v for k, v in schema.final_skips(study).items()}
        merged.update({str(k): v for k, v in notes.items()})
        study.set_user_attr(schema.FINAL_SKIPPED_KEY, merged)


def record_interrupted(study: optuna.Study, trial: optuna.trial.FrozenTrial, why: str) -> None:
    """A RUNNING trial whose search process is gone: FAIL, with why (it does not count)."""
    storage = study._storage  # a FrozenTrial can only be changed through the storage
    storage.set_trial_user_attr(trial._trial_id, schema.ATTR_STATUS, schema.STATUS_ERROR)
    storage.set_trial_user_attr(trial._trial_id, schema.ATTR_ERROR, why)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def enqueue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Queue an interrupted trial's candidate again, to be tried first (`ask_next`), so a
    resumed search loses only the interrupted training time; False past `RETRY_ATTEMPTS`
    (a candidate that keeps killing its search is not retried forever)."""
    retry = trial.user_attrs.get(schema.ATTR_RETRY_OF) or {}
    attempt = int(retry.get("attempt", 0)) + 1
    if attempt > schema.RETRY_ATTEMPTS or not trial.params:
        return False
    origin = int(retry.get("trial", trial.number))
    study.enqueue_trial(dict(trial.params),
                        user_attrs={schema.ATTR_RETRY_OF: {"trial": origin, "attempt": attempt}})
    return True


# --- one trial's life: proposed, measured, trained (or not) --------------------------------
def enqueue(study: optuna.Study, params: dict[str, Any]) -> None:
    """A candidate the search tries before its sampler (portfolio, method default, warm start)."""
    study.enqueue_trial(params, skip_if_exists=True)


def ask_next(study: optuna.Study) -> optuna.Trial:
    """The next trial to run: an interrupted trial's retry first, then what `Study.ask` serves
    (queued candidates oldest first, then the sampler's).

    Optuna serves queued trials oldest first only, and a retry is queued after the candidates
    its search had not reached yet; claiming it here the way `Study.ask` claims a queued trial
    (WAITING to RUNNING in the storage, which fails if another process took it) runs it first.
    """
    retries = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
               if schema.ATTR_RETRY_OF in t.user_attrs]
    for waiting in retries:
        try:
            if study._storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING):
                return optuna.Trial(study, waiting._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return study.ask()


def record_proposal(trial: optuna.Trial, owner: dict[str, Any], method: str, family: str,
                    derived: dict[str, Any]) -> None:
    """Who runs a just-asked trial, its method, and the knobs fit to the budget (not sampled)."""
    trial.set_user_attr(schema.ATTR_OWNER, owner)
    record_derived(trial, derived)
    trial.set_user_attr(schema.ATTR_METHOD, method)
    trial.set_user_attr(schema.ATTR_FAMILY, family)


def record_derived(trial: optuna.Trial, derived: dict[str, Any]) -> None:
    """The knobs fit to the budget (`SearchSpace.derived`): not sampled, so not in params."""
    if derived:
        trial.set_user_attr(schema.ATTR_DERIVED, derived)


def record_size(trial: optuna.Trial, stored: int, head: int, budget: int) -> None:
    """The candidate's measured size: stored params, the head apart, the budget share."""
    trial.set_user_attr(schema.ATTR_STORED, stored)
    trial.set_user_attr(schema.ATTR_HEAD, head)
    trial.set_user_attr(schema.ATTR_BUDGET_USED, stored / budget)


def record_rejection(study: optuna.Study, trial: optuna.Trial, why: str) -> None:
    """A candidate never trained (over budget, empty or not applicable): FAIL, infeasible."""
    trial.set_user_attr(schema.ATTR_STATUS, schema.STATUS_INFEASIBLE)
    trial.set_user_attr(schema.ATTR_ERROR, why)
    study.tell(trial, state=TrialState.FAIL)


def record_curve(trial: optuna.Trial, curve: list[dict[str, Any]]) -> None:
    trial.set_user_attr(schema.ATTR_CURVE, curve)


def record_worker(trial: optuna.Trial, node: str, host: str | None, pid: int | None) -> None:
    """Where Ray runs the trial (its last attempt)."""
    trial.set_user_attr(schema.ATTR_WORKER, {"node": node, "host": host, "pid": pid})


def record_retries(trial: optuna.Trial, failures: int) -> None:
    """Ray restarted the trial this often after losing its worker process or node."""
    trial.set_user_attr(schema.ATTR_RETRIES, failures)


def record_timings(trial: optuna.Trial, train: float, evaluate: float, total: float) -> None:
    trial.set_user_attr(schema.ATTR_TRAIN_SECONDS, train)
    trial.set_user_attr(schema.ATTR_EVAL_SECONDS, evaluate)
    trial.set_user_attr(schema.ATTR_TRIAL_SECONDS, total)


def record_metrics(trial: optuna.Trial, metrics: dict[str, float], stored: int) -> None:
    """Selection-split metrics of the last epoch, and the size the trained delta has."""
    trial.set_user_attr(schema.ATTR_METRICS, metrics)
    trial.set_user_attr(schema.ATTR_STORED, stored)


def record_failure(study: optuna.Study, trial: optuna.Trial, why: str) -> None:
    """A trial that failed in training (or was cut off: `why` starts "interrupted")."""
    trial.set_user_attr(schema.ATTR_STATUS, schema.STATUS_ERROR)
    trial.set_user_attr(schema.ATTR_ERROR, why)
    study.tell(trial, state=TrialState.FAIL)


def record_complete(study: optuna.Study, trial: optuna.Trial, score: float, stored: int,
                    artifact: str, stored_bytes: int, allocation: dict[str, Any],
                    chance: float | None) -> None:
    """A trained trial with a finite score: COMPLETE with (score, stored params)."""
    trial.set_user_attr(schema.ATTR_STATUS, schema.STATUS_OK)
    trial.set_user_attr(schema.ATTR_ARTIFACT, artifact)
    trial.set_user_attr(schema.ATTR_STORED_BYTES, stored_bytes)
    trial.set_user_attr(schema.ATTR_ALLOCATION, allocation)
    record_chance(trial, score, chance)
    study.tell(trial, [score, float(stored)])


def record_pruned(study: optuna.Study, trial: optuna.Trial) -> None:
    """A trial the scheduler stopped before its last epoch."""
    trial.set_user_attr(schema.ATTR_STATUS, schema.STATUS_PRUNED)
    study.tell(trial, state=TrialState.PRUNED)


def record_shared(study: optuna.Study, source: optuna.trial.FrozenTrial, params: dict[str, Any],
                  distributions: dict[str, Any], user_attrs: dict[str, Any]) -> None:
    """A sibling study's COMPLETE trial, added as this study's own (a sweep's budget reuse).

    It keeps when it trained, not when it was shared, so timelines and per-node counts stay true.
    """
    shared = optuna.trial.create_trial(params=params, distributions=distributions,
                                       values=list(source.values), user_attrs=user_attrs,
                                       state=TrialState.COMPLETE)
    shared.datetime_start = source.datetime_start
    shared.datetime_complete = source.datetime_complete
    record_chance(shared, source.values[0], user_attrs.get(schema.ATTR_CHANCE))
    study.add_trial(shared)
