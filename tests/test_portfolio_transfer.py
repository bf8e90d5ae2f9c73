"""benchmarks/portfolio_transfer.py reads its best-so-far curves as a trial target counts trials;
benchmarks/default_portfolio.py builds on its studies."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from autopeft.study import make_storage
from benchmarks.portfolio_transfer import NOT_RUN, best_after, learned_portfolio, parse_args, report
from tests.helpers import BUDGET, add_trial, new_study, trial_params


def test_best_so_far_counts_trained_trials_only_and_keeps_the_best_within_budget(tmp_path):
    studies = tmp_path / "studies"
    study = new_study("s", storage=make_storage(None, studies / "s"))
    lora = trial_params("lora", 1e-3, 8)
    add_trial(study, TrialState.COMPLETE, lora, 5_000, "ok", 0.70)  # counted 1
    add_trial(study, TrialState.FAIL, lora, 5_000, "error",  # cut off, retrained: not counted
              error="interrupted: its search process (pid 1 on h) ended first")
    add_trial(study, TrialState.FAIL, lora, 90_000, "infeasible", error="over the budget")
    add_trial(study, TrialState.COMPLETE, lora, 2_500, "ok", 0.65)  # counted 2
    add_trial(study, TrialState.PRUNED, lora, 2_500, "pruned")  # 3
    add_trial(study, TrialState.FAIL, lora, 2_500, "error", error="CUDA out of memory")  # 4
    add_trial(study, TrialState.COMPLETE, lora, BUDGET + 1, "ok", 0.99)  # 5: over the budget
    add_trial(study, TrialState.COMPLETE, lora, 4_000, "ok", 0.80)  # 6
    add_trial(study, TrialState.COMPLETE, lora, 4_000, "ok", 0.75)  # 7
    add_trial(study, TrialState.COMPLETE, lora, 4_000, "ok", 0.85)  # 8
    assert best_after(studies, "s") == {2: 0.70, 4: 0.70, 8: 0.85, 12: None}


def test_no_trial_within_budget_reads_as_none(tmp_path):
    studies = tmp_path / "studies"
    study = new_study("s", storage=make_storage(None, studies / "s"))
    for _ in range(2):
        add_trial(study, TrialState.COMPLETE, trial_params("bitfit", 1e-3), BUDGET + 5, "ok", 0.9)
    assert best_after(studies, "s") == {2: None, 4: None, 8: None, 12: None}


def test_nothing_to_learn_skips_the_learned_run_and_misses_the_target(tmp_path, capsys):
    """Other tasks' trials all at chance: no portfolio, the learned run prints '-', no hit."""
    studies = tmp_path / "studies"
    for task in ("mrpc", "rte", "sst2"):
        name = f"{task}-none-s0"
        study = new_study(name, storage=make_storage(None, studies / name), task=task)
        for _ in range(2):  # no chance recorded: the worst trial stands in, so all are at chance
            add_trial(study, TrialState.COMPLETE, trial_params("bitfit", 1e-3), 2_000, "ok", 0.5)
    args = parse_args(["--tasks", "mrpc,cr,mpqa", "--work", str(tmp_path)])
    baselines = {t: f"{t}-none-s0" for t in ("mrpc", "rte", "sst2")}
    assert learned_portfolio(args, "mrpc", baselines) is None
    assert "no portfolio without mrpc: no trial of these studies scores above chance" in (
        capsys.readouterr().err)
    assert not list(tmp_path.glob("portfolio-*.yaml"))  # nothing written
    ran = {"study": "s", "best_after": {2: 0.5, 4: 0.5, 8: None, 12: None},
           "winner_dev": 0.6, "winner_method": "bitfit"}
    report({"mrpc": {"none": ran, "learned": NOT_RUN}}, args)
    out = capsys.readouterr().out
    assert "mrpc   learned  -       -       -       -        - (none)" in out
    assert "on 0 of 1 tasks (needed: 3): not met" in out


def test_the_all_task_portfolio_learns_from_every_study_once(tmp_path, capsys):
    """Built from both arms of every task, written once under --work and then reused."""
    import yaml

    from benchmarks.portfolio_transfer import all_task_portfolio

    studies = tmp_path / "studies"
    names = []
    for task, lr in (("mrpc", 1e-3), ("rte", 2e-3), ("sst2", 3e-3)):
        for arm in ("none", "learned"):
            name = f"{task}-{arm}-s0"
            study = new_study(name, storage=make_storage(None, studies / name), task=task)
            add_trial(study, TrialState.COMPLETE, trial_params("bitfit", 1e-3), 2_000, "ok", 0.5)
            add_trial(study, TrialState.COMPLETE, trial_params("lora", lr, 8), 4_000, "ok", 0.8)
            names.append(name)
    args = parse_args(["--tasks", "mrpc,cr,mpqa", "--work", str(tmp_path)])
    path = all_task_portfolio(args, names)
    assert path == tmp_path / "portfolio-all-tasks-s0.yaml"
    built = yaml.safe_load(path.read_text())
    assert sorted(built["provenance"]["tasks"]) == ["mrpc", "rte", "sst2"]
    assert {s["study"] for s in built["provenance"]["studies"]} == set(names)
    assert all(e["method"] == "lora" for e in built["entries"])
    assert f"portfolio learned from all 6 studies: {path}" in capsys.readouterr().err
    path.write_text("kept")  # an existing file is reused, never rebuilt
    assert all_task_portfolio(args, names) == path and path.read_text() == "kept"


def test_best_so_far_follows_the_order_trials_started_in(tmp_path):
    """A retry, numbered after the candidates queued before it, ran before them: it counts
    where it ran."""
    from datetime import datetime, timedelta

    studies = tmp_path / "studies"
    study = new_study("s", storage=make_storage(None, studies / "s"))
    start = datetime(2026, 12, 7, 12)
    for minutes, score in ((0, 0.70), (20, 0.72), (30, 0.71), (40, 0.73)):  # numbers 0..3
        add_trial(study, TrialState.COMPLETE, trial_params("bitfit", 1e-3), 2_000, "ok", score,
                  started=start + timedelta(minutes=minutes))
    add_trial(study, TrialState.COMPLETE, trial_params("bitfit", 1e-3), 2_000, "ok", 0.90,
              started=start + timedelta(minutes=10))  # number 4, the retry: ran second
    assert best_after(studies, "s") == {2: 0.90, 4: 0.90, 8: None, 12: None}


def test_the_default_portfolio_is_built_only_after_the_transfer_run(tmp_path, capsys):
    """benchmarks/default_portfolio.py learns from the transfer run's 8 studies: without them
    it says so in one line, exits 2 and trains nothing."""
    from benchmarks.default_portfolio import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--work", str(tmp_path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: run benchmarks/portfolio_transfer.py first: no study "
                            "mrpc-none-s0, "), error
    assert "\n" not in error
    assert not (tmp_path / "studies").exists()


def test_the_transfer_run_names_an_unknown_task_and_exits_2(capsys):
    from benchmarks.portfolio_transfer import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--tasks", "mrpc,cr,nope"])
    assert exit_info.value.code == 2
    assert "--tasks: unknown task 'nope'; known: mrpc, cr, mpqa, stsb" in capsys.readouterr().err
