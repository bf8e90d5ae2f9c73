"""Runs a study's trials as a Ray Tune experiment: Optuna proposes, Ray executes.

Faults: a trial whose worker process or node is lost is restarted by Ray (from scratch: trials
keep no checkpoints) up to `max_failures` times; errors inside training end only that trial
(see the trainable). A run stopped by Ctrl+C marks its unfinished trials failed and raises
`SearchInterrupted`, so the same command continues the study.

Time budget: once it is spent no trial starts; running trials finish (their compute is not
thrown away), but Ray stops any still running at `hard_stop_s` (recorded PRUNED).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune import Callback
from ray.tune.search import ConcurrencyLimiter, Searcher
from rich.console import Console

from autopeft.engine.cluster import connect
from autopeft.engine.progress import SearchProgress, clock
from autopeft.engine.samplers import check_sampler, make_sampler
from autopeft.engine.scheduler import MultiObjectiveASHA, check_scheduler
from autopeft.engine.searcher import BudgetedOptunaSearch
from autopeft.engine.trainable import train_candidate
from autopeft.errors import AutoPeftError, SearchInterrupted
from autopeft.space.space import SearchSpace
from autopeft.train.data import SearchData
from autopeft.train.trial import TrialContext


@dataclass(frozen=True)
class EngineSettings:
    trials: int
    concurrency: int | None = 1  # None: 1 locally, every trial slot of a cluster (--address)
    gpus_per_trial: float | None = None  # None: one GPU per trial when the cluster has GPUs
    address: str | None = None  # None: a local Ray instance
    seed: int = 0
    sampler: str = "tpe"
    scheduler: str = "none"  # "none" (every trial trains all epochs) or "mo-asha"
    reduction_factor: float = 3  # mo-asha's η
    grace_epochs: int = 1  # mo-asha's first rung
    max_failures: int = 2  # restarts of a trial after its worker process or node was lost
    time_budget_s: float | None = None  # no trial starts after it; None: --trials alone


# How far past the time budget running trials may go: a quarter of it, at least a minute
# (the first trial also waits for Ray's workers to start).
OVERRUN_SHARE = 0.25
OVERRUN_MIN_S = 60.0


def hard_stop_s(time_budget_s: float) -> float:
    """When Ray stops the trials still running: the budget plus its bounded overrun."""
    return time_budget_s + max(OVERRUN_SHARE * time_budget_s, OVERRUN_MIN_S)


@dataclass(frozen=True)
class Fitted:
    launched: int  # trials Ray ran (finished, failed or stopped)
    out_of_time: bool  # the time budget, not --trials, ended the proposals


@dataclass(frozen=True)
class EngineOutcome:
    launched: int
    infeasible: int
    wall_seconds: float


def run_trials(
    study: optuna.Study,
    space: SearchSpace,
    data: SearchData,
    context: TrialContext,
    settings: EngineSettings,
    ray_dir: Path,
    console: Console | None = None,
) -> EngineOutcome:
    """Add `settings.trials` trained trials to `study`, drawn from the budget-bound `space`
    (over-budget proposals not counted); progress goes to `console` (stderr by default)."""
    started = time.perf_counter()
    check_scheduler(settings.scheduler, settings.reduction_factor, settings.grace_epochs,
                    context.epochs)
    settings, cpus, gpus = prepare_cluster(settings)
    # A resumed study gets a fresh seed stream: the same seed would replay old proposals.
    sampler = make_sampler(settings.sampler, settings.seed + len(study.trials))
    searcher = BudgetedOptunaSearch(space, study, sampler)
    trainable = tune.with_parameters(train_candidate, data=data,
                                     context=with_threads(context, cpus))
    keeper = f"the study '{study.study_name}'"
    fitted = fit(trainable, searcher, settings, settings.trials, context.epochs, (cpus, gpus),
                 ray_dir, keeper, console)
    if fitted.launched < settings.trials and not (searcher.exhausted or fitted.out_of_time):
        raise SearchInterrupted(
            f"search stopped after {fitted.launched} of {settings.trials} trials; {keeper} keeps "
            "every finished trial: run the same command again to continue it")
    return EngineOutcome(fitted.launched, searcher.infeasible, time.perf_counter() - started)


def prepare_cluster(settings: EngineSettings) -> tuple[EngineSettings, float, float]:
    """Connect to Ray and size each trial: the settings (concurrency resolved), CPUs, GPUs."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_sampler(settings.sampler)
    connect(settings.address)
    cpus, gpus, concurrency = size_trials(settings, ray.cluster_resources())
    return replace(settings, concurrency=concurrency), cpus, gpus


def fit(trainable, searcher, settings: EngineSettings, total: int, epochs: int,
        resources: tuple[float, float], ray_dir: Path, keeper: str,
        console: Console | None = None) -> Fitted:
    """Run up to `total` trials of `searcher`'s proposals on Ray, within the time budget.

    `searcher` is a BudgetedOptunaSearch or anything with its `fail_unfinished` and
    `on_trial_retry`. On Ctrl+C (or a lost driver connection) the unfinished trials are
    marked failed and `SearchInterrupted` says how to continue (`keeper`: what keeps the
    finished trials, e.g. "the study 'x'").
    """
    cpus, gpus = resources
    budget_s = settings.time_budget_s
    progress = SearchProgress(total, settings.concurrency, console, budget_s)
    limiter = _TimeBudget(searcher, settings.concurrency, budget_s)
    if budget_s is not None:
        progress.console.print(
            f"time budget {clock(budget_s)}: no trial starts after it; running ones finish, "
            f"or are stopped at {clock(hard_stop_s(budget_s))}")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus, "gpu": gpus}),
        tune_config=_tune_config(limiter, settings, total, epochs),
        run_config=tune.RunConfig(
            name=f"run-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(Path(ray_dir).resolve()),
            verbose=0,
            callbacks=[progress, _RetryRecorder(searcher)],
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        ),
    )
    try:
        grid = tuner.fit()  # on Ctrl+C, Ray stops its trials and returns
    finally:
        stopped = limiter.settle_overrun()
        unfinished = searcher.fail_unfinished(
            "interrupted: the search was stopped before the trial finished")
    if unfinished:
        raise SearchInterrupted(
            f"search stopped after {len(grid) - len(unfinished)} of {total} trials; trial(s) "
            f"{', '.join(map(str, unfinished))} did not finish and were marked failed; {keeper} "
            "keeps every finished trial: run the same command again to continue it (the "
            "unfinished candidates first)")
    out_of_time = limiter.out_of_time or stopped > 0
    if out_of_time:
        overran = (f"; {stopped} still running at {clock(hard_stop_s(budget_s))} were stopped "
                   "(PRUNED)" if stopped else "")
        progress.console.print(f"the time budget ({clock(budget_s)}) ended the search after "
                               f"{len(grid)} trial(s){overran}")
    return Fitted(len(grid), out_of_time)


def _tune_config(limiter: _TimeBudget, settings: EngineSettings, total: int,
                 epochs: int) -> tune.TuneConfig:
    budget_s = settings.time_budget_s
    return tune.TuneConfig(
        search_alg=limiter,  # applies --concurrency (Ray would wrap the searcher in one)
        num_samples=total,
        # Ray's own budget stops the running trials: here it only bounds their overrun.
        time_budget_s=hard_stop_s(budget_s) if budget_s is not None else None,
        reuse_actors=True,
        # No metric/mode here: the searcher was given both objectives, and MO-ASHA reads
        # score and stored_params from each result itself.
        scheduler=_scheduler(settings, epochs),
    )


class _TimeBudget(ConcurrencyLimiter):
    """Ray's concurrency limit, proposing nothing once the time budget is spent.

    Hand-written because Ray's `TuneConfig(time_budget_s=...)` stops the running trials too,
    wasting their compute; here they finish, and Ray's budget only bounds how long they may.
    Nor does a trial start that would not finish before that bound, judged by the mean
    duration of the trials finished so far: its compute would be thrown away.
    """

    def __init__(self, searcher: Searcher, concurrency: int, budget_s: float | None):
        super().__init__(searcher, max_concurrent=concurrency)
        self.budget_s = budget_s
        self.started = time.monotonic()
        self.out_of_time = False  # a proposal was refused for want of time
        self.running: dict[str, float] = {}  # trial id → when it was proposed
        self.durations: list[float] = []  # of the trials finished so far

    def _past(self, seconds: float | None) -> bool:
        return seconds is not None and time.monotonic() - self.started >= seconds

    def _too_late(self) -> bool:
        """Past the budget, or a trial started now would outlast the hard stop."""
        if self.budget_s is None:
            return False
        expected = sum(self.durations) / len(self.durations) if self.durations else 0.0
        return (self._past(self.budget_s)
                or self._past(hard_stop_s(self.budget_s) - expected))

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._too_late():
            self.out_of_time = True
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        if config not in (None, Searcher.FINISHED):
            self.running[trial_id] = time.monotonic()
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        began = self.running.pop(trial_id, None)
        if began is not None and not error:
            self.durations.append(time.monotonic() - began)
        super().on_trial_complete(trial_id, result=result, error=error)

    def settle_overrun(self) -> int:
        """Tell the searcher that the trials Ray's hard stop ended were stopped (PRUNED): Ray
        stops them without `on_trial_complete`. Before that time (Ctrl+C) nothing is told."""
        if self.budget_s is None or not self._past(hard_stop_s(self.budget_s)):
            return 0
        stopped = sorted(self.running)
        for trial_id in stopped:
            self.on_trial_complete(trial_id)
        return len(stopped)


class _NoTunerRestoreHint(logging.Filter):
    """Drops Ray's advice to resume with `Tuner.restore` after Ctrl+C: rerunning resumes here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tuner.restore" not in record.getMessage()


logging.getLogger("ray.tune.tune").addFilter(_NoTunerRestoreHint())


class _RetryRecorder(Callback):
    """Tells the searcher when Ray restarts a trial after losing its worker (Ray does not)."""

    def __init__(self, searcher):
        self.searcher = searcher

    def __getstate__(self) -> dict:  # Ray pickles callbacks; the searcher keeps its own records
        return {"searcher": None}

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        if self.searcher is not None:
            self.searcher.on_trial_retry(trial.trial_id, trial.num_failures)


def _scheduler(settings: EngineSettings, epochs: int) -> MultiObjectiveASHA | None:
    """None lets Ray run every trial to its last epoch (its FIFO scheduler)."""
    if settings.scheduler == "none":
        return None
    return MultiObjectiveASHA(epochs, settings.grace_epochs, settings.reduction_factor)


def size_trials(settings: EngineSettings, cluster: dict[str, float]
                ) -> tuple[float, float, int]:
    """CPUs and GPUs per trial, and how many trials run at once, on a cluster's resources.

    By default (`concurrency` None) a cluster joined by address runs as many 1-CPU trials as
    its CPUs (and GPUs, at `gpus_per_trial` each) hold; a local instance runs as many as its
    GPUs hold at a fractional `gpus_per_trial` (0.25: four), else one trial with every CPU.
    """
    cluster_cpus, cluster_gpus = cluster.get("CPU", 1), cluster.get("GPU", 0)
    gpus = settings.gpus_per_trial
    if gpus is None:
        gpus = 1 if cluster_gpus >= 1 else 0
    if gpus > cluster_gpus:
        # Ray would queue such trials forever.
        raise AutoPeftError(
            f"--gpus-per-trial {gpus} but the Ray cluster has {cluster_gpus:g} GPU(s); "
            "pass --gpus-per-trial 0 to train on CPUs"
        )
    by_gpus = int(cluster_gpus // gpus) if gpus else None
    concurrency = settings.concurrency
    if concurrency is None and settings.address:
        concurrency = min(int(cluster_cpus), by_gpus or int(cluster_cpus))
    elif concurrency is None:
        concurrency = min(by_gpus or 1, int(cluster_cpus))
    concurrency = max(1, concurrency)
    cpus = 1 if settings.address else max(1, int(cluster_cpus) // concurrency)
    return cpus, gpus, concurrency


def with_threads(context: TrialContext, cpus: float) -> TrialContext:
    return replace(context, threads=int(cpus))
