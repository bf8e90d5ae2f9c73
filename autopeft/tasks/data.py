"""Load a task's train and dev rows into canonical DataFrames, from disk or the Hub.

Whatever the source, the result has the task's Hugging Face column names plus "label", so
tokenisation and training never see format quirks (GLUE's header-less CoLA, string labels,
byte-order marks, bare quotes, malformed rows).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from autopeft.errors import AutoPeftError
from autopeft.tasks.specs import TaskSpec

log = logging.getLogger(__name__)

_HUB_PROBE_TIMEOUT_S = 10.0
_TRUE = {"1", "true", "yes", "on"}


@dataclass
class TaskData:
    """Canonical train and dev frames, and where they came from (for reports)."""

    train: pd.DataFrame
    dev: pd.DataFrame
    source: str


def load_task_data(task: TaskSpec, data_dir: str | Path | None) -> TaskData:
    """Load `task` from `data_dir`, or from the Hugging Face Hub when `data_dir` is None.

    `data_dir` may hold the GLUE TSV layout (train.tsv + dev.tsv, dev_matched.tsv for MNLI),
    CSV (train.csv + dev.csv or validation.csv) or JSON Lines (train.jsonl + dev.jsonl or
    validation.jsonl); it may also be the GLUE root holding the task's folder (e.g. MRPC/).
    A control task (`mrpc:shuffled`) reads its task's data and permutes the training labels.
    """
    data = _load(task, data_dir)
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


def _load(task: TaskSpec, data_dir: str | Path | None) -> TaskData:
    if data_dir is None:
        return _load_from_hub(task)
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
                return TaskData(
                    train=reader(task, train_path),
                    dev=reader(task, dev_path),
                    source=f"{kind}:{folder.resolve()}",
                )
    raise AutoPeftError(f"no usable {task.name} data in '{root}': expected {_layouts(task)}")


def _layouts(task: TaskSpec) -> str:
    return (
        f"train.tsv + {task.tsv.dev_file} (GLUE layout, also inside a {task.tsv.folder}/ "
        "subfolder), train.csv + dev.csv/validation.csv, "
        "or train.jsonl + dev.jsonl/validation.jsonl"
    )


Reader = Callable[[TaskSpec, Path], pd.DataFrame]


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
    return reader(task, path, require_labels=require_labels)


# --- GLUE TSV -------------------------------------------------------------------------------


def _read_glue_tsv(task: TaskSpec, path: Path, require_labels: bool = True) -> pd.DataFrame:
    """Read one GLUE TSV; rows that do not parse (GLUE's QQP/MNLI have a few) are dropped."""
    layout = task.tsv
    try:
        raw = pd.read_csv(
            path,
            sep="\t",
            quoting=csv.QUOTE_NONE,  # strings hold bare double quotes
            encoding="utf-8-sig",  # MRPC starts with a byte-order mark
            header=0 if layout.has_header else None,
            dtype=str,
            keep_default_na=False,  # a sentence reading "null" or "NA" is text, not missing
            on_bad_lines="skip",  # rows with extra fields
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise _unreadable(path, "GLUE TSV", exc) from exc
    fields = (*layout.text_fields, layout.label_field)
    columns = {}
    for canonical, field in zip((*task.text_columns, "label"), fields, strict=True):
        if field not in raw.columns and canonical == "label" and not require_labels:
            columns[canonical] = pd.Series("", index=raw.index)
            continue
        if field not in raw.columns:
            expected = ", ".join(_describe_field(f) for f in fields)
            raise AutoPeftError(
                f"{path} has no column {_describe_field(field)} (for '{canonical}'); the GLUE "
                f"{layout.folder} layout needs: {expected}"
            )
        columns[canonical] = raw[field]
    frame = pd.DataFrame(columns)
    skipped = _count_lines(path) - int(layout.has_header) - len(raw)
    return _clean(task, frame, path, strict_labels=False, already_dropped=max(skipped, 0),
                  require_labels=require_labels)


def _describe_field(field: str | int) -> str:
    return f"'{field}'" if isinstance(field, str) else f"#{field + 1} (no header)"


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


# --- CSV and JSON Lines -----------------------------------------------------------------------


def _read_csv(task: TaskSpec, path: Path, require_labels: bool = True) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise _unreadable(path, "CSV", exc) from exc
    return _clean(task, _canonical_columns(task, raw, path, require_labels), path,
                  strict_labels=True, require_labels=require_labels)


def _read_jsonl(task: TaskSpec, path: Path, require_labels: bool = True) -> pd.DataFrame:
    records = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise _unreadable(path, "JSON Lines", exc) from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AutoPeftError(f"{path}:{number} is not valid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise AutoPeftError(f"{path}:{number} is not a JSON object; each line needs one")
        records.append(record)
    raw = pd.DataFrame.from_records(records)
    return _clean(task, _canonical_columns(task, raw, path, require_labels), path,
                  strict_labels=True, require_labels=require_labels)


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
    return raw[list(needed)]


# --- Hub ----------------------------------------------------------------------------------------


def _load_from_hub(task: TaskSpec) -> TaskData:
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
    return TaskData(
        train=_clean(task, _canonical_columns(task, train, where), where, strict_labels=False),
        dev=_clean(task, _canonical_columns(task, dev, where), where, strict_labels=False),
        source=where,
    )


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
    frame: pd.DataFrame,
    path: Path | str,
    strict_labels: bool,
    already_dropped: int = 0,
    require_labels: bool = True,
) -> pd.DataFrame:
    """Drop rows missing a text or label, map labels to numbers, reset the index.

    With `strict_labels`, a label that is present but not recognised is an error (a user file);
    otherwise it marks a malformed row and the row is dropped (GLUE's own files). Without
    `require_labels` rows need only their texts and keep their data row number as the index.
    """
    texts = {c: frame[c].astype("string").str.strip() for c in task.text_columns}
    has_text = pd.concat([t.fillna("").ne("") for t in texts.values()], axis=1).all(axis=1)
    raw_labels = frame["label"].astype("string").str.strip()
    has_label = raw_labels.fillna("").ne("")
    labels = _parse_labels(task, raw_labels)
    bad = has_label & labels.isna()
    if strict_labels and bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise AutoPeftError(
            f"{path}: label '{raw_labels.iloc[position]}' in data row {position + 1} is not "
            f"usable; {task.name} accepts {_accepted_labels(task)}"
        )
    keep = (has_text & (labels.notna() | (not require_labels))).to_numpy()
    if not keep.any():  # before the warning below, so that the error is the only line shown
        raise AutoPeftError(
            f"{path} has no usable rows: each lacks a text ({', '.join(task.text_columns)})"
            + (f" or a valid label; {task.name} accepts {_accepted_labels(task)}"
               if require_labels else ""))
    dropped = already_dropped + int((~keep).sum())
    if dropped:
        log.warning("%s: dropped %d malformed or incomplete rows", path, dropped)
    out = pd.DataFrame({c: frame[c][keep].astype(str).to_numpy() for c in task.text_columns})
    kept = labels[keep].to_numpy()
    dtype = float if task.is_regression or np.isnan(kept).any() else np.int64
    out["label"] = kept.astype(dtype)
    if not require_labels:
        out.index = np.flatnonzero(keep)
    return out


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
