"""Search spaces: `search_spaces/*.yaml` (method → knob → range) turned into Optuna samples.

Ranges live only in the YAML; methods declare knob types, defaults and validity. A method's block
maps knob names to ranges:

    knob: {choices: [a, b, ...]}                 # categorical
    knob: {low: x, high: y, log: true|false}     # int or float, as the knob is declared
    knob: {..., when: {other: value}}           # sampled only when `other` (listed above it in
                                                 # the block) has that value (or one of a list);
                                                 # otherwise the method's default applies
    knob: {fit_budget: true[, low: x, high: y | choices: [...]]}
                                                 # budget-derived size knob (one per method)
    budget_fraction: {low: 0.05, high: 1.0, log: true}   # the default; needs a fit_budget knob
    epochs: {choices: [...]}, batch_size: {...}  # this method's trials override the request's

A `fit_budget` knob is not sampled: the space samples `<method>.budget_fraction` and, once the
method's other knobs are drawn, derives the knob as the value that stores the most while staying
within fraction × budget (at least one parameter): the largest value for knobs whose size grows
with the value (ranks, bottlenecks, densities, prompt lengths), the smallest for knobs whose size
shrinks as they grow (LST's reduction factor), the best-fitting choice when it lists choices. The
sizes are measured exactly (`Sizer.measure`), never assumed. When nothing within the knob's range
fits the target, the smallest-storing end is used. The derived value is part of the candidate and
recorded on the Optuna trial (user attr `derived`), so reports show the real knob.

Deriving needs a sizer and the budget: `SearchSpace.for_budget(sizer, budget)` binds them. It also
drops, in methods with a `fit_budget` knob, the choices of other size knobs (targets, dropped
layers, ...) with which even the smallest derived value cannot fit or the method cannot apply, so
such methods only propose feasible candidates. A space object is picklable (no closures) so Ray
can ship it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import yaml

from autopeft.errors import AutoPeftError
from autopeft.methods import get_method_class
from autopeft.methods.base import Knob
from autopeft.space import fitting
from autopeft.space.sizing import Sizer

DEFAULT_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "default.yaml"
METHOD_PARAM = "method"
FRACTION = "budget_fraction"  # the sampled share of the budget a fit_budget knob is fit to
FIT_INT_LIMIT = 4096  # default upper end of an int fit_budget knob (as Sizer.fitting_bound's)
_RANGE_KEYS = ("choices", "low", "high", "log", "when", "fit_budget")
_FRACTION_KNOB = Knob(FRACTION, float, None, "share of the budget the derived size knob is fit "
                      "to", minimum=0.0)
# Training settings a method block may search; they override the request's values in its trials.
TRAINING_KNOBS = {
    "epochs": Knob("epochs", int, None, "training epochs of this method's trials", minimum=1),
    "batch_size": Knob("batch_size", int, None, "training batch size of this method's trials",
                       minimum=1),
}
RESERVED = (FRACTION, *TRAINING_KNOBS)


@dataclass(frozen=True)
class KnobRange:
    """One knob's range: a list of choices, or low/high (log-scaled when `log`).

    `fit_budget`: derived from the sampled budget fraction instead of sampled (choices or
    low/high then bound the derived value). `when`: ((knob, allowed values), ...) that must all
    hold for the knob to be sampled.
    """

    type: type
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    fit_budget: bool = False
    when: tuple[tuple[str, tuple], ...] = ()

    def sample(self, trial: optuna.Trial, name: str, choices: tuple | None = None) -> Any:
        choices = choices or self.choices
        if choices is not None:
            return trial.suggest_categorical(name, list(choices))
        if self.type is int:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def clip(self, value: Any, choices: tuple | None = None) -> Any:
        """The value itself when in range, else the nearest allowed one (for enqueued defaults)."""
        choices = choices or self.choices
        if choices is not None:
            if value in choices:
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return min(choices, key=lambda c: abs(c - value))
            return choices[0]
        return self.type(min(max(value, self.low), self.high))

    def applies(self, sampled: dict[str, Any]) -> bool:
        """Whether the `when` conditions hold for the knobs sampled so far."""
        return all(name in sampled and _among(sampled[name], allowed)
                   for name, allowed in self.when)

    def describe(self) -> str:
        if self.choices is not None:
            text = "{" + ", ".join(map(str, self.choices)) + "}"
        else:
            scale = " log" if self.log and not self.fit_budget else ""
            text = f"[{self.low:g}, {self.high:g}]{scale}"
        if self.fit_budget:
            text = f"fit to budget × {FRACTION}, within {text}"
        if self.when:
            text += " when " + ", ".join(
                f"{name}={allowed[0]}" if len(allowed) == 1 else f"{name} in {list(allowed)}"
                for name, allowed in self.when)
        return text


@dataclass(frozen=True)
class SearchSpace:
    """Which methods may be proposed, each one's searched knobs, and (once bound) the budget.

    `methods`: method → knob → range, in sampling order (fit_budget knobs derived last).
    `training`: method → epochs/batch_size ranges. `fractions`: method → budget_fraction range,
    for the methods with a fit_budget knob. `sizer`/`budget`: set by `for_budget`; `allowed`:
    method → knob → the choices that can fit that budget (see the module doc).
    """

    methods: dict[str, dict[str, KnobRange]]
    source: str = "default"
    training: dict[str, dict[str, KnobRange]] = field(default_factory=dict)
    fractions: dict[str, KnobRange] = field(default_factory=dict)
    sizer: Sizer | None = None
    budget: int | None = None
    allowed: dict[str, dict[str, tuple]] = field(default_factory=dict)

    def restrict(self, names: list[str]) -> SearchSpace:
        missing = [n for n in names if n not in self.methods]
        if missing:
            raise AutoPeftError(
                f"method(s) {', '.join(missing)} have no entry in the search space {self.source}; "
                f"it covers: {', '.join(self.methods)}"
            )

        def only(mapping: dict) -> dict:  # in the space's order, whatever order `names` has:
            return {n: v for n, v in mapping.items() if n in names}  # one study, one "method"

        return replace(self, methods=only(self.methods), training=only(self.training),
                       fractions=only(self.fractions), allowed=only(self.allowed))

    def signature(self) -> dict[str, str]:
        """What a trial may be drawn from, one entry per sampled parameter ("lora.r": "{4, 8}").

        Optuna refuses a categorical parameter whose choices change within a study, and other
        ranges would make one study's trials incomparable, so a study records this and a
        resumed one must present the same (`study.check_same_setup`).
        """
        entries = {METHOD_PARAM: ", ".join(self.methods)}
        for method, knobs in self.methods.items():
            entries.update({param_name(method, k): r.describe() for k, r in knobs.items()})
            entries.update({param_name(method, k): r.describe()
                            for k, r in self.training.get(method, {}).items()})
            if method in self.fractions:
                entries[param_name(method, FRACTION)] = self.fractions[method].describe()
        return entries

    def extra_rows(self, method: str) -> list[dict[str, Any]]:
        """`autopeft methods` rows for what a method block searches beyond its knobs."""
        rows = []
        if method in self.fractions:
            rows.append({"knob": FRACTION, "type": "float", "default": "-",
                         "searched": self.fractions[method].describe(),
                         "help": f"{self.fit_knob(method)} is set to store the most within "
                                 "this share of the budget"})
        for knob, rng in self.training.get(method, {}).items():
            rows.append({"knob": knob, "type": "int", "default": "request",
                         "searched": rng.describe(), "help": TRAINING_KNOBS[knob].help})
        return rows

    def fit_knob(self, method: str) -> str | None:
        """The method's budget-derived knob, if it has one."""
        return next((k for k, r in self.methods[method].items() if r.fit_budget), None)

    def for_budget(self, sizer: Sizer, budget: int) -> SearchSpace:
        """This space bound to a backbone's sizer and a budget in stored params (see module doc)."""
        if self.sizer is sizer and self.budget == budget:
            return self
        bound = replace(self, sizer=sizer, budget=int(budget), allowed={})
        allowed = {m: bound._fitting_choices(m) for m in self.methods if bound.fit_knob(m)}
        return replace(bound, allowed={m: a for m, a in allowed.items() if a})

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        """Define-by-run sampling: the method, its knobs, then the derived size knob."""
        method = trial.suggest_categorical(METHOD_PARAM, list(self.methods))
        knobs: dict[str, Any] = {}
        fit = None
        for knob, spec in self.methods[method].items():
            if spec.fit_budget:
                fit = knob
            elif spec.applies(knobs):
                knobs[knob] = spec.sample(trial, param_name(method, knob),
                                          self.allowed.get(method, {}).get(knob))
        training = {knob: spec.sample(trial, param_name(method, knob))
                    for knob, spec in self.training.get(method, {}).items()
                    if spec.applies(knobs)}
        if fit is not None:
            fraction = self.fractions[method].sample(trial, param_name(method, FRACTION))
            knobs[fit] = self.derive(method, knobs, fraction)
        candidate = {"method": method, "knobs": knobs}
        if training:
            candidate["training"] = training
        return candidate

    def derived(self, candidate: dict[str, Any]) -> dict[str, Any]:
        """`{"<method>.<knob>": value}` of the candidate's knob fit to the budget (not sampled,
        so a trial records it beside its params); empty for a method without one."""
        method = candidate["method"]
        return {param_name(method, knob): candidate["knobs"][knob]
                for knob, spec in self.methods[method].items()
                if spec.fit_budget and knob in candidate["knobs"]}

    def resolve(self, params: dict[str, Any]) -> dict[str, Any]:
        """The candidate that Optuna params (e.g. an enqueued trial's) stand for."""
        return self(optuna.trial.FixedTrial(params))

    # --- budget-derived knobs ------------------------------------------------------------
    def derive(self, method: str, knobs: dict[str, Any], fraction: float) -> Any:
        """The fit_budget knob's value that stores the most within fraction × budget."""
        if self.sizer is None or self.budget is None:
            raise AutoPeftError(
                f"{self.source}: {method}.{self.fit_knob(method)} is fit to the budget; bind "
                "the space first (SearchSpace.for_budget)")
        fit = self.fit_knob(method)
        spec = self.methods[method][fit]
        # Stored counts are integers: the slack absorbs float rounding of fraction × budget
        # and can never let a count past the budget itself.
        target = max(1.0, fraction * self.budget) + 1e-6

        def size(value: Any) -> int | None:
            return self._stored(method, {**knobs, fit: value})

        if spec.choices is not None:
            return fitting.best_choice(size, spec.choices, target)
        if spec.type is int:
            return fitting.fit_int(size, int(spec.low), int(spec.high), target)
        return fitting.fit_float(size, float(spec.low), float(spec.high), target)

    def _stored(self, method: str, knobs: dict[str, Any]) -> int | None:
        return fitting.stored_or_none(self.sizer, method, knobs)

    def _smallest(self, method: str, knobs: dict[str, Any]) -> int | None:
        """The least any value of the fit_budget knob stores with these other knobs."""
        fit = self.fit_knob(method)
        spec = self.methods[method][fit]
        ends = spec.choices if spec.choices is not None else fitting.range_ends(spec)
        sizes = [s for s in (self._stored(method, {**knobs, fit: v}) for v in ends)
                 if s is not None]
        return min(sizes, default=None)

    def _fitting_choices(self, method: str) -> dict[str, tuple]:
        """The largest grid of the other size knobs' choices in which every combination fits.

        A combination fits when the smallest value of the fit_budget knob stores within the
        budget (and the method applies). Taking a whole grid, not each knob's fitting values,
        keeps combinations such as (both blocks, no dropped layer) out when only one of the two
        fits: every candidate sampled from the grid fits.
        """
        ranges = self.methods[method]
        declared = {k.name: k for k in get_method_class(method).config_class.knobs()}
        sized = [k for k, r in ranges.items() if declared[k].affects_size and not r.fit_budget]
        pruned = [k for k in sized if ranges[k].choices is not None]
        if not pruned:
            return {}
        free = [k for k in sized if ranges[k].choices is None]  # ranges: their ends are tried
        fits: dict[tuple, bool] = {}
        for combo in itertools.product(*(ranges[k].choices for k in pruned)):
            fits[combo] = any(
                self._fits_at_least(method, dict(zip(pruned + free, combo + ends, strict=True)))
                for ends in itertools.product(*(fitting.range_ends(ranges[k]) for k in free)))
        if not any(fits.values()):
            return {}  # nothing fits: leave the method alone (the search drops or rejects it)
        options = [[s for n in range(len(ranges[k].choices), 0, -1)
                    for s in itertools.combinations(ranges[k].choices, n)] for k in pruned]
        if math.prod(len(o) for o in options) > 4096:  # too many grids: each knob on its own
            return {k: tuple(c for c in ranges[k].choices
                             if any(ok and combo[i] == c for combo, ok in fits.items()))
                    for i, k in enumerate(pruned)}
        best, best_size = None, 0
        for grid in itertools.product(*options):
            size = math.prod(len(s) for s in grid)
            if size > best_size and all(fits[c] for c in itertools.product(*grid)):
                best, best_size = grid, size
        return dict(zip(pruned, best, strict=True))

    def _fits_at_least(self, method: str, values: dict[str, Any]) -> bool:
        """Whether the smallest fit_budget value fits with these knobs (conditions applied)."""
        ranges = self.methods[method]
        knobs: dict[str, Any] = {}
        for knob in (k for k in ranges if k in values):  # conditions in sampling order
            # a condition on a knob that does not change the size may hold: keep the value
            if ranges[knob].applies(knobs) or any(n not in values for n, _ in ranges[knob].when):
                knobs[knob] = values[knob]
        smallest = self._smallest(method, knobs)
        return smallest is not None and smallest <= self.budget

    # --- defaults for the first (coverage) trials ----------------------------------------
    def default_params(self, method: str) -> dict[str, Any]:
        """Optuna params of the method's declared defaults, for the first coverage trials.

        A fit_budget knob's fraction is chosen so the derived value is the declared default
        where the fraction's range allows (on a bound space; else the largest fraction).
        """
        defaults = {k.name: k.default for k in get_method_class(method).config_class.knobs()}
        params: dict[str, Any] = {METHOD_PARAM: method}
        knobs: dict[str, Any] = {}
        fit = None
        for knob, spec in self.methods[method].items():
            if spec.fit_budget:
                fit = knob
            elif spec.applies(knobs):
                knobs[knob] = spec.clip(defaults[knob], self.allowed.get(method, {}).get(knob))
                params[param_name(method, knob)] = knobs[knob]
        if fit is not None:
            fractions = self.fractions[method]
            top = max(fractions.choices) if fractions.choices is not None else fractions.high
            stored = None
            if self.sizer is not None:
                spec = self.methods[method][fit]
                stored = self._stored(method, {**knobs, fit: spec.clip(defaults[fit])})
            share = top if stored is None else stored / self.budget
            params[param_name(method, FRACTION)] = fractions.clip(share)
        return params


def _among(value: Any, allowed: tuple) -> bool:
    """`value in allowed`, without True == 1 or 0 == False."""
    return any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed)


def param_name(method: str, knob: str) -> str:
    return f"{method}.{knob}"


def candidate_from_params(params: dict[str, Any],
                          derived: dict[str, Any] | None = None) -> dict[str, Any]:
    """Inverse of sampling: Optuna params (+ the trial's `derived` user attr) → a candidate."""
    method = params[METHOD_PARAM]
    prefix = f"{method}."
    values = {k[len(prefix):]: v for k, v in {**params, **(derived or {})}.items()
              if k.startswith(prefix)}
    values.pop(FRACTION, None)
    training = {k: values.pop(k) for k in TRAINING_KNOBS if k in values}
    candidate = {"method": method, "knobs": values}
    if training:
        candidate["training"] = training
    return candidate


# --- loading and validation --------------------------------------------------------------
def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read and validate a space file; errors name the file, the key and what is allowed."""
    path = Path(path) if path else DEFAULT_SPACE
    if not path.is_file():
        raise AutoPeftError(f"search space file '{path}' not found")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise AutoPeftError(f"{path}: not valid YAML{at} ({str(exc).splitlines()[0]}); "
                            f"see {DEFAULT_SPACE.name} for the format") from None
    if not isinstance(document, dict) or not isinstance(document.get("methods"), dict):
        raise AutoPeftError(f"{path}: expected a mapping with a 'methods' key (method → knobs)")
    methods, training, fractions = {}, {}, {}
    for method, knobs in document["methods"].items():
        method = str(method)
        ranges, train, fraction = _parse_method(path, method, knobs)
        methods[method] = ranges
        if train:
            training[method] = train
        if fraction is not None:
            fractions[method] = fraction
    if not methods:
        raise AutoPeftError(f"{path}: 'methods' is empty")
    return SearchSpace(methods, str(path), training, fractions)


def _parse_method(path: Path, method: str, knobs: Any
                  ) -> tuple[dict[str, KnobRange], dict[str, KnobRange], KnobRange | None]:
    cls = get_method_class(method)
    declared = {k.name: k for k in cls.config_class.knobs()}
    knobs = knobs or {}
    if not isinstance(knobs, dict):
        raise AutoPeftError(f"{path}: methods.{method} must map knob names to ranges")
    fittable = [k.name for k in declared.values() if k.affects_size and k.type in (int, float)]
    ranges: dict[str, KnobRange] = {}
    training: dict[str, KnobRange] = {}
    fraction_spec = None
    for knob, spec in knobs.items():
        knob = str(knob)
        where = f"{path}: methods.{method}.{knob}"
        if knob == FRACTION:
            fraction_spec = spec
            continue
        if knob not in declared and knob not in TRAINING_KNOBS:
            raise AutoPeftError(
                f"{where}: unknown knob; {method} has: {', '.join(sorted(declared))} "
                f"(and {', '.join(RESERVED)})"
            )
        target = ranges if knob in declared else training
        rng = _parse_range(where, spec, declared.get(knob) or TRAINING_KNOBS[knob])
        if rng.fit_budget:
            if knob not in fittable:
                raise AutoPeftError(
                    f"{where}: fit_budget needs a numeric knob that changes the stored size; "
                    f"{method}'s: {', '.join(fittable) or 'none'}")
            derived = [k for k, r in ranges.items() if r.fit_budget]
            if derived:
                raise AutoPeftError(
                    f"{where}: only one knob per method may fit the budget; "
                    f"{derived[0]} already does")
        _check_when(where, rng, ranges, knob)
        target[knob] = rng
    # derived knobs last: they depend on every other sampled knob
    ranges = dict(sorted(ranges.items(), key=lambda kv: kv[1].fit_budget))
    has_fit = any(r.fit_budget for r in ranges.values())
    where = f"{path}: methods.{method}.{FRACTION}"
    if fraction_spec is not None and not has_fit:
        raise AutoPeftError(f"{where}: needs a knob with fit_budget: true; {method}'s candidates: "
                            f"{', '.join(fittable) or 'none'}")
    fraction = None
    if has_fit:
        fraction = (KnobRange(float, low=0.05, high=1.0, log=True) if fraction_spec is None
                    else _parse_range(where, fraction_spec, _FRACTION_KNOB))
        if fraction.fit_budget or fraction.when:
            raise AutoPeftError(f"{where}: allowed keys: choices, low, high, log")
        values = fraction.choices if fraction.choices is not None else (fraction.low,
                                                                         fraction.high)
        if not all(0 < v <= 1 for v in values):
            raise AutoPeftError(f"{where}: fractions must lie in (0, 1], got {list(values)}")
    return ranges, training, fraction


def _check_when(where: str, rng: KnobRange, earlier: dict[str, KnobRange], knob: str) -> None:
    if rng.when and rng.fit_budget:
        raise AutoPeftError(f"{where}: a fit_budget knob is always derived; drop 'when'")
    for name, allowed in rng.when:
        ref = earlier.get(name)
        if ref is None or ref.fit_budget:
            sampled = [k for k, r in earlier.items() if not r.fit_budget]
            raise AutoPeftError(
                f"{where}: when: '{name}' must be a sampled knob listed above {knob}; "
                f"allowed: {', '.join(sampled) or 'none'}")
        for value in allowed:
            if ref.choices is not None and not _among(value, ref.choices):
                raise AutoPeftError(f"{where}: when: {name}={value!r} is never sampled; "
                                    f"choose from {list(ref.choices)}")
            if ref.choices is None and not (
                    isinstance(value, (int, float)) and ref.low <= value <= ref.high):
                raise AutoPeftError(f"{where}: when: {name}={value!r} is outside its range "
                                    f"[{ref.low:g}, {ref.high:g}]")


def _parse_range(where: str, spec: Any, knob: Knob) -> KnobRange:
    if not isinstance(spec, dict):
        raise AutoPeftError(f"{where}: expected {{choices: [...]}}, {{low: x, high: y, log: b}} "
                            "or {fit_budget: true}")
    extra = set(spec) - set(_RANGE_KEYS)
    if extra:
        raise AutoPeftError(
            f"{where}: unknown key(s) {sorted(extra)}; allowed: {', '.join(_RANGE_KEYS)}"
        )
    fit = spec.get("fit_budget", False)
    if not isinstance(fit, bool):
        raise AutoPeftError(f"{where}: fit_budget must be true or false, got {fit!r}")
    when = _parse_when(where, spec.get("when"))
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise AutoPeftError(f"{where}: choices must be a non-empty list")
        for value in choices:
            _check_value(where, value, knob)
        return KnobRange(type=knob.type, choices=tuple(choices), fit_budget=fit, when=when)
    if knob.type not in (int, float):
        raise AutoPeftError(f"{where}: a {knob.type.__name__} knob needs choices: [...]")
    if fit:  # the range only bounds the derived value; both ends have defaults
        floor = knob.minimum if knob.minimum is not None else 0
        defaults = ((max(1, floor), FIT_INT_LIMIT) if knob.type is int else (floor, 1.0))
        spec = {"low": defaults[0], "high": defaults[1], **spec}
        if spec.get("log"):
            raise AutoPeftError(f"{where}: log has no meaning for a fit_budget knob")
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise AutoPeftError(f"{where}: needs numeric low and high (or choices)") from None
    if not low < high:
        raise AutoPeftError(f"{where}: low ({low}) must be below high ({high})")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise AutoPeftError(f"{where}: log scale needs low > 0")
    _check_value(where, spec["low"], knob)
    _check_value(where, spec["high"], knob)
    return KnobRange(type=knob.type, low=low, high=high, log=log, fit_budget=fit, when=when)


def _parse_when(where: str, when: Any) -> tuple[tuple[str, tuple], ...]:
    if when is None:
        return ()
    if not isinstance(when, dict) or not when:
        raise AutoPeftError(f"{where}: when must map knob names to a value or a list of values, "
                            "e.g. {prefix_projection: true}")
    return tuple((str(name), tuple(v) if isinstance(v, list) else (v,))
                 for name, v in when.items())


def _check_value(where: str, value: Any, knob: Knob) -> None:
    if knob.choices is not None and value not in knob.choices:
        raise AutoPeftError(f"{where}: {value!r} is not allowed; choose from {list(knob.choices)}")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if knob.type in (int, float) and not numeric:
        raise AutoPeftError(f"{where}: {value!r} is not a number")
    if knob.type is int and numeric and value != int(value):
        raise AutoPeftError(f"{where}: {value!r} is not an integer")
    if knob.minimum is not None and numeric and value < knob.minimum:
        raise AutoPeftError(f"{where}: {value!r} is below the minimum {knob.minimum}")
