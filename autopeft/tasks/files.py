"""A user's own rows (CSV, TSV, JSON Lines, Parquet, or a Hub dataset) for a custom task.

A custom task (`TaskSource`) names its columns by header name or 0-based position; this module
reads its files, finds the columns (a CSV/TSV header is detected when only positions are given
and `header` is not set), hands the rows to `tasks.rows` to be checked like GLUE's, and carves
dev out of train when the task has no dev file. The line readers are shared with GLUE's files.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from autopeft.errors import AutoPeftError
from autopeft.tasks.rows import Parsed, TaskData, clean_rows, of_width, unreadable
from autopeft.tasks.specs import Field, TaskSource, TaskSpec, describe_column
from autopeft.tasks.split import selection_split

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
DELIMITED = ("csv", "tsv")  # the formats with a header line that may be absent
HUB_PROBE_TIMEOUT_S = 10.0
_TRUE = {"1", "true", "yes", "on"}
_HEADER_SAMPLE = 200  # data rows looked at to tell a header line from a data line
_KIND = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSON Lines", "parquet": "Parquet"}


@dataclass
class Table:
    """Every column of one file as read, by 0-based position, before the task's are picked."""

    frame: pd.DataFrame  # columns 0..width-1, raw values
    names: list[str] | None  # the columns' names (a header line, JSON keys, Parquet's schema)
    where: str
    lines: np.ndarray
    data_rows: np.ndarray
    unparsed: list[int] = field(default_factory=list)
    why_unparsed: str = ""
    unit: str = "line"
    header: bool | None = None  # CSV/TSV: whether the first line named the columns


def file_format(path: str | Path) -> str:
    """csv, tsv, jsonl or parquet, from the extension; anything else is refused in one line."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise AutoPeftError(f"'{path}': unrecognised file format "
                            f"'{suffix or 'no extension'}'; accepted: {', '.join(FORMATS)} "
                            "(CSV, TSV, JSON Lines, Parquet)")
    return FORMATS[suffix]


def load_custom_data(task: TaskSpec, drop_invalid_rows: bool = False) -> TaskData:
    """A custom task's checked train and dev rows; without a dev file or split, dev is carved
    out of train (stratified, seeded by the task), so no row is in both."""
    source = _source(task)
    parsed, _ = read_split(source, task.text_columns, "train")
    train, dropped_train = clean_rows(task, parsed, drop_invalid_rows=drop_invalid_rows)
    where = _origin(source)
    if source.dev is not None:
        parsed, _ = read_split(source, task.text_columns, "dev")
        dev, dropped_dev = clean_rows(task, parsed, drop_invalid_rows=drop_invalid_rows)
        return TaskData(train, dev, f"{where}; dev: {source.dev}",
                        {"train": dropped_train, "dev": dropped_dev})
    train, dev = selection_split(train, task, source.dev_fraction, source.dev_seed)
    return TaskData(train, dev, f"{where}; {carved_dev_note(task)}",
                    {"train": dropped_train, "dev": 0})


def carved_dev_note(task: TaskSpec) -> str:
    """What the report and the search say about a dev split carved out of train."""
    source = _source(task)
    strata = "score bins" if task.is_regression else "label"
    return (f"dev: {source.dev_fraction:.0%} of train carved out (stratified by {strata}, "
            f"seed {source.dev_seed}), never trained or selected on")


def read_rows(task: TaskSpec, path: str | Path, require_labels: bool = True) -> pd.DataFrame:
    """One file in a custom task's layout (predictions: labels optional, indexed by data row)."""
    source = _source(task)
    table = read_table(Path(path).expanduser(), _header(source, None), source.label_field,
                       require_labels, "input file")
    frame, _ = clean_rows(task, select(table, source, task.text_columns, require_labels),
                          require_labels=require_labels)
    return frame


def read_split(source: TaskSource, text_columns: tuple[str, ...], split: str,
               require_labels: bool = True) -> tuple[Parsed, bool | None]:
    """The train or dev rows of `source` as read (not yet checked), and whether a CSV/TSV had
    a header line."""
    name = source.train if split == "train" else source.dev
    if name is None:
        raise AutoPeftError(f"the task has no {split} file")
    if source.dataset:
        table = _hub_table(source, name)
    else:
        table = read_table(Path(name), _header(source, source.header), source.label_field,
                           require_labels, f"{split} file")
    return select(table, source, text_columns, require_labels), table.header


def read_table(path: Path, header: bool | None, label_field: Field, require_labels: bool,
               what: str = "file") -> Table:
    """Every column of a CSV, TSV, JSON Lines or Parquet file; `header` None: detected."""
    kind = file_format(path)
    if not path.is_file():
        raise AutoPeftError(f"{what} '{path}' does not exist")
    if kind in DELIMITED:
        return _delimited(path, kind, header, label_field, require_labels)
    if kind == "jsonl":
        records, lines, data_rows, unparsed = jsonl_records(path)
        raw = pd.DataFrame.from_records(records) if records else pd.DataFrame()
        return Table(raw.set_axis(range(raw.shape[1]), axis=1),
                     [str(c) for c in raw.columns], str(path), np.array(lines, dtype=int),
                     np.array(data_rows, dtype=int), unparsed, "not a JSON object")
    try:
        raw = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise unreadable(path, "Parquet", exc) from None
    return Table(raw.set_axis(range(raw.shape[1]), axis=1), [str(c) for c in raw.columns],
                 str(path), np.arange(1, len(raw) + 1), np.arange(len(raw)), unit="row")


def select(table: Table, source: TaskSource, text_columns: tuple[str, ...],
           require_labels: bool = True) -> Parsed:
    """The task's columns of `table` under their canonical names; one that is not there is an
    error listing the columns found (for predictions the label column may be missing)."""
    picked: dict[str, int | None] = {}
    fields = (*source.text_fields, source.label_field)
    if table.frame.shape == (0, 0):  # no row read at all: `tasks.rows` says so
        table = replace(table, frame=pd.DataFrame({i: [] for i in range(len(fields))},
                                                  dtype=object), names=None)
        fields = tuple(range(len(fields)))
    for canonical, wanted in zip((*text_columns, "label"), fields, strict=True):
        position = _position(table, wanted)
        if position is None and not (canonical == "label" and not require_labels):
            raise AutoPeftError(f"{table.where} has no {describe_column(wanted)}; "
                                f"columns found: {columns_found(table)}")
        picked[canonical] = position
    frame = pd.DataFrame({c: table.frame[p].to_numpy() if p is not None
                          else np.full(len(table.frame), "", dtype=object)
                          for c, p in picked.items()}, dtype=object)
    return Parsed(frame, table.where, table.lines, table.data_rows, table.unparsed,
                  table.why_unparsed, table.unit)


def columns_found(table: Table) -> str:
    """`'id', 'title', 'stars'`, or `2 unnamed (no header line): 0..1`."""
    width = table.frame.shape[1]
    if table.names is None:
        return f"{width} unnamed (no header line): 0..{width - 1}"
    shown = ", ".join(f"'{n}'" for n in table.names[:20])
    return shown + (f", ... ({width} in all)" if width > 20 else "") if width else "none"


def detect_header(rows: list[list[str]], label_field: Field) -> bool:
    """Whether the first line names the columns rather than holding data: it has text above a
    column of numbers, or a text label column's first value never recurs below it."""
    first = rows[0]
    rest = [r for r in rows[1:_HEADER_SAMPLE] if len(r) == len(first)]
    if not rest:
        return False
    for j, value in enumerate(first):
        numbers = sum(is_number(r[j]) for r in rest)
        if not is_number(value) and numbers >= 0.9 * len(rest):
            return True
    if isinstance(label_field, int) and 0 <= label_field < len(first):
        labels = [r[label_field].strip() for r in rest]
        few = len(set(labels)) <= max(2, len(labels) // 2)
        textual = not any(is_number(v) for v in labels)
        return few and textual and first[label_field].strip() not in labels
    return False


def is_number(text: object) -> bool:
    """Whether a value reads as a finite number ("3", "0.25", " 1e3 ")."""
    try:
        return math.isfinite(float(str(text).strip()))
    except ValueError:
        return False


def hub_offline() -> bool:
    """Whether the Hub is switched off (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE)."""
    import huggingface_hub.constants as hub_constants

    if hub_constants.HF_HUB_OFFLINE:
        return True
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


# --- line readers (GLUE's files use them too) --------------------------------------------------


def text_lines(path: Path, kind: str) -> list[tuple[int, str]]:
    """The non-blank lines of a UTF-8 file (a byte-order mark dropped), with their numbers."""
    try:
        # read_text turns \r\n and \r into \n; str.splitlines would also split at characters
        # such as U+2028, which a JSON string or a text field may hold unescaped.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise unreadable(path, kind, exc) from exc
    return [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]


def tsv_records(path: Path, kind: str = "TSV") -> list[tuple[int, list[str]]]:
    """(line, fields) per row, quoting off: one physical line is one row, and bare double
    quotes stay in the text (GLUE's files and most TSVs are written that way)."""
    return [(number, line.split("\t")) for number, line in text_lines(path, kind)]


def csv_records(path: Path) -> list[tuple[int, list[str]]]:
    """(first line, fields) per record, by the stdlib reader, which says on which line each
    record ends (a quoted field may span lines); blank lines are no records."""
    records: list[tuple[int, list[str]]] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            first = 1
            for values in reader:
                if len(values) > 1 or (values and values[0].strip()):
                    records.append((first, values))
                first = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError) as exc:
        raise unreadable(path, "CSV", exc) from exc
    return records


def jsonl_records(path: Path) -> tuple[list[dict], list[int], list[int], list[int]]:
    """JSON objects, their lines and data rows, and the lines that are not JSON objects."""
    records, lines, data_rows, unparsed = [], [], [], []
    for data_row, (number, line) in enumerate(text_lines(path, "JSON Lines")):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            unparsed.append(number)
            continue
        records.append(record)
        lines.append(number)
        data_rows.append(data_row)
    return records, lines, data_rows, unparsed


# --- helpers -----------------------------------------------------------------------------------


def _source(task: TaskSpec) -> TaskSource:
    if task.source is None:
        raise AutoPeftError(f"{task.name} is a GLUE task, not one read from the user's files")
    return task.source


def _origin(source: TaskSource) -> str:
    """`tsv:/data/CR/train.tsv`, or `hub:imdb/plain_text (train split)`."""
    if source.dataset:
        config = f"/{source.config}" if source.config else ""
        return f"hub:{source.dataset}{config} ({source.train} split)"
    return f"{file_format(source.train)}:{source.train}"


def _header(source: TaskSource, header: bool | None) -> bool | None:
    """Columns named need a header line; positions alone leave it to `header` or detection."""
    if header is None and any(isinstance(f, str) for f in (*source.text_fields,
                                                          source.label_field)):
        return True
    return header


def _position(table: Table, wanted: Field) -> int | None:
    if isinstance(wanted, int):
        return wanted if 0 <= wanted < table.frame.shape[1] else None
    names = table.names or []
    return names.index(wanted) if wanted in names else None


def _delimited(path: Path, kind: str, header: bool | None, label_field: Field,
               require_labels: bool) -> Table:
    records = csv_records(path) if kind == "csv" else tsv_records(path)
    if not records:
        raise AutoPeftError(f"{path} is not a readable {_KIND[kind]} file: it is empty")
    if header is None:
        header = detect_header([values for _, values in records], label_field)
    names = None
    if header:
        (_, first), records = records[0], records[1:]
        names, width = [n.strip() for n in first], len(first)
    else:  # the usual number of fields: one odd first line does not decide it
        width = Counter(len(values) for _, values in records).most_common(1)[0][0]
    rows, lines, data_rows, unparsed = of_width(records, width, require_labels)
    frame = pd.DataFrame({i: [r[i] for r in rows] for i in range(width)}, dtype=object)
    separator = "comma" if kind == "csv" else "tab"
    return Table(frame, names, str(path), np.array(lines, dtype=int),
                 np.array(data_rows, dtype=int), unparsed,
                 f"not {width} {separator}-separated fields", header=bool(header))


def _hub_table(source: TaskSource, split: str) -> Table:
    """One split of a Hub dataset; offline (or unreachable) it is one line saying what to pass
    instead."""
    message = (f"could not fetch split '{split}' of dataset '{source.dataset}' from the Hugging "
               "Face Hub (offline?): pass its rows as files instead: --train FILE [--dev FILE] "
               f"({', '.join(FORMATS)}), or train:/dev: files in a task file")
    if hub_offline():
        raise AutoPeftError(message)
    try:
        from huggingface_hub import HfApi

        HfApi().dataset_info(source.dataset, timeout=HUB_PROBE_TIMEOUT_S)
        import datasets

        raw = datasets.load_dataset(source.dataset, source.config, split=split).to_pandas()
    except Exception as exc:  # any failure means the same thing to the user
        raise AutoPeftError(message) from exc
    return Table(raw.set_axis(range(raw.shape[1]), axis=1), [str(c) for c in raw.columns],
                 f"hub:{source.dataset} ({split} split)", np.arange(1, len(raw) + 1),
                 np.arange(len(raw)), unit="row")
