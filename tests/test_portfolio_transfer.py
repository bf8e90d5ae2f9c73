"""benchmarks/portfolio_transfer.py reads its best-so-far curves as a trial target counts trials."""

from __future__ import annotations

from optuna.trial import TrialState

from autopeft.study import make_storage
from benchmarks.portfolio_transfer import best_after
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
