"""The portfolio: strong known configurations a search tries first, adapted to its space.

A search of tens of trials cannot afford to find a good learning rate or rank from scratch;
starting from configurations known to work (each entry of `search_spaces/portfolio.yaml` says
where it comes from) puts a strong point on the front within the first trials, and the sampler
refines from there. Entries are adapted like a warm start (`warm_start.adapt_candidate`):
knobs clipped into the space, size knobs shrunk to fit the budget, methods outside the search
dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from autopeft import study as records
from autopeft.errors import AutoPeftError
from autopeft.methods import build_method
from autopeft.sizing import Sizer
from autopeft.space import METHOD_PARAM, SearchSpace
from autopeft.warm_start import adapt_candidate

PORTFOLIO_FILE = Path(__file__).resolve().parents[1] / "search_spaces" / "portfolio.yaml"


@dataclass(frozen=True)
class Entry:
    method: str
    knobs: dict[str, Any]  # learning rate and warmup included
    source: str

    @property
    def candidate(self) -> dict[str, Any]:
        return {"method": self.method, "knobs": self.knobs}


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
    if not isinstance(document, dict) or not isinstance(document.get("entries", []), list):
        raise AutoPeftError(f"{path}: expected a mapping with a list under 'entries'")
    entries = []
    for number, raw in enumerate(document.get("entries", []), start=1):
        if not isinstance(raw, dict):
            raise AutoPeftError(f"{path}: entry {number} is not a mapping")
        method = raw.get("method")
        knobs = dict(raw.get("knobs") or {})
        for key in ("learning_rate", "warmup_ratio"):
            if key in raw:
                knobs[key] = raw[key]
        if not method or not raw.get("source"):
            raise AutoPeftError(f"{path}: entry {number} needs a method and a source")
        build_method(method, knobs)  # an unknown knob or bad value fails here, by name
        entries.append(Entry(method, knobs, str(raw["source"])))
    return entries


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
        study.enqueue_trial(params, skip_if_exists=True)
        tried.append(params)
        added += 1
    return added


def _same(params: dict[str, Any], tried: dict[str, Any]) -> bool:
    return all(tried.get(k) == v for k, v in params.items())
