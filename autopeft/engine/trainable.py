"""The Ray Tune trainable: a thin adapter from Ray's reporting API to `run_trial`."""

from __future__ import annotations

from typing import Any

from ray import tune

from autopeft.train.data import SearchData
from autopeft.train.trial import TrialContext, run_trial


def train_candidate(
    config: dict[str, Any], data: SearchData | None = None, context: TrialContext | None = None
) -> None:
    """Run one candidate; a crash is reported with its message before Ray sees it."""
    try:
        run_trial(config, data, context, report=tune.report)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        tune.report({"error": message, "final": False, "score": float("nan")})
        raise
