"""The final runs of Pareto points as Ray tasks, side by side on the cluster.

Each (point, seed) run is independent, so they go to the same workers the trials used, each
with a trial's resources (`--gpus-per-trial` included), instead of one after another in the
driver, which on a cluster may have no accelerator at all; a sweep submits every study's runs
together. Each study's training data goes to the object store once. A run whose worker is
lost is retried by Ray like a trial.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ray
import torch

from autopeft.engine.runner import EngineSettings, prepare_cluster
from autopeft.train.final import Batch, Executor, FinalInputs, FinalPoint, retrain_once


def on_ray(settings: EngineSettings) -> Executor:
    """An executor for `run_plans`: every batch's runs as Ray tasks, all submitted at once."""

    def execute(batches: list[Batch]) -> Iterator[tuple[int, FinalPoint, int, dict[str, Any]]]:
        _, cpus, gpus = prepare_cluster(settings)
        task = ray.remote(num_cpus=cpus, num_gpus=gpus,
                          max_retries=settings.max_failures)(_final_run)
        pending = {}
        for number, (jobs, inputs) in enumerate(batches):
            shared = ray.put(inputs)  # once per study, whatever its number of runs
            pending.update({task.remote(shared, point, index, cpus): (number, point, index)
                            for point, index in jobs})
        try:
            while pending:
                [done], _ = ray.wait(list(pending), num_returns=1)
                number, point, index = pending.pop(done)
                yield number, point, index, ray.get(done)
        finally:
            for ref in pending:  # stopped early (Ctrl+C, an error): drop what is left
                ray.cancel(ref, force=True)

    return execute


def _final_run(inputs: FinalInputs, point: FinalPoint, index: int, cpus: float
               ) -> dict[str, Any]:
    torch.set_num_threads(max(1, int(cpus)))  # as a trial with these resources would
    return retrain_once(point, index, inputs)
