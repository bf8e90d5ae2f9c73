"""Hypervolume and its per-trial curve agree with an independent count on a grid."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from autopeft.report import trials_frame
from autopeft.report.hypervolume import (
    REFERENCE,
    hypervolume,
    hypervolume_curve,
    reference_note,
    reference_point,
)
from tests.helpers import fill_example, new_study

STEP = 0.01  # every hand-made coordinate is a multiple of this, so the grid count is exact


def grid_hypervolume(points: list[tuple[float, float]],
                     ref: tuple[float, float] = REFERENCE) -> float:
    """The same area counted cell by cell: a cell is in if some point is below-left of it."""
    inside = 0
    for i, j in itertools.product(range(round(ref[0] / STEP)), range(round(ref[1] / STEP))):
        x, y = (i + 0.5) * STEP, (j + 0.5) * STEP
        inside += any(px <= x and py <= y for px, py in points)
    return inside * STEP * STEP


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([], 0.0),
        ([(0.5, 0.5)], 0.25),
        ([(0.2, 0.6), (0.6, 0.2)], 0.48),  # 0.32 + 0.32 - 0.16 overlap
        ([(0.2, 0.6), (0.6, 0.2), (0.7, 0.7), (0.6, 0.2)], 0.48),  # dominated and repeated
        ([(0.2, 0.6), (1.0, 0.0), (0.5, 1.2), (0.5, 1.0)], 0.32),  # on or past the reference
    ],
)
def test_hypervolume_of_hand_made_points(points, expected):
    assert hypervolume(points) == pytest.approx(expected)


def test_hypervolume_matches_a_grid_count():
    points = [(0.13, 0.71), (0.42, 0.18), (0.3, 0.35), (0.05, 0.93), (0.6, 0.04), (0.45, 0.5)]
    assert hypervolume(points) == pytest.approx(grid_hypervolume(points), abs=1e-9)


def test_curve_counts_completed_trials_within_budget_in_trial_order():
    trials = trials_frame(fill_example(new_study()))
    curve = hypervolume_curve(trials)

    assert list(curve["trial"]) == list(range(8))  # a value after every trial
    # (1 - score, stored / budget) of the COMPLETE trials within the budget, by number;
    # trial 3 (0.90, twice the budget) would dominate everything but must not count.
    counted = {0: (0.20, 0.5), 1: (0.30, 0.2), 2: (0.25, 0.8), 7: (0.22, 0.3)}
    expected = [grid_hypervolume([p for n, p in counted.items() if n <= k]) for k in range(8)]
    assert list(curve["hypervolume"]) == pytest.approx(expected, abs=1e-9)
    assert curve["hypervolume"].is_monotonic_increasing
    assert curve["hypervolume"].iloc[3] == curve["hypervolume"].iloc[2]  # over budget


def test_curve_of_an_empty_study_is_empty():
    curve = hypervolume_curve(trials_frame(new_study()))
    assert curve.empty and list(curve.columns) == ["trial", "hypervolume"]


def test_curve_follows_trial_numbers_not_row_order():
    trials = trials_frame(fill_example(new_study()))
    shuffled = trials.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(hypervolume_curve(shuffled), hypervolume_curve(trials))


def test_curve_counts_nothing_at_or_below_chance():
    """With the chance score recorded, the reference is (1 - chance, 1): a trial scoring at or
    below chance (a constant prediction, however cheap) adds nothing to the curve."""
    trials = trials_frame(fill_example(new_study()))
    trials["chance_score"] = 0.75
    curve = hypervolume_curve(trials)

    assert reference_point(0.75) == (0.25, 1.0)
    # trial 1 (0.70, 0.2 of the budget) is below chance and trial 2 (0.75) at it: not counted
    counted = {0: (0.20, 0.5), 7: (0.22, 0.3)}
    expected = [grid_hypervolume([p for n, p in counted.items() if n <= k], (0.25, 1.0))
                for k in range(8)]
    assert list(curve["hypervolume"]) == pytest.approx(expected, abs=1e-9)
    assert curve["hypervolume"].iloc[1] == curve["hypervolume"].iloc[0] > 0
    assert "(1 − chance, 1) = (0.2500, 1)" in reference_note(reference_point(0.75))
    assert reference_note(reference_point(None)).endswith("reference point (1, 1)")
