"""How much of the (error, budget share) square a search has covered: its hypervolume.

One number that grows as the front gets better or cheaper, so searches (samplers, schedulers,
budgets) compare on the same scale: both coordinates are minimised and bounded by a reference
point. Where the trials recorded the task's chance score, the reference is (1 − chance, 1): a
candidate that learned nothing (always answers one label) adds nothing however cheap it is,
as in `benchmarks/search_quality.py`.
"""

from __future__ import annotations

import pandas as pd

from autopeft.report.tables import STATE_COMPLETE, chance_level

# (1 - score, stored / budget): a trial scoring 0, or using the whole budget, adds nothing.
REFERENCE = (1.0, 1.0)
_OBJECTIVES = "hypervolume of (1 − score, stored/budget)"


def reference_point(chance: float | None) -> tuple[float, float]:
    """(1 − chance, 1) where the chance score is known, else REFERENCE."""
    return REFERENCE if chance is None else (1.0 - chance, 1.0)


def reference_note(ref: tuple[float, float]) -> str:
    """The reference point in words, for figures and pages."""
    if ref == REFERENCE:
        return f"{_OBJECTIVES}, reference point (1, 1)"
    return (f"{_OBJECTIVES}, reference point (1 − chance, 1) = ({ref[0]:.4f}, 1): "
            "a constant prediction adds nothing")


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float] = REFERENCE
                ) -> float:
    """Area dominated by `points` (both coordinates minimised) inside the box up to `ref`.

    Written out because the 2-D case is a sort and a sweep (the staircase of non-dominated
    points); Optuna's implementation is private.
    """
    stairs: list[tuple[float, float]] = []  # the non-dominated points, left to right
    for x, y in sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1]):
        if not stairs or y < stairs[-1][1]:
            stairs.append((x, y))
    ends = [x for x, _ in stairs[1:]] + [ref[0]] if stairs else []
    return float(sum((end - x) * (ref[1] - y) for (x, y), end in zip(stairs, ends, strict=True)))


def hypervolume_curve(trials: pd.DataFrame, ref: tuple[float, float] | None = None
                      ) -> pd.DataFrame:
    """Hypervolume after each trial, in trial-number order (columns `trial`, `hypervolume`).

    Only COMPLETE trials within the budget add points; every other trial (infeasible, pruned,
    failed, over budget) still gets a row, so the curve shows what the search spent on it.
    `ref` defaults to `reference_point` of the trials' chance score.
    """
    ref = ref or reference_point(chance_level(trials))
    ordered = trials.sort_values("trial", kind="stable")
    counted = (
        (ordered["state"] == STATE_COMPLETE)
        & ordered["score"].notna()
        & (ordered["budget_used"] <= 1.0).fillna(False)
    )
    points: list[tuple[float, float]] = []
    values = []
    for keep, score, used in zip(counted, ordered["score"], ordered["budget_used"], strict=True):
        if keep:
            points.append((1.0 - float(score), float(used)))
        values.append(hypervolume(points, ref))
    return pd.DataFrame({"trial": ordered["trial"].to_numpy(), "hypervolume": values})
