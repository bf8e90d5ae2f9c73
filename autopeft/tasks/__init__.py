"""GLUE tasks: specs, data loading, metrics and the held-out selection split."""

from autopeft.tasks.data import TaskData, load_task_data
from autopeft.tasks.metrics import chance_score, compute_metrics
from autopeft.tasks.specs import TASKS, TaskSpec, TsvLayout, get_task
from autopeft.tasks.split import check_split_sizes, selection_cap, selection_split, subsample

__all__ = [
    "TASKS",
    "TaskData",
    "TaskSpec",
    "TsvLayout",
    "chance_score",
    "check_split_sizes",
    "compute_metrics",
    "get_task",
    "load_task_data",
    "selection_cap",
    "selection_split",
    "subsample",
]
