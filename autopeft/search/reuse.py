"""Budget reuse in a sweep: a trial that fits a smaller budget of its (task, model) counts there.

Studies of one (task, model) that differ only in budget train candidates the same way (same data,
selection split, epochs and seed), so a finished candidate of the 1% study that stores 0.08% of
the backbone is a valid 0.1% trial too, and every 0.1% trial is a valid 1% trial. It is added to
those studies as a COMPLETE trial with its own values, expressed in their search space (so their
samplers learn from it) and marked with where it came from (`ATTR_REUSED`); its artifact stays
where it was trained. A configuration that does not map exactly onto the other space (a derived
knob that rounds differently at the other budget) is not shared: only measured equality counts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft import study as records
from autopeft.search.warm_start import adapt
from autopeft.space.space import SearchSpace, candidate_from_params

ATTR_REUSED = records.ATTR_REUSED  # {"study": name, "trial": number}: trained there


@dataclass
class Sibling:
    """A study that may receive trials, with its space bound to its budget (the sizer of the
    same model as its siblings')."""

    name: str
    study: optuna.Study
    study_dir: Path
    space: SearchSpace

    @property
    def budget_params(self) -> int:
        return self.space.budget


def share_trial(trial: FrozenTrial, source: Sibling, siblings: list[Sibling]) -> list[str]:
    """Add `source`'s COMPLETE `trial` to each sibling whose budget it fits; their names.

    A trial that was itself reused is not passed on (its origin shares it), and a sibling that
    already holds it, or has finished the same candidate itself, is skipped: calling this again
    (a resumed sweep) adds nothing twice, and no front lists one configuration twice.
    """
    if trial.state != TrialState.COMPLETE or ATTR_REUSED in trial.user_attrs:
        return []
    stored = trial.user_attrs.get(records.ATTR_STORED)
    if stored is None:
        return []
    added = []
    for target in siblings:
        if target.name == source.name or stored > target.budget_params:
            continue
        expressed = _expressed_in(trial, target)
        if expressed is None or _holds(target.study, source.name, trial.number, expressed[3]):
            continue
        params, distributions, derived, _ = expressed
        attrs = {k: v for k, v in trial.user_attrs.items() if k != records.ATTR_OWNER}
        attrs.update({
            ATTR_REUSED: {"study": source.name, "trial": trial.number},
            records.ATTR_BUDGET_USED: _trained_size(trial, source) / target.budget_params,
        })
        if derived:
            attrs[records.ATTR_DERIVED] = derived
        if records.ATTR_ARTIFACT in attrs:  # relative to the target's study directory
            attrs[records.ATTR_ARTIFACT] = _relocated(
                {"artifact": attrs[records.ATTR_ARTIFACT]}, source, target)["artifact"]
        records.record_shared(target.study, trial, params, distributions, attrs)
        added.append(target.name)
    return added


def share_all(siblings: list[Sibling]) -> int:
    """Share every COMPLETE trial among siblings (what a resumed sweep catches up on)."""
    count = 0
    for source in siblings:
        for trial in source.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            count += len(share_trial(trial, source, siblings))
    return count


def share_final_runs(target: Sibling, siblings: list[Sibling]) -> int:
    """Give `target`'s Pareto points the final runs their twins in sibling studies already have.

    A shared trial and its source are one configuration trained on the same data, so retraining
    it for each budget would only repeat the same runs. Copied: every run of the twin, at the
    twin's fidelity (`retrain_front` redoes whatever differs). Returns how many points got runs.
    """
    done = records.final_runs(target.study)
    copied = 0
    for trial in records.feasible_front(target.study):
        if trial.number in done:
            continue
        for twin, number in _twins(trial, target, siblings):
            point = records.final_runs(twin.study).get(number)
            if not point:
                continue
            fidelity = {k: point[k] for k in records.FINAL_FIDELITY}
            for index, run in point["runs"].items():
                records.record_final_run(target.study, trial.number, int(index),
                                         _relocated(run, twin, target), fidelity)
            copied += 1
            break
    return copied


def deferred_points(target: Sibling, siblings: list[Sibling]) -> frozenset[int]:
    """`target`'s Pareto points whose final runs their source study makes (and shares).

    A shared trial that is also on its own study's front is retrained there; `target` copies
    the runs afterwards (`share_final_runs`) instead of repeating them.
    """
    by_name = {s.name: s for s in siblings}
    fronts: dict[str, set[int]] = {}
    deferred = set()
    for trial in records.feasible_front(target.study):
        mark = trial.user_attrs.get(ATTR_REUSED)
        if not mark or mark["study"] not in by_name:
            continue
        if mark["study"] not in fronts:
            fronts[mark["study"]] = {t.number for t in
                                     records.feasible_front(by_name[mark["study"]].study)}
        if mark["trial"] in fronts[mark["study"]]:
            deferred.add(trial.number)
    return frozenset(deferred)


def _twins(trial: FrozenTrial, target: Sibling, siblings: list[Sibling]
           ) -> Iterator[tuple[Sibling, int]]:
    """Trials elsewhere that are `trial`: its source, or the copies made of it."""
    by_name = {s.name: s for s in siblings}
    mark = trial.user_attrs.get(ATTR_REUSED)
    if mark and mark["study"] in by_name:
        yield by_name[mark["study"]], mark["trial"]
    mine = {"study": target.name, "trial": trial.number}
    for sibling in siblings:
        if sibling.name == target.name:
            continue
        for other in sibling.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if other.user_attrs.get(ATTR_REUSED) == mine:
                yield sibling, other.number


def _relocated(run: dict[str, Any], source: Sibling, target: Sibling) -> dict[str, Any]:
    """A final run's record with its artifact path relative to `target`'s study directory."""
    if "artifact" not in run:
        return run
    return {**run, "artifact": Path(os.path.relpath(
        source.study_dir.resolve() / run["artifact"], target.study_dir.resolve())).as_posix()}


class BudgetReuse:
    """Shares each finished trial with the sibling budgets it fits, counting what each got."""

    def __init__(self, groups: list[list[Sibling]]):
        self._groups = groups
        self._siblings = {s.name: (s, group) for group in groups for s in group}
        self.received: dict[str, int] = {}

    def catch_up(self) -> int:
        """Share the trials finished before this run (a resumed sweep); how many were added."""
        return sum(share_all(group) for group in self._groups)

    def deferred(self, name: str) -> frozenset[int]:
        """Study `name`'s Pareto points whose final runs another budget makes and shares."""
        if name not in self._siblings:
            return frozenset()
        target, group = self._siblings[name]
        return deferred_points(target, group)

    def share_final_runs(self, name: str) -> int:
        """Copy final runs other budgets already made for study `name`'s Pareto points."""
        if name not in self._siblings:
            return 0
        target, group = self._siblings[name]
        return share_final_runs(target, group)

    def share(self, member: Any, trial: Any) -> list[str]:
        """The studies `member`'s finished `trial` now also counts for (the engine's hook)."""
        if member.name not in self._siblings:
            return []
        source, group = self._siblings[member.name]
        names = share_trial(trial, source, group)
        for target in names:
            self.received[target] = self.received.get(target, 0) + 1
        return names


def _holds(study: optuna.Study, source: str, number: int, candidate: tuple) -> bool:
    """Whether `study` has this trial already, or has finished the same candidate itself."""
    mark = {"study": source, "trial": number}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get(ATTR_REUSED) == mark or _normalised(candidate_from_params(
                trial.params, trial.user_attrs.get(records.ATTR_DERIVED))) == candidate:
            return True
    return False


def _trained_size(trial: FrozenTrial, source: Sibling) -> int:
    """The params the trial trained with, measured before training (`ATTR_BUDGET_USED`): a
    DyLoRA trial stores only its chosen rank afterwards."""
    used = trial.user_attrs.get(records.ATTR_BUDGET_USED)
    return trial.user_attrs[records.ATTR_STORED] if used is None else round(
        used * source.budget_params)


def _expressed_in(trial: FrozenTrial, target: Sibling
                  ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], tuple] | None:
    """The trial's params, distributions, derived knobs and candidate in `target`'s space.

    None unless the target's space samples exactly the same candidate (method, knobs and
    training knobs) with the same measured size.
    """
    space = target.space
    params, _ = adapt(trial, space, space.sizer, space.budget)
    if params is None:
        return None
    # Replay the params through the space on a scratch study: that records the distributions
    # the target's sampler expects, and the candidate they stand for.
    scratch = optuna.create_study(directions=["maximize", "minimize"])
    scratch.enqueue_trial(params)  # a throwaway in-memory study, not a record
    replay = scratch.ask()
    try:
        candidate = space(replay)
    except Exception:  # a value outside the target's ranges: not the same configuration
        return None
    source = candidate_from_params(trial.params, trial.user_attrs.get(records.ATTR_DERIVED))
    if _normalised(candidate) != _normalised(source):
        return None
    return (replay.params, replay.distributions, space.derived(candidate),
            _normalised(candidate))


def _normalised(candidate: dict[str, Any]) -> tuple:
    return (candidate["method"], sorted(candidate["knobs"].items()),
            sorted(candidate.get("training", {}).items()))
