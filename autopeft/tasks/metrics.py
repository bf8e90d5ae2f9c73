"""Task metrics from raw model outputs, with scikit-learn and SciPy only.

Every result carries a "score" (the task's primary metric) so the search can rank trials
without knowing which task it is optimising. Which metrics a custom task gets, and its default
primary, are decided here per problem type (`PROBLEM_METRICS`, `DEFAULT_PRIMARY`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from autopeft.errors import AutoPeftError
from autopeft.tasks.specs import TaskSpec

# The primaries that average two metrics, and the parts they average.
MEANS = {"accuracy_f1_mean": ("accuracy", "f1"), "pearson_spearman_mean": ("pearson", "spearman")}
ALIASES = {"mcc": "matthews_correlation"}  # what a user may type for a metric's name
# What a custom task of each problem type reports; F1 needs a positive class, so binary only.
PROBLEM_METRICS = {
    "binary": ("accuracy", "f1", "macro_f1", "matthews_correlation"),
    "multiclass": ("accuracy", "macro_f1", "matthews_correlation"),
    "regression": ("pearson", "spearman"),
}
# Binary: accuracy, as SentEval and GLUE's single-sentence tasks report, since F1 depends on
# which class is "positive", for an inferred task an alphabetical accident. Multi-class:
# macro-F1, which a majority-class model cannot inflate on unbalanced classes. Regression: the
# mean of Pearson and Spearman, as GLUE's STS-B.
DEFAULT_PRIMARY = {"binary": "accuracy", "multiclass": "macro_f1",
                   "regression": "pearson_spearman_mean"}


def primary_choices(problem_type: str) -> tuple[str, ...]:
    """The primary metrics a task of `problem_type` can be searched on: its metrics and the
    means of them."""
    metrics = PROBLEM_METRICS[problem_type]
    means = tuple(m for m, parts in MEANS.items() if set(parts) <= set(metrics))
    return (*metrics, *means)


def check_primary(metric: str, problem_type: str, flag: str = "--metric") -> str:
    """`metric` (an alias such as mcc made canonical) when a task of `problem_type` has it;
    else a one-line error listing what it has."""
    name = ALIASES.get(str(metric).strip().lower(), str(metric).strip().lower())
    choices = primary_choices(problem_type)
    if name not in choices:
        short = {canonical: alias for alias, canonical in ALIASES.items()}
        shown = ", ".join(f"{c} ({short[c]})" if c in short else c for c in choices)
        raise AutoPeftError(f"{flag} '{metric}' is not a metric of a {problem_type} task; "
                            f"choose one of: {shown}")
    return name


def compute_metrics(
    task: TaskSpec, predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Score predictions for `task`; the result holds each of `task.metrics` plus "score".

    Classification takes logits of shape [n, num_labels] (argmax is applied) or class ids of
    shape [n]. Regression takes scores of shape [n] or [n, 1]. Degenerate inputs do not yield
    NaN: a correlation with a constant side is reported as 0.0 (no linear/rank relation can be
    measured), and F1 without any positive prediction is 0.0, so a collapsed model ranks last
    instead of poisoning the search with NaN.
    """
    labels = np.asarray(labels)
    if task.is_regression:
        preds = _regression_outputs(task, predictions)
    else:
        preds = _class_ids(task, predictions)
    if labels.ndim != 1 or labels.shape[0] != preds.shape[0] or preds.shape[0] == 0:
        raise AutoPeftError(
            f"{task.name}: got {preds.shape[0]} predictions for labels of shape "
            f"{labels.shape}; expected one non-empty label per prediction"
        )
    if task.is_regression:
        result = _regression_metrics(preds, labels.astype(float))
    else:
        result = _classification_metrics(task, preds, labels.astype(int))
    result["score"] = _primary(task, result)
    return result


def chance_score(task: TaskSpec, labels: np.ndarray) -> float:
    """The best score a constant prediction gets on `labels`: what a model that learned nothing
    scores (always the majority class, or the class that maximises F1; 0 for correlations)."""
    return chance_scores(task, labels)["score"]


def chance_scores(task: TaskSpec, labels: np.ndarray) -> dict[str, float]:
    """Per metric (and "score"), the best a constant prediction gets on `labels`: each metric
    is maximised over the classes on its own (accuracy by the majority class, F1 by the positive
    one); correlations with a constant are 0."""
    labels = np.asarray(labels)
    names = (*task.metrics, "score")
    if task.is_regression or labels.size == 0:
        return dict.fromkeys(names, 0.0)
    results = [compute_metrics(task, np.full(labels.shape[0], label), labels)
               for label in range(task.num_labels)]
    return {name: max(result[name] for result in results) for name in names}


def _class_ids(task: TaskSpec, predictions: np.ndarray) -> np.ndarray:
    preds = np.asarray(predictions)
    if preds.ndim == 2 and preds.shape[1] == task.num_labels:
        return preds.argmax(axis=1)
    if preds.ndim == 1:
        return preds.astype(int)
    raise AutoPeftError(
        f"{task.name}: predictions of shape {preds.shape} are not usable; expected logits "
        f"[n, {task.num_labels}] or class ids [n]"
    )


def _regression_outputs(task: TaskSpec, predictions: np.ndarray) -> np.ndarray:
    preds = np.asarray(predictions, dtype=float)
    if preds.ndim == 2 and preds.shape[1] == 1:
        return preds[:, 0]
    if preds.ndim == 1:
        return preds
    raise AutoPeftError(
        f"{task.name}: predictions of shape {preds.shape} are not usable; expected scores "
        "[n] or [n, 1]"
    )


def _classification_metrics(
    task: TaskSpec, preds: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    result: dict[str, float] = {}
    if "accuracy" in task.metrics:
        result["accuracy"] = float(accuracy_score(labels, preds))
    if "f1" in task.metrics:
        result["f1"] = float(f1_score(labels, preds, pos_label=1, zero_division=0.0))
    if "macro_f1" in task.metrics:  # over the classes in labels or predictions
        result["macro_f1"] = float(f1_score(labels, preds, average="macro", zero_division=0.0))
    if "matthews_correlation" in task.metrics:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant predictions: sklearn warns and gives 0
            result["matthews_correlation"] = _finite(matthews_corrcoef(labels, preds))
    return result


def _regression_metrics(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if len(preds) < 2 or np.ptp(preds) == 0 or np.ptp(labels) == 0:
        return {"pearson": 0.0, "spearman": 0.0}  # undefined: see compute_metrics
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "pearson": _finite(pearsonr(preds, labels)[0]),
            "spearman": _finite(spearmanr(preds, labels)[0]),
        }


def _finite(value: float) -> float:
    value = float(value)
    return 0.0 if math.isnan(value) else value


def _primary(task: TaskSpec, result: dict[str, float]) -> float:
    parts = MEANS.get(task.primary_metric)
    if parts is not None:
        return sum(result[p] for p in parts) / len(parts)
    return result[task.primary_metric]
