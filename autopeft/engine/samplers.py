"""Optuna samplers by `--sampler` name, each built from a seed so seeded searches repeat exactly.

All of them handle the search's two objectives (score up, stored params down). The model-based
ones (`gp`, `qnehvi`) model only the parameters every past trial shares (the method choice, plus
the knobs of a single-method space); the rest of a define-by-run candidate is drawn by their
seeded independent sampler. Over-budget candidates are FAIL trials, which these models never
see, so their acquisition maximum can stay on an over-budget point: right after a rejection
they draw the next candidate with that independent sampler instead (and for a study whose
older trials lack the chance constraint, which they cannot model). `qnehvi` needs the
optional `bo` extra (BoTorch), so it is imported only when asked for, and its absence is one
line naming the extra.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from autopeft import study as records
from autopeft.errors import AutoPeftError

BO_EXTRA = "pip install 'autopeft[bo]'"


def _tpe(seed: int) -> BaseSampler:
    # A search here is tens of trials, each method tried once at its defaults first, so
    # Optuna's 10 random start-up trials would leave TPE few of them: 5 is enough to model.
    # multivariate + group: a candidate's knobs depend on its method (define-by-run), and TPE
    # models each group of parameters that occur together jointly instead of one by one.
    with warnings.catch_warnings():  # multivariate/group are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True,
                                          group=True, constant_liar=True)


# Optuna's default population of 50 makes NSGA-II's first 50 trials random draws, and searches
# here are tens of trials: with 8, a 24-trial search breeds two generations. Across methods the
# only parameter every trial shares is the method (knobs are define-by-run, drawn at random),
# and Optuna's mutation probability, 1/len(params) = 1, redraws it: there NSGA-II matches random
# search exactly (benchmarks/search_quality.py). Letting children inherit the method (mutation
# probability 0.1) measured worse, 0.86x random's hypervolume: it settles on a method too early.
# It does evolve the knobs of a single-method space (--methods lora).
NSGA2_POPULATION = 8


def _nsga2(seed: int) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION)


def _gp(seed: int) -> BaseSampler:
    # logEHVI for two objectives; conditional knobs fall back to its seeded random sampler,
    # which is expected here, so its per-parameter warning is only noise.
    return _AfterRejectionDrawIndependently(
        optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False))


def _random(seed: int) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _qnehvi(seed: int) -> BaseSampler:
    sampler_class, candidates_func = _botorch()
    with warnings.catch_warnings():  # BoTorchSampler is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = sampler_class(candidates_func=candidates_func, seed=seed)
    return _AfterRejectionDrawIndependently(sampler)


def _botorch() -> tuple[type[BaseSampler], Callable]:
    """BoTorchSampler and the qNEHVI candidates function, or one line on what to install."""
    try:
        import botorch  # noqa: F401  (optuna_integration imports it lazily; fail early here)
        from optuna_integration import BoTorchSampler
        from optuna_integration.botorch import qnehvi_candidates_func
    except ImportError as exc:
        raise AutoPeftError(
            f"sampler 'qnehvi' needs botorch and optuna-integration ({exc.name or exc} is "
            f"missing): {BO_EXTRA}"
        ) from None
    return BoTorchSampler, qnehvi_candidates_func


class _AfterRejectionDrawIndependently(BaseSampler):
    """A model-based sampler that skips its model for the trial right after a rejected one.

    Without this, a deterministic acquisition optimiser re-proposes the same over-budget point
    until the searcher gives up (it never learns from FAIL trials). The fallback keeps the
    sequence seeded: the wrapped sampler's own independent sampler draws the candidate.
    """

    def __init__(self, base: BaseSampler):
        self._base = base

    def __str__(self) -> str:
        return str(self._base)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        if _previous_was_rejected(study, trial) or _constraints_mixed(study):
            return {}
        return self._base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        with warnings.catch_warnings():  # BoTorch's candidates functions are experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return self._base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._base.reseed_rng()


def _previous_was_rejected(study: optuna.Study, trial: FrozenTrial) -> bool:
    previous = [t for t in study.get_trials(deepcopy=False) if t.number == trial.number - 1]
    return bool(previous) and (previous[0].user_attrs.get(records.ATTR_STATUS)
                               == records.STATUS_INFEASIBLE)


def _constraints_mixed(study: optuna.Study) -> bool:
    """Whether some COMPLETE trials carry the chance constraint and others do not (a study
    begun before trials recorded it): the GP samplers refuse such a study, so draw at random."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return len({len(t.constraints) for t in complete}) > 1


SAMPLERS: dict[str, Callable[[int], BaseSampler]] = {
    "tpe": _tpe,
    "nsga2": _nsga2,
    "gp": _gp,
    "random": _random,
    "qnehvi": _qnehvi,
}

# Samplers whose dependencies are optional: checked up front so a search fails before any work.
_OPTIONAL: dict[str, Callable[[], object]] = {"qnehvi": _botorch}


def check_sampler(name: str) -> None:
    """Fail in one line on an unknown sampler or one whose optional dependency is missing."""
    if name not in SAMPLERS:
        raise AutoPeftError(f"unknown sampler '{name}'; choose: {', '.join(SAMPLERS)}")
    if name in _OPTIONAL:
        _OPTIONAL[name]()


def make_sampler(name: str, seed: int) -> BaseSampler:
    """The named sampler, seeded."""
    check_sampler(name)
    return SAMPLERS[name](seed)
