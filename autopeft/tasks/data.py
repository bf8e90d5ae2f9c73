"""Load a task's train and dev rows into canonical DataFrames, from disk or the Hub.

Whatever the source, the result has the task's Hugging Face column names plus "label", so
tokenisation and training never see format quirks (GLUE's header-less CoLA, string labels,
byte-order marks, bare quotes). GLUE tasks are read here; a custom task's own files by
`tasks.files`. Every row is checked by `tasks.rows` (invalid rows: an error, or dropped and
counted with `drop_invalid_rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from autopeft.errors import AutoPeftError
from autopeft.tasks.files import (
    HUB_PROBE_TIMEOUT_S,
    csv_records,
    hub_offline,
    jsonl_records,
    load_custom_data,
    read_rows,
    tsv_records,
)
from autopeft.tasks.rows import Parsed, TaskData, clean_rows, of_width
from autopeft.tasks.specs import TaskSpec

__all__ = ["TaskData", "load_task_data", "read_examples", "shuffled_labels"]


def load_task_data(task: TaskSpec, data_dir: str | Path | None,
                   drop_invalid_rows: bool = False) -> TaskData:
    """Load `task` from `data_dir`, or from the Hugging Face Hub when `data_dir` is None.

    `data_dir` may hold the GLUE TSV layout (train.tsv + dev.tsv, dev_matched.tsv for MNLI),
    CSV (train.csv + dev.csv or validation.csv) or JSON Lines (train.jsonl + dev.jsonl or
    validation.jsonl); it may also be the GLUE root holding the task's folder (e.g. MRPC/).
    A control task (`mrpc:shuffled`) reads its task's data and permutes the training labels.

    A custom task (`task.source`) reads its own files or Hub dataset; `data_dir` is then refused.
    An invalid row (no text, no label, an unknown label, a line that does not parse) is an
    `AutoPeftError` naming the file and its lines; `drop_invalid_rows` drops such rows instead
    and counts them in `TaskData.dropped`.
    """
    if task.source is not None:
        if data_dir is not None:
            raise AutoPeftError(f"{task.name} names its own files; --data-dir (data_dir) is "
                                "for GLUE tasks only: leave it out")
        return load_custom_data(task, drop_invalid_rows)
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
                train, train_dropped = clean_rows(task, reader(task, train_path),
                                                  drop_invalid_rows=drop_invalid_rows)
                dev, dev_dropped = clean_rows(task, reader(task, dev_path),
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


Reader = Callable[..., Parsed]


def _readers(task: TaskSpec) -> list[tuple[str, tuple[str, ...], tuple[str, ...], Reader]]:
    return [
        ("glue-tsv", (task.tsv.train_file,), (task.tsv.dev_file,), _read_glue_tsv),
        ("csv", ("train.csv",), ("dev.csv", "validation.csv"), _read_csv),
        ("jsonl", ("train.jsonl",), ("dev.jsonl", "validation.jsonl"), _read_jsonl),
    ]


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def read_examples(task: TaskSpec, path: str | Path, require_labels: bool = True) -> pd.DataFrame:
    """One file of `task`, read by the reader its extension names (.tsv GLUE, .csv, .jsonl;
    a custom task: its own columns in .csv, .tsv, .jsonl or .parquet).

    For predictions (`require_labels=False`) the label column may be absent or empty: such
    labels are NaN, and the frame's index is each kept row's 0-based data row in the file.
    """
    if task.source is not None:
        return read_rows(task, path, require_labels)
    path = Path(path).expanduser()
    readers = {".tsv": _read_glue_tsv, ".csv": _read_csv, ".jsonl": _read_jsonl}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise AutoPeftError(f"'{path}' has an unsupported extension; accepted: "
                            f"{', '.join(readers)} (GLUE TSV, CSV, JSON Lines)")
    if not path.is_file():
        raise AutoPeftError(f"input file '{path}' does not exist")
    frame, _ = clean_rows(task, reader(task, path, require_labels=require_labels),
                          require_labels=require_labels)
    return frame


# --- GLUE TSV -------------------------------------------------------------------------------


def _read_glue_tsv(task: TaskSpec, path: Path, require_labels: bool = True) -> Parsed:
    """Read one GLUE TSV; each line is a row, and one without the layout's fields is unparsed."""
    layout = task.tsv
    # Split by hand rather than with pandas: GLUE TSVs are read with quoting off (strings hold
    # bare double quotes), so one physical line is one row, and splitting it ourselves gives
    # each row's line number and field count, which pandas' on_bad_lines never reports (it
    # skips such lines, or warns without saying which). MRPC starts with a byte-order mark.
    numbered = tsv_records(path, "GLUE TSV")
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
    rows, lines, data_rows, unparsed = of_width(numbered, width, require_labels)
    frame = pd.DataFrame({canonical: [r[i] if i is not None else "" for r in rows]
                          for canonical, i in positions.items()}, dtype=object)
    return Parsed(frame, str(path), np.array(lines, dtype=int),
                  np.array(data_rows, dtype=int), unparsed,
                  f"not {width} tab-separated fields", lenient=True)


def _describe_field(field: str | int) -> str:
    return f"'{field}'" if isinstance(field, str) else f"#{field + 1} (no header)"


# --- CSV and JSON Lines -----------------------------------------------------------------------


def _read_csv(task: TaskSpec, path: Path, require_labels: bool = True) -> Parsed:
    """Read one CSV with the stdlib reader, which says on which line each record ends (a
    quoted field may span lines); a record without the header's number of fields is unparsed."""
    records = csv_records(path)  # (first line, fields)
    if not records:
        raise AutoPeftError(f"{path} is not a readable CSV file: it is empty")
    (_, header), records = records[0], records[1:]
    width = len(header)
    rows, lines, data_rows, unparsed = of_width(records, width, require_labels)
    columns = list(dict.fromkeys(header))  # a repeated name: its first column
    raw = pd.DataFrame({name: [r[header.index(name)] for r in rows] for name in columns},
                       dtype=object)
    return Parsed(_canonical_columns(task, raw, path, require_labels), str(path),
                  np.array(lines, dtype=int), np.array(data_rows, dtype=int), unparsed,
                  f"not {width} comma-separated fields")


def _read_jsonl(task: TaskSpec, path: Path, require_labels: bool = True) -> Parsed:
    records, lines, data_rows, unparsed = jsonl_records(path)
    needed = (*task.text_columns, "label")
    raw = (pd.DataFrame.from_records(records) if records
           else pd.DataFrame({c: [] for c in needed}, dtype=object))
    return Parsed(_canonical_columns(task, raw, path, require_labels), str(path),
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
    if hub_offline():
        raise AutoPeftError(message)
    try:
        from huggingface_hub import HfApi

        # A short probe first: load_dataset's own retries can stall for minutes without network.
        HfApi().dataset_info(task.hub_path[0], timeout=HUB_PROBE_TIMEOUT_S)
        import datasets

        splits = datasets.load_dataset(*task.hub_path)
        train, dev = splits["train"].to_pandas(), splits[task.eval_split].to_pandas()
    except Exception as exc:  # any failure means the same thing to the user
        raise AutoPeftError(message) from exc
    where = f"hub:{'/'.join(task.hub_path)}"
    frames, dropped = {}, {}
    for split, rows, name in (("train", train, "train"), ("dev", dev, task.eval_split)):
        parsed = Parsed(_canonical_columns(task, rows, where), f"{where} ({name} split)",
                        np.arange(1, len(rows) + 1), np.arange(len(rows)), unit="row")
        frames[split], dropped[split] = clean_rows(task, parsed,
                                                   drop_invalid_rows=drop_invalid_rows)
    return TaskData(train=frames["train"], dev=frames["dev"], source=where, dropped=dropped)
