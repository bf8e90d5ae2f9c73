"""`--time-budget`: parsed in one place, refused in one line when bad, shown in the progress
line, and ending a search (or a sweep) early without calling it an interruption."""

from __future__ import annotations

import json
import re
import sys

import pandas as pd
import pytest
from optuna.trial import TrialState
from rich.console import Console

from autopeft import cli
from autopeft import study as records
from autopeft.engine.progress import SearchProgress, clock
from autopeft.engine.runner import hard_stop_s
from autopeft.inputs.durations import parse_time_budget
from tests.helpers import run_cli

SPACE = """
methods:
  bitfit:
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
  lora:
    r: {choices: [2]}
    targets: {choices: [all]}
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
"""
TRIALS = 50  # far more than a few seconds allow: the time budget must end the search
BUDGET_S = 5  # the first trial waits for Ray's worker, so it alone outlasts this


@pytest.mark.parametrize(("text", "seconds"), [
    ("45m", 2700), ("2h", 7200), ("90s", 90), ("1h30m", 5400), ("600", 600),
    ("1h30m15s", 5415), ("1.5h", 5400), (" 45M ", 2700),
])
def test_durations_parse_to_seconds(text, seconds):
    assert parse_time_budget(text) == seconds


def test_no_time_budget_is_none():
    assert parse_time_budget(None) is None


def _search(tiny_bert, mrpc_dir, *extra: str) -> list[str]:
    return ["search", "--task", "mrpc", "--budget", "2%", "--model", str(tiny_bert),
            "--data-dir", str(mrpc_dir), "--methods", "bitfit", "--trials", "1",
            "--max-train-samples", "16", "--epochs", "1", "--final-seeds", "0", *extra]


def _refused(argv: list[str], capsys, monkeypatch) -> str:
    """The one error line of `autopeft *argv` run in-process (as tests/test_bad_input.py)."""
    monkeypatch.setattr(sys, "argv", ["autopeft", *argv])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert exited.value.code == 2 and "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize(("value", "needle"), [
    ("abc", "invalid --time-budget 'abc'"),
    ("0", "--time-budget '0' must be more than 0 seconds"),
    ("-5m", "invalid --time-budget '-5m'"),
    ("1h30", "invalid --time-budget '1h30'"),
])
def test_bad_time_budget_is_one_line_exit_2(tmp_path, tiny_bert, mrpc_dir, capsys,
                                            monkeypatch, value, needle):
    monkeypatch.chdir(tmp_path)
    line = _refused(_search(tiny_bert, mrpc_dir, "--time-budget", value), capsys, monkeypatch)
    assert needle in line and "accepted: seconds (600)" in line, line
    assert "1h30m" in line, line  # names what is accepted
    assert not (tmp_path / "studies").exists()  # checked before anything starts


def test_bad_time_budget_for_a_sweep_is_one_line(tmp_path, tiny_bert, mrpc_dir, capsys,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _refused(["sweep", "--tasks", "mrpc", "--budgets", "2%", "--models", str(tiny_bert),
                     "--data-dir", str(mrpc_dir.parent), "--time-budget", "soon"],
                    capsys, monkeypatch)
    assert "invalid --time-budget 'soon'" in line and "45m" in line, line
    assert not (tmp_path / "studies").exists()


def test_overrun_is_bounded_by_a_quarter_of_the_budget_at_least_a_minute():
    assert hard_stop_s(2700) == 2700 + 675
    assert hard_stop_s(90) == 90 + 60


def test_progress_line_shows_the_time_budget_left(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("autopeft.engine.progress.time.monotonic", lambda: now[0])
    progress = SearchProgress(10, 1, Console(quiet=True), time_budget_s=600)
    unbudgeted = SearchProgress(10, 1, Console(quiet=True))
    now[0] += 125
    assert "time budget left 7m55s" in progress.status()
    assert "time budget" not in unbudgeted.status()
    now[0] += 600
    assert "time budget spent: running trials finish" in progress.status()


def _trained(study) -> list:
    """Trials Ray ran: finished ones but the over-budget proposals that never trained (an
    enqueued first candidate left WAITING never ran either)."""
    return [t for t in study.trials if t.state.is_finished()
            and t.user_attrs.get(records.ATTR_STATUS) != records.STATUS_INFEASIBLE]


@pytest.fixture(scope="module")
def timed_search(tmp_path_factory, tiny_bert, mrpc_dir):
    work = tmp_path_factory.mktemp("time-budget")
    (work / "space.yaml").write_text(SPACE)
    result = run_cli("search", "--task", "mrpc", "--budget", "2%", "--model", str(tiny_bert),
                     "--data-dir", str(mrpc_dir), "--space", "space.yaml",
                     "--trials", str(TRIALS), "--time-budget", f"{BUDGET_S}s",
                     "--max-train-samples", "64", "--epochs", "1", "--sampler", "random",
                     "--study", "timed", "--concurrency", "1", "--final-seeds", "1", cwd=work)
    return work, result


def test_time_budget_ends_the_search_and_the_final_runs_follow(timed_search):
    work, result = timed_search
    assert result.returncode == 0, result.stderr[-3000:]
    assert "interrupted" not in result.stderr
    study = records.read_study("timed", None, work / "studies")
    trained = _trained(study)
    assert 1 <= len(trained) < TRIALS
    assert not study.get_trials(states=(TrialState.RUNNING,))  # running trials finished
    assert study.get_trials(states=(TrialState.COMPLETE,))
    ended = [line for line in result.stderr.splitlines() if "ended the search" in line]
    assert ended == [f"the time budget ({clock(BUDGET_S)}) ended the search after "
                     f"{len(trained)} trial(s)"], result.stderr[-3000:]
    # the final runs were planned as usual (a front point at chance is not retrained)
    assert re.search(r"final \(timed\): \d+ Pareto point\(s\) × 1 seed\(s\)", result.stderr)
    assert len(pd.read_csv(work / "reports" / "timed" / "pareto.csv"))
    assert (work / "reports" / "timed" / "summary.md").exists()


def test_progress_output_shows_the_time_budget(timed_search):
    _, result = timed_search
    status = [line for line in result.stderr.splitlines() if line.startswith(f"[1/{TRIALS} ")]
    assert status and "time budget" in status[0], result.stderr[-3000:]
    assert f"time budget {clock(BUDGET_S)}: no trial starts after it" in result.stderr


def test_a_sweep_honours_the_time_budget(tmp_path, tiny_bert, mrpc_dir):
    (tmp_path / "space.yaml").write_text(SPACE)
    result = run_cli("sweep", "--tasks", "mrpc", "--budgets", "1%,2%", "--models",
                     str(tiny_bert), "--data-dir", str(mrpc_dir.parent), "--space",
                     "space.yaml", "--trials", str(TRIALS), "--time-budget", f"{BUDGET_S}",
                     "--max-train-samples", "64", "--epochs", "1", "--sampler", "random",
                     "--sweep", "timed", "--concurrency", "1", "--final-seeds", "0",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"the time budget ({clock(BUDGET_S)}) ended the search after" in result.stderr
    manifest = json.loads((tmp_path / "studies" / "timed.sweep" / "sweep.json").read_text())
    assert manifest["settings"]["time_budget"] == "5"
    for entry in manifest["studies"]:
        study = records.read_study(entry["study"], None, tmp_path / "studies")
        assert records.counted_trials(study) < TRIALS
        assert not study.get_trials(states=(TrialState.RUNNING,))
    assert (tmp_path / "reports" / "timed" / "index.html").exists()


def test_trials_still_running_at_the_hard_stop_are_pruned_not_interrupted(
        tmp_path, tiny_bert, mrpc_dir, monkeypatch):
    """Ray's stop at the overrun bound tells the searcher nothing: the search must record the
    trials it stopped as PRUNED, not mark them failed and call the run interrupted."""
    from autopeft import api
    from autopeft.engine import runner

    monkeypatch.setattr(runner, "OVERRUN_MIN_S", 0.0)  # stop at the budget itself
    monkeypatch.setattr(runner, "OVERRUN_SHARE", 0.0)
    monkeypatch.chdir(tmp_path)
    console = Console(record=True, width=200)
    request = api.SearchRequest(
        task="mrpc", budget="2%", model=str(tiny_bert), data_dir=str(mrpc_dir),
        methods="bitfit", trials=TRIALS, max_train_samples=16, epochs=1, study="stopped",
        concurrency=1, final_seeds=0, time_budget="1")  # the first trial outlasts 1 s
    api.search(request, console=console)
    printed = console.export_text()
    study = records.read_study("stopped", None, tmp_path / "studies")
    assert [t.state for t in _trained(study)] == [TrialState.PRUNED], printed
    assert "1 still running at 0m01s were stopped (PRUNED)" in printed, printed


def test_the_clock_shows_hours_from_an_hour_on():
    assert (clock(65), clock(3600 + 125)) == ("1m05s", "1h02m05s")


def test_no_trial_starts_that_would_not_finish_before_the_hard_stop(monkeypatch):
    from ray.tune.search import Searcher

    from autopeft.engine import runner

    class Proposals(Searcher):
        def suggest(self, trial_id):
            return {"x": 1}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    now = [1000.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: now[0])
    limiter = runner._TimeBudget(Proposals(), 1, budget_s=600)  # hard stop at 750 s
    assert limiter.suggest("a") == {"x": 1}  # nothing finished yet: no estimate, it starts
    now[0] += 300
    limiter.on_trial_complete("a", {"score": 0.5})  # trials take 300 s
    assert limiter.suggest("b") == {"x": 1}  # at 300 s: would end at 600 s, before 750 s
    now[0] += 200
    limiter.on_trial_complete("b", {"score": 0.5}, error=True)  # a crash estimates nothing
    assert limiter.durations == [300.0]
    assert limiter.suggest("c") == Searcher.FINISHED  # at 500 s it would end at 800 s > 750 s
    assert limiter.out_of_time
