"""Small helpers tests share: run the CLI in-process or as a subprocess, list a folder, read
an error."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from autopeft import cli


def run_main(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """`autopeft ARGV` through `cli.main` (its error handling included): (exit status, stderr).

    A run that returns instead of exiting counts as status 0.
    """
    capsys.readouterr()  # what earlier runs printed is not this run's
    monkeypatch.setattr(sys, "argv", ["autopeft", *argv])
    try:
        cli.main()
        code = 0
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    return code, capsys.readouterr().err


def listing(root: Path) -> list[str]:
    """Every file and folder under `root`, recursively, as relative paths."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def nonblank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_refused(code: int, stderr: str, needle: str, max_lines: int = 3) -> str:
    """Exit 2, no traceback, at most `max_lines` lines of which only the usage line may come
    before the error line, and `needle` in the error line; returns the error line."""
    lines = nonblank_lines(stderr)
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert 1 <= len(lines) <= max_lines, stderr
    assert all(line.startswith("Usage: ") for line in lines[:-1]), stderr
    assert lines[-1].startswith("error: "), stderr
    if needle not in lines[-1]:
        pytest.fail(f"{needle!r} is not in the error line {lines[-1]!r}")
    return lines[-1]


TRIAL_TIMEOUT_S = 300  # per search; a tiny trial takes seconds, Ray's start-up ~10 s


def tiny_search_args(tiny_bert: Path, mrpc_dir: Path, study: str, trials: int,
                     *extra: str) -> list[str]:
    """A tiny bitfit-only search: no over-budget candidates, so trial numbers are predictable."""
    return ["search", "--task", "mrpc", "--budget", "2%", "--model", str(tiny_bert),
            "--data-dir", str(mrpc_dir), "--methods", "bitfit", "--trials", str(trials),
            "--max-train-samples", "64", "--batch-size", "16", "--epochs", "2",
            "--sampler", "random", "--seed", "1", "--study", study, "--final-seeds", "0", *extra]


def _inherited() -> dict[str, str]:
    """This process's environment less what an in-process search set (Ray's auth mode): each
    search starts as a user's would."""
    return {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}


class Search:
    """`autopeft search` running in a subprocess, its output in files (no pipe to fill up)."""

    def __init__(self, args: list[str], cwd: Path, name: str, **env: str):
        self.out, self.err = cwd / f"{name}.out", cwd / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autopeft", *args], cwd=cwd, stdout=out, stderr=err,
                env={**_inherited(), "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **env})

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self, timeout: float = TRIAL_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"search timed out:\n{self.stderr[-3000:]}") from None

    def wait_until(self, condition: Callable[[], bool], timeout: float = TRIAL_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"search ended first ({self.proc.returncode}):\n"
                                     f"{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"condition not reached:\n{self.stderr[-3000:]}")
            time.sleep(0.3)


def assert_searches_overlapped(trials: list, searches: list[Search]) -> None:
    """Each of two searches on one study added its own trials while the other added its own."""
    from autopeft import study as records

    spans = {}
    for trial in trials:
        owner = trial.user_attrs[records.ATTR_OWNER]["pid"]
        start, end = spans.get(owner, (trial.datetime_start, trial.datetime_complete))
        spans[owner] = (min(start, trial.datetime_start), max(end, trial.datetime_complete))
    assert set(spans) == {s.proc.pid for s in searches}
    (start_a, end_a), (start_b, end_b) = spans.values()
    assert start_a < end_b and start_b < end_a
