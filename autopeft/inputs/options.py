"""Range checks of the run options `search` and `sweep` share, and the checks of values that
need nothing loaded: an empty value, a folder that is a file, a Ray address Ray cannot parse.

They run first, before any model, data, study or Ray is touched, so a mistyped number costs
the user one line and nothing else (the later checks need the model or the data). The other
commands use `check_not_blank` and `check_folder` for their own options.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from autopeft.errors import AutoPeftError
from autopeft.inputs.durations import parse_time_budget

MAX_SEED = 2**31 - 1  # numpy, scikit-learn and Ray all take seeds below 2**32; offsets are added
# Options naming a file, folder, list, URL or address: an empty value would silently mean the
# default (`--space "$SPACE"` with SPACE unset searching the default space), so it is refused.
NOT_BLANK = ("data_dir", "methods", "space", "portfolio", "address", "studies_dir",
             "reports_dir", "storage", "train", "dev", "text_columns", "label_column",
             "problem_type", "metric", "task_name")
# HOST:PORT (a host name, an IPv4 address or a bracketed IPv6 one), Ray Client's ray:// too
_ADDRESS = re.compile(r"(?:ray://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]"
                      r"(?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(?P<port>[0-9]{1,5})")


def check_options(run: Any) -> None:
    """Every range a `searching.RunSettings` must respect; one `AutoPeftError` for the first
    value out of range, naming the flag, the value and what is accepted."""
    check_not_blank({flag(name): getattr(run, name, None) for name in NOT_BLANK})
    if run.methods is not None and not [m for m in run.methods.split(",") if m.strip()]:
        raise AutoPeftError(f"--methods {run.methods!r} names no method; pass comma-separated "
                            "method names (autopeft methods lists them), or leave it out for all")
    if getattr(run, "trials", None) is not None:  # search and sweep; not a RunSettings field
        check_positive(trials=run.trials)
    check_positive(batch_size=run.batch_size, max_length=run.max_length,
                   **{name: value for name, value in (
                       ("epochs", run.epochs), ("concurrency", run.concurrency),
                       ("max_train_samples", run.max_train_samples),
                       ("final_epochs", run.final_epochs), ("final_top", run.final_top))
                       if value is not None})
    if not 0 <= run.seed <= MAX_SEED:
        raise AutoPeftError(f"--seed must be a whole number from 0 to {MAX_SEED} "
                            f"(got {run.seed})")
    fraction = run.selection_fraction
    if not (isinstance(fraction, int | float) and math.isfinite(fraction) and 0 < fraction < 1):
        raise AutoPeftError(f"--selection-fraction must be strictly between 0 and 1 "
                            f"(got {fraction!r})")
    if run.final_seeds < 0:
        raise AutoPeftError(f"--final-seeds must be 0 (no retraining) or more "
                            f"(got {run.final_seeds})")
    if not (math.isfinite(run.reduction_factor) and run.reduction_factor >= 2):
        raise AutoPeftError(f"--reduction-factor must be at least 2 "
                            f"(got {number(run.reduction_factor)})")
    check_positive(grace_epochs=run.grace_epochs)
    parse_time_budget(run.time_budget)
    check_address(run.address)
    check_gpus(run.gpus_per_trial, run.address)
    check_folder(run.studies_dir, "--studies-dir")
    check_folder(run.reports_dir, "--reports-dir")


def number(value: float) -> str:
    """A number as short as it reads back exactly: 1.5, 64, nan, 1.9999999999999998 (not 2)."""
    short = f"{value:g}"
    return short if math.isnan(value) or float(short) == value else repr(float(value))


def flag(name: str) -> str:
    """The command-line flag of an option: `max_train_samples` → `--max-train-samples`."""
    return f"--{name.replace('_', '-')}"


def check_not_blank(values: dict[str, str | None]) -> None:
    """Values given (not None) that hold nothing but spaces, by flag: leaving an option out is
    how its default is asked for."""
    for name, value in values.items():
        if value is not None and not str(value).strip():
            raise AutoPeftError(f"{name} is empty ({value!r}); pass a value, or leave the "
                                "option out for its default")


def check_folder(path: str | Path | None, name: str) -> None:
    """A folder the command may create or write into: what of `path` exists is a directory.

    `afile` or `afile/sub`, where `afile` is a file, would fail when first written, perhaps
    after training; refused here, before anything is loaded.
    """
    if path is None:
        return
    target = Path(path).expanduser()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == target else f"is inside '{existing}', a file"
        raise AutoPeftError(f"{name} '{path}' {where}; pass a folder (one that does not exist "
                            "yet is created)")


def check_address(address: str | None) -> None:
    """A Ray cluster address Ray can parse; refused before the study is opened (reaching it is
    only tried when the trials start)."""
    if address is None or address in ("auto", "local"):
        return
    match = _ADDRESS.fullmatch(address)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise AutoPeftError(f"--address {address!r} is not a Ray cluster address; accepted: "
                            "auto, HOST:PORT of the head (10.0.0.5:6379) or ray://HOST:PORT "
                            "(Ray Client)")


def check_positive(**values: int) -> None:
    """Counts that must be at least 1, by option name."""
    for name, value in values.items():
        if value < 1:
            raise AutoPeftError(f"{flag(name)} must be at least 1 (got {value})")


def check_gpus(gpus_per_trial: float | None, address: str | None) -> None:
    """A GPU share Ray can schedule, and, for a local run, GPUs this machine has.

    Ray queues a trial that asks for more GPUs than exist forever, so it is refused here; a
    cluster's GPUs are only known once joined (`engine.runner.size_trials` checks them then).
    """
    if gpus_per_trial is None:
        return
    if not (math.isfinite(gpus_per_trial) and gpus_per_trial >= 0):
        raise AutoPeftError(f"--gpus-per-trial must be 0 or more (got {number(gpus_per_trial)})")
    if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
        raise AutoPeftError(f"--gpus-per-trial {number(gpus_per_trial)} is not schedulable; use a "
                            "fraction up to 1 (0.25: four trials per GPU) or a whole number")
    if address is None and gpus_per_trial > 0:
        import torch

        present = torch.cuda.device_count()
        if gpus_per_trial > present:
            raise AutoPeftError(
                f"--gpus-per-trial {number(gpus_per_trial)} but this machine has {present} GPU(s); "
                "leave it out (or pass 0) to train on CPUs, or pass --address for a cluster")
