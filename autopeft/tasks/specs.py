"""What each task is: its columns, labels, metrics and where its data lives.

One frozen record per task keeps every task-specific fact in one place, so the loaders,
metrics and splitters stay generic. GLUE tasks are listed here; a user's own task (a file or a
Hub dataset, `tasks.custom`) is the same record with a `TaskSource` saying where its rows are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from autopeft.errors import AutoPeftError

Field = str | int
"""A column in a file: its header name, or its 0-based position."""
PROBLEM_TYPES = ("binary", "multiclass", "regression")


def describe_column(field: Field) -> str:
    """A user's column as messages name it: `column 'stars'`, or `column 2` (0-based)."""
    return f"column '{field}'" if isinstance(field, str) else f"column {field}"


@dataclass(frozen=True)
class TsvLayout:
    """How a task's files look in the original GLUE distribution (the `glue_data/` folders)."""

    folder: str
    """The task's folder name inside the GLUE root, e.g. "MRPC" or "SST-2"."""
    text_fields: tuple[Field, ...]
    """One field per canonical text column, in the same order as `TaskSpec.text_columns`."""
    label_field: Field
    has_header: bool = True
    string_labels: bool = False
    """True when labels are written as names (e.g. "entailment"), mapped via `label_names`."""
    train_file: str = "train.tsv"
    dev_file: str = "dev.tsv"


@dataclass(frozen=True)
class TaskSource:
    """Where a custom task's rows are and how to read them (`tasks.files` reads them)."""

    train: str
    """A file (absolute path, its format from its extension), or a split of `dataset`."""
    text_fields: tuple[Field, ...]
    """One or two columns, in the order the tokenizer takes them."""
    label_field: Field
    dev: str | None = None
    """A file or split like `train`; None: dev is carved from train (`dev_fraction`)."""
    header: bool | None = None
    """CSV/TSV: whether the first line names the columns (None: detected when read)."""
    dataset: str | None = None  # a Hugging Face Hub dataset id instead of files
    config: str | None = None  # its configuration
    dev_fraction: float = 0.1  # a carved dev: this share of train, stratified
    dev_seed: int = 0  # a carved dev: its seed, so every command carves the same rows


@dataclass(frozen=True)
class TaskSpec:
    """Everything the project needs to know about one task (GLUE, or the user's own)."""

    name: str
    text_columns: tuple[str, ...]
    """Canonical names: those of the Hugging Face `glue` dataset."""
    num_labels: int
    is_regression: bool
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    primary_metric: str
    tsv: TsvLayout | None = None  # GLUE tasks: the layout of their files
    eval_split: str = "validation"
    """The Hub split used as dev (MNLI reports on the matched one)."""
    control: str | None = None
    """"shuffled": the task's data with its training labels permuted (see `tasks.control`)."""
    source: TaskSource | None = None
    """A custom task's files or Hub dataset; None for GLUE tasks."""

    @property
    def problem_type(self) -> str:
        """binary, multiclass or regression (`PROBLEM_TYPES`)."""
        if self.is_regression:
            return "regression"
        return "binary" if self.num_labels == 2 else "multiclass"

    @property
    def base_name(self) -> str:
        """The GLUE task the data comes from ("mrpc" for the control "mrpc:shuffled")."""
        return self.name.split(":", 1)[0]

    @property
    def hub_path(self) -> tuple[str, str]:
        """Arguments for `datasets.load_dataset`."""
        return ("nyu-mll/glue", self.base_name)


def _classification(
    name: str,
    text_columns: tuple[str, ...],
    label_names: tuple[str, ...],
    tsv: TsvLayout,
    metrics: tuple[str, ...] = ("accuracy",),
    primary_metric: str = "accuracy",
    eval_split: str = "validation",
) -> TaskSpec:
    return TaskSpec(
        name=name,
        text_columns=text_columns,
        num_labels=len(label_names),
        is_regression=False,
        label_names=label_names,
        metrics=metrics,
        primary_metric=primary_metric,
        tsv=tsv,
        eval_split=eval_split,
    )


_PAIR = ("sentence1", "sentence2")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _classification(
            "cola",
            ("sentence",),
            ("unacceptable", "acceptable"),
            # No header: source, label, original_label_mark, sentence.
            TsvLayout("CoLA", text_fields=(3,), label_field=1, has_header=False),
            metrics=("matthews_correlation",),
            primary_metric="matthews_correlation",
        ),
        _classification(
            "sst2",
            ("sentence",),
            ("negative", "positive"),
            TsvLayout("SST-2", text_fields=("sentence",), label_field="label"),
        ),
        _classification(
            "mrpc",
            _PAIR,
            ("not_equivalent", "equivalent"),
            TsvLayout("MRPC", text_fields=("#1 String", "#2 String"), label_field="Quality"),
            metrics=("accuracy", "f1"),
            primary_metric="accuracy_f1_mean",
        ),
        TaskSpec(
            name="stsb",
            text_columns=_PAIR,
            num_labels=1,
            is_regression=True,
            label_names=(),
            metrics=("pearson", "spearman"),
            primary_metric="pearson_spearman_mean",
            tsv=TsvLayout("STS-B", text_fields=_PAIR, label_field="score"),
        ),
        _classification(
            "qqp",
            ("question1", "question2"),
            ("not_duplicate", "duplicate"),
            TsvLayout("QQP", text_fields=("question1", "question2"), label_field="is_duplicate"),
            metrics=("accuracy", "f1"),
            primary_metric="accuracy_f1_mean",
        ),
        _classification(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            TsvLayout(
                "MNLI",
                text_fields=_PAIR,
                label_field="gold_label",
                string_labels=True,
                dev_file="dev_matched.tsv",
            ),
            eval_split="validation_matched",
        ),
        _classification(
            "qnli",
            ("question", "sentence"),
            ("entailment", "not_entailment"),
            TsvLayout(
                "QNLI",
                text_fields=("question", "sentence"),
                label_field="label",
                string_labels=True,
            ),
        ),
        _classification(
            "rte",
            _PAIR,
            ("entailment", "not_entailment"),
            TsvLayout("RTE", text_fields=_PAIR, label_field="label", string_labels=True),
        ),
        _classification(
            "wnli",
            _PAIR,
            ("not_entailment", "entailment"),
            TsvLayout("WNLI", text_fields=_PAIR, label_field="label"),
        ),
    )
}


CONTROLS = ("shuffled",)


def get_task(name: str) -> TaskSpec:
    """Look a task up by name, ignoring case, spaces and dashes (so GLUE's "SST-2" works too).

    `<task>:shuffled` is the task's negative control: its training labels permuted, so
    nothing can be learnt and every candidate must score at chance (a leak check for a sweep).
    """
    base, _, control = str(name).strip().lower().partition(":")
    key = base.replace("-", "")
    if key not in TASKS:
        raise AutoPeftError(f"unknown task '{name}'; choose one of: {', '.join(TASKS)}, "
                            f"or <task>:{'|'.join(CONTROLS)} for a control, or a task file "
                            "(my_task.yaml)")
    if not control:
        return TASKS[key]
    if control not in CONTROLS:
        raise AutoPeftError(f"unknown control '{control}' in task '{name}'; "
                            f"accepted: {', '.join(f'{key}:{c}' for c in CONTROLS)}")
    return replace(TASKS[key], name=f"{key}:{control}", control=control)
