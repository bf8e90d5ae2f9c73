"""The Ray Tune trainable: a thin adapter from Ray's reporting API to `run_trial`.

An exception inside training (a diverged loss, running out of memory, a knob the method
rejects) is an outcome of that candidate: it is reported as the trial's last result, with its
reason, and the trial ends normally, so the search goes on and Ray does not retry a failure that
would only repeat. Only a lost worker (its process killed, its node gone) reaches Ray as a trial
error, which Ray retries (`FailureConfig`, see the runner).
"""

from __future__ import annotations

import traceback
from typing import Any

import ray
import torch
from ray import tune

from autopeft.train.data import SearchData
from autopeft.train.trial import TrialContext, run_trial

# torch >= 2.5 names it at the top level; before that only under torch.cuda
_OUT_OF_MEMORY = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)


def train_candidate(
    config: dict[str, Any], data: SearchData | None = None, context: TrialContext | None = None
) -> None:
    """Run one candidate; a crash is reported with its reason instead of reaching Ray."""
    where = {"node_id": ray.get_runtime_context().get_node_id()}  # pid, hostname: Ray adds

    def report(metrics: dict[str, Any]) -> None:
        tune.report({**metrics, **where})

    try:
        run_trial(config, data, context, report=report)
    except Exception as exc:
        traceback.print_exc()  # the whole story goes to the worker's log
        # both objectives present (NaN): Ray checks every result for the searcher's metrics
        report({"error": failure_reason(exc), "final": False, "score": float("nan"),
                "stored_params": float("nan")})


def failure_reason(exc: BaseException) -> str:
    """One line on why a trial failed; out-of-memory errors say what to lower."""
    message = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
    if isinstance(exc, _OUT_OF_MEMORY):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # leave the device usable for the next trial here
        return (f"out of memory ({message}); lower --batch-size or "
                "--concurrency, or give each trial more memory (--gpus-per-trial)")
    return message
