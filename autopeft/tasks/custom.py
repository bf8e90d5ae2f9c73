"""A user's own task, from a task file, the `--train` flags or a stored record.

All three are one mapping (`KEYS`). A task file may leave out what the training rows tell (the
problem type, the classes, a CSV/TSV header, the metric); `build_task` reads the rows only
for what is missing. `task_record` writes the mapping back complete, with absolute paths, so
a study, an artifact or a train config rebuilds the same spec without reading any data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from autopeft.errors import AutoPeftError
from autopeft.inputs import names
from autopeft.tasks.files import DELIMITED, file_format, is_number, read_split
from autopeft.tasks.metrics import DEFAULT_PRIMARY, PROBLEM_METRICS, check_primary
from autopeft.tasks.rows import label_key
from autopeft.tasks.specs import (
    PROBLEM_TYPES,
    Field,
    TaskSource,
    TaskSpec,
    describe_column,
)

KEYS = ("name", "train", "dev", "dataset", "config", "header", "text_columns", "label_column",
        "problem_type", "labels", "metric", "dev_fraction", "dev_seed")
# What each key is called on the command line (`autopeft search --train ...`).
FLAGS = {"name": "--task-name", "train": "--train", "dev": "--dev", "header": "--header",
         "text_columns": "--text-columns", "label_column": "--label-column",
         "problem_type": "--problem-type", "metric": "--metric"}
TEXT_COLUMNS = {1: ("sentence",), 2: ("sentence1", "sentence2")}  # canonical, as GLUE's
# Whole-number labels with more distinct values than this are read as a regression target.
MAX_INFERRED_CLASSES = 20
_GENERIC_STEMS = {"train", "training", "data", "dataset", "all", "rows"}
_POSITION = re.compile(r"\d+")


@dataclass(frozen=True)
class _Context:
    """Where a mapping came from, so an error names the key as the user wrote it."""

    origin: str | None  # the task file; None: command-line flags
    check_files: bool = False  # the user's own input, not a stored record

    def key(self, key: str) -> str:
        return FLAGS.get(key, key) if self.origin is None else f"'{key}'"

    def error(self, message: str) -> AutoPeftError:
        return AutoPeftError(message if self.origin is None else f"{self.origin}: {message}")


def read_task_file(path: str | Path) -> tuple[TaskSpec, str]:
    """The task a YAML task file describes (relative paths are beside the file), and the line
    that says what was inferred."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AutoPeftError(f"task file '{path}' not found")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutoPeftError(f"{path}: not a readable YAML task file ({first})") from None
    if not isinstance(document, dict):
        raise AutoPeftError(f"{path}: expected a mapping with keys {', '.join(KEYS)}")
    return build_task(document, path.parent, str(path), default_name=path.stem,
                      check_files=True)


def task_from_flags(train: str, dev: str | None, text_columns: str | None,
                    label_column: str | None, header: bool | None = None,
                    problem_type: str | None = None, metric: str | None = None,
                    name: str | None = None) -> tuple[TaskSpec, str]:
    """`autopeft search --train FILE ...`: the same mapping as a task file, from flags. A
    `--train` that is neither a file nor has a file's extension is a Hub dataset id."""
    document: dict[str, Any] = {
        "name": name, "header": header, "problem_type": problem_type, "metric": metric,
        "text_columns": None if text_columns is None else text_columns.split(","),
        "label_column": label_column, "train": train, "dev": dev}
    if not Path(train).suffix and not Path(train).expanduser().exists():
        document.update(dataset=train, train="train")
    return build_task(document, Path.cwd(), None, check_files=True)


def build_task(document: dict[str, Any], base: Path | None = None, origin: str | None = None,
               default_name: str | None = None, check_files: bool = False
               ) -> tuple[TaskSpec, str]:
    """The spec a task mapping describes, reading the training rows only for what it leaves
    out; and one line saying what was given and what inferred. `check_files`: the files must
    exist now (the user named them), else only when read."""
    ctx = _Context(origin, check_files)
    unknown = [k for k in document if k not in KEYS]
    if unknown:
        raise ctx.error(f"unknown key '{unknown[0]}'; accepted: {', '.join(KEYS)}")
    values = {k: v for k, v in document.items() if v is not None}
    source = _source(values, base or Path.cwd(), ctx)
    text_columns = TEXT_COLUMNS[len(source.text_fields)]
    problem_type = _choice(values, "problem_type", PROBLEM_TYPES, ctx)
    labels = _labels(values, problem_type, ctx)
    delimited = not source.dataset and file_format(source.train) in DELIMITED
    how_header = f"{'a' if source.header else 'no'} header line (given)"
    observed = None
    if (source.header is None and delimited) or problem_type is None or (
            labels is None and problem_type != "regression"):
        parsed, header = read_split(source, text_columns, "train")
        if source.header is None and delimited:
            source = replace(source, header=header)
            how_header = f"{'a' if header else 'no'} header line (detected)"
        observed = parsed.frame["label"]
    problem_type, label_names, how = _classes(problem_type, labels, observed, source, ctx)
    metric = (check_primary(values["metric"], problem_type, ctx.key("metric"))
              if "metric" in values else DEFAULT_PRIMARY[problem_type])
    spec = TaskSpec(
        name=_name(values, source, default_name, ctx), text_columns=text_columns,
        num_labels=1 if problem_type == "regression" else len(label_names),
        is_regression=problem_type == "regression", label_names=label_names,
        metrics=PROBLEM_METRICS[problem_type], primary_metric=metric, source=source)
    given = "given" if "metric" in values else f"the {problem_type} default"
    parts = [f"task {spec.name}: {problem_type} {how}", f"primary metric {metric} ({given})"]
    if delimited:
        parts.append(how_header)
    dev = source.dev if source.dataset else Path(source.dev or "").name
    parts.append(f"dev {dev}" if source.dev else
                 f"dev carved from train ({source.dev_fraction:.0%})")
    return spec, "; ".join(parts)


def task_record(spec: TaskSpec) -> dict[str, Any]:
    """The complete mapping of a custom task: what a study, an artifact and a train config
    store, and what `build_task` turns back into `spec` without reading its rows."""
    source = spec.source
    if source is None:
        raise AutoPeftError(f"{spec.name} is a GLUE task: its name is its record")
    return {
        "name": spec.name, "train": source.train, "dev": source.dev, "dataset": source.dataset,
        "config": source.config, "header": source.header,
        "text_columns": list(source.text_fields), "label_column": source.label_field,
        "problem_type": spec.problem_type,
        "labels": None if spec.is_regression else list(spec.label_names),
        "metric": spec.primary_metric, "dev_fraction": source.dev_fraction,
        "dev_seed": source.dev_seed,
    }


# --- the keys ----------------------------------------------------------------------------------


def _source(values: dict[str, Any], base: Path, ctx: _Context) -> TaskSource:
    dataset = _text(values, "dataset", ctx)
    if "train" not in values and not dataset:
        raise ctx.error(f"{ctx.key('train')} is required: the training rows (a .csv, .tsv, "
                        ".jsonl or .parquet file, or a Hub dataset)")
    train = _place(values.get("train", "train"), "train", base, dataset, ctx)
    dev = _place(values["dev"], "dev", base, dataset, ctx) if "dev" in values else None
    for key in ("text_columns", "label_column"):
        if key not in values:
            raise ctx.error(f"{ctx.key(key)} is required: the "
                            f"{'text column(s)' if key == 'text_columns' else 'label column'}, "
                            "by header name or 0-based position")
    text_fields = tuple(_column(v, "text_columns", ctx) for v in _listed(values["text_columns"]))
    if len(text_fields) not in TEXT_COLUMNS or len(set(text_fields)) != len(text_fields):
        raise ctx.error(f"{ctx.key('text_columns')} must name one or two different columns "
                        f"(got {', '.join(map(str, text_fields)) or 'none'})")
    label_field = _column(values["label_column"], "label_column", ctx)
    if label_field in text_fields:
        raise ctx.error(f"the label {describe_column(label_field)} is also a text column")
    header = values.get("header")
    if header is not None:
        files = [p for p in (train, dev) if p is not None and not dataset]
        if not isinstance(header, bool):
            raise ctx.error(f"{ctx.key('header')} must be true or false (got {header!r})")
        if dataset or any(file_format(p) not in DELIMITED for p in files):
            raise ctx.error(f"{ctx.key('header')} applies to .csv and .tsv files only; JSON "
                            "Lines, Parquet and Hub datasets name their columns themselves")
        if not header and any(isinstance(f, str) for f in (*text_fields, label_field)):
            raise ctx.error("columns named need a header line: name them by 0-based position, "
                            f"or leave {ctx.key('header')} out")
    fraction = values.get("dev_fraction", 0.1)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not (
            0 < fraction < 1):
        raise ctx.error(f"'dev_fraction' must be a number strictly between 0 and 1 "
                        f"(got {fraction!r})")
    seed = values.get("dev_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ctx.error(f"'dev_seed' must be a whole number >= 0 (got {seed!r})")
    return TaskSource(train=train, text_fields=text_fields, label_field=label_field, dev=dev,
                      header=header, dataset=dataset, config=_text(values, "config", ctx),
                      dev_fraction=float(fraction), dev_seed=seed)


def _place(value: Any, key: str, base: Path, dataset: str | None, ctx: _Context) -> str:
    """A split name of `dataset`, or a file of a format this reads, made absolute (relative
    to `base`), that exists when the user just named it: a stored record rebuilds its spec
    anywhere (a Ray worker, another machine loading an export) without its files."""
    text = _text({key: value}, key, ctx)
    if dataset:
        return text
    try:
        file_format(text)
    except AutoPeftError as exc:
        raise ctx.error(f"{ctx.key(key)} {exc}") from None
    path = os.path.abspath(os.path.join(base, os.path.expanduser(text)))
    if ctx.check_files and not os.path.isfile(path):
        raise ctx.error(f"{ctx.key(key)} file '{text}' does not exist")
    return path


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _column(value: Any, key: str, ctx: _Context) -> Field:
    """A column: a 0-based position (a whole number, also written as text) or a header name."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if _POSITION.fullmatch(text) else text
    raise ctx.error(f"{ctx.key(key)}: {value!r} is not a column; name one by its header name or "
                    "its 0-based position")


def _text(values: dict[str, Any], key: str, ctx: _Context) -> str | None:
    value = values.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ctx.error(f"{ctx.key(key)} must be a non-empty text (got {value!r})")
    return value.strip()


def _choice(values: dict[str, Any], key: str, choices: tuple[str, ...], ctx: _Context
            ) -> str | None:
    value = _text(values, key, ctx)
    if value is not None and value.lower() not in choices:
        raise ctx.error(f"{ctx.key(key)} '{value}' is not one of: {', '.join(choices)}")
    return None if value is None else value.lower()


def _labels(values: dict[str, Any], problem_type: str | None, ctx: _Context
            ) -> tuple[str, ...] | None:
    """The classes given in order (`labels:`), as `label_key` spells them; None if not given."""
    if "labels" not in values:
        return None
    given = _listed(values["labels"])
    classes = tuple(dict.fromkeys(label_key(v) for v in given))
    if problem_type == "regression":
        raise ctx.error("'labels' lists classes; a regression task has none")
    if len(classes) < 2 or len(classes) != len(given):
        raise ctx.error(f"'labels' must list two or more different classes (got {given!r})")
    return classes


def _name(values: dict[str, Any], source: TaskSource, default: str | None,
          ctx: _Context) -> str:
    """The given name, else the file's (its folder's for a generic `train.tsv`) or dataset's."""
    if "name" in values:
        return names.check_name(_text(values, "name", ctx), ctx.key("name"))
    if default is None and source.dataset:
        default = source.dataset.rsplit("/", 1)[-1]
    if default is None:
        path = Path(source.train)
        default = path.parent.name if path.stem.lower() in _GENERIC_STEMS else path.stem
    return names.sanitise(default, fallback="task")


# --- what the labels tell -----------------------------------------------------------------------


def _classes(problem_type: str | None, labels: tuple[str, ...] | None,
             observed: pd.Series | None, source: TaskSource, ctx: _Context
             ) -> tuple[str, tuple[str, ...], str]:
    """(problem type, class names, how that was decided): given, or from the training labels."""
    column = f"label {describe_column(source.label_field)}"
    if labels is not None:
        kind = problem_type or ("binary" if len(labels) == 2 else "multiclass")
        _check_count(kind, labels, column, ctx)
        return kind, labels, f"(given), classes {_shown(labels)}"
    if problem_type == "regression":
        return "regression", (), f"(given) on {column}"
    raw = observed.astype("string").str.strip() if observed is not None else pd.Series([])
    values = [label_key(v) for v in raw.dropna() if v]
    if not values:
        raise ctx.error(f"the {column} of the training rows holds no labels")
    numeric = [is_number(v) for v in values]
    if any(numeric) and not all(numeric):
        texts = list(dict.fromkeys(v for v, n in zip(values, numeric, strict=True) if not n))
        raise ctx.error(
            f"the {column} holds numbers and text ({sum(numeric)} numeric, "
            f"{len(values) - sum(numeric)} not: {_shown(texts)}): labels must be all numbers "
            "(classes or a regression target) or all text (class names); fix them, or pass "
            f"{ctx.key('problem_type')} regression with --drop-invalid-rows to drop the text")
    if all(numeric):
        classes = tuple(sorted(set(values), key=float))
        whole = all(float(v) == int(float(v)) for v in classes)
        if problem_type is None and (not whole or len(classes) > MAX_INFERRED_CLASSES):
            low, high = classes[0], classes[-1]
            return ("regression", (), f"(inferred: {len(values)} numeric labels in {column}, "
                    f"{low} to {high}, {'not all whole' if not whole else 'many values'}; "
                    "--problem-type overrides)")
    else:
        classes = tuple(sorted(set(values)))
    kind = problem_type or ("binary" if len(classes) == 2 else "multiclass")
    _check_count(kind, classes, column, ctx)
    how = "given" if problem_type else f"inferred from {column}; --problem-type overrides"
    positive = f"; F1's positive class '{classes[1]}'" if kind == "binary" else ""
    return kind, classes, f"({how}): {len(classes)} classes {_shown(classes)}{positive}"


def _check_count(kind: str, classes: tuple[str, ...], column: str, ctx: _Context) -> None:
    if len(classes) < 2:
        raise ctx.error(f"the {column} holds one class only ('{classes[0]}'): a classifier "
                        "needs at least two")
    if kind == "binary" and len(classes) != 2:
        raise ctx.error(f"binary classification needs 2 classes; the {column} has "
                        f"{len(classes)} ({_shown(classes)}): pass "
                        f"{ctx.key('problem_type')} multiclass")


def _shown(values: tuple[str, ...] | list[str], limit: int = 6) -> str:
    shown = ", ".join(f"'{v}'" for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")
