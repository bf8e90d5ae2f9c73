"""Load a task's train and dev rows into canonical DataFrames, from disk or the Hub.

Whatever the source, the result has the task's Hugging Face column names plus "label", so
tokenisation and training never see format quirks (GLUE's header-less CoLA, string labels,
byte-order marks, bare quotes).

A row that cannot be trained on (no text, no label, a label the task does not have, or a line
that does not parse) is *invalid*. By default an invalid row is an error naming the file, the
rows' line numbers and what is wrong with them; with `drop_invalid_rows` such rows are dropped
instead, counted in `TaskData.dropped` and in one warning line per file. No row is ever lost
without a word.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from autopeft.errors import AutoPeftError
from autopeft.tasks.specs import TaskSpec

log = logging.getLogger(__name__)

_HUB_PROBE_TIMEOUT_S = 10.0
_TRUE = {"1", "true", "yes", "on"}
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


def load_task_data(task: TaskSpec, data_dir: str | Path | None,
                   drop_invalid_rows: bool = False) -> TaskData:
    """Load `task` from `data_dir`, or from the Hugging Face Hub when `data_dir` is None.

    `data_dir` may hold the GLUE TSV layout (train.tsv + dev.tsv, dev_matched.tsv for MNLI),
    CSV (train.csv + dev.csv or validation.csv) or JSON Lines (train.jsonl + dev.jsonl or
    validation.jsonl); it may also be the GLUE root holding the task's folder (e.g. MRPC/).
    A control task (`mrpc:shuffled`) reads its task's data and permutes the training labels.

    An invalid row (no text, no label, an unknown label, a line that does not parse) is an
    `AutoPeftError` naming the file and its lines; `drop_invalid_rows` drops such rows instead
    and counts them in `TaskData.dropped`.
    """
    data = _load(task, data_dir, drop_invalid_rows)
    if task.control == "shuffled":
        data.train = shuffled_labels(data.train)
        data.source += " (training labels shuffled)"
    return data


def shuffled_labels(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The rows with their labels permuted: label counts kept, any link to the text gone.

    Seeded, so every trial and every rerun of a sweep sees the same control data. Dev labels
    stay true: a model trained on this must score at chance there too.
    """
    permuted = np.random.default_rng(seed).permutation(frame["label"].to_numpy())
    return frame.assign(label=permuted)


def _load(task: TaskSpec, data_dir: str | Path | None, drop_invalid_rows: bool) -> TaskData:
    if data_dir is None:
        return _load_from_hub(task, drop_invalid_rows)
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise AutoPeftError(
            f"data dir '{root}' is not a directory; pass a folder with {_layouts(task)}"
        )
    for folder in (root, root / task.tsv.folder, root / task.base_name):
        for kind, train_names, dev_names, reader in _readers(task):
            train_path = _first_file(folder, train_names)
            dev_path = _first_file(folder, dev_names)
            if train_path and dev_path:
                train, train_dropped = _clean(task, reader(task, train_path),
                                              drop_invalid_rows=drop_invalid_rows)
                dev, dev_dropped = _clean(task, reader(task, dev_path),
                                          drop_invalid_rows=drop_invalid_rows)
                return TaskData(train=train, dev=dev, source=f"{kind}:{folder.resolve()}",
                                dropped={"train": train_dropped, "dev": dev_dropped})
    raise AutoPeftError(f"no usable {task.name} data in '{root}': expected {_layouts(task)}")


def _layouts(task: TaskSpec) -> str:
    return (
        f"train.tsv + {task.tsv.dev_file} (GLUE layout, also inside a {task.tsv.folder}/ "
        "subfolder), train.csv + dev.csv/validation.csv, "
        "or train.jsonl + dev.jsonl/validation.jsonl"
    )


@dataclass
class _Parsed:
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


Reader = Callable[..., _Parsed]


def _readers(task: TaskSpec) -> list[tuple[str, tuple[str, ...], tuple[str, ...], Reader]]:
    return [
        ("glue-tsv", (task.tsv.train_file,), (task.tsv.dev_file,), _read_glue_tsv),
        ("csv", ("train.csv",), ("dev.csv", "validation.csv"), _read_csv),
        ("jsonl", ("train.jsonl",), ("dev.jsonl", "validation.jsonl"), _read_jsonl),
    ]


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def read_examples(task: TaskSpec, path: str | Path, require_labels: bool = True) -> pd.DataFrame:
    """One file of `task`, read by the reader its extension names (.tsv GLUE, .csv, .jsonl).

    For predictions (`require_labels=False`) the label column may be absent or empty: such
    labels are NaN, and the frame's index is each kept row's 0-based data row in the file.
    """
    path = Path(path).expanduser()
    readers = {".tsv": _read_glue_tsv, ".csv": _read_csv, ".jsonl": _read_jsonl}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise AutoPeftError(f"'{path}' has an unsupported extension; accepted: "
                            f"{', '.join(readers)} (GLUE TSV, CSV, JSON Lines)")
    if not path.is_file():
        raise AutoPeftError(f"input file '{path}' does not exist")
    frame, _ = _clean(task, reader(task, path, require_labels=require_labels),
                      require_labels=require_labels)
    return frame


# --- GLUE TSV -------------------------------------------------------------------------------


def _read_glue_tsv(task: TaskSpec, path: Path, require_labels: bool = True) -> _Parsed:
    """Read one GLUE TSV; each line is a row, and one without the layout's fields is unparsed."""
    layout = task.tsv
    try:
        text = path.read_text(encoding="utf-8-sig")  # MRPC starts with a byte-order mark
    except UnicodeDecodeError as exc:
        raise _unreadable(path, "GLUE TSV", exc) from exc
    # Split by hand rather than with pandas: GLUE TSVs are read with quoting off (strings hold
    # bare double quotes), so one physical line is one row, and splitting it ourselves gives
    # each row's line number and field count, which pandas' on_bad_lines never reports (it
    # skips such lines, or warns without saying which). read_text has already turned \r\n and
    # \r into \n, as pandas' line splitting would; blank lines are not rows.
    numbered = [(number, line.split("\t"))
                for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if layout.has_header:
        if not numbered:
            raise AutoPeftError(f"{path} is not a readable GLUE TSV file: it is empty")
        (_, header), numbered = numbered[0], numbered[1:]
    fields = (*layout.text_fields, layout.label_field)
    width = len(header) if layout.has_header else max(fields) + 1  # type: ignore[type-var]
    positions: dict[str, int | None] = {}
    for canonical, name in zip((*task.text_columns, "label"), fields, strict=True):
        if isinstance(name, int):
            positions[canonical] = name
        elif name in header:
            positions[canonical] = header.index(name)
        elif canonical == "label" and not require_labels:
            positions[canonical] = None
        else:
            expected = ", ".join(_describe_field(f) for f in fields)
            raise AutoPeftError(
                f"{path} has no column {_describe_field(name)} (for '{canonical}'); the GLUE "
                f"{layout.folder} layout needs: {expected}"
            )
    rows, lines, data_rows, unparsed = _of_width(numbered, width, require_labels)
    frame = pd.DataFrame({canonical: [r[i] if i is not None else "" for r in rows]
                          for canonical, i in positions.items()}, dtype=object)
    return _Parsed(frame, str(path), np.array(lines, dtype=int),
                   np.array(data_rows, dtype=int), unparsed,
                   f"not {width} tab-separated fields", lenient=True)


def _of_width(records: list[tuple[int, list[str]]], width: int, require_labels: bool
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


def _describe_field(field: str | int) -> str:
    return f"'{field}'" if isinstance(field, str) else f"#{field + 1} (no header)"


# --- CSV and JSON Lines -----------------------------------------------------------------------


def _read_csv(task: TaskSpec, path: Path, require_labels: bool = True) -> _Parsed:
    """Read one CSV with the stdlib reader, which says on which line each record ends (a
    quoted field may span lines); a record without the header's number of fields is unparsed."""
    records: list[tuple[int, list[str]]] = []  # (first line, fields)
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            first = 1
            for values in reader:
                if len(values) > 1 or (values and values[0].strip()):  # blank lines: no rows
                    records.append((first, values))
                first = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError) as exc:
        raise _unreadable(path, "CSV", exc) from exc
    if not records:
        raise AutoPeftError(f"{path} is not a readable CSV file: it is empty")
    (_, header), records = records[0], records[1:]
    width = len(header)
    rows, lines, data_rows, unparsed = _of_width(records, width, require_labels)
    columns = list(dict.fromkeys(header))  # a repeated name: its first column
    raw = pd.DataFrame({name: [r[header.index(name)] for r in rows] for name in columns},
                       dtype=object)
    return _Parsed(_canonical_columns(task, raw, path, require_labels), str(path),
                   np.array(lines, dtype=int), np.array(data_rows, dtype=int), unparsed,
                   f"not {width} comma-separated fields")


def _read_jsonl(task: TaskSpec, path: Path, require_labels: bool = True) -> _Parsed:
    records, lines, data_rows, unparsed = [], [], [], []
    try:
        # read_text turns \r\n and \r into \n; str.splitlines would also split inside a JSON
        # string at characters such as U+2028, which JSON allows unescaped.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _unreadable(path, "JSON Lines", exc) from exc
    numbered = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    for data_row, (number, line) in enumerate(numbered):
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
    needed = (*task.text_columns, "label")
    raw = (pd.DataFrame.from_records(records) if records
           else pd.DataFrame({c: [] for c in needed}, dtype=object))
    return _Parsed(_canonical_columns(task, raw, path, require_labels), str(path),
                   np.array(lines, dtype=int), np.array(data_rows, dtype=int), unparsed,
                   "not a JSON object")


def _canonical_columns(task: TaskSpec, raw: pd.DataFrame, path: Path | str,
                       require_labels: bool = True) -> pd.DataFrame:
    needed = (*task.text_columns, "label")
    if not require_labels and "label" not in raw.columns:
        raw = raw.assign(label="")
    for column in needed:
        if column not in raw.columns:
            raise AutoPeftError(
                f"{path} has no column '{column}'; {task.name} needs columns: {', '.join(needed)}"
            )
    return raw[list(needed)].reset_index(drop=True)


# --- Hub ----------------------------------------------------------------------------------------


def _load_from_hub(task: TaskSpec, drop_invalid_rows: bool = False) -> TaskData:
    """Fetch from the Hub, failing fast and in one line when it is out of reach."""
    message = (
        f"could not fetch GLUE '{task.name}' from the Hugging Face Hub (offline?): pass "
        f"--data-dir DIR holding train.tsv and {task.tsv.dev_file} (GLUE layout) or train/dev "
        ".csv/.jsonl files"
    )
    if _hub_offline():
        raise AutoPeftError(message)
    try:
        from huggingface_hub import HfApi

        # A short probe first: load_dataset's own retries can stall for minutes without network.
        HfApi().dataset_info(task.hub_path[0], timeout=_HUB_PROBE_TIMEOUT_S)
        import datasets

        splits = datasets.load_dataset(*task.hub_path)
        train, dev = splits["train"].to_pandas(), splits[task.eval_split].to_pandas()
    except Exception as exc:  # any failure means the same thing to the user
        raise AutoPeftError(message) from exc
    where = f"hub:{'/'.join(task.hub_path)}"
    frames, dropped = {}, {}
    for split, rows, name in (("train", train, "train"), ("dev", dev, task.eval_split)):
        parsed = _Parsed(_canonical_columns(task, rows, where), f"{where} ({name} split)",
                         np.arange(1, len(rows) + 1), np.arange(len(rows)), unit="row")
        frames[split], dropped[split] = _clean(task, parsed, drop_invalid_rows=drop_invalid_rows)
    return TaskData(train=frames["train"], dev=frames["dev"], source=where, dropped=dropped)


def _hub_offline() -> bool:
    import huggingface_hub.constants as hub_constants

    if hub_constants.HF_HUB_OFFLINE:
        return True
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


# --- Cleaning -----------------------------------------------------------------------------------


def _clean(
    task: TaskSpec,
    parsed: _Parsed,
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


def _for_prediction(task: TaskSpec, parsed: _Parsed, keep: np.ndarray, unknown: pd.Series,
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
                            f"({', '.join(task.text_columns)})")
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


def _describe_invalid(task: TaskSpec, parsed: _Parsed, no_text: np.ndarray,
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
        parts.append(f"{int(no_text.sum())} lacking a text ({', '.join(task.text_columns)})")
    if no_label.any():
        parts.append(f"{int(no_label.sum())} lacking a label")
    if unknown.any():
        values = list(dict.fromkeys(raw_labels[unknown].tolist()))
        shown = ", ".join(f"'{_short(v)}'" for v in values[:_SHOWN])
        more = ", ..." if len(values) > _SHOWN else ""
        parts.append(f"{int(unknown.sum())} with an unknown label ({shown}{more})")
    return (f"{count} invalid {_plural(count, 'row')} ({_where_lines(parsed.unit, invalid_lines)})"
            f": {', '.join(parts)}")


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
    """Labels as floats, NaN where missing or unusable; class names map via `label_names`."""
    numeric = pd.to_numeric(raw, errors="coerce").astype(float)
    numeric = numeric.where(np.isfinite(numeric))
    if task.is_regression:
        return numeric
    in_range = (numeric == numeric.round()) & (numeric >= 0) & (numeric < task.num_labels)
    by_name = raw.str.lower().map({n.lower(): float(i) for i, n in enumerate(task.label_names)})
    return by_name.astype(float).fillna(numeric.where(in_range))


def _accepted_labels(task: TaskSpec) -> str:
    if task.is_regression:
        return "a number"
    names = ", ".join(task.label_names)
    return f"0..{task.num_labels - 1} or one of: {names}"


def _unreadable(path: Path, kind: str, exc: Exception) -> AutoPeftError:
    """One line for a file its reader chokes on; an encoding error says what is accepted."""
    hint = ("; accepted: UTF-8 text (re-save it as UTF-8)"
            if isinstance(exc, UnicodeDecodeError) else "")
    return AutoPeftError(f"{path} is not a readable {kind} file: {_one_line(exc)}{hint}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
