"""Rows as read from any source, checked into the canonical frames training takes.

Every reader (GLUE TSV, CSV, JSON Lines, Parquet, the Hub) hands its rows over as a `Parsed`,
so what makes a row invalid, how it is counted and what the error says is decided here once.

A row that cannot be trained on (no text, no label, a label the task does not have, or a line
that does not parse) is *invalid*. By default an invalid row is an error naming the file, the
rows' line numbers and what is wrong with them; with `drop_invalid_rows` such rows are dropped
instead, counted in `TaskData.dropped` and in one warning line per file. No row is ever lost
without a word.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from autopeft.errors import AutoPeftError
from autopeft.tasks.specs import TaskSpec

log = logging.getLogger(__name__)

_SHOWN = 5  # bad label values and line numbers named in an error, at most
DROP_FLAG = "--drop-invalid-rows"


@dataclass
class TaskData:
    """Canonical train and dev frames, and where they came from (for reports)."""

    train: pd.DataFrame
    dev: pd.DataFrame
    source: str
    dropped: dict[str, int] = field(default_factory=dict)
    """Invalid rows dropped per split, {"train": 3, "dev": 0} (non-zero only with
    `drop_invalid_rows`; otherwise an invalid row is an error)."""


@dataclass
class Parsed:
    """One file's rows as read, before they are checked: canonical columns, raw strings."""

    frame: pd.DataFrame  # text columns + "label", a RangeIndex
    where: str  # the file (or Hub split), for messages
    lines: np.ndarray  # each row's 1-based line in the file (its row, for the Hub)
    data_rows: np.ndarray  # each row's 0-based data row: the prediction index
    unparsed: list[int] = field(default_factory=list)  # lines of rows that did not parse
    why_unparsed: str = ""  # e.g. "not 5 tab-separated fields"
    unit: str = "line"  # what `lines` count
    lenient: bool = False
    """Predictions only (`require_labels=False`): as GLUE TSVs always were read there, an unknown
    label is no label and a line that does not parse is skipped; else both are errors."""


class _Held(logging.Handler):
    def __init__(self, held: list[str]):
        super().__init__(logging.WARNING)
        self.held = held

    def emit(self, record: logging.LogRecord) -> None:
        self.held.append(record.getMessage())


@contextmanager
def held_warnings() -> Iterator[list[str]]:
    """The dropped-rows warnings of the rows checked inside, kept back instead of logged: a
    search says them once its every input is accepted (a refused run is one error line)."""
    held: list[str] = []
    handler, propagate = _Held(held), log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield held
    finally:
        log.removeHandler(handler)
        log.propagate = propagate


def label_key(value: object) -> str:
    """A class label as one text: "1", 1, 1.0 and " 1 " are the same class "1"; names stay."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return text


def of_width(records: list[tuple[int, list[str]]], width: int, require_labels: bool
             ) -> tuple[list[list[str]], list[int], list[int], list[int]]:
    """(line, fields) records split into the rows with `width` fields (with their lines and
    data-row numbers) and the lines of those without; for predictions a short row is padded,
    as pandas pads it."""
    rows, lines, data_rows, unparsed = [], [], [], []
    for data_row, (number, values) in enumerate(records):
        if len(values) < width and not require_labels:
            values = values + [""] * (width - len(values))
        if len(values) != width:
            unparsed.append(number)
            continue
        rows.append(values)
        lines.append(number)
        data_rows.append(data_row)
    return rows, lines, data_rows, unparsed


def clean_rows(
    task: TaskSpec,
    parsed: Parsed,
    require_labels: bool = True,
    drop_invalid_rows: bool = False,
) -> tuple[pd.DataFrame, int]:
    """The rows to train on, labels mapped to numbers, a fresh index; and how many were dropped.

    An invalid row (one that did not parse, lacks a text or a label, or has a label the task
    does not have) is an error unless `drop_invalid_rows`. Without `require_labels`
    (predictions) rows need only their texts and keep their data row as the index.
    """
    frame = parsed.frame
    texts = {c: frame[c].astype("string").str.strip() for c in task.text_columns}
    has_text = pd.concat([t.fillna("").ne("") for t in texts.values()], axis=1).all(axis=1)
    raw_labels = frame["label"].astype("string").str.strip()
    has_label = raw_labels.fillna("").ne("")
    labels = _parse_labels(task, raw_labels)
    if not require_labels:
        return _for_prediction(task, parsed, has_text.to_numpy(), has_label & labels.isna(),
                               raw_labels, labels)
    no_text = (~has_text).to_numpy()
    no_label = (has_text & ~has_label).to_numpy()
    unknown = (has_text & has_label & labels.isna()).to_numpy()
    keep = ~(no_text | no_label | unknown)
    invalid = len(parsed.unparsed) + int((~keep).sum())
    detail = ""
    if invalid:
        detail = _describe_invalid(task, parsed, no_text, no_label, unknown, raw_labels)
        if not drop_invalid_rows:
            raise AutoPeftError(
                f"{parsed.where} has {detail}; {task.name} accepts {_accepted_labels(task)}; "
                f"fix them, or pass {DROP_FLAG} to train without them")
    if not keep.any():  # before the warning below, so that the error is the only line shown
        why = f"{detail}, all dropped ({DROP_FLAG})" if invalid else "it holds no data rows"
        raise AutoPeftError(f"{parsed.where} has no usable rows: {why}; {task.name} accepts "
                            f"{_accepted_labels(task)}")
    if invalid:
        log.warning("%s: dropped %s (%s)", parsed.where, detail, DROP_FLAG)
    return _frame(task, frame, labels, keep), invalid


def _for_prediction(task: TaskSpec, parsed: Parsed, keep: np.ndarray, unknown: pd.Series,
                    raw_labels: pd.Series, labels: pd.Series) -> tuple[pd.DataFrame, int]:
    """Rows to predict: those with their texts, labels optional (an unknown one is NaN for a
    GLUE TSV, an error elsewhere); indexed by their data row."""
    if parsed.unparsed and not parsed.lenient:
        count = len(parsed.unparsed)
        raise AutoPeftError(f"{parsed.where} has {count} {_plural(count, parsed.unit)} that "
                            f"do{'es' if count == 1 else ''} not parse ({parsed.why_unparsed}) "
                            f"at {_where_lines(parsed.unit, parsed.unparsed)}")
    if unknown.any() and not parsed.lenient:
        position = int(np.flatnonzero(unknown.to_numpy())[0])
        raise AutoPeftError(
            f"{parsed.where}: label '{raw_labels.iloc[position]}' at {parsed.unit} "
            f"{parsed.lines[position]} is not usable; {task.name} accepts {_accepted_labels(task)}"
        )
    if not keep.any():  # before the warning below, so that the error is the only line shown
        raise AutoPeftError(f"{parsed.where} has no usable rows: each lacks a text "
                            f"({text_names(task)})")
    dropped = len(parsed.unparsed) + int((~keep).sum())
    if dropped:
        log.warning("%s: dropped %d malformed or incomplete rows", parsed.where, dropped)
    out = _frame(task, parsed.frame, labels, keep)
    out.index = parsed.data_rows[keep]
    return out, dropped


def _frame(task: TaskSpec, frame: pd.DataFrame, labels: pd.Series,
           keep: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame({c: frame[c][keep].astype(str).to_numpy() for c in task.text_columns})
    kept = labels[keep].to_numpy()
    dtype = float if task.is_regression or np.isnan(kept).any() else np.int64
    out["label"] = kept.astype(dtype)
    return out


def _describe_invalid(task: TaskSpec, parsed: Parsed, no_text: np.ndarray,
                      no_label: np.ndarray, unknown: np.ndarray, raw_labels: pd.Series) -> str:
    """`3 invalid rows (lines 2, 7, 9): 1 that does not parse (...), 2 with an unknown label
    ('maybe', '7')`; each row is counted once, under the first of these that applies."""
    invalid_lines = sorted([*parsed.unparsed, *parsed.lines[no_text | no_label | unknown]])
    count = len(invalid_lines)
    parts = []
    if parsed.unparsed:
        k = len(parsed.unparsed)
        parts.append(f"{k} that do{'es' if k == 1 else ''} not parse ({parsed.why_unparsed})")
    if no_text.any():
        parts.append(f"{int(no_text.sum())} lacking a text ({text_names(task)})")
    if no_label.any():
        parts.append(f"{int(no_label.sum())} lacking a label")
    if unknown.any():
        values = list(dict.fromkeys(raw_labels[unknown].tolist()))
        shown = ", ".join(f"'{_short(v)}'" for v in values[:_SHOWN])
        more = ", ..." if len(values) > _SHOWN else ""
        what = "a target that is not a number" if task.is_regression else "an unknown label"
        parts.append(f"{int(unknown.sum())} with {what} ({shown}{more})")
    return (f"{count} invalid {_plural(count, 'row')} ({_where_lines(parsed.unit, invalid_lines)})"
            f": {', '.join(parts)}")


def text_names(task: TaskSpec) -> str:
    """The text columns as the user knows them: a custom task's own, a GLUE task's names."""
    if task.source is None:
        return ", ".join(task.text_columns)
    return ", ".join(f if isinstance(f, str) else f"column {f}" for f in task.source.text_fields)


def _where_lines(unit: str, numbers: list[int]) -> str:
    """`lines 3, 4, 9` (the first few, then `...`), or `line 3`."""
    shown = ", ".join(str(int(n)) for n in numbers[:_SHOWN])
    return f"{_plural(len(numbers), unit)} {shown}{', ...' if len(numbers) > _SHOWN else ''}"


def _plural(count: int, word: str) -> str:
    return word if count == 1 else f"{word}s"


def _short(value: str, limit: int = 40) -> str:
    """A label value as one short line: a wrong column can put a whole sentence there."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_labels(task: TaskSpec, raw: pd.Series) -> pd.Series:
    """Labels as floats, NaN where missing or unusable. A GLUE task takes class ids or its class
    names (any case); a custom task's classes are its label values, matched by `label_key`."""
    numeric = pd.to_numeric(raw, errors="coerce").astype(float)
    numeric = numeric.where(np.isfinite(numeric))
    if task.is_regression:
        return numeric
    if task.source is not None:
        ids = {name: float(i) for i, name in enumerate(task.label_names)}
        return raw.map(label_key, na_action="ignore").map(ids).astype(float)
    in_range = (numeric == numeric.round()) & (numeric >= 0) & (numeric < task.num_labels)
    by_name = raw.str.lower().map({n.lower(): float(i) for i, n in enumerate(task.label_names)})
    return by_name.astype(float).fillna(numeric.where(in_range))


def _accepted_labels(task: TaskSpec) -> str:
    if task.is_regression:
        return "a number"
    shown = ", ".join(task.label_names[:10]) + (", ..." if len(task.label_names) > 10 else "")
    if task.source is not None:
        return f"one of: {shown}"
    return f"0..{task.num_labels - 1} or one of: {shown}"


def unreadable(path: Path | str, kind: str, exc: Exception) -> AutoPeftError:
    """One line for a file its reader chokes on; an encoding error says what is accepted."""
    hint = ("; accepted: UTF-8 text (re-save it as UTF-8)"
            if isinstance(exc, UnicodeDecodeError) else "")
    return AutoPeftError(f"{path} is not a readable {kind} file: {one_line(exc)}{hint}")


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
