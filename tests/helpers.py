"""Small helpers tests share: run the CLI in-process, list a folder, read an error."""

from __future__ import annotations

import sys
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
