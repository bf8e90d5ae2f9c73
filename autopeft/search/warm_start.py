"""Warm start: a search first tries another study's Pareto configurations, adapted to itself.

A front found for one task, model or budget is a strong first guess for a related search, and
trying it costs a few trials instead of a sampler's slow start. The configurations keep their
method and knobs but must be valid here: methods outside this search are dropped, knob values
are clipped or snapped into this space's ranges, and a configuration over this budget has its
size knobs shrunk to the values nearest its own that fit (measured, never assumed), or is
dropped when nothing fits. The source study is only read (`records.read_study`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autopeft import study as records
from autopeft.errors import AutoPeftError
from autopeft.methods import get_method_class
from autopeft.space.fitting import shrink, stored_or_none
from autopeft.space.sizing import Sizer
from autopeft.space.space import (
    FRACTION,
    METHOD_PARAM,
    KnobRange,
    SearchSpace,
    candidate_from_params,
    param_name,
)


@dataclass
class WarmStart:
    """What a warm start did, for the one line the search prints."""

    source: str
    enqueued: int = 0
    shrunk: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    already: int = 0  # adapted configurations this study already had (a resumed search)

    def describe(self) -> str:
        line = f"warm start from '{self.source}': {self.enqueued} configuration(s) enqueued"
        if self.shrunk:
            line += f" ({len(self.shrunk)} shrunk to fit: {'; '.join(self.shrunk)})"
        if self.already:
            line += f", {self.already} already in this study"
        line += f", {len(self.dropped)} dropped"
        return line + (f" ({'; '.join(self.dropped)})" if self.dropped else "")


def load_front(name: str, storage: str | None, studies_dir: str | Path) -> list[FrozenTrial]:
    """The Pareto configurations of the study to warm-start from; one line when it is missing."""
    try:
        return records.feasible_front(records.read_study(name, storage, Path(studies_dir)))
    except AutoPeftError as exc:
        raise AutoPeftError(f"--warm-start: {exc}") from None


def warm_start(study: optuna.Study, source: str, front: list[FrozenTrial], space: SearchSpace,
               sizer: Sizer, budget: int) -> WarmStart:
    """Enqueue the adapted `front` in `study`, ahead of anything enqueued later."""
    if any(space.fit_knob(m) for m in space.methods):
        space = space.for_budget(sizer, budget)  # deriving a fit_budget knob needs the budget
    outcome = WarmStart(source)
    seen: list[dict[str, Any]] = []
    for trial in front:
        params, note = adapt(trial, space, sizer, budget)
        if params is None:
            outcome.dropped.append(note)
            continue
        if params in seen:
            continue  # two source points may adapt to the same configuration
        seen.append(params)
        before = len(study.trials)
        records.enqueue(study, params)
        if len(study.trials) == before:
            outcome.already += 1
            continue
        outcome.enqueued += 1
        if note:
            outcome.shrunk.append(note)
    return outcome


def adapt(trial: FrozenTrial, space: SearchSpace, sizer: Sizer, budget: int
          ) -> tuple[dict[str, Any] | None, str]:
    """Optuna params of `trial`'s configuration in this space and budget, and a note.

    (params, "") as is or clipped into the space; (params, "what shrank") when size knobs had to
    shrink; (None, why) when the configuration cannot be used here.
    """
    source = candidate_from_params(trial.params, trial.user_attrs.get(records.ATTR_DERIVED))
    return adapt_candidate(source, f"trial {trial.number} {source['method']}", space, sizer,
                           budget)


def adapt_candidate(source: dict[str, Any], label: str, space: SearchSpace, sizer: Sizer,
                    budget: int) -> tuple[dict[str, Any] | None, str]:
    """`adapt` for a candidate ({"method", "knobs"[, "training"]}) from anywhere, e.g. the
    portfolio; `label` names it in the note.

    A candidate sized as a share of the budget (`budget_fraction` and the `size_knob` it sizes,
    a learned portfolio's entry) asks for that share of this budget: a method whose size knob
    this space fits to the budget samples that fraction; otherwise the size knob is set, within
    this space's range of it, to the value that stores the most within the share (found as a
    fit_budget knob is, `SearchSpace.derive`).
    """
    method = source["method"]
    if method not in space.methods:
        return None, f"{label}: not in this search"
    ranges, allowed = space.methods[method], space.allowed.get(method, {})
    declared = {k.name: k for k in get_method_class(method).config_class.knobs()}
    fit = space.fit_knob(method)
    knobs: dict[str, Any] = {}
    for knob, spec in ranges.items():
        if knob != fit and spec.applies(knobs):
            wanted = source["knobs"].get(knob, declared[knob].default)
            knobs[knob] = spec.clip(wanted, allowed.get(knob))
    params: dict[str, Any] = {METHOD_PARAM: method}
    fraction, wanted, over = None, None, False
    share = source.get(FRACTION)
    if share is not None and fit is None:
        knobs = _sized_to_share(method, knobs, source.get("size_knob"), share, ranges, sizer,
                                budget)
    if share is not None and fit is not None:  # the space fits its size knob to a share
        fraction = space.fractions[method].clip(share)
        params[param_name(method, FRACTION)] = fraction
    elif fit is not None:  # the space derives it from a budget fraction: ask for the same size
        wanted = ranges[fit].clip(source["knobs"].get(fit, declared[fit].default))
        stored = stored_or_none(sizer, method, {**knobs, fit: wanted})
        fraction = space.fractions[method].clip(1.0 if stored is None else stored / budget)
        over = stored is None or stored > budget
        params[param_name(method, FRACTION)] = fraction

    def size(values: dict[str, Any]) -> int | None:
        if fit is not None:
            values = {**values, fit: space.derive(method, values, fraction)}
        return stored_or_none(sizer, method, values)

    shrinkable = [k for k in knobs if declared[k].affects_size and declared[k].type in (int, float)
                  and not isinstance(knobs[k], bool)]
    fitted = shrink(knobs, shrinkable, ranges, allowed, size, budget)
    stored = size(fitted)
    if stored is None:
        return None, f"{label}: cannot apply to this model"
    if stored > budget:
        return None, f"{label}: stores {stored:,} params at its smallest, over {budget:,}"
    params.update({param_name(method, k): v for k, v in fitted.items()})
    for knob, spec in space.training.get(method, {}).items():
        if knob in source.get("training", {}) and spec.applies(fitted):
            params[param_name(method, knob)] = spec.clip(source["training"][knob])
    changes = [f"{k} {knobs[k]}→{fitted[k]}" for k in shrinkable if fitted[k] != knobs[k]]
    if over:  # the derived knob came out smaller than the source's
        changes.append(f"{fit} {wanted}→{space.derive(method, fitted, fraction)}")
    return params, f"{label} {', '.join(changes)}" if changes else ""


def _sized_to_share(method: str, knobs: dict[str, Any], knob: str | None, share: float,
                    ranges: dict[str, KnobRange], sizer: Sizer, budget: int) -> dict[str, Any]:
    """`knobs` with `knob` set to the value of its range here that stores the most within
    share × budget; as they are when this space does not search `knob` (its value is fixed)."""
    if knob is None or knob not in knobs:
        return knobs
    fitted = SearchSpace({method: {**ranges, knob: replace(ranges[knob], fit_budget=True)}},
                         sizer=sizer, budget=budget)
    return {**knobs, knob: fitted.derive(method, knobs, share)}
