"""Ray Tune's OptunaSearch, made budget-aware and honest about trial outcomes.

Over-budget candidates, and those that store nothing beyond the task head (they would only
train a head, not their method), are told to Optuna as FAIL (status "infeasible") at suggestion
time and never reach Ray, so they never train. Ray's stock OptunaSearch also tells early-stopped
trials as COMPLETE and leaves trials with a NaN result RUNNING; here a trial is COMPLETE only when
its final report arrived with a finite score, PRUNED when it was stopped before that, FAIL otherwise
(its reason in the `error` user attr: a training error the trainable reported, or a worker that
was lost more often than Ray retries it). Each trial records the search process that owns it,
where Ray ran it, and how often Ray restarted it after losing its worker.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from autopeft import study as records
from autopeft.errors import MethodNotApplicable
from autopeft.methods.registry import METHOD_FAMILIES
from autopeft.sizing import Sizer
from autopeft.space import SearchSpace
from autopeft.train.trial import METRIC_PREFIX

logger = logging.getLogger(__name__)

METRICS = ["score", "stored_params"]
MODES = ["max", "min"]
# the rejection reason of a candidate measured at 0 stored params: training it trains a head only
EMPTY_DELTA = ("stores nothing beyond the head (0 stored params): it would train only the task "
               "head, not its method")


class BudgetedOptunaSearch(OptunaSearch):
    def __init__(
        self,
        space: SearchSpace,
        sizer: Sizer,
        budget_params: int,
        study_name: str,
        storage: optuna.storages.BaseStorage,
        sampler: optuna.samplers.BaseSampler,
        max_rejections: int = 200,
    ):
        super().__init__(
            space=space.for_budget(sizer, budget_params),  # knobs fit to the budget need both
            metric=METRICS,
            mode=MODES,
            sampler=sampler,
            study_name=study_name,
            storage=storage,
        )
        self._sizer = sizer
        self._budget = budget_params
        self._max_rejections = max_rejections
        self._results: dict[str, list[dict]] = {}
        self._owner = records.process_owner()
        self.infeasible = 0
        self.exhausted = False  # no feasible candidate left: the search ends by itself

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    # The Optuna storage is the record of the search (studies resume from it), so Ray's own
    # searcher checkpoints are not needed; they would also try to pickle the storage's locks.
    _UNPICKLED = ("_ot_study", "_storage", "_ot_trials")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._UNPICKLED}

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        pass

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        pass

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        for _ in range(self._max_rejections):
            ot_trial = self._ot_study.ask()
            ot_trial.set_user_attr(records.ATTR_OWNER, self._owner)
            candidate = self._space(ot_trial)
            ot_trial.set_user_attr(records.ATTR_METHOD, candidate["method"])
            ot_trial.set_user_attr(records.ATTR_FAMILY, METHOD_FAMILIES[candidate["method"]])
            try:
                footprint = self._sizer.measure(candidate["method"], candidate["knobs"])
            except MethodNotApplicable as exc:  # e.g. dropping more layers than the model has
                self._reject(ot_trial, str(exc))
                continue
            ot_trial.set_user_attr(records.ATTR_STORED, footprint.stored_params)
            ot_trial.set_user_attr(records.ATTR_HEAD, footprint.head_params)
            ot_trial.set_user_attr(records.ATTR_BUDGET_USED, footprint.stored_params / self._budget)
            if footprint.stored_params == 0:
                self._reject(ot_trial, EMPTY_DELTA)
                continue
            if footprint.stored_params <= self._budget:
                self._ot_trials[trial_id] = ot_trial
                self._results[trial_id] = []
                return {**candidate, "trial_number": ot_trial.number}
            self._reject(ot_trial, f"{footprint.stored_params:,} stored params over the budget "
                                   f"of {self._budget:,}")
        logger.warning("no feasible candidate in %d proposals; ending the search",
                       self._max_rejections)
        self.exhausted = True
        return Searcher.FINISHED

    def _reject(self, ot_trial: optuna.Trial, why: str) -> None:
        """Record a candidate that is never trained (over budget, empty or not applicable)."""
        self.infeasible += 1
        ot_trial.set_user_attr(records.ATTR_STATUS, records.STATUS_INFEASIBLE)
        ot_trial.set_user_attr(records.ATTR_ERROR, why)
        self._ot_study.tell(ot_trial, state=TrialState.FAIL)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        results = self._results.get(trial_id)
        if results is None:
            return
        if _restarted(results, result):  # Ray retried it after losing its worker: start over
            results.clear()
        results.append(result)
        curve = [{"epoch": r["epoch"], "score": r["score"]} for r in results if "epoch" in r]
        self._ot_trials[trial_id].set_user_attr(records.ATTR_CURVE, curve)
        _record_worker(self._ot_trials[trial_id], result)

    def on_trial_retry(self, trial_id: str, failures: int) -> None:
        """Ray is restarting a trial whose worker process or node was lost (FailureConfig)."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            ot_trial.set_user_attr(records.ATTR_RETRIES, failures)

    def fail_unfinished(self, why: str) -> list[int]:
        """Tell every trial Ray has not finished as FAIL (the run was stopped); their numbers."""
        numbers = []
        for trial_id in list(self._ot_trials):
            ot_trial = self._ot_trials.pop(trial_id)
            self._results.pop(trial_id, None)
            ot_trial.set_user_attr(records.ATTR_STATUS, records.STATUS_ERROR)
            ot_trial.set_user_attr(records.ATTR_ERROR, why)
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            numbers.append(ot_trial.number)
        return numbers

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        ot_trial = self._ot_trials.pop(trial_id, None)
        if ot_trial is None:
            return
        results = self._results.pop(trial_id, [])
        if result and not _already_seen(results, result):
            # e.g. the result a scheduler stopped the trial on: Ray skips on_trial_result then
            if _restarted(results, result):
                results.clear()
            results.append(result)
            curve = [{"epoch": r["epoch"], "score": r["score"]} for r in results if "epoch" in r]
            if curve:
                ot_trial.set_user_attr(records.ATTR_CURVE, curve)
        last = results[-1] if results else {}
        score = last.get("score")
        finite = isinstance(score, (int, float)) and math.isfinite(score)
        for key, value in _timings(results).items():
            ot_trial.set_user_attr(key, value)
        _record_worker(ot_trial, last)
        metrics = {k[len(METRIC_PREFIX):]: v for k, v in last.items()
                   if k.startswith(METRIC_PREFIX)}
        if metrics:
            ot_trial.set_user_attr(records.ATTR_METRICS, metrics)
            ot_trial.set_user_attr(records.ATTR_STORED, last["stored_params"])
        if error or last.get("error"):
            ot_trial.set_user_attr(records.ATTR_STATUS, records.STATUS_ERROR)
            message = last.get("error") or (
                "its worker failed (process killed, node lost or a Ray error) more often than "
                "Ray retries it; see the Ray trial log")
            ot_trial.set_user_attr(records.ATTR_ERROR, message)
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        elif last.get("final") and finite:
            ot_trial.set_user_attr(records.ATTR_STATUS, records.STATUS_OK)
            ot_trial.set_user_attr(records.ATTR_ARTIFACT, last["artifact"])
            ot_trial.set_user_attr(records.ATTR_STORED_BYTES, last["stored_bytes"])
            ot_trial.set_user_attr(records.ATTR_ALLOCATION, json.loads(last["allocation"]))
            records.record_chance(ot_trial, float(score), last.get(records.ATTR_CHANCE))
            self._ot_study.tell(ot_trial, [float(score), float(last["stored_params"])])
        elif last.get("final"):
            ot_trial.set_user_attr(records.ATTR_STATUS, records.STATUS_ERROR)
            ot_trial.set_user_attr(records.ATTR_ERROR, f"non-finite score {score!r}")
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        else:
            ot_trial.set_user_attr(records.ATTR_STATUS, records.STATUS_PRUNED)
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def _record_worker(ot_trial: optuna.Trial, result: dict) -> None:
    """Where Ray runs the trial (kept up to date, so a running trial shows it too)."""
    if "node_id" in result:
        ot_trial.set_user_attr(records.ATTR_WORKER, {
            "node": result["node_id"], "host": result.get("hostname"), "pid": result.get("pid")})


def _restarted(results: list[dict], result: dict) -> bool:
    """Whether `result` is the first of a new attempt: another worker process, or no epoch on."""
    if not results:
        return False
    last = results[-1]
    moved = last.get("pid") is not None and result.get("pid") not in (None, last["pid"])
    return moved or result.get("epoch", math.inf) <= last.get("epoch", -math.inf)


def _already_seen(results: list[dict], result: dict) -> bool:
    """Ray hands the last result to `on_trial_complete` again (as a new dict)."""
    key = "training_iteration"
    return bool(results) and result.get(key) is not None and results[-1].get(key) == result[key]


def _timings(results: list[dict]) -> dict[str, float]:
    return {
        records.ATTR_TRAIN_SECONDS: sum(r.get("train_seconds", 0.0) for r in results),
        records.ATTR_EVAL_SECONDS: sum(r.get("eval_seconds", 0.0) for r in results),
        records.ATTR_TRIAL_SECONDS: max((r.get("trial_seconds", 0.0) for r in results),
                                        default=0.0),
    }
