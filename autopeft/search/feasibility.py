"""Which methods and candidates can fit a budget on a model, measured before any training.

A search drops methods whose smallest candidate is over the budget, or that store nothing beyond
the head at every size (saying why), and tries every kept method once at its defaults so no family
is left unexplored by a sampler's early luck: families take turns, so a search shorter than the
method list still tries each family. A first candidate is never one that stores nothing: it
would train only the head, and the searcher rejects it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import TrialState

from autopeft import study as records
from autopeft.errors import AutoPeftError, MethodNotApplicable
from autopeft.methods import get_method_class
from autopeft.methods.registry import METHOD_FAMILIES
from autopeft.space.sizing import Sizer
from autopeft.space.space import SearchSpace, param_name


def size_extremes(space: SearchSpace, method: str) -> list[dict[str, Any]]:
    """Candidates with every size knob at an end of its searched range (each enum choice).

    Both ends, since a larger value may store less (e.g. more dropped adapter layers).
    """
    ranges = space.methods[method]
    size_knobs = [k for k in get_method_class(method).config_class.knobs() if k.affects_size]
    options = []
    for knob in size_knobs:
        rng = ranges.get(knob.name)
        if rng is None:
            options.append([knob.default])
        elif rng.choices is not None and knob.type in (int, float):
            options.append(sorted({min(rng.choices), max(rng.choices)}))
        elif rng.choices is not None:
            options.append(list(rng.choices))
        else:
            options.append([rng.type(rng.low), rng.type(rng.high)])
    names = [k.name for k in size_knobs]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*options)]


def _fits(stored: int | None, budget: int) -> bool:
    """Stores something, within the budget: 0 stored would train only the head."""
    return stored is not None and 0 < stored <= budget


def stored_or_none(sizer: Sizer, method: str, knobs: dict[str, Any]) -> int | None:
    """The candidate's stored count; None when it cannot apply to this model."""
    try:
        return sizer.measure(method, knobs).stored_params
    except MethodNotApplicable:
        return None


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


def feasible_methods(space: SearchSpace, sizer: Sizer, budget: int
                      ) -> tuple[SearchSpace, dict[str, str]]:
    """Drop methods that cannot fit the budget at all, cannot apply to the model, or store
    nothing beyond the head at both ends of every size knob, saying why."""
    keep, skipped, minimum = [], {}, {}
    for method in space.methods:
        sizes = [stored_or_none(sizer, method, v) for v in size_extremes(space, method)]
        if all(size is None for size in sizes):
            try:  # say why, in the method's own words
                sizer.measure(method, size_extremes(space, method)[0])
            except MethodNotApplicable as exc:
                skipped[method] = str(exc)
            continue
        if not any(sizes):
            skipped[method] = ("it stores nothing beyond the head at either end of its "
                               "searched sizes: it would train only the task head")
            continue
        minimum[method] = smallest = min(size for size in sizes if size is not None)
        if smallest <= budget:
            keep.append(method)
        else:
            skipped[method] = (f"its smallest candidate stores {smallest:,} params, "
                               f"over the budget of {budget:,}")
    if not keep:
        mins = ", ".join(f"{m} {n:,}" for m, n in sorted(minimum.items(), key=lambda kv: kv[1]))
        other = "; ".join(f"{m}: {w}" for m, w in skipped.items() if m not in minimum)
        raise AutoPeftError(
            f"no method fits the budget of {budget:,} params; the least each method stores on "
            f"this model (params): {mins or 'none'}"
            + (f"; not applicable: {other}" if other else "")
            + (f"; accepted: a budget of at least {min(minimum.values()):,} params"
               if minimum else "")
        )
    return space.restrict(keep), skipped


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
        if not _fits(stored_or_none(sizer, method, knobs), budget):
            fitting = [v for v in size_extremes(space, method)
                       if _fits(stored_or_none(sizer, method, {**knobs, **v}), budget)]
            if not fitting:
                continue
            params.update({param_name(method, k): v for k, v in fitting[0].items()
                           if param_name(method, k) in params})  # derived knobs stay derived
        records.enqueue(study, params)

