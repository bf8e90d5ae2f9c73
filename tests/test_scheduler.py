"""MO-ASHA: the multi-objective promotion rule, the scheduler's decisions, a real search."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from autopeft import study as records
from autopeft.engine.scheduler import (
    MultiObjectiveASHA,
    check_scheduler,
    crowding_distances,
    mo_order,
    non_dominated_fronts,
    promotes,
    rung_milestones,
)
from autopeft.errors import AutoPeftError
from autopeft.testing import keyword_task
from tests.helpers import assert_one_line_error, run_cli

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


# --- the promotion rule -------------------------------------------------------------------
def test_a_small_low_scorer_is_promoted_over_a_large_dominated_one():
    rung = [
        (0.80, 50_000),  # best score
        (0.70, 1_000),   # small, lower score: on the front
        (0.75, 60_000),  # beats the small one's score but is dominated by the first
    ]
    assert non_dominated_fronts(rung) == [[0, 1], [2]]
    assert mo_order(rung) == [0, 1, 2]
    assert promotes(rung, 1, reduction_factor=2)  # ceil(3/2) = 2 go on
    assert not promotes(rung, 2, reduction_factor=2)
    # a single-objective ASHA would have kept 0 and 2 instead


@pytest.mark.parametrize(("n", "eta"), [(1, 3), (2, 2), (5, 2), (7, 3), (9, 3), (10, 4)])
def test_the_number_promoted_is_ceil_n_over_eta(n, eta):
    rung = [(0.5 + 0.01 * ((i * 7) % n), 1000 * (1 + (i * 3) % n)) for i in range(n)]
    kept = [i for i in range(n) if promotes(rung, i, eta)]
    assert len(kept) == math.ceil(n / eta)
    assert sorted(mo_order(rung)) == list(range(n))


def test_ties_are_broken_by_score_then_size_then_arrival():
    # a front's two ends both have infinite crowding: the higher score goes first
    assert mo_order([(0.6, 100), (0.9, 900)]) == [1, 0]
    # identical results: the one recorded first goes first
    assert mo_order([(0.7, 500), (0.7, 500)]) == [0, 1]
    # equal score, fewer params dominates
    assert non_dominated_fronts([(0.7, 900), (0.7, 500)]) == [[1], [0]]
    # inside a front, a crowded middle point ranks after the ends and the sparse middle
    front = [(0.9, 10_000), (0.5, 10), (0.89, 9_000), (0.7, 100)]
    assert non_dominated_fronts(front) == [[0, 1, 2, 3]]
    assert mo_order(front)[:2] == [0, 1] and mo_order(front)[2] == 3


def test_a_cheap_result_at_chance_ranks_after_every_one_that_learned():
    """A constant predictor is the cheapest point, so on the first front; at chance it is not."""
    rung = [(0.90, 90_000), (0.58, 100), (0.70, 5_000)]
    assert mo_order(rung) == [0, 1, 2] and promotes(rung, 1, reduction_factor=2)
    assert mo_order(rung, chance=0.58) == [0, 2, 1]
    assert not promotes(rung, 1, reduction_factor=2, chance=0.58)
    # below chance too, by score; a non-finite score still last
    assert mo_order([(0.25, 50), (math.nan, 10), (0.58, 100), (0.6, 9_000)], chance=0.58) == [
        3, 2, 0, 1]


def test_the_scheduler_stops_a_cheap_trial_at_chance():
    scheduler = MultiObjectiveASHA(max_epochs=3, grace_epochs=1, reduction_factor=2)
    decisions = [scheduler.decide(tid, {**_result(1, score, stored), "chance_score": 0.58})
                 for tid, score, stored in [("a", 0.90, 90_000), ("b", 0.70, 5_000),
                                            ("constant", 0.58, 100)]]
    assert decisions == [CONTINUE, STOP, STOP]  # without chance, "constant" would go on


def test_a_rung_where_nothing_beats_chance_stops_nothing():
    """Early on every candidate may still predict a constant: ranking those would be a lottery."""
    scheduler = MultiObjectiveASHA(max_epochs=9, grace_epochs=1, reduction_factor=3)
    at_chance = [scheduler.decide(tid, {**_result(1, score, 1_000 * n), "chance_score": 0.58})
                 for n, (tid, score) in enumerate([("a", 0.58), ("b", 0.25), ("c", 0.58)])]
    assert at_chance == [CONTINUE] * 3
    assert scheduler.decide("d", {**_result(1, math.nan, 10), "chance_score": 0.58}) == STOP
    # a diverged result can be ranked: last. Once one learns, the results at chance rank after
    # it (by score, then size): of 6, ceil(6/3) = 2 go on, "e" and "a"
    assert scheduler.decide("e", {**_result(1, 0.70, 5_000), "chance_score": 0.58}) == CONTINUE
    assert scheduler.decide("f", {**_result(1, 0.58, 500), "chance_score": 0.58}) == STOP


def test_a_non_finite_score_ranks_last():
    rung = [(math.nan, 10), (0.5, 10_000), (0.4, 20_000)]
    assert mo_order(rung) == [1, 2, 0]


def test_crowding_distance_ends_are_infinite_and_middle_normalised():
    distances = crowding_distances([(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)])
    assert distances[0] == distances[2] == math.inf
    assert distances[1] == pytest.approx(2.0)


def test_rungs_sit_below_the_last_epoch():
    assert rung_milestones(3, 1, 2) == [1, 2]
    assert rung_milestones(9, 1, 3) == [1, 3]
    assert rung_milestones(10, 1, 3) == [1, 3, 9]
    assert rung_milestones(8, 2, 2) == [2, 4]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("fifo", 3, 1, 3), "unknown scheduler 'fifo'"),
        (("mo-asha", 1.5, 1, 3), "--reduction-factor must be at least 2"),
        (("mo-asha", 3, 0, 3), "--grace-epochs must be at least 1"),
        (("mo-asha", 3, 3, 3), "leaves no rung below --epochs 3"),
    ],
)
def test_bad_scheduler_flags_are_refused(args, needle):
    with pytest.raises(AutoPeftError, match=needle.replace("'", ".")):
        check_scheduler(*args)
    check_scheduler("none", 1, 99, 1)  # the flags do not matter without a scheduler


# --- the scheduler, driven directly -------------------------------------------------------
def _result(epoch, score, stored, final=False):
    return {"epoch": epoch, "score": score, "stored_params": stored, "final": final}


def test_scheduler_decides_at_rungs_only():
    scheduler = MultiObjectiveASHA(max_epochs=3, grace_epochs=1, reduction_factor=2)
    assert scheduler.metric == "score"
    assert scheduler.set_search_properties(None, None)  # what Tune calls without a metric
    a, b, c, d = (SimpleNamespace(trial_id=t) for t in "abcd")

    def decide(trial, *args, **kwargs):
        return scheduler.on_trial_result(None, trial, _result(*args, **kwargs))

    assert decide(a, 1, 0.80, 50_000) == CONTINUE  # first at rung 1: top ceil(1/2) = 1
    # on the front with a, but only ceil(2/2) = 1 goes on and a (higher score) ranks first
    assert decide(b, 1, 0.70, 1_000) == STOP
    assert decide(c, 1, 0.75, 60_000) == STOP  # dominated by a: 3rd, ceil(3/2) = 2 go on
    assert decide(d, 1, 0.60, 500) == CONTINUE  # smallest: a front end, 2nd of ceil(4/2) = 2
    assert scheduler.stopped == ["b", "c"]
    # rung 2: a arrives first and goes on; d arrives, ceil(2/2) = 1, a ranks first
    assert decide(a, 2, 0.82, 50_000) == CONTINUE
    assert decide(a, 2, 0.82, 50_000) == CONTINUE  # a repeated result is not judged again
    assert decide(d, 2, 0.61, 500) == STOP
    # the last epoch is not a rung; final reports and error reports always continue
    assert decide(a, 3, 0.10, 90_000, final=True) == CONTINUE
    assert scheduler.on_trial_result(None, a, {"error": "boom", "score": math.nan}) == CONTINUE
    assert scheduler.stopped == ["b", "c", "d"]
    assert "epoch 2: 2 recorded" in scheduler.debug_string()


def test_a_sweeps_studies_are_judged_apart():
    """A trial is compared only with its own study's trials: other tasks' scores mean nothing."""
    scheduler = MultiObjectiveASHA(max_epochs=3, grace_epochs=1, reduction_factor=2)
    strong = SimpleNamespace(trial_id="a", config={"study": "easy-task"})
    weak = SimpleNamespace(trial_id="b", config={"study": "hard-task"})
    weaker = SimpleNamespace(trial_id="c", config={"study": "hard-task"})
    assert scheduler.on_trial_result(None, strong, _result(1, 0.95, 50_000)) == CONTINUE
    # dominated by a (other study) but first in its own: goes on
    assert scheduler.on_trial_result(None, weak, _result(1, 0.55, 60_000)) == CONTINUE
    assert scheduler.on_trial_result(None, weaker, _result(1, 0.50, 70_000)) == STOP
    assert "epoch 1: 3 recorded" in scheduler.debug_string()


def test_scheduler_keeps_a_small_candidate_that_scores_lower():
    scheduler = MultiObjectiveASHA(max_epochs=4, grace_epochs=1, reduction_factor=3)
    decisions = [scheduler.decide(tid, _result(1, score, stored)) for tid, score, stored in [
        ("big", 0.90, 100_000), ("mid", 0.85, 120_000), ("small", 0.70, 800),
        ("mid2", 0.86, 110_000), ("tiny-bad", 0.30, 900),
    ]]
    # big: 1/1; mid: dominated, ceil(2/3)=1 → stop; small: front end, ceil(3/3)=1 → but big
    # ranks first (higher score at an infinite-crowding tie) → stop; mid2 dominated → stop;
    # tiny-bad: dominated by small → stop
    assert decisions == [CONTINUE, STOP, STOP, STOP, STOP]
    # with η = 2 the small one survives where the score-only rule would stop it
    scheduler = MultiObjectiveASHA(max_epochs=4, grace_epochs=1, reduction_factor=2)
    decisions = [scheduler.decide(tid, _result(1, score, stored)) for tid, score, stored in [
        ("big", 0.90, 100_000), ("mid", 0.85, 120_000), ("small", 0.70, 800)]]
    assert decisions == [CONTINUE, STOP, CONTINUE]


# --- end to end ---------------------------------------------------------------------------
SPACE = """
methods:
  bitfit:
    learning_rate: {low: 1.0e-4, high: 1.0e-1, log: true}
  lora:
    r: {choices: [1, 2, 4]}
    targets: {choices: [all]}
    learning_rate: {low: 1.0e-4, high: 1.0e-1, log: true}
"""


def test_mo_asha_search_prunes_and_records_compute(tmp_path, tiny_bert, mrpc_dir):
    """On a task the tiny BERT learns within an epoch: a rung where nothing beats chance yet
    would stop nothing (real MRPC leaves it at chance)."""
    (tmp_path / "space.yaml").write_text(SPACE)
    data = keyword_task(tmp_path / "keywords", mrpc_dir / "train.tsv", train_size=400,
                        dev_size=50)
    result = run_cli(
        "search", "--task", "mrpc", "--budget", "2%", "--model", str(tiny_bert),
        "--data-dir", str(data), "--space", "space.yaml", "--trials", "6",
        "--epochs", "3", "--batch-size", "8", "--selection-fraction", "0.25",
        "--sampler", "random", "--seed", "3", "--study", "asha", "--final-seeds", "0",
        "--scheduler", "mo-asha", "--reduction-factor", "2", "--grace-epochs", "1",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stopped early" in result.stderr
    study_dir = tmp_path / "studies" / "asha"
    study = records.open_study("asha", records.make_storage(None, study_dir), None)
    trained = [t for t in study.trials
               if t.user_attrs.get(records.ATTR_STATUS) != records.STATUS_INFEASIBLE]
    assert len(trained) == 6
    pruned = [t for t in trained if t.state == TrialState.PRUNED]
    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    assert pruned and complete
    front = {t.number for t in records.feasible_front(study)}
    assert front and front.isdisjoint(t.number for t in pruned)
    for trial in pruned:
        attrs = trial.user_attrs
        assert attrs[records.ATTR_STATUS] == records.STATUS_PRUNED
        assert attrs[records.ATTR_TRAIN_SECONDS] > 0 and attrs[records.ATTR_EVAL_SECONDS] > 0
        assert attrs[records.ATTR_TRIAL_SECONDS] >= attrs[records.ATTR_TRAIN_SECONDS]
        assert 1 <= len(attrs[records.ATTR_CURVE]) < 3  # stopped at a rung before epoch 3
        assert records.ATTR_ARTIFACT not in attrs
        assert not (study_dir / "artifacts" / f"trial-{trial.number:04d}").exists()
    for trial in complete:
        assert len(trial.user_attrs[records.ATTR_CURVE]) == 3


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--scheduler", "hyperband"], "unknown scheduler 'hyperband'"),
        (["--scheduler", "mo-asha", "--epochs", "2", "--grace-epochs", "2"], "no rung below"),
    ],
)
def test_cli_refuses_bad_scheduler_flags(tiny_bert, mrpc_dir, extra, needle):
    result = run_cli("search", "--task", "mrpc", "--budget", "1%", "--model", str(tiny_bert),
                     "--data-dir", str(mrpc_dir), *extra)
    assert_one_line_error(result, needle)
