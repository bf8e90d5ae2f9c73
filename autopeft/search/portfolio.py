"""The portfolio: strong known configurations a search tries first, adapted to its space.

A search of tens of trials cannot afford to find a good learning rate or rank from scratch;
starting from configurations known to work (each entry of `search_spaces/portfolio.yaml` says
where it comes from) puts a strong point on the front within the first trials, and the sampler
refines from there. Entries are adapted like a warm start (`warm_start.adapt_candidate`):
knobs clipped into the space, size knobs shrunk to fit the budget, methods outside the search
dropped.

An entry may give its size as `budget_fraction` (a share of the search's budget) instead of a
value of its size knob, as a portfolio learned across tasks does (`autopeft portfolio build`):
a share transfers across models and budgets where a rank does not. Its size knob is the one the
default space fits to the budget (`size_knob`), and the search sets it to the value that stores
the most within that share of its budget.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from autopeft import study as records
from autopeft.errors import AutoPeftError
from autopeft.methods import build_method
from autopeft.search.warm_start import adapt_candidate
from autopeft.space.sizing import Sizer
from autopeft.space.space import FRACTION, METHOD_PARAM, SearchSpace, load_space

PORTFOLIO_FILE = Path(__file__).resolve().parents[2] / "search_spaces" / "portfolio.yaml"
TOP_LEVEL_KNOBS = ("learning_rate", "warmup_ratio")  # knobs an entry gives at its top level


@dataclass(frozen=True)
class Entry:
    method: str
    knobs: dict[str, Any]  # learning rate and warmup included
    source: str
    budget_fraction: float | None = None  # share of the budget its size knob is fit to

    @property
    def candidate(self) -> dict[str, Any]:
        candidate = {"method": self.method, "knobs": self.knobs}
        if self.budget_fraction is not None:
            candidate.update({FRACTION: self.budget_fraction, "size_knob": size_knob(self.method)})
        return candidate


def size_knob(method: str) -> str | None:
    """The knob a `budget_fraction` sizes: the one `search_spaces/default.yaml` fits to the
    budget for this method; None for a method without one (BitFit)."""
    space = _default_space()
    return space.fit_knob(method) if method in space.methods else None


@functools.cache
def _default_space() -> SearchSpace:
    return load_space(None)


def load_portfolio(path: str | Path | None = None) -> list[Entry]:
    """The entries of `path` (default: the bundled portfolio; "none": no entries), in order,
    each checked against its method's knobs."""
    if path == "none":
        return []
    path = Path(path) if path else PORTFOLIO_FILE
    if not path.is_file():
        raise AutoPeftError(f"portfolio file '{path}' not found (or pass --portfolio none)")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise AutoPeftError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_portfolio(document, path)


def parse_portfolio(document: Any, where: str | Path) -> list[Entry]:
    """The entries of a portfolio document (what its YAML holds), each checked; `where` names
    it in the errors. Keys other than the entries' (a learned file's provenance) are kept for
    the reader and not checked."""
    if not isinstance(document, dict) or not isinstance(document.get("entries", []), list):
        raise AutoPeftError(f"{where}: expected a mapping with a list under 'entries'")
    entries = []
    for number, raw in enumerate(document.get("entries", []), start=1):
        if not isinstance(raw, dict):
            raise AutoPeftError(f"{where}: entry {number} is not a mapping")
        method = raw.get("method")
        knobs = dict(raw.get("knobs") or {})
        for key in TOP_LEVEL_KNOBS:
            if key in raw:
                knobs[key] = raw[key]
        if not method or not raw.get("source"):
            raise AutoPeftError(f"{where}: entry {number} needs a method and a source")
        build_method(method, knobs)  # an unknown knob or bad value fails here, by name
        fraction = _fraction(raw, method, knobs, f"{where}: entry {number} ({method})")
        entries.append(Entry(method, knobs, str(raw["source"]), fraction))
    return entries


def _fraction(raw: dict[str, Any], method: str, knobs: dict[str, Any], where: str
              ) -> float | None:
    """An entry's `budget_fraction`, checked: a share in (0, 1] of a method with a size knob
    that the entry does not also set."""
    if FRACTION not in raw:
        return None
    value = raw[FRACTION]
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value) or not 0 < value <= 1):
        raise AutoPeftError(f"{where}: {FRACTION} must be a share of the budget in (0, 1], "
                            f"got {value!r}")
    knob = size_knob(method)
    if knob is None:
        raise AutoPeftError(f"{where}: {FRACTION} needs a size knob, and {method} has none; "
                            "leave it out")
    if knob in knobs:
        raise AutoPeftError(f"{where}: give either {FRACTION} or {knob}, not both")
    return float(value)


def portfolio_params(space: SearchSpace, sizer: Sizer, budget: int,
                     entries: list[Entry] | None = None) -> list[dict[str, Any]]:
    """Optuna params of every entry that fits this search, in portfolio order, duplicates
    (two entries adapted to the same configuration) once."""
    entries = load_portfolio() if entries is None else entries
    if any(space.fit_knob(m) for m in space.methods):
        space = space.for_budget(sizer, budget)  # a fit_budget knob is derived from the budget
    chosen: list[dict[str, Any]] = []
    for number, entry in enumerate(entries, start=1):
        if entry.method not in space.methods:
            continue
        params, _ = adapt_candidate(entry.candidate, f"portfolio entry {number}", space,
                                    sizer, budget)
        if params is not None and params not in chosen:
            chosen.append(params)
    return chosen


def enqueue_portfolio(study: optuna.Study, space: SearchSpace, sizer: Sizer, budget: int,
                      skip: set[str] = frozenset(), entries: list[Entry] | None = None) -> int:
    """Enqueue the fitting entries (methods in `skip` left out) a study has not tried yet;
    how many were enqueued. A resumed study does not get them twice."""
    tried = [t.params for t in study.trials
             if t.user_attrs.get(records.ATTR_STATUS) != records.STATUS_INFEASIBLE]
    tried += [t.system_attrs.get("fixed_params", {})
              for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    added = 0
    for params in portfolio_params(space, sizer, budget, entries):
        if params[METHOD_PARAM] in skip or any(_same(params, t) for t in tried):
            continue
        records.enqueue(study, params)
        tried.append(params)
        added += 1
    return added


def _same(params: dict[str, Any], tried: dict[str, Any]) -> bool:
    return all(tried.get(k) == v for k, v in params.items())
