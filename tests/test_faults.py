"""Faults during a search: lost workers, killed or interrupted drivers, diverging or
out-of-memory trials, two searches on one study, a lost Ray node. The study must keep every
finished trial, never count one twice, and the search must finish (or resume) cleanly.

Every search here is the real `autopeft search` in a subprocess on the tiny BERT and a 64-pair
slice of MRPC, with Ray on loopback. Faults inside a trial come from the documented test hook
`AUTOPEFT_TEST_FAULT` (autopeft/train/faults.py), read by the Ray workers; the driver is
signalled from here, and the lost node is killed from here, process by process.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from autopeft import study as records
from autopeft.train.faults import ENV as FAULT_ENV
from tests.helpers import Search, assert_searches_overlapped, tiny_search_args


def _journal(work: Path, study: str) -> Path:
    return work / "studies" / study / "optuna.journal"


def _trials(work: Path, study: str) -> list[FrozenTrial]:
    """The study's trials, read without changing anything (no stale-trial marking)."""
    path = _journal(work, study)
    if not path.is_file():
        return []
    storage = JournalStorage(JournalFileBackend(str(path)))
    if study not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        return []
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _numbers(trials: list[FrozenTrial], state: TrialState) -> set[int]:
    return {t.number for t in trials if t.state == state}


def _artifacts(work: Path, study: str) -> set[str]:
    folder = work / "studies" / study / "artifacts"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def _assert_whole_study(work: Path, study: str) -> list[FrozenTrial]:
    """Nothing left running, every COMPLETE trial has its one artifact, the journal is sound,
    and each interrupted trial's candidate is queued again (`_assert_retried`)."""
    records.check_journal(_journal(work, study))
    trials = _trials(work, study)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # no trial lost or counted twice
    assert not _numbers(trials, TrialState.RUNNING)
    _assert_retried(trials)
    complete = _numbers(trials, TrialState.COMPLETE)
    assert {f"trial-{n:04d}" for n in complete} <= _artifacts(work, study)
    assert all(t.user_attrs[records.ATTR_ARTIFACT] == f"artifacts/trial-{t.number:04d}"
               for t in trials if t.state == TrialState.COMPLETE)
    return trials


def _assert_retried(trials: list[FrozenTrial]) -> None:
    """Every interrupted trial's candidate is queued again (same params, the first try's number,
    one attempt more), and a retry a later run took started before that run's new trials."""
    retries = {(r["trial"], r["attempt"]): t for t in trials
               if (r := t.user_attrs.get(records.ATTR_RETRY_OF))}
    for trial in trials:
        if not str(trial.user_attrs.get(records.ATTR_ERROR, "")).startswith("interrupted"):
            continue
        tried = trial.user_attrs.get(records.ATTR_RETRY_OF, {})
        again = retries[(tried.get("trial", trial.number), tried.get("attempt", 0) + 1)]
        params = again.params or again.system_attrs["fixed_params"]  # WAITING: not asked yet
        assert params == trial.params and again.number > trial.number
    for again in retries.values():
        if again.state == TrialState.WAITING:
            continue
        later = [t.datetime_start for t in trials if t.number > again.number
                 and t.datetime_start is not None and records.ATTR_RETRY_OF not in t.user_attrs]
        assert all(again.datetime_start <= start for start in later)


# --- one search with a killed worker, a NaN loss and an out-of-memory trial ------------------
@pytest.fixture(scope="module")
def faulty(tmp_path_factory, tiny_bert, mrpc_dir):
    """Trial 0 trains normally; trial 1's worker is SIGKILLed after its first epoch (once);
    trial 2's loss is NaN; trial 3 runs out of memory."""
    work = tmp_path_factory.mktemp("faults")
    marker = work / "killed-pid"
    search = Search(tiny_search_args(tiny_bert, mrpc_dir, "faults", 4), work, "faults",
                    **{FAULT_ENV: f"kill:1:{marker},nan:2,oom:3"})
    code = search.wait()
    assert code == 0, search.stderr[-3000:]
    trials = {t.number: t for t in _assert_whole_study(work, "faults")}
    report = pd.read_csv(work / "reports" / "faults" / "trials.csv").set_index("trial")
    return work, search, trials, report, marker


def test_killed_worker_is_retried_and_its_trial_completes(faulty):
    work, search, trials, report, marker = faulty
    assert marker.is_file(), "the kill hook never fired"
    killed_pid = int(marker.read_text())
    retried = trials[1]
    assert retried.state == TrialState.COMPLETE
    assert retried.user_attrs[records.ATTR_RETRIES] == 1
    assert retried.user_attrs[records.ATTR_WORKER]["pid"] != killed_pid  # a new worker did it
    # the lost attempt's epoch is not counted again: one clean curve of the retry
    assert [p["epoch"] for p in retried.user_attrs[records.ATTR_CURVE]] == [1, 2]
    assert records.ATTR_RETRIES not in trials[0].user_attrs
    assert "↻ trial 1: its worker was lost" in search.stderr
    assert "Traceback" not in search.stderr  # one progress line, not Ray's trace
    assert list(report.loc[[0, 1], "state"]) == ["COMPLETE", "COMPLETE"]


def test_nan_loss_fails_the_trial_with_its_reason_and_the_search_goes_on(faulty):
    work, search, trials, report, _ = faulty
    diverged = trials[2]
    assert diverged.state == TrialState.FAIL
    assert diverged.user_attrs[records.ATTR_STATUS] == records.STATUS_ERROR
    reason = diverged.user_attrs[records.ATTR_ERROR]
    assert reason.startswith("TrainingDiverged: training loss became nan at epoch 1, step 1")
    assert report.loc[2, "error"] == reason and report.loc[2, "state"] == "FAIL"
    assert "trial-0002" not in _artifacts(work, "faults")
    assert f"✘ trial 2: {reason}" in search.stderr
    assert 3 in trials and trials[3].state.is_finished()  # the next trial still ran


def test_out_of_memory_fails_the_trial_with_a_clear_reason(faulty):
    work, search, trials, report, _ = faulty
    oom = trials[3]
    assert oom.state == TrialState.FAIL
    reason = oom.user_attrs[records.ATTR_ERROR]
    assert reason.startswith("out of memory (OutOfMemoryError: ")
    assert "lower --batch-size or --concurrency" in reason
    assert report.loc[3, "error"] == reason
    assert "trial-0003" not in _artifacts(work, "faults")
    assert "Pareto front of faults" in search.out.read_text()  # the search finished


# --- the driver interrupted, then killed, then resumed ----------------------------------------
def test_interrupted_or_killed_driver_resumes_without_losing_or_duplicating_trials(
        tmp_path, tiny_bert, mrpc_dir):
    asked = 4  # --trials: the trained trials the study holds when the command is done
    args = tiny_search_args(tiny_bert, mrpc_dir, "resume", asked)

    def running_after(done: int) -> Callable[[], bool]:
        def check() -> bool:
            trials = _trials(tmp_path, "resume")
            return (len(_numbers(trials, TrialState.COMPLETE)) >= done
                    and bool(_numbers(trials, TrialState.RUNNING)))
        return check

    # Ctrl+C while a trial trains: it is marked failed, the run exits 130 without a report
    first = Search(args, tmp_path, "first")
    first.wait_until(running_after(1))
    first.proc.send_signal(signal.SIGINT)
    assert first.wait() == 130, first.stderr[-3000:]
    last = first.stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted: search stopped after "), last
    assert "were marked failed" in last and "run the same command again" in last
    trials = _assert_whole_study(tmp_path, "resume")
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted and all(t.user_attrs[records.ATTR_ERROR].startswith(
        "interrupted: the search was stopped") for t in interrupted)
    kept_first = _numbers(trials, TrialState.COMPLETE)
    assert len(_numbers(trials, TrialState.WAITING)) == len(interrupted)  # queued to run first
    assert not (tmp_path / "reports" / "resume").exists()

    # SIGKILL while a trial trains: nothing can mark it, so it stays RUNNING until a resume
    second = Search(args, tmp_path, "second")
    second.wait_until(running_after(len(kept_first) + 1))
    second.proc.kill()
    second.wait()
    trials = _trials(tmp_path, "resume")
    stale = _numbers(trials, TrialState.RUNNING)
    assert stale and all(trials[n].user_attrs[records.ATTR_OWNER]["pid"] == second.proc.pid
                         for n in stale)
    kept = _numbers(trials, TrialState.COMPLETE)
    assert kept > kept_first

    # the same command again: the stale trial is failed, and the study is filled up to --trials
    # (each trial once); a fourth run finds the target reached and trains nothing
    assert len(kept) < asked
    third = Search(args, tmp_path, "third")
    assert third.wait() == 0, third.stderr[-3000:]
    trials = _assert_whole_study(tmp_path, "resume")
    complete = _numbers(trials, TrialState.COMPLETE)
    assert kept <= complete and len(complete) == asked
    for number in stale:
        assert trials[number].state == TrialState.FAIL
        assert trials[number].user_attrs[records.ATTR_ERROR] == (
            f"interrupted: its search process (pid {second.proc.pid} on "
            f"{trials[number].user_attrs[records.ATTR_OWNER]['host']}) ended first; its "
            "candidate is queued to run first again")
    assert not _numbers(trials, TrialState.WAITING)  # every retry ran
    report = pd.read_csv(tmp_path / "reports" / "resume" / "trials.csv")
    assert report.trial.is_unique and set(report.trial) == {t.number for t in trials}
    assert (f"study 'resume' holds {len(kept)} trained trials → this run adds up to "
            f"{asked - len(kept)} (--trials {asked})") in third.stderr
    assert "Token authentication" not in third.stderr  # a local Ray starts without warnings
    fourth = Search(args, tmp_path, "fourth")
    assert fourth.wait() == 0, fourth.stderr[-3000:]
    assert f"holds {asked} trained trials, --trials {asked} reached: nothing to train" in (
        fourth.stderr)
    assert len(_trials(tmp_path, "resume")) == len(trials)


# --- a journal lock held by a process that was killed -----------------------------------------
# The holder takes the storage's own lock (Optuna's symlink lock, JournalFileBackend._lock) and
# SIGKILLs itself, as a driver killed in the middle of a write would. Relative study paths, as
# with the default `--studies-dir studies`.
_HOLD_AND_DIE = ("import os, signal; from pathlib import Path; from autopeft import study; "
                 "study.make_storage(None, Path('studies/locked'))._backend._lock.acquire(); "
                 "os.kill(os.getpid(), signal.SIGKILL)")
_OPEN = ("from pathlib import Path; import optuna; from autopeft import study; "
         "optuna.create_study(study_name='locked', "
         "storage=study.make_storage(None, Path('studies/locked'))).add_trial("
         "optuna.trial.create_trial(value=1.0)); print('written')")


def test_a_lock_left_by_a_killed_process_is_released_after_optunas_grace_period(tmp_path):
    died = subprocess.run([sys.executable, "-c", _HOLD_AND_DIE], cwd=tmp_path, timeout=60)
    assert died.returncode == -signal.SIGKILL
    assert (tmp_path / "studies" / "locked" / "optuna.journal.lock").is_symlink()  # left behind
    started = time.monotonic()
    opened = subprocess.run([sys.executable, "-c", _OPEN], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)  # Optuna's grace period is 30 s
    assert opened.stdout.strip() == "written", opened.stderr[-2000:]
    assert time.monotonic() - started < 90
    assert "Forcibly releasing the lock file" in opened.stderr


# --- two searches appending to one study at once --------------------------------------------
def test_two_searches_append_to_one_study_at_once(tmp_path, tiny_bert, mrpc_dir):
    asked = 3
    args = tiny_search_args(tiny_bert, mrpc_dir, "shared", asked)
    searches = [Search(args, tmp_path, f"search{i}") for i in range(2)]
    for search in searches:
        assert search.wait() == 0, search.stderr[-3000:]
    trials = _assert_whole_study(tmp_path, "shared")
    assert len(_numbers(trials, TrialState.COMPLETE)) == 2 * asked == len(trials)
    assert_searches_overlapped(trials, searches)


# --- Ray across two nodes, one of them lost --------------------------------------------------
@pytest.mark.slow
def test_trials_run_on_two_nodes_and_survive_losing_one(two_nodes, tmp_path, tiny_bert,
                                                        mrpc_dir):
    cluster, worker = two_nodes
    head_id, worker_id = cluster.head_node.node_id, worker.node_id
    env = {"RAY_TMPDIR": os.environ["RAY_TMPDIR"]}
    # Two trials at once on two one-CPU nodes, long enough (1,000 pairs, 3 epochs) that the
    # second is placed while the first trains: Ray then has no choice but the other node.
    args = tiny_search_args(tiny_bert, mrpc_dir, "nodes", 2, "--address", cluster.address,
                            "--concurrency", "2", "--epochs", "3", "--max-train-samples", "1000")
    both = Search(args, tmp_path, "both", **env)
    assert both.wait() == 0, both.stderr[-3000:]
    trials = _assert_whole_study(tmp_path, "nodes")
    ran_on = {t.user_attrs[records.ATTR_WORKER]["node"] for t in trials}
    assert ran_on == {head_id, worker_id}

    def training_on_worker_node() -> bool:  # past its first epoch, with more to go
        return any(t.state == TrialState.RUNNING and t.user_attrs.get(records.ATTR_CURVE)
                   and t.user_attrs.get(records.ATTR_WORKER, {}).get("node") == worker_id
                   for t in _trials(tmp_path, "nodes"))

    args[args.index("--trials") + 1] = "5"  # the study's target: 3 more than the 2 it holds
    lost = Search([*args, "--epochs", "4", "--max-train-samples", "400"], tmp_path, "lost",
                  **env)  # longer trials (the last of a repeated option counts)
    lost.wait_until(training_on_worker_node)
    cluster.remove_node(worker, allow_graceful=False)  # SIGKILLs that node's processes
    assert lost.wait() == 0, lost.stderr[-3000:]
    trials = _assert_whole_study(tmp_path, "nodes")
    added = trials[2:]
    assert [t.state for t in added] == [TrialState.COMPLETE] * 3
    retried = [t for t in added if t.user_attrs.get(records.ATTR_RETRIES)]
    assert retried, lost.stderr[-3000:]
    assert all(t.user_attrs[records.ATTR_WORKER]["node"] == head_id for t in retried)
    assert "its worker was lost" in lost.stderr


def test_a_study_another_search_is_creating_is_waited_for_not_refused(tmp_path):
    """The race two searches starting at once run into: one has created the study and not yet
    written its setup when the other checks it. The check waits for the setup (and then
    compares it), instead of refusing the study as one autopeft did not make."""
    import threading

    setup = records.StudySetup(task="mrpc", model="m", budget_spec="1%", budget_params=10,
                               backbone_params=1000, primary_metric="accuracy_f1_mean",
                               methods=["bitfit"])
    storage = records.make_storage(None, tmp_path)
    study = optuna.create_study(study_name="racing", storage=storage,
                                directions=list(records.DIRECTIONS))  # no setup yet
    writer = threading.Timer(1.0, lambda: study.set_user_attr(
        records.SETUP_KEY, dataclasses.asdict(setup)))
    writer.start()
    started = time.monotonic()
    records.check_resumable("racing", None, tmp_path, setup)
    writer.join()
    assert 0.9 < time.monotonic() - started < 9
    other = dataclasses.replace(setup, budget_params=20)
    with pytest.raises(records.AutoPeftError, match="budget_params=10, not 20"):
        records.check_resumable("racing", None, tmp_path, other)
