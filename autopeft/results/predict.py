"""Predictions of a loaded artifact on a file in the task's layout (what `autopeft predict` does).

The file is read by the same readers as training data (GLUE TSV, CSV, JSON Lines; a custom
task's own columns, Parquet too), with the label column optional; batching and evaluation mode
are the training loop's own. Class names are the task's (a custom task's label values).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from autopeft.artifacts.load import LoadedModel
from autopeft.errors import AutoPeftError
from autopeft.inputs.options import check_folder
from autopeft.tasks import compute_metrics
from autopeft.tasks.data import read_examples
from autopeft.train.data import DEFAULT_MAX_LENGTH, tokenize_frame
from autopeft.train.loop import predict_logits

INDEX_COLUMN = "index"  # the row's 0-based data row in the input (header excluded)
PROB_PREFIX = "prob_"  # classification: one probability column per class name


@dataclass
class Predictions:
    """One row per usable input row; `metrics` when every row carried a label."""

    frame: pd.DataFrame
    metrics: dict[str, float] | None


def check_output(output: str | Path | None) -> Path | None:
    """The CSV path `output` names: not a directory, nor under a file (`afile/x.csv`)."""
    if output is None:
        return None
    path = Path(output).expanduser()
    if path.is_dir():
        raise AutoPeftError(f"--output '{path}' is a directory; pass a file name like "
                            "predictions.csv")
    check_folder(path.parent, "--output's folder")
    return path


def predict_file(loaded: LoadedModel, input_path: str | Path, batch_size: int = 64,
                 max_length: int = DEFAULT_MAX_LENGTH) -> Predictions:
    """Predict every row of `input_path` (labels optional; scored when all rows have one).

    Classification rows get `label` (class id), `label_name` and `prob_<name>` per class;
    regression rows get `prediction`.
    """
    if batch_size < 1:
        raise AutoPeftError(f"--batch-size must be at least 1 (got {batch_size})")
    task = loaded.task
    examples = read_examples(task, input_path, require_labels=False)
    split = tokenize_frame(examples, task.text_columns, loaded.tokenizer, max_length)
    logits = predict_logits(loaded.model, split, loaded.tokenizer, batch_size)
    frame = pd.DataFrame({INDEX_COLUMN: examples.index.to_numpy()})
    if task.is_regression:
        frame["prediction"] = logits.reshape(len(frame), -1)[:, 0]
    else:
        ids = logits.argmax(axis=1)
        frame["label"] = ids
        frame["label_name"] = [task.label_names[i] for i in ids]
        probabilities = softmax(logits.astype(np.float64), axis=1)
        for column, name in enumerate(task.label_names):
            frame[f"{PROB_PREFIX}{name}"] = probabilities[:, column]
    labels = examples["label"].to_numpy(dtype=float)
    metrics = None if np.isnan(labels).any() else compute_metrics(task, logits, labels)
    return Predictions(frame=frame, metrics=metrics)


def write_predictions(predictions: Predictions, output: str | Path | None) -> None:
    """CSV to `output`, or to stdout when it is None (so the command pipes)."""
    if output is None:
        predictions.frame.to_csv(sys.stdout, index=False)
        return
    path = check_output(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    predictions.frame.to_csv(path, index=False)
