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

# The module whose warning announces Ray's default token authentication (see `connect`).
_AUTH_DEFAULT_LOGGER = "ray._private.authentication.authentication_token_setup"


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
            # Ray >= 2.60 turns token authentication on for a new local instance and warns
            # about that default on every start; the default is kept (safe) and its notice,
            # news to no user of a private local instance, silenced. RAY_AUTH_MODE still wins.
            logging.getLogger(_AUTH_DEFAULT_LOGGER).setLevel(logging.ERROR)
            ray.init(address="local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if not address:
            raise AutoPeftError(f"cannot start Ray locally: {_first_line(exc)}") from None
        raise AutoPeftError(f"cannot connect to the Ray cluster at '{address}': "
                            f"{_first_line(exc)}{_auth_hint(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _auth_hint(exc: BaseException) -> str:
    """Ray >= 2.60's `ray start` turns on token authentication when ~/.ray/auth_token exists,
    but a driver joining by address does not use it unless told: say how."""
    chain, seen = [], exc
    while seen is not None:
        chain.append(f"{type(seen).__name__} {seen}")
        seen = seen.__cause__ or seen.__context__
    if os.environ.get("RAY_AUTH_MODE") or not any(
            "auth" in link.lower() or "token" in link.lower() for link in chain):
        return ""
    return ("; the cluster uses token authentication: set RAY_AUTH_MODE=token (and "
            "RAY_AUTH_TOKEN, or the cluster's ~/.ray/auth_token) and run again")
