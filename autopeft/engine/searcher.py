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
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from autopeft import study as records
from autopeft.errors import MethodNotApplicable
from autopeft.methods.registry import METHOD_FAMILIES
from autopeft.space.space import SearchSpace
from autopeft.train.trial import METRIC_PREFIX

logger = logging.getLogger(__name__)

METRICS = ["score", "stored_params"]
MODES = ["max", "min"]
# the rejection reason of a candidate measured at 0 stored params: training it trains a head only
EMPTY_DELTA = ("stores nothing beyond the head (0 stored params): it would train only the task "
               "head, not its method")


class BudgetedOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch over a budget-bound space (`SearchSpace.for_budget`: it holds the
    sizer that measures candidates and the budget they must fit) on one study."""

    def __init__(
        self,
        space: SearchSpace,
        study: optuna.Study,
        sampler: optuna.samplers.BaseSampler,
        max_rejections: int = 200,
    ):
        if space.sizer is None or space.budget is None:
            raise ValueError("BudgetedOptunaSearch needs a budget-bound space "
                             "(SearchSpace.for_budget)")
        super().__init__(
            space=space,
            metric=METRICS,
            mode=MODES,
            sampler=sampler,
            study_name=study.study_name,
            storage=records.storage_of(study),
        )
        self._sizer = space.sizer
        self._budget = space.budget
        self._max_rejections = max_rejections
        self._results: dict[str, list[dict]] = {}
        self._owner = records.process_owner()
        self.infeasible = 0
        self.exhausted = False  # no feasible candidate left: the search ends by itself

    @property
    def study(self) -> optuna.Study:
        return self._ot_study

    def live_trial(self, trial_id: str) -> optuna.Trial | None:
        """The Optuna trial behind a Ray trial still running (None once it was told)."""
        return self._ot_trials.get(trial_id)

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
            ot_trial = records.ask_next(self._ot_study)
            candidate = self._space(ot_trial)
            records.record_proposal(ot_trial, self._owner, candidate["method"],
                                    METHOD_FAMILIES[candidate["method"]],
                                    self._space.derived(candidate))
            try:
                footprint = self._sizer.measure(candidate["method"], candidate["knobs"])
            except MethodNotApplicable as exc:  # e.g. dropping more layers than the model has
                self._reject(ot_trial, str(exc))
                continue
            records.record_size(ot_trial, footprint.stored_params, footprint.head_params,
                                self._budget)
            if footprint.stored_params == 0:
                self._reject(ot_trial, EMPTY_DELTA)
                continue
            if footprint.stored_params <= self._budget:
                self._ot_trials[trial_id] = ot_trial
                self._results[trial_id] = []
                # a retry trains with the seed of the trial it repeats, as if never cut off
                retry = ot_trial.user_attrs.get(records.ATTR_RETRY_OF) or {}
                return {**candidate, "trial_number": ot_trial.number,
                        "seed_trial": int(retry.get("trial", ot_trial.number))}
            self._reject(ot_trial, f"{footprint.stored_params:,} stored params over the budget "
                                   f"of {self._budget:,}")
        logger.warning("no feasible candidate in %d proposals; ending the search",
                       self._max_rejections)
        self.exhausted = True
        return Searcher.FINISHED

    def _reject(self, ot_trial: optuna.Trial, why: str) -> None:
        """Record a candidate that is never trained (over budget, empty or not applicable)."""
        self.infeasible += 1
        records.record_rejection(self._ot_study, ot_trial, why)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        results = self._results.get(trial_id)
        if results is None:
            return
        if _restarted(results, result):  # Ray retried it after losing its worker: start over
            results.clear()
        results.append(result)
        curve = [{"epoch": r["epoch"], "score": r["score"]} for r in results if "epoch" in r]
        records.record_curve(self._ot_trials[trial_id], curve)
        _record_worker(self._ot_trials[trial_id], result)

    def on_trial_retry(self, trial_id: str, failures: int) -> None:
        """Ray is restarting a trial whose worker process or node was lost (FailureConfig)."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            records.record_retries(ot_trial, failures)

    def fail_unfinished(self, why: str) -> list[int]:
        """Tell every trial Ray has not finished as FAIL (the run was stopped), its candidate
        queued to run first when the search resumes; their numbers."""
        numbers = []
        for trial_id in list(self._ot_trials):
            ot_trial = self._ot_trials.pop(trial_id)
            self._results.pop(trial_id, None)
            records.enqueue_retry(self._ot_study, ot_trial)
            records.record_failure(self._ot_study, ot_trial, why)
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
                records.record_curve(ot_trial, curve)
        last = results[-1] if results else {}
        score = last.get("score")
        finite = isinstance(score, (int, float)) and math.isfinite(score)
        records.record_timings(ot_trial, *_timings(results))
        _record_worker(ot_trial, last)
        metrics = {k[len(METRIC_PREFIX):]: v for k, v in last.items()
                   if k.startswith(METRIC_PREFIX)}
        if metrics:
            records.record_metrics(ot_trial, metrics, last["stored_params"])
        if error or last.get("error"):
            message = last.get("error") or (
                "its worker failed (process killed, node lost or a Ray error) more often than "
                "Ray retries it; see the Ray trial log")
            records.record_failure(self._ot_study, ot_trial, message)
        elif last.get("final") and finite:
            records.record_complete(self._ot_study, ot_trial, float(score),
                                    last["stored_params"], last["artifact"],
                                    last["stored_bytes"], json.loads(last["allocation"]),
                                    last.get(records.ATTR_CHANCE))
        elif last.get("final"):
            records.record_failure(self._ot_study, ot_trial, f"non-finite score {score!r}")
        else:
            records.record_pruned(self._ot_study, ot_trial)
        self._completed_trials.add(trial_id)


def _record_worker(ot_trial: optuna.Trial, result: dict) -> None:
    """Where Ray runs the trial (kept up to date, so a running trial shows it too)."""
    if "node_id" in result:
        records.record_worker(ot_trial, result["node_id"], result.get("hostname"),
                              result.get("pid"))


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


def _timings(results: list[dict]) -> tuple[float, float, float]:
    """Seconds training, evaluating, and in all (its longest attempt's report)."""
    return (sum(r.get("train_seconds", 0.0) for r in results),
            sum(r.get("eval_seconds", 0.0) for r in results),
            max((r.get("trial_seconds", 0.0) for r in results), default=0.0))
