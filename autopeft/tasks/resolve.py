"""The one way from what a run names or records as its task to the `TaskSpec`.

A task is recorded (study setup, trial context, artifact, train config) as its *record*: a GLUE
task's name ("mrpc", "mrpc:shuffled"), or a custom task's complete mapping
(`custom.task_record`). `resolve_task` turns any record, or a task file path, back into the spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autopeft.errors import AutoPeftError
from autopeft.tasks.custom import FLAGS, build_task, read_task_file, task_from_flags, task_record
from autopeft.tasks.specs import TaskSpec, get_task

TASK_FILE_SUFFIXES = (".yaml", ".yml", ".json")
TaskRecord = str | dict[str, Any]
# The search options that describe a --train file (SearchRequest fields), by key of the mapping.
_REQUEST_FIELDS = {"train": "train", "dev": "dev", "text_columns": "text_columns",
                   "label_column": "label_column", "header": "header",
                   "problem_type": "problem_type", "metric": "metric", "name": "task_name"}


def is_task_file(text: str) -> bool:
    """Whether a --task value names a task file (a GLUE name has no extension)."""
    return Path(str(text).strip()).suffix.lower() in TASK_FILE_SUFFIXES


def resolve_task(record: TaskRecord) -> TaskSpec:
    """The spec of a task record, a task file path or a GLUE name."""
    return task_and_note(record)[0]


def task_and_note(record: TaskRecord) -> tuple[TaskSpec, str]:
    """`resolve_task`, and for a custom task the line saying what was given and inferred."""
    if isinstance(record, dict):
        return build_task(record)
    if is_task_file(record):
        return read_task_file(record)
    return get_task(record), ""


def record_of(spec: TaskSpec) -> TaskRecord:
    """What is stored for `spec`: its name (GLUE), or its complete mapping (custom)."""
    return spec.name if spec.source is None else task_record(spec)


def custom_record(spec: TaskSpec) -> dict[str, Any] | None:
    """A custom task's mapping (for `StudySetup.task_spec`); None for a GLUE task."""
    return None if spec.source is None else task_record(spec)


def stored_task(name: str, record: dict[str, Any] | None) -> TaskSpec:
    """The task of a study setup or artifact description: its mapping, else its GLUE name."""
    return resolve_task(record if record is not None else name)


def artifact_fields(spec: TaskSpec) -> dict[str, Any]:
    """The task's part of an artifact's description: name and head size, and a custom task's
    mapping (`autopeft.load` and `predict` rebuild the task from it)."""
    fields: dict[str, Any] = {"task": spec.name, "num_labels": spec.num_labels}
    if spec.source is not None:
        fields["task_spec"] = task_record(spec)
    return fields


def task_label(record: TaskRecord) -> str:
    """A task's name for messages and default names, without reading anything."""
    if isinstance(record, dict):
        return str(record.get("name") or "task")
    return Path(record).stem if is_task_file(record) else str(record)


def task_of_request(request: Any) -> tuple[TaskSpec, str]:
    """The task a search request names: `--task` (a GLUE name, a task file or a mapping), or
    `--train` with the flags that describe the file; conflicting or stray flags are refused."""
    given = [key for key, name in _REQUEST_FIELDS.items()
             if getattr(request, name, None) is not None]
    task = request.task
    if getattr(request, "train", None) is not None:
        if task is not None:
            raise AutoPeftError("pass either --task (a GLUE task or a task file) or --train FILE, "
                                "not both")
        if request.data_dir is not None:
            raise AutoPeftError("--data-dir is for GLUE tasks; --train names the file itself "
                                "(and --dev the dev file)")
        return task_from_flags(request.train, request.dev, request.text_columns,
                               request.label_column, request.header, request.problem_type,
                               request.metric, request.task_name)
    if given:
        flag = FLAGS[given[0]]
        raise AutoPeftError(f"{flag} describes a --train file; pass --train FILE with it (a task "
                            f"file sets it as '{given[0]}')")
    if task is None:
        raise AutoPeftError("name the task: --task (a GLUE task such as mrpc, or a task file "
                            "my_task.yaml), or --train FILE with --text-columns and "
                            "--label-column")
    spec, note = task_and_note(task)
    if spec.source is not None and request.data_dir is not None:
        raise AutoPeftError("--data-dir is for GLUE tasks; a task file names its own files")
    return spec, note
