"""Optuna studies: the single source of truth for a search.

Everything a report needs (configs, metrics, counts, timings, dev scores) is written here, so a
report rebuilds from the study alone. Storage is Optuna's journal file by default (it survives a
crash mid-write and optuna-dashboard opens it) or any RDB URL for clusters.

Record layout (read by `autopeft.report`, written by the engine):

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
the RUNNING trials whose owner has died (a killed search), never those of a search that is still
running on this host (two searches may append to one study at once); trials owned by a process
on another host are left alone, since their liveness cannot be told from here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from autopeft import names
from autopeft.errors import AutoPeftError

DIRECTIONS = ("maximize", "minimize")  # (score, stored_params)

ATTR_METHOD = "method"
ATTR_FAMILY = "family"  # the method's family (lora, sparse, adapter, ...), for sweep reports
ATTR_STATUS = "status"  # "ok" | "infeasible" | "error" | "pruned"
ATTR_STORED = "stored_params"
ATTR_HEAD = "head_params"
ATTR_BUDGET_USED = "budget_used"  # stored_params / budget_params
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
ATTR_CHANCE = "chance_score"  # the best score of a constant prediction on the selection split
CONSTRAINT_BEATS_CHANCE = "beats_chance"  # Optuna constraint: <= 0 when the trial learned
_NOT_ABOVE = 1e-9  # a score equal to chance violates that constraint by this much

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


def record_chance(trial: optuna.Trial | optuna.trial.FrozenTrial, score: float,
                  chance: float | None) -> None:
    """Record the trial's chance level, and as an Optuna constraint whether it beat it.

    A trial that scores no better than always answering one label learned nothing, yet it is
    often the cheapest and so Pareto-optimal on size alone; TPE, NSGA-II and GP treat a
    violated constraint as infeasible, so such trials do not pull the search towards more of
    them (the report still lists them). Feasible means strictly above chance.
    """
    if chance is None:
        return
    trial.set_user_attr(ATTR_CHANCE, chance)
    trial.set_constraint(CONSTRAINT_BEATS_CHANCE, chance - score + _NOT_ABOVE)


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


def make_storage(storage: str | None, study_dir: Path) -> BaseStorage:
    """A journal file under the study directory by default; an RDB URL or journal path otherwise."""
    if storage and "://" in storage:
        return _rdb(storage)
    path = Path(storage) if storage else study_dir / "optuna.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return _journal(path)


def _rdb(url: str, attempts: int = 5) -> RDBStorage:
    """Optuna's RDB storage on `url`, its tables created on first use.

    Two searches that open a new database at once both try to create Optuna's tables, and the
    loser's CREATE fails on a name the winner has just taken; by then the tables exist, so it
    tries again (a short, bounded retry) instead of failing a search the database can serve.
    """
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    attempt = 0
    while True:
        try:
            return RDBStorage(url)
        except Exception as exc:  # SQLAlchemy raises many types for a bad URL
            attempt += 1
            lost_race = (isinstance(exc, IntegrityError | ProgrammingError)
                         and "already exists" in str(exc))
            if not lost_race or attempt == attempts:
                raise AutoPeftError(f"cannot open storage '{url}': {exc}") from None
            time.sleep(0.5 * attempt)


def check_journal(path: Path) -> None:
    """Refuse, untouched, a file that is not a complete Optuna journal.

    Optuna skips an unparsable last line and appends after it, which leaves the file unreadable
    for good; a foreign file would simply be appended to. So every line is checked first: it
    costs one read of a file that is small next to a study's artifacts. An incomplete last line
    is read again once, since another search may be appending to the study right now.
    """
    if not path.is_file():
        raise _not_a_journal(path, "it is not a file")
    *lines, tail = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:  # also bytes that are not UTF-8
            raise _not_a_journal(path, f"line {number} is not JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
            raise _not_a_journal(path, f"line {number} is not an Optuna journal record")
    if tail:  # no line break at the end: being written now, or cut off
        time.sleep(0.5)
        if not path.read_bytes().endswith(b"\n"):
            raise _not_a_journal(path, "its last line is incomplete, as if a write was cut off")


def _journal(path: Path) -> JournalStorage:
    """Optuna's journal storage on `path`, an existing file checked before anything is appended."""
    if path.exists():
        check_journal(path)
    try:
        # Absolute: Optuna's lock is a symlink to this path, resolved from the link's folder; a
        # relative target dangles, and a lock left by a killed process is then never released
        # (its 30 s grace period reads the target's mtime), so a resume would wait forever.
        return JournalStorage(JournalFileBackend(str(path.resolve())))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise _not_a_journal(path, f"it does not replay: {type(exc).__name__}: {exc}") from None


def _not_a_journal(path: Path, why: str) -> AutoPeftError:
    return AutoPeftError(
        f"'{path}' is not a readable Optuna journal ({why}); it was left as it is: move it "
        "aside, or pass another --study (or --storage)"
    )


def open_study(name: str, storage: BaseStorage, setup: StudySetup | None) -> optuna.Study:
    """Open the named study, creating it when `setup` is given and it does not exist yet.

    A loaded study is checked to have been made for the same task/model/budget, before
    anything is written to it.

    Trials left RUNNING by a crashed or killed run are marked FAIL, so they neither block the
    sampler nor appear as results; their completed siblings are kept, and so are the RUNNING
    trials of a search that is still going (see the module docstring).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own progress lines say more
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    created_elsewhere = False
    if name not in existing and setup is not None:
        try:
            study = optuna.create_study(study_name=name, storage=storage,
                                        directions=list(DIRECTIONS))
        except optuna.exceptions.DuplicatedStudyError:  # another search created it just now
            existing.add(name)
            created_elsewhere = True
        else:
            study.set_user_attr(SETUP_KEY, asdict(setup))
            study.set_user_attr(DEV_SCORES_KEY, {})
            return study
    if name not in existing:
        known = ", ".join(sorted(existing)) or "none"
        raise AutoPeftError(f"no study named '{name}' in this storage (studies found: {known})")
    study = optuna.load_study(study_name=name, storage=storage)
    if setup is not None or created_elsewhere:
        # another search may have created it a moment ago, its setup not written yet
        _wait_for_setup(study)
    if setup is not None:
        _check_same_setup(name, study, setup)
    _fail_stale_trials(study)
    return study


def check_resumable(name: str, storage: str | None, study_dir: Path,
                    setup: StudySetup) -> None:
    """Refuse, writing nothing, a run whose study exists and was made for something else.

    `open_study` checks the same when it opens the study; a sweep calls this for every study
    first, so that a mismatch in its last study leaves the others unopened. A study another
    search has only just created gets its setup a moment later: that is waited for, as
    `open_study` does, not refused as a study autopeft did not make.
    """
    if storage and "://" in storage:
        store = make_storage(storage, study_dir)
    else:
        path = Path(storage) if storage else study_dir / "optuna.journal"
        if not path.exists():
            return
        store = _journal(path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if name in {s.study_name for s in optuna.get_all_study_summaries(store)}:
        study = optuna.load_study(study_name=name, storage=store)
        _wait_for_setup(study)
        _check_same_setup(name, study, setup)


def _wait_for_setup(study: optuna.Study, seconds: float = 10.0) -> None:
    """A study another search has just created gets its setup a moment later: wait for it."""
    deadline = time.monotonic() + seconds
    while SETUP_KEY not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.2)


def read_study(name: str, storage: str | None, studies_dir: Path) -> optuna.Study:
    """Another study, opened only to read it (e.g. to warm-start a search from its front).

    Nothing is created or changed: a wrong name leaves no directory or journal behind, and
    RUNNING trials are left alone, since a search may still be adding to that study. It is
    looked for where `search` would have put it: in the RDB when `storage` is a URL, else in
    `<studies_dir>/<name>/optuna.journal`, then in the journal file `storage`.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage and "://" in storage:
        places, stores = [storage], [lambda: make_storage(storage, Path(studies_dir))]
    else:
        paths = [names.inside(studies_dir, name) / "optuna.journal",
                 *([Path(storage)] if storage else [])]
        places = [str(p) for p in paths]
        stores = [lambda p=p: _journal(p) for p in paths if p.is_file()]
    for open_store in stores:
        store = open_store()
        if name in {s.study_name for s in optuna.get_all_study_summaries(store)}:
            return optuna.load_study(study_name=name, storage=store)
    raise AutoPeftError(f"no study '{name}' (looked in {', '.join(places)})")


def study_setup(study: optuna.Study) -> StudySetup:
    data = dict(study.user_attrs.get(SETUP_KEY) or {})
    if not data:
        raise AutoPeftError(f"study '{study.study_name}' was not created by autopeft (it has no "
                            "autopeft setup); pass another --study (or --storage) for one")
    return StudySetup(**data)


def dev_scores(study: optuna.Study) -> dict[int, dict[str, float]]:
    return {int(k): v for k, v in (study.user_attrs.get(DEV_SCORES_KEY) or {}).items()}


def record_dev_scores(study: optuna.Study, scores: dict[int, dict[str, float]]) -> None:
    merged = {str(k): v for k, v in dev_scores(study).items()}
    merged.update({str(k): v for k, v in scores.items()})
    study.set_user_attr(DEV_SCORES_KEY, merged)


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


def record_final_run(study: optuna.Study, trial_number: int, index: int, run: dict[str, Any],
                     fidelity: dict[str, int]) -> dict[str, Any]:
    """Store one finished seed of a point and refresh the point's mean/std; returns the point.

    Runs recorded at another fidelity (other epochs, batch size or train size) are dropped:
    one point's seeds are always comparable.
    """
    points = {str(k): v for k, v in final_runs(study).items()}
    point = points.get(str(trial_number))
    if point is None or any(point.get(k) != fidelity[k] for k in FINAL_FIDELITY):
        point = {**{k: fidelity[k] for k in FINAL_FIDELITY}, "runs": {}}
    runs = {**point["runs"], str(index): run}
    scores = [float(r["metrics"]["score"]) for _, r in sorted(runs.items(), key=_by_index)]
    point = {
        **point,
        "runs": runs,
        "seeds": len(scores),
        "score_mean": statistics.fmean(scores),
        "score_std": statistics.stdev(scores) if len(scores) > 1 else None,
    }
    points[str(trial_number)] = point
    study.set_user_attr(FINAL_RUNS_KEY, points)
    return point


def final_skips(study: optuna.Study) -> dict[int, str]:
    """Why each Pareto point left out of the final runs on purpose has no dev numbers."""
    return {int(k): v for k, v in (study.user_attrs.get(FINAL_SKIPPED_KEY) or {}).items()}


def record_final_skips(study: optuna.Study, notes: dict[int, str]) -> None:
    """Say why points are not retrained; a point retrained later keeps its dev numbers."""
    if notes:
        merged = {str(k): v for k, v in final_skips(study).items()}
        merged.update({str(k): v for k, v in notes.items()})
        study.set_user_attr(FINAL_SKIPPED_KEY, merged)


def final_seed_runs(point: dict[str, Any]) -> list[dict[str, Any]]:
    """A point's runs in seed-index order."""
    return [run for _, run in sorted(point.get("runs", {}).items(), key=_by_index)]


def _by_index(item: tuple[str, Any]) -> int:
    return int(item[0])


def counted_trials(study: optuna.Study) -> int:
    """Trials that ran to an outcome: COMPLETE, PRUNED or failed in training.

    Over-budget candidates never trained, and trials whose search process stopped first
    ("interrupted") did not finish: neither counts toward a trial target, so a resumed run
    trains them anew.
    """
    def counts(trial: optuna.trial.FrozenTrial) -> bool:
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            return True
        return (trial.state == TrialState.FAIL
                and trial.user_attrs.get(ATTR_STATUS) == STATUS_ERROR
                and not str(trial.user_attrs.get(ATTR_ERROR, "")).startswith("interrupted"))

    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def feasible_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated COMPLETE trials within budget, sorted by stored parameters.

    Trials at chance stay in: the front shows what was found; only the samplers skip them
    (`record_chance`). Optuna's `best_trials` would drop them, as it honours constraints, so
    the 2-D front is a sort and a sweep here: sorted cheapest first (ties: best score first),
    a trial is on it when it beats every cheaper one, or equals the point it ties with.
    """
    budget = study_setup(study).budget_params
    ranked = sorted(
        (t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
         if t.values is not None and not math.isnan(t.values[0]) and t.values[1] <= budget),
        key=lambda t: (t.values[1], -t.values[0]),
    )
    front: list[optuna.trial.FrozenTrial] = []
    for trial in ranked:
        if not front or trial.values[0] > front[-1].values[0] or trial.values == front[-1].values:
            front.append(trial)
    return front


def _check_same_setup(name: str, study: optuna.Study, setup: StudySetup) -> None:
    old = study_setup(study)
    for key in StudySetup.IDENTITY:
        before, now = getattr(old, key), getattr(setup, key)
        if key == "task_spec" and isinstance(before, dict) and isinstance(now, dict):
            differing = [k for k in dict.fromkeys([*before, *now]) if before.get(k) != now.get(k)]
            if differing:  # name the first key that differs, not two whole mappings
                part = differing[0]
                key, before, now = f"{key}.{part}", before.get(part), now.get(part)
        if before != now:
            raise AutoPeftError(
                f"study '{name}' was made with {key}={before!r}, not {now!r}; pass --study "
                "with a new name to start another study"
            )
    _check_same_space(name, old, setup)


def _check_same_space(name: str, old: StudySetup, new: StudySetup) -> None:
    """A study continues only with the methods and ranges it was searched over.

    Refused rather than merged: Optuna cannot change a categorical's choices within a study
    (the method is one), and a front mixing two spaces no longer says what the space holds.
    `--warm-start` carries a study's front into a new study with another space.
    """
    advice = (f"pass the same --methods/--space to continue '{name}', or start a new --study "
              f"(--warm-start {name} tries its Pareto points there first)")
    if list(old.methods) != list(new.methods):
        added = [m for m in new.methods if m not in old.methods]
        dropped = [m for m in old.methods if m not in new.methods]
        what = "; ".join(part for part in (
            f"adds {', '.join(added)}" if added else "",
            f"leaves out {', '.join(dropped)}" if dropped else "") if part)
        raise AutoPeftError(f"study '{name}' searches {', '.join(old.methods)}; this run "
                            f"{what or 'orders them differently'}: {advice}")
    if old.space is None or new.space is None or old.space == new.space:
        return
    changed = [f"{key} {old.space.get(key, '-')} → {new.space.get(key, '-')}"
               for key in dict.fromkeys([*old.space, *new.space])
               if old.space.get(key) != new.space.get(key)]
    shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
    raise AutoPeftError(f"study '{name}' was searched over another space ({shown}): {advice}")


def process_owner() -> dict[str, Any]:
    """This process as a trial's owner: host and pid, plus its start time against pid reuse."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid())}


def _started(pid: int) -> str | None:
    """A process's start time in clock ticks after boot (Linux /proc); None if gone or unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name in (...) may hold spaces


def _owner_alive(owner: dict[str, Any]) -> bool:
    """Whether a trial's owner still runs; True when that cannot be told (another host)."""
    if owner.get("host") != socket.gethostname():
        return True
    if owner.get("started") is not None and Path("/proc/self/stat").exists():
        return _started(int(owner["pid"])) == owner["started"]
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _is_stale(trial: optuna.trial.FrozenTrial, now: datetime) -> bool:
    owner = trial.user_attrs.get(ATTR_OWNER)
    if isinstance(owner, dict):
        return not _owner_alive(owner)
    # made by an older version, or asked for a moment ago and not yet given its owner
    return trial.datetime_start is None or now - trial.datetime_start > OWNERLESS_GRACE


def _fail_stale_trials(study: optuna.Study) -> None:
    storage, now = study._storage, datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_stale(trial, now):
            continue
        owner = trial.user_attrs.get(ATTR_OWNER) or {}
        who = f" (pid {owner['pid']} on {owner['host']})" if owner else ""
        storage.set_trial_user_attr(trial._trial_id, ATTR_STATUS, STATUS_ERROR)
        storage.set_trial_user_attr(trial._trial_id, ATTR_ERROR,
                                    f"interrupted: its search process{who} ended first")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
