"""Tasks: GLUE specs and the user's own (task files, --train), readers, metrics, chance levels
and the held-out selection split."""

from autopeft.tasks.data import TaskData, load_task_data
from autopeft.tasks.metrics import chance_score, chance_scores, compute_metrics
from autopeft.tasks.resolve import (
    artifact_fields,
    custom_record,
    record_of,
    resolve_task,
    stored_task,
    task_of_request,
)
from autopeft.tasks.specs import TASKS, TaskSource, TaskSpec, TsvLayout, get_task
from autopeft.tasks.split import check_split_sizes, selection_cap, selection_split, subsample

__all__ = [
    "TASKS",
    "TaskData",
    "TaskSource",
    "TaskSpec",
    "TsvLayout",
    "artifact_fields",
    "chance_score",
    "chance_scores",
    "check_split_sizes",
    "compute_metrics",
    "custom_record",
    "get_task",
    "load_task_data",
    "record_of",
    "resolve_task",
    "selection_cap",
    "selection_split",
    "stored_task",
    "subsample",
    "task_of_request",
]
