"""Connecting to Ray: a cluster by address, or a quiet local instance.

The local instance stays up for the rest of the process, so later searches in the same process
skip Ray's start-up (~3 s); Ray shuts it down at exit. (Preloading torch into Ray's prestarted
workers was tried and made the first trial start later: the imports compete for the cores.)
"""

from __future__ import annotations

import logging
import os

import ray

from autopeft.errors import AutoPeftError


def connect(address: str | None) -> None:
    """Join the cluster at `address`, or start a local instance (no dashboard, no log relay)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Ray tables
    # a lost worker is one progress line (and Ray's trial log), not a traceback per failure
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    if ray.is_initialized():
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:  # "local": a new instance, never a cluster some `ray start` left recorded
            ray.init(address="local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at '{address}'" if address else "locally"
        raise AutoPeftError(f"cannot start Ray {where}: {str(exc).splitlines()[0]}") from None
