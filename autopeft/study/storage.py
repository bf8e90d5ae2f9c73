"""Where studies live: make, open and check Optuna storages (journal file or RDB), and find the
trials a killed search left RUNNING. What is written to a study goes through `records.py`."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from autopeft.errors import AutoPeftError
from autopeft.inputs import names
from autopeft.study import records
from autopeft.study.schema import (
    ATTR_OWNER,
    DIRECTIONS,
    OWNERLESS_GRACE,
    SETUP_KEY,
    StudySetup,
    study_setup,
)


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
    sampler nor appear as results, and their candidates are queued to run first again; their
    completed siblings are kept, and so are the RUNNING trials of a search that is still going
    (see the module docstring).
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
            records.record_setup(study, setup)
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
    now = datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_stale(trial, now):
            continue
        owner = trial.user_attrs.get(ATTR_OWNER) or {}
        who = f" (pid {owner['pid']} on {owner['host']})" if owner else ""
        retried = records.enqueue_retry(study, trial)
        records.record_interrupted(
            study, trial, f"interrupted: its search process{who} ended first"
            + ("; its candidate is queued to run first again" if retried else ""))


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study lives in (Ray's OptunaSearch opens the study again from it)."""
    return study._storage  # Optuna has no public accessor


def as_stored(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """A live trial as its storage holds it now (after it was told)."""
    return study._storage.get_trial(trial._trial_id)  # Optuna has no public accessor
