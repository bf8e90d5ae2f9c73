"""Runs a study's trials as a Ray Tune experiment: Optuna proposes, Ray executes.

Faults: a trial whose worker process or node is lost is restarted by Ray (from scratch: trials
keep no checkpoints) up to `max_failures` times; errors inside training end only that trial
(see the trainable). A run stopped by Ctrl+C marks its unfinished trials failed and raises
`SearchInterrupted`, so the same command continues the study.
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
from rich.console import Console

from autopeft.engine.cluster import connect
from autopeft.engine.progress import SearchProgress
from autopeft.engine.samplers import check_sampler, make_sampler
from autopeft.engine.scheduler import MultiObjectiveASHA, check_scheduler
from autopeft.engine.searcher import BudgetedOptunaSearch
from autopeft.engine.trainable import train_candidate
from autopeft.errors import AutoPeftError, SearchInterrupted
from autopeft.sizing import Sizer
from autopeft.space import SearchSpace
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


@dataclass(frozen=True)
class EngineOutcome:
    launched: int
    infeasible: int
    wall_seconds: float


def run_trials(
    study: optuna.Study,
    space: SearchSpace,
    sizer: Sizer,
    budget_params: int,
    data: SearchData,
    context: TrialContext,
    settings: EngineSettings,
    ray_dir: Path,
    console: Console | None = None,
) -> EngineOutcome:
    """Add `settings.trials` trained trials to `study` (over-budget proposals not counted);
    progress goes to `console` (stderr by default)."""
    started = time.perf_counter()
    check_scheduler(settings.scheduler, settings.reduction_factor, settings.grace_epochs,
                    context.epochs)
    settings, cpus, gpus = prepare_cluster(settings)
    # A resumed study gets a fresh seed stream: the same seed would replay old proposals.
    sampler = make_sampler(settings.sampler, settings.seed + len(study.trials))
    searcher = BudgetedOptunaSearch(
        space, sizer, budget_params, study.study_name, study._storage, sampler
    )
    trainable = tune.with_parameters(train_candidate, data=data,
                                     context=with_threads(context, cpus))
    keeper = f"the study '{study.study_name}'"
    launched = fit(trainable, searcher, settings, settings.trials, context.epochs, (cpus, gpus),
                   ray_dir, keeper, console)
    if launched < settings.trials and not searcher.exhausted:
        raise SearchInterrupted(
            f"search stopped after {launched} of {settings.trials} trials; {keeper} keeps every "
            "finished trial: run the same command again to continue it")
    return EngineOutcome(launched, searcher.infeasible, time.perf_counter() - started)


def prepare_cluster(settings: EngineSettings) -> tuple[EngineSettings, float, float]:
    """Connect to Ray and size each trial: the settings (concurrency resolved), CPUs, GPUs."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_sampler(settings.sampler)
    connect(settings.address)
    cpus, gpus, concurrency = size_trials(settings, ray.cluster_resources())
    return replace(settings, concurrency=concurrency), cpus, gpus


def fit(trainable, searcher, settings: EngineSettings, total: int, epochs: int,
        resources: tuple[float, float], ray_dir: Path, keeper: str,
        console: Console | None = None) -> int:
    """Run up to `total` trials of `searcher`'s proposals on Ray; how many finished.

    `searcher` is a BudgetedOptunaSearch or anything with its `fail_unfinished` and
    `on_trial_retry`. On Ctrl+C (or a lost driver connection) the unfinished trials are
    marked failed and `SearchInterrupted` says how to continue (`keeper`: what keeps the
    finished trials, e.g. "the study 'x'").
    """
    cpus, gpus = resources
    progress = SearchProgress(total, settings.concurrency, console)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cpus, "gpu": gpus}),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=total,
            max_concurrent_trials=settings.concurrency,
            reuse_actors=True,
            # No metric/mode here: the searcher was given both objectives, and MO-ASHA reads
            # score and stored_params from each result itself.
            scheduler=_scheduler(settings, epochs),
        ),
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
        unfinished = searcher.fail_unfinished(
            "interrupted: the search was stopped before the trial finished")
    if unfinished:
        raise SearchInterrupted(
            f"search stopped after {len(grid) - len(unfinished)} of {total} trials; trial(s) "
            f"{', '.join(map(str, unfinished))} did not finish and were marked failed; {keeper} "
            "keeps every finished trial: run the same command again to continue it")
    return len(grid)


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
