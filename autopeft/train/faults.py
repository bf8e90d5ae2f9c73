"""Fault injection for the fault-tolerance tests (tests/test_faults.py); inert unless asked for.

Those tests need a trial to die, diverge or run out of memory at a known point, inside a Ray
worker they cannot reach. The environment variable

    AUTOPEFT_TEST_FAULT="<kind>:<trial>[:<marker file>][,<kind>:<trial>...]"

makes search trial number <trial> (``*``: every trial) fail as <kind>:

* ``kill``: its worker process SIGKILLs itself right after its first epoch (and that epoch's
  report, when there are more epochs);
* ``nan``: its trainable weights are set to NaN before the first step, so the loss is NaN;
* ``oom``: ``torch.OutOfMemoryError`` is raised right after its first epoch.

Only faults: nothing here changes where or when a trial runs, so no test assertion about
placement or timing is made true by this hook.

With a marker file the fault fires once: for the first process that creates the file (it writes
its pid there), so a retried trial runs clean. Only search trials (``run_trial``) call in here,
never the final retraining in the driver. The variable must be in the Ray workers' environment:
a local Ray instance inherits the search's, a cluster's workers that of ``ray start``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
from torch import nn

ENV = "AUTOPEFT_TEST_FAULT"
_STAGE = {"kill": "epoch", "nan": "built", "oom": "epoch"}  # when each fires


def inject(stage: str, trial: int, model: nn.Module | None = None) -> None:
    """Fire the fault set for `trial` at `stage` ("built": before training, "epoch": after one)."""
    for item in filter(None, os.environ.get(ENV, "").split(",")):
        kind, target, *marker = item.strip().split(":", 2)
        if kind not in _STAGE:
            raise ValueError(f"{ENV}: unknown fault '{kind}'; known: {', '.join(_STAGE)}")
        if _STAGE[kind] != stage or target not in ("*", str(trial)):
            continue
        if marker and not _claim(Path(marker[0])):
            continue
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "nan":
            with torch.no_grad():
                for param in model.parameters():
                    if param.requires_grad:
                        param.fill_(float("nan"))
        else:
            raise torch.OutOfMemoryError(f"out of memory injected by {ENV} (trial {trial})")


def _claim(marker: Path) -> bool:
    """Create `marker` holding this pid; False when another process created it first."""
    try:
        handle = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w") as file:
        file.write(str(os.getpid()))
    return True
