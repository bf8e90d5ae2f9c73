"""User mistakes: one line on stderr naming what was wrong, exit status 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, run_cli


@pytest.fixture
def base_args(tiny_bert, mrpc_dir):
    return ["search", "--model", str(tiny_bert), "--data-dir", str(mrpc_dir)]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--task", "mrpc", "--budget", "5%%"], ["invalid budget '5%%'", "accepted"]),
        (["--task", "mrpc", "--budget", "-3"], ["'-3'"]),
        (["--task", "mrcp", "--budget", "1%"], ["unknown task 'mrcp'", "mrpc"]),
        (["--task", "mrpc", "--budget", "1%", "--methods", "lora,adaptr"],
         ["unknown method 'adaptr'", "bitfit"]),
        (["--task", "mrpc", "--budget", "1%", "--trials", "0"], ["--trials must be at least 1"]),
        (["--task", "mrpc", "--budget", "10", "--methods", "lora"],
         ["no method fits the budget of 10 params"]),
        (["--task", "mrpc", "--budget", "1%", "--sampler", "cmaes"],
         ["unknown sampler 'cmaes'; choose: tpe, nsga2, gp, random, qnehvi"]),
    ],
)
def test_bad_search_input(tmp_path, base_args, extra, needles):
    result = run_cli(*base_args, *extra, cwd=tmp_path)
    assert_one_line_error(result, *needles)
    assert not (tmp_path / "studies").exists() or not any((tmp_path / "studies").iterdir())


def test_bad_model_path_and_unknown_hub_id_offline(tmp_path, mrpc_dir):
    result = run_cli("search", "--task", "mrpc", "--budget", "1%", "--model", "./no/such/model",
                     "--data-dir", str(mrpc_dir), cwd=tmp_path)
    assert_one_line_error(result, "'./no/such/model'")
    result = run_cli("budget", "--budget", "1%", "--model", "someone/not-a-model", cwd=tmp_path)
    assert_one_line_error(result, "cannot load model 'someone/not-a-model'", "local directory")


def test_bad_data_dir_and_offline_without_data(tmp_path, tiny_bert):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("search", "--task", "mrpc", "--budget", "1%", "--model", str(tiny_bert),
                     "--data-dir", str(empty), cwd=tmp_path)
    assert_one_line_error(result, str(empty))
    result = run_cli("search", "--task", "mrpc", "--budget", "1%", "--model", str(tiny_bert),
                     cwd=tmp_path)
    assert_one_line_error(result, "--data-dir")


def test_report_for_unknown_study(tmp_path):
    result = run_cli("report", "--study", "nope", cwd=tmp_path)
    assert_one_line_error(result, "no study 'nope'")


def test_methods_lists_registered_methods_and_knobs():
    result = run_cli("methods")
    assert result.returncode == 0, result.stderr
    for needle in ("lora", "bitfit", "full", "learning_rate", "targets", "{qv, attn, all}",
                   "budget_fraction", "fit to budget"):
        assert needle in result.stdout


def test_budget_reports_largest_lora_rank(tiny_bert):
    # tiny BERT: LoRA on q,v of 2 layers costs 2*2*(64+64) = 512 params per rank.
    result = run_cli("budget", "--budget", "5000", "--model", str(tiny_bert))
    assert result.returncode == 0, result.stderr
    assert "max r=9" in result.stdout  # 9*512 = 4608 <= 5000 < 5120
    assert "5,000 params" in result.stdout


def run_entry_point(*args, cwd):
    """The installed `autopeft` script (what `pip install` puts beside this Python)."""
    script = Path(sys.executable).with_name("autopeft")
    assert script.is_file(), f"no installed entry point at {script}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def _commands() -> list[str]:
    """Every command the CLI registers, from the app itself (a new command is covered too)."""
    import typer

    from autopeft.cli import app

    return sorted(typer.main.get_command(app).commands)


# What each command needs at least, so that the usage error below is about one option alone.
REQUIRED = {"search": ["--task", "mrpc", "--budget", "1%"],
            "sweep": ["--tasks", "mrpc", "--budgets", "1%"], "budget": ["--budget", "1%"],
            "export": ["out", "--study", "s"], "predict": ["art", "--input", "rows.tsv"],
            "train": ["--config", "c.yaml"], "report": [], "methods": [],
            "portfolio": ["build", "--study", "s", "--out", "p.yaml"]}
# A command group's usage line and help hint name the subcommand too.
SUBCOMMAND = {"portfolio": "portfolio build"}


def assert_usage_error(result, command: str, needle: str) -> None:
    """Typer's usage line and one error line, exit 2, no traceback (click raises a few errors,
    such as an option missing its value, without the command: those are the error alone)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[-1].startswith("error: ") and needle in lines[-1], lines[-1]
    if len(lines) == 2:
        assert lines[0].startswith(f"Usage: autopeft {command} ")
        assert f"(see 'autopeft {command} --help')" in lines[1]


def test_every_command_has_a_required_list():
    assert sorted(REQUIRED) == _commands()


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_an_unknown_option_is_a_usage_error_for_every_command(tmp_path, command):
    result = run_entry_point(command, *REQUIRED[command], "--no-such-option", cwd=tmp_path)
    assert_usage_error(result, SUBCOMMAND.get(command, command),
                       "No such option: --no-such-option")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("argv", "needle"), [
    (["search", "--task", "mrpc"], "Missing option '--budget'"),
    (["search", "--task", "mrpc", "--budget", "1%", "--trials", "abc"],
     "Invalid value for '--trials'"),
    (["sweep", "--tasks", "mrpc", "--budgets", "1%", "--storage", "x"],
     "No such option: --storage"),
    (["export", "--study", "s"], "Missing argument 'OUT'"),
    (["predict", "art"], "Missing option '--input'"),
    (["train"], "Missing option '--config'"),
    (["budget", "--budget", "1%", "--trust-remote-code", "yes"], "Got unexpected extra argument"),
    (["report", "--study"], "Option '--study' requires an argument"),
    (["methods", "extra"], "Got unexpected extra argument"),
])
def test_missing_or_mistyped_options_are_usage_errors(tmp_path, argv, needle):
    result = run_entry_point(*argv, cwd=tmp_path)
    assert_usage_error(result, argv[0], needle)
    assert not any(tmp_path.iterdir())
