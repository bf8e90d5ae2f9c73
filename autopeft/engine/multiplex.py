"""A sweep's studies run as one Ray Tune experiment: their trials interleave on shared workers.

One Tune run per study would leave workers idle at each study's tail (its last trials running,
nothing else queued) and pay Ray's start-up per study. Here one searcher multiplexes every
study's `BudgetedOptunaSearch`: each free worker slot goes to the study furthest from its trial
target (enqueued first candidates before anything else), so all studies progress together and
no slot idles while any study has work. Trials carry their study's name (`config["study"]`);
the trainable looks up that study's context and its (task, model)'s tokenised data, which sit
in Ray's object store once per (task, model). MO-ASHA keeps separate rungs per study
(`scheduler.STUDY_KEY`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.search import Searcher
from rich.console import Console

from autopeft import study as records
from autopeft.engine.runner import EngineSettings, fit, prepare_cluster, with_threads
from autopeft.engine.samplers import make_sampler
from autopeft.engine.scheduler import STUDY_KEY, check_scheduler
from autopeft.engine.searcher import BudgetedOptunaSearch
from autopeft.engine.trainable import train_candidate
from autopeft.errors import SearchInterrupted
from autopeft.space.space import SearchSpace
from autopeft.train.data import SearchData
from autopeft.train.trial import TrialContext


@dataclass
class SweepMember:
    """One study of the sweep and how many more trials it needs."""

    name: str
    study: optuna.Study
    space: SearchSpace  # bound to the study's budget (SearchSpace.for_budget)
    context: TrialContext
    data_key: str  # which tokenised data (one per task and model) its trials train on
    remaining: int
    searcher: BudgetedOptunaSearch | None = None
    launched: int = 0
    exhausted: bool = False


@dataclass(frozen=True)
class SweepOutcome:
    launched: dict[str, int] = field(default_factory=dict)
    infeasible: dict[str, int] = field(default_factory=dict)
    wall_seconds: float = 0.0


# a finished COMPLETE trial of a member → the names of the members it now also counts for
ShareHook = Callable[[SweepMember, optuna.trial.FrozenTrial], list[str]]


class SweepSearcher(Searcher):
    """Proposes for the study with the most work left; forwards Ray's news to that study."""

    def __init__(self, members: list[SweepMember], share: ShareHook | None = None):
        super().__init__()
        self.members = {m.name: m for m in members}
        self._share = share
        self._owner: dict[str, SweepMember] = {}

    def __getstate__(self) -> dict:  # the Optuna storages are the record (see the searcher)
        return {"members": {}, "_share": None, "_owner": {}}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        pass

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        pass

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        while True:
            waiting = [m for m in self.members.values() if m.remaining > 0 and not m.exhausted]
            if not waiting:
                return Searcher.FINISHED
            member = max(waiting, key=lambda m: (_has_enqueued(m.study), m.remaining, m.name))
            config = member.searcher.suggest(trial_id)
            if config == Searcher.FINISHED or config is None:
                member.exhausted = True  # no feasible candidate left in its space
                continue
            member.remaining -= 1
            member.launched += 1
            self._owner[trial_id] = member
            return {**config, STUDY_KEY: member.name}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._owner:
            self._owner[trial_id].searcher.on_trial_result(trial_id, result)

    def on_trial_retry(self, trial_id: str, failures: int) -> None:
        if trial_id in self._owner:
            self._owner[trial_id].searcher.on_trial_retry(trial_id, failures)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        member = self._owner.pop(trial_id, None)
        if member is None:
            return
        ot_trial = member.searcher.live_trial(trial_id)
        member.searcher.on_trial_complete(trial_id, result, error)
        if ot_trial is None or self._share is None:
            return
        frozen = records.as_stored(member.study, ot_trial)
        for name in self._share(member, frozen):
            self.members[name].remaining -= 1  # the trial counts for that study too

    def fail_unfinished(self, why: str) -> list[str]:
        """Mark every unfinished trial of every study failed; "study #n" of each."""
        return [f"{m.name} #{n}" for m in self.members.values() for n in
                m.searcher.fail_unfinished(why)]

    @property
    def infeasible(self) -> dict[str, int]:
        return {name: m.searcher.infeasible for name, m in self.members.items()}


def _has_enqueued(study: optuna.Study) -> bool:
    """Enqueued trials (each method's first try, a warm start) go first: trials shared in from
    sibling budgets could otherwise meet the study's target before they ever run."""
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def run_sweep_trials(members: list[SweepMember], data: dict[str, SearchData],
                     settings: EngineSettings, ray_dir: Path,
                     share: ShareHook | None = None,
                     console: Console | None = None) -> SweepOutcome:
    """Run every member's remaining trials in one Tune experiment (see the module docstring)."""
    started = time.perf_counter()
    for member in members:
        check_scheduler(settings.scheduler, settings.reduction_factor, settings.grace_epochs,
                        member.context.epochs)
    total = sum(max(0, m.remaining) for m in members)
    if total == 0:
        return SweepOutcome({m.name: 0 for m in members}, {m.name: 0 for m in members})
    settings, cpus, gpus = prepare_cluster(settings)
    for member in members:
        # a resumed study gets a fresh seed stream (the same seed would replay old proposals),
        # and each study its own (sibling budgets would propose the same candidates in step)
        offset = len(member.study.trials) + zlib.crc32(member.name.encode()) % 100_003
        sampler = make_sampler(settings.sampler, settings.seed + offset)
        member.searcher = BudgetedOptunaSearch(member.space, member.study, sampler)
    # Each (task, model)'s data goes to the object store once; a trial fetches only its own.
    data_refs = {key: ray.put(split) for key, split in data.items()}
    routes = {m.name: (m.data_key, with_threads(m.context, cpus)) for m in members}
    trainable = tune.with_parameters(train_sweep_candidate, data_refs=data_refs, routes=routes)
    searcher = SweepSearcher(members, share)
    fitted = fit(trainable, searcher, settings, total, max(m.context.epochs for m in members),
                 (cpus, gpus), ray_dir, "every study of the sweep", console)
    short = [m.name for m in members if m.remaining > 0 and not m.exhausted]
    if fitted.launched < total and short and not fitted.out_of_time:
        raise SearchInterrupted(
            f"sweep stopped with {len(short)} unfinished studies ({', '.join(short)}); every "
            "finished trial is kept: run the same command again to continue it")
    return SweepOutcome({m.name: m.launched for m in members}, searcher.infeasible,
                        time.perf_counter() - started)


def train_sweep_candidate(config: dict[str, Any], data_refs: dict[str, Any] | None = None,
                          routes: dict[str, tuple[str, TrialContext]] | None = None) -> None:
    """Train one candidate of the study named in its config, on that study's data."""
    data_key, context = routes[config[STUDY_KEY]]
    train_candidate(config, data=_fetch(data_refs[data_key]), context=context)


# A worker process runs trial after trial (`reuse_actors`): it unpickles each (task, model)'s
# data once (~0.1 s for 2,000 MRPC pairs) instead of once per trial. Trials never modify it.
_FETCHED: dict[str, SearchData] = {}
_FETCHED_MAX = 4


def _fetch(ref: Any) -> SearchData:
    key = ref.hex()
    if key not in _FETCHED:
        while len(_FETCHED) >= _FETCHED_MAX:
            _FETCHED.pop(next(iter(_FETCHED)))
        _FETCHED[key] = ray.get(ref)
    return _FETCHED[key]
