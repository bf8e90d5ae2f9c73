"""MO-ASHA: asynchronous successive halving with a multi-objective promotion rule.

Schmucker et al., "Multi-objective Asynchronous Successive Halving" (2021). Trials report once
per epoch; rungs sit at ``grace · η^k`` epochs below the last epoch. When a trial reaches a rung
its (score ↑, stored_params ↓) is recorded there, the rung's results are ordered, and the trial
goes on only if it is among the first ``ceil(n / η)`` of the ``n`` results recorded there so far
(itself included); otherwise Ray stops it and the searcher tells Optuna PRUNED.

Ordering (:func:`mo_order`): non-dominated sorting into fronts, then, inside a front, the
NSGA-II crowding distance (the paper's "NSGA-II" selection; its ε-net variant is the other
option) computed on (score, log10(1 + stored_params)): parameter counts span decades, so a
log scale keeps the spread between 1k and 10k params comparable to that between 10k and 100k.
Exact ties (equal crowding, e.g. a front's two ends, both infinite) go to the higher score, then
to fewer parameters, then to the result recorded first. A small candidate with a modest score
therefore survives as long as nothing both smaller and better beats it: it is not stopped merely
for scoring below a large one. A result at or below its study's chance level (what a constant
prediction scores, sent with each result) has learned nothing yet: it ranks after every result
above chance, by score (NSGA-II's constrained domination), however few parameters it has; and
while nothing at a rung beats chance, the rung cannot tell its results apart, so it stops none.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from autopeft.errors import AutoPeftError
from autopeft.study import ATTR_CHANCE

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

SCHEDULERS = ("none", "mo-asha")
STUDY_KEY = "study"  # the config key naming a trial's study in a sweep (absent in a search)

Point = tuple[float, float]  # (score, stored_params)


# --- the promotion rule (pure) --------------------------------------------------------------
def _dominates(a: Point, b: Point) -> bool:
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def non_dominated_fronts(points: Sequence[Point]) -> list[list[int]]:
    """Indices of `points` split into fronts: the first is non-dominated, and so on.

    Written here rather than taken from Optuna: its sort (`_fast_non_domination_rank`) is
    private, and a rung holds at most a few hundred results, so the plain O(n²) peel suffices.
    """
    left, fronts = list(range(len(points))), []
    while left:
        front = [i for i in left if not any(_dominates(points[j], points[i]) for j in left)]
        fronts.append(front)
        left = [i for i in left if i not in front]
    return fronts


def crowding_distances(objectives: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance of each point in one front (ends: infinite)."""
    n = len(objectives)
    distance = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for m in range(len(objectives[0])):
        order = sorted(range(n), key=lambda i: objectives[i][m])
        low, high = objectives[order[0]][m], objectives[order[-1]][m]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(order, order[1:], order[2:], strict=False):
            distance[here] += (objectives[after][m] - objectives[before][m]) / (high - low)
    return distance


def mo_order(points: Sequence[Point], chance: float | None = None) -> list[int]:
    """Indices of (score, stored_params) points, best first (see the module docstring).

    Points scoring at or below `chance` come after the others, best score first; a non-finite
    score (a diverged trial) ranks below every finite one.
    """
    finite = [i for i, (score, _) in enumerate(points) if math.isfinite(score)]
    learned = [i for i in finite if chance is None or points[i][0] > chance]
    order = []
    for front in non_dominated_fronts([points[i] for i in learned]):
        members = [learned[i] for i in front]
        crowding = crowding_distances(
            [(points[i][0], math.log10(1 + max(points[i][1], 0))) for i in members])
        ranked = sorted(range(len(members)), key=lambda k: (
            -crowding[k], -points[members[k]][0], points[members[k]][1], members[k]))
        order.extend(members[k] for k in ranked)
    order += sorted(set(finite) - set(learned), key=lambda i: (-points[i][0], points[i][1], i))
    return order + [i for i in range(len(points)) if i not in set(finite)]


def promotes(points: Sequence[Point], index: int, reduction_factor: float,
             chance: float | None = None) -> bool:
    """Whether `points[index]` is among the top ceil(n/η) of the rung's ordering.

    While no result at the rung beats `chance`, one at chance goes on: early in training every
    candidate may still predict a constant, and ranking constants would stop future learners
    at random.
    """
    if chance is not None and all(score <= chance for score, _ in points):  # NaN: False
        return True
    keep = math.ceil(len(points) / reduction_factor)
    return index in mo_order(points, chance)[:keep]


def rung_milestones(max_epochs: int, grace_epochs: int, reduction_factor: float) -> list[float]:
    """Epochs at which trials are judged: grace · η^k, strictly below the last epoch."""
    milestones, k = [], 0
    while grace_epochs * reduction_factor**k < max_epochs:
        milestones.append(grace_epochs * reduction_factor**k)
        k += 1
    return milestones


def check_scheduler(name: str, reduction_factor: float, grace_epochs: int, epochs: int) -> None:
    """One-line errors for flags that make no sense together.

    ``--grace-epochs`` at or above ``--epochs`` leaves no rung below the last epoch, so MO-ASHA
    would never stop anything; that is an error rather than a warning, since the user asked
    for early stopping and would silently pay for full training of every trial.
    """
    if name not in SCHEDULERS:
        raise AutoPeftError(f"unknown scheduler '{name}'; choose: {', '.join(SCHEDULERS)}")
    if name == "none":
        return
    if not reduction_factor >= 2:
        raise AutoPeftError(f"--reduction-factor must be at least 2 (got {reduction_factor:g})")
    if grace_epochs < 1:
        raise AutoPeftError(f"--grace-epochs must be at least 1 (got {grace_epochs})")
    if grace_epochs >= epochs:
        raise AutoPeftError(
            f"--grace-epochs {grace_epochs} leaves no rung below --epochs {epochs}: mo-asha "
            "would stop nothing; raise --epochs, lower --grace-epochs or pass --scheduler none"
        )


# --- the Ray Tune scheduler -------------------------------------------------------------------
class MultiObjectiveASHA(FIFOScheduler):
    """Ray Tune scheduler: MO-ASHA over epochs on (score ↑, stored_params ↓).

    Decides on each per-epoch result; a trial's final report (``final: True``) and results
    without an epoch (error reports) always continue. Trials are run in FIFO order.
    """

    def __init__(
        self,
        max_epochs: int,
        grace_epochs: int = 1,
        reduction_factor: float = 3,
        time_attr: str = "epoch",
        score: str = "score",
        size: str = "stored_params",
    ):
        check_scheduler("mo-asha", reduction_factor, grace_epochs, max_epochs)
        super().__init__()
        self._reduction_factor = reduction_factor
        self._time_attr, self._score, self._size = time_attr, score, size
        # Ray only needs a metric name to exist; both objectives are read from each result.
        self._metric = score
        self._milestones = rung_milestones(max_epochs, grace_epochs, reduction_factor)
        # one set of rungs per study: a sweep's trials are judged only against their own study's
        self._rungs: dict[str, list[tuple[float, dict[str, Point]]]] = {}
        self.stopped: list[str] = []

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        config = getattr(trial, "config", None) or {}
        return self.decide(trial.trial_id, result, str(config.get(STUDY_KEY, "")))

    def decide(self, trial_id: str, result: dict, study: str = "") -> str:
        """CONTINUE or STOP for one result of `trial_id` (records it at a newly reached rung)."""
        epoch = result.get(self._time_attr)
        score, size = result.get(self._score), result.get(self._size)
        if result.get("final") or epoch is None or score is None or size is None:
            return TrialScheduler.CONTINUE
        rungs = self._rungs.setdefault(study, [(m, {}) for m in self._milestones])
        reached = [rung for rung in rungs if rung[0] <= epoch]
        if not reached or trial_id in reached[-1][1]:
            return TrialScheduler.CONTINUE
        recorded = reached[-1][1]
        recorded[trial_id] = (float(score), float(size))
        index = list(recorded).index(trial_id)
        chance = result.get(ATTR_CHANCE)  # absent: not known
        if promotes(list(recorded.values()), index, self._reduction_factor, chance):
            return TrialScheduler.CONTINUE
        self.stopped.append(trial_id)
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        rungs = " | ".join(
            f"epoch {m:g}: {sum(len(r[i][1]) for r in self._rungs.values())} recorded"
            for i, m in enumerate(self._milestones))
        return (f"Using MO-ASHA (η={self._reduction_factor:g}): {len(self.stopped)} stopped; "
                f"{rungs or 'no rungs'}")

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))
