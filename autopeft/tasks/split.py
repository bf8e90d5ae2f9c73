"""Seeded, stratified carving of training rows.

The search scores trials on a *selection split* held out of train, so the dev set stays
untouched for the final report; stratifying keeps small splits representative of the labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.api.types import is_float_dtype
from sklearn.model_selection import train_test_split

from autopeft.errors import AutoPeftError
from autopeft.tasks.specs import TaskSpec

_MAX_BINS = 10  # quantile bins used to stratify regression scores
# Bounds of the selection split (rows). Evaluating n rows costs about n/3 training rows (no
# backward), so at most half the training rows keeps evaluation under a fifth of a trial's
# epoch; at least 1,000 rows keeps the accuracy's standard error near a point (sqrt(p(1-p)/n)
# = 1.1 points at p = 0.85), so noise does not pick the winner; 5,000 rows (0.5 points) is
# enough on any data set.
SELECTION_MIN_ROWS, SELECTION_MAX_ROWS = 1_000, 5_000


# The least a search trains and selects on. Below 16 training rows a trial's score says
# nothing about the method; a class seen fewer than 3 times in selection makes its accuracy
# a coin toss. Real tasks have far more: these only catch a mistyped --max-train-samples or a
# file that is mostly empty.
MIN_TRAIN_ROWS = 16
MIN_SELECTION_PER_CLASS = 3
MIN_SELECTION_ROWS = 10  # regression


def check_split_sizes(task: TaskSpec, train: pd.DataFrame, selection: pd.DataFrame) -> None:
    """A one-line error when the rows a search would train or select on are too few to mean
    anything (see MIN_TRAIN_ROWS and MIN_SELECTION_PER_CLASS)."""
    if len(train) < MIN_TRAIN_ROWS:
        raise AutoPeftError(
            f"{task.name}: trials would train on {len(train)} row(s); at least "
            f"{MIN_TRAIN_ROWS} are needed (raise --max-train-samples, or use more data)")
    if task.is_regression:
        if len(selection) < MIN_SELECTION_ROWS:
            raise AutoPeftError(
                f"{task.name}: the selection split holds {len(selection)} row(s); at least "
                f"{MIN_SELECTION_ROWS} are needed (raise --selection-fraction, or use more data)")
        return
    counts = selection["label"].value_counts()
    short = {label: int(counts.get(label, 0)) for label in range(task.num_labels)
             if counts.get(label, 0) < MIN_SELECTION_PER_CLASS}
    if short:
        names = ", ".join(f"{_label_name(task, label)}: {n}" for label, n in short.items())
        raise AutoPeftError(
            f"{task.name}: the selection split (held out of train) holds too few rows of some "
            f"labels ({names}); each needs at least {MIN_SELECTION_PER_CLASS}: raise "
            "--selection-fraction, or use more data")


def _label_name(task: TaskSpec, label: int) -> str:
    names = task.label_names
    return f"'{names[label]}'" if label < len(names) else str(label)


def selection_cap(train_rows: int) -> int:
    """The most rows the selection split gets when trials train on `train_rows` rows."""
    return min(SELECTION_MAX_ROWS, max(SELECTION_MIN_ROWS, train_rows // 2))


def selection_split(
    df: pd.DataFrame, task: TaskSpec, fraction: float = 0.1, seed: int = 0,
    max_rows: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split `df` into (train, selection), `fraction` of the rows (at most `max_rows`) going to
    selection.

    Stratified by label (by score quantile bins for regression) when every stratum can be
    represented on both sides; otherwise a plain seeded shuffle. Both keep the original row
    order and get a fresh index.
    """
    if not _is_fraction(fraction):
        raise AutoPeftError(
            f"selection fraction {fraction!r} is out of range; "
            "use a number strictly between 0 and 1"
        )
    if len(df) < 2:
        raise AutoPeftError(
            f"{task.name}: {len(df)} training rows cannot be split; at least 2 are needed"
        )
    n_selection = int(np.ceil(round(float(fraction) * len(df), 9)))  # 0.3 * 10 is not > 3
    if max_rows is not None:
        n_selection = min(n_selection, max_rows)
    n_selection = min(max(n_selection, 1), len(df) - 1)
    strata = _strata(df["label"], task.is_regression, n_selection, len(df) - n_selection)
    train_idx, sel_idx = train_test_split(
        np.arange(len(df)), test_size=n_selection, random_state=seed, stratify=strata
    )
    return _take(df, train_idx), _take(df, sel_idx)


def subsample(df: pd.DataFrame, n: int | None, seed: int = 0) -> pd.DataFrame:
    """Keep `n` rows (for --max-train-samples), stratified by "label" when possible.

    None or n >= len(df) returns `df` unchanged. Float labels are treated as regression scores
    and stratified by quantile bins.
    """
    if n is None or (not isinstance(n, bool) and isinstance(n, int | np.integer) and n >= len(df)):
        return df
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise AutoPeftError(f"sample size {n!r} is not usable; use a whole number of rows >= 1")
    strata = None
    if "label" in df.columns:
        strata = _strata(df["label"], is_float_dtype(df["label"]), int(n), len(df) - int(n))
    kept, _ = train_test_split(
        np.arange(len(df)), train_size=int(n), random_state=seed, stratify=strata
    )
    return _take(df, kept)


def _is_fraction(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return False
    return 0 < float(value) < 1


def _strata(labels: pd.Series, regression: bool, n_a: int, n_b: int) -> np.ndarray | None:
    """Stratum per row, or None when sklearn could not honour it (a side smaller than the
    number of strata, or a stratum with a single row)."""
    values = labels.to_numpy()
    if regression:
        bins = max(1, min(_MAX_BINS, min(n_a, n_b)))
        values = pd.qcut(labels.astype(float), q=bins, labels=False, duplicates="drop").to_numpy()
    _, counts = np.unique(values, return_counts=True)
    if counts.min() < 2 or min(n_a, n_b) < len(counts):
        return None
    return values


def _take(df: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    return df.iloc[np.sort(positions)].reset_index(drop=True)
