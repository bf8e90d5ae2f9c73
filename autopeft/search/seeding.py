"""The first trials of a search: every kept method once, at its defaults (whether a method fits
at all is `space.fitting.feasible_methods`).

A search drops methods whose smallest candidate is over the budget, or that store nothing beyond
the head at every size (saying why), and tries every kept method once at its defaults so no family
is left unexplored by a sampler's early luck: families take turns, so a search shorter than the
method list still tries each family. A first candidate is never one that stores nothing: it
would train only the head, and the searcher rejects it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import optuna
from optuna.trial import TrialState

from autopeft import study as records
from autopeft.methods.registry import METHOD_FAMILIES
from autopeft.space.fitting import fits, size_extremes, stored_or_none
from autopeft.space.sizing import Sizer
from autopeft.space.space import SearchSpace, param_name


def families_in_turn(methods: Iterable[str]) -> list[str]:
    """`methods` reordered so that families take turns, each family's own order kept.

    The default space lists 22 methods, and the default search is 12 trials: in list order
    they would all go to the LoRA and sparse families, never reaching adapters or prompts.
    """
    by_family: dict[str, list[str]] = {}
    for method in methods:
        by_family.setdefault(METHOD_FAMILIES[method], []).append(method)
    rounds = itertools.zip_longest(*by_family.values())
    return [method for turn in rounds for method in turn if method is not None]


def enqueue_uncovered_methods(study: optuna.Study, space: SearchSpace, sizer: Sizer,
                              budget: int, skip: set[str] = frozenset()) -> None:
    """Each allowed method (but `skip`) is tried once, at its defaults, before the sampler.

    Defaults that are over the budget or store nothing give way to the first end of the size
    knobs that stores something within it; a method with none is left to the sampler.
    """
    covered = {t.params.get("method") for t in study.trials
               if t.user_attrs.get(records.ATTR_STATUS) != records.STATUS_INFEASIBLE}
    # an enqueued trial (a warm start's) has no params until asked: Optuna keeps them aside
    covered |= {t.system_attrs.get("fixed_params", {}).get("method")
                for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    space = space.for_budget(sizer, budget)  # knobs fit to the budget are derived from it
    for method in families_in_turn(space.methods):
        if method in covered or method in skip:
            continue
        params = space.default_params(method)
        knobs = space.resolve(params)["knobs"]
        if not fits(stored_or_none(sizer, method, knobs), budget):
            fitting = [v for v in size_extremes(space, method)
                       if fits(stored_or_none(sizer, method, {**knobs, **v}), budget)]
            if not fitting:
                continue
            params.update({param_name(method, k): v for k, v in fitting[0].items()
                           if param_name(method, k) in params})  # derived knobs stay derived
        records.enqueue(study, params)

