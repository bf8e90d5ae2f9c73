"""What a study record holds: the single source of truth for a search.

Everything a report needs (configs, metrics, counts, timings, dev scores) is written here, so a
report rebuilds from the study alone. Storage is Optuna's journal file by default (it survives a
crash mid-write and optuna-dashboard opens it) or any RDB URL for clusters.

Record layout (read by `autopeft.report` and the search; written by `records.py` alone):

* ``study.user_attrs["autopeft"]``: the study's setup (:class:`StudySetup` as a dict).
* ``study.user_attrs["dev_scores"]``: ``{str(trial_number): {metric: value, "score": primary}}``,
  dev metrics of a Pareto trial's own artifact (``--final-seeds 0``).
* ``study.user_attrs["final_runs"]``: ``{str(trial_number): point}``, each Pareto point retrained
  on the full training data with K seeds (``--final-seeds K``) and evaluated on dev. A point is
  ``{"epochs", "batch_size", "train_samples", "runs": {str(index): run}, "seeds", "score_mean",
  "score_std"}``; a run is ``{"seed", "metrics", "seconds", "finished_at", "artifact"?}``. Each run
  is written as soon as it finishes, so a crash keeps the finished seeds and a resumed study or a
  rebuilt report never redoes them. ``score_std`` is the sample std (None for one seed).
* ``study.user_attrs["final_skipped"]``: ``{str(trial_number): why}``, Pareto points the final
  runs left out on purpose (``--final-top K``), shown in the report beside the missing dev score.
* trial ``values``: ``[score, stored_params]`` (maximise, minimise) for COMPLETE trials.
* trial ``params``: ``"method"`` and ``"<method>.<knob>"`` for every sampled knob (a knob fit to
  the budget is not sampled: its ``"<method>.budget_fraction"`` is, the value is in ``derived``).
* trial ``user_attrs``: see the ``ATTR_*`` names below.

A trial is RUNNING while a search process owns it (``ATTR_OWNER``). Opening a study marks FAIL
the RUNNING trials whose owner has died (a killed search) and queues their candidates to run
first again (``ATTR_RETRY_OF``), never those of a search that is still
running on this host (two searches may append to one study at once); trials owned by a process
on another host are left alone, since their liveness cannot be told from here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import optuna

from autopeft.errors import AutoPeftError
from autopeft.inputs import names

DIRECTIONS = ("maximize", "minimize")  # (score, stored_params)

ATTR_METHOD = "method"
ATTR_FAMILY = "family"  # the method's family (lora, sparse, adapter, ...), for sweep reports
ATTR_STATUS = "status"  # "ok" | "infeasible" | "error" | "pruned"
ATTR_STORED = "stored_params"
ATTR_HEAD = "head_params"
ATTR_BUDGET_USED = "budget_used"  # size measured before training / budget_params
ATTR_METRICS = "metrics"  # selection-split metrics of the last epoch, incl. "score"
ATTR_CURVE = "curve"  # [{"epoch": 1, "score": ...}, ...]
ATTR_TRAIN_SECONDS = "train_seconds"
ATTR_EVAL_SECONDS = "eval_seconds"
ATTR_TRIAL_SECONDS = "trial_seconds"
ATTR_ARTIFACT = "artifact"  # path of the trained delta, relative to the study directory
ATTR_ERROR = "error"
ATTR_STORED_BYTES = "stored_bytes"  # values (+ indices for sparse deltas), head excluded
ATTR_ALLOCATION = "allocation"  # {"by_layer", "by_type": {group: fraction}, "by_layer_type"}
ATTR_DERIVED = "derived"  # {"<method>.<knob>": value} of knobs fit to the budget, not sampled
ATTR_OWNER = "owner"  # {"host", "pid", "started"}: the search process that runs the trial
ATTR_WORKER = "worker"  # {"node", "host", "pid"}: where Ray ran the trial (its last attempt)
ATTR_REUSED = "reused_from"  # {"study", "trial"}: a sweep's trial shared from a sibling budget
ATTR_RETRIES = "retries"  # restarts after the trial's worker process or node was lost
ATTR_RETRY_OF = "retry_of"  # {"trial", "attempt"}: an interrupted trial's candidate, tried again
RETRY_ATTEMPTS = 2  # an interrupted candidate is tried again at most this often
ATTR_CHANCE = "chance_score"  # the best score of a constant prediction on the selection split
CONSTRAINT_BEATS_CHANCE = "beats_chance"  # Optuna constraint: <= 0 when the trial learned

STATUS_OK = "ok"
STATUS_INFEASIBLE = "infeasible"
STATUS_ERROR = "error"
STATUS_PRUNED = "pruned"

SETUP_KEY = "autopeft"
DEV_SCORES_KEY = "dev_scores"
FINAL_RUNS_KEY = "final_runs"
FINAL_SKIPPED_KEY = "final_skipped"
FINAL_FIDELITY = ("epochs", "batch_size", "train_samples")  # what a finished run must match
# A RUNNING trial without an owner is stale after this long: owners are set right after `ask`.
OWNERLESS_GRACE = timedelta(seconds=60)


@dataclass
class StudySetup:
    """What a study was created for; a resumed study must match it."""

    task: str
    model: str
    budget_spec: str
    budget_params: int
    backbone_params: int
    primary_metric: str
    methods: list[str]
    seed: int = 0
    selection_fraction: float = 0.1
    epochs: int = 1
    max_train_samples: int | None = None
    data_source: str = ""
    extra: dict = field(default_factory=dict)
    batch_size: int | None = None  # None: a study made before these were recorded
    max_length: int | None = None
    head: dict | None = None  # head.HeadSettings; None: made before the pooler was head
    space: dict | None = None  # SearchSpace.signature(); None: made before it was recorded
    # --drop-invalid-rows: invalid data rows dropped per split, {"train": 3, "dev": 0}; None
    # without it (then an invalid row is an error, so none was dropped)
    dropped_rows: dict | None = None
    # a custom task's complete mapping (`tasks.custom.task_record`: files, columns, problem
    # type, classes, metric); None for a GLUE task, whose name says it all
    task_spec: dict | None = None

    # Changing these mid-study would mix incomparable trials in one front.
    IDENTITY = ("task", "model", "budget_params", "selection_fraction", "seed", "head",
                "task_spec")


def default_study_name(task: str, model: str, budget_spec: str) -> str:
    """`mrpc-all-MiniLM-L6-v2-0.5pct`: readable, filesystem-safe, stable across runs.

    Always a usable name (`names.check_name`): ASCII letters, digits, '-' and '_' only, an
    over-long one cut and ended by a hash of the whole.
    """
    model_short = Path(model.rstrip("/")).name or model
    budget = budget_spec.strip().replace("%", "pct").replace(".", "_")
    name = f"{task}-{model_short}-{budget}"
    name = "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in name)
    name = name.lstrip("-_") or "study"
    if len(name) > names.MAX_LENGTH:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[:names.MAX_LENGTH - 11]}-{digest}"
    return name


def study_setup(study: optuna.Study) -> StudySetup:
    data = dict(study.user_attrs.get(SETUP_KEY) or {})
    if not data:
        raise AutoPeftError(f"study '{study.study_name}' was not created by autopeft (it has no "
                            "autopeft setup); pass another --study (or --storage) for one")
    return StudySetup(**data)


def dev_scores(study: optuna.Study) -> dict[int, dict[str, float]]:
    return {int(k): v for k, v in (study.user_attrs.get(DEV_SCORES_KEY) or {}).items()}


def final_runs(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """The retrained Pareto points by trial number (see the module docstring for the layout)."""
    return {int(k): v for k, v in (study.user_attrs.get(FINAL_RUNS_KEY) or {}).items()}


def finished_final_run(study: optuna.Study, trial_number: int, index: int,
                       fidelity: dict[str, int]) -> dict[str, Any] | None:
    """The recorded run `index` of a point if it was trained at this `fidelity`, else None."""
    point = final_runs(study).get(trial_number)
    if point is None or any(point.get(k) != fidelity[k] for k in FINAL_FIDELITY):
        return None
    return point["runs"].get(str(index))


def final_skips(study: optuna.Study) -> dict[int, str]:
    """Why each Pareto point left out of the final runs on purpose has no dev numbers."""
    return {int(k): v for k, v in (study.user_attrs.get(FINAL_SKIPPED_KEY) or {}).items()}


def final_seed_runs(point: dict[str, Any]) -> list[dict[str, Any]]:
    """A point's runs in seed-index order."""
    return [run for _, run in sorted(point.get("runs", {}).items(), key=by_index)]


def by_index(item: tuple[str, Any]) -> int:
    return int(item[0])


