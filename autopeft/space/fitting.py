"""Does it fit: every decision of whether a candidate fits a budget, and every search for the
knob value that fits best, in one module. The `Sizer` only measures; `SearchSpace` (deriving a
knob from a budget share), the first trials (each method's defaults, warm starts, portfolio
entries) and `autopeft budget` all decide here.

The integer, float and choice searches are written here rather than taken from a library: they
search a stored-parameter count that is measured on a meta model per probe (milliseconds, cached),
is monotone in the knob only in one direction that differs by knob, and can be undefined (a
method or knob value that does not apply), which `bisect` or scipy's root finders do not handle.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autopeft.errors import AutoPeftError, MethodNotApplicable
from autopeft.methods import METHODS, get_method_class
from autopeft.space.sizing import Sizer

if TYPE_CHECKING:
    from autopeft.space.space import KnobRange, SearchSpace

Size = Callable[[Any], "int | None"]  # a knob value → stored params, None where it cannot apply


def stored_or_none(sizer: Sizer, method: str, knobs: dict[str, Any]) -> int | None:
    """Stored params of a candidate; None when its knobs are invalid or the method cannot apply
    to the model (both are AutoPeftErrors, `MethodNotApplicable` among them)."""
    try:
        return sizer.measure(method, knobs).stored_params
    except AutoPeftError:
        return None


def within(stored: int | None, budget: float) -> bool:
    """Measured, and at most the budget."""
    return stored is not None and stored <= budget


def fits(stored: int | None, budget: float) -> bool:
    """A candidate the search may train: stores something, within the budget (a candidate that
    stores nothing would train only the task head)."""
    return within(stored, budget) and stored > 0


def least_first(stored: int | None) -> float:
    """Sort key: the least-storing first, what cannot be measured last."""
    return math.inf if stored is None else stored


def range_ends(rng: KnobRange) -> tuple:
    return rng.type(rng.low), rng.type(rng.high)


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


def best_choice(size: Size, choices: tuple, target: float) -> Any:
    """The choice storing the most within target; else the one storing the least."""
    sized = [(s, c) for c in choices if (s := size(c)) is not None]
    if not sized:
        return choices[0]
    fitting = [(s, c) for s, c in sized if s <= target]
    if fitting:
        return max(fitting, key=lambda sc: sc[0])[1]
    return min(sized, key=lambda sc: sc[0])[1]


def fit_int(size: Size, low: int, high: int, target: float, shrinks: bool | None = None
            ) -> int:
    """The value in [low, high] storing the most within target (sizes monotone in the value).

    `shrinks`: whether the size falls as the value grows; by default told from the two ends.
    Nothing fits the target: the least-storing end.
    """
    if shrinks is None:
        s_low, s_high = size(low), size(high)
        shrinks = s_low is not None and s_high is not None and s_high < s_low

    def value(i: int) -> int:  # index → value, so that the size grows with the index
        return high - i if shrinks else low + i

    def size_at(i: int) -> int | None:
        return size(value(i))

    n = high - low
    a, s_a = 0, size_at(0)
    if s_a is None or s_a > target:
        return value(0)  # nothing fits the target: the least-storing end
    b, s_b = n, size_at(n)
    if s_b is not None and s_b <= target:
        return value(n)
    # invariant: index a fits, index b does not; interpolate and bisect in turn
    for step in itertools.count():
        if b - a <= 1:
            break
        if step % 2 == 0 and s_b is not None and s_b > s_a:
            mid = a + int((target - s_a) * (b - a) / (s_b - s_a))
            mid = min(max(mid, a + 1), b - 1)
        else:
            mid = (a + b) // 2
        s = size_at(mid)
        if s is not None and s <= target:
            a, s_a = mid, s
        else:
            b, s_b = mid, s
    return value(a)


def fit_float(size: Size, low: float, high: float, target: float, steps: int = 60) -> float:
    """The value in [low, high] storing the most within target (sizes monotone in the value).

    Stops as soon as the stored count reaches the target's integer part (nothing in between).
    """
    s_low, s_high = size(low), size(high)
    shrinks = s_low is not None and s_high is not None and s_high < s_low

    def value(t: float) -> float:
        return high - t * (high - low) if shrinks else low + t * (high - low)

    a, s_a = 0.0, size(value(0.0))
    if s_a is None or s_a > target:
        return value(0.0)
    b, s_b = 1.0, size(value(1.0))
    if s_b is not None and s_b <= target:
        return value(1.0)
    for step in range(steps):
        if s_a >= math.floor(target):
            break
        mid = (a + b) / 2
        if step % 2 == 0 and s_b is not None and s_b > s_a:
            guess = a + (target - s_a) * (b - a) / (s_b - s_a)
            if a < guess < b:
                mid = guess
        s = size(value(mid))
        if s is not None and s <= target:
            a, s_a = mid, s
        else:
            b, s_b = mid, s
    return value(a)


def shrink(knobs: dict[str, Any], names: list[str], ranges: dict[str, KnobRange],
            allowed: dict[str, tuple], size: Callable[[dict], int | None], budget: int
            ) -> dict[str, Any]:
    """Size knobs moved, one at a time, to the fitting value nearest the configuration's own.

    The first pass may push a knob to its least-storing end so the next knobs can fit; the
    second gives each knob back as much as the others now leave room for.
    """
    fitted = dict(knobs)
    if not names or within(size(fitted), budget):
        return fitted
    for _ in range(2):
        for name in names:
            def size_with(value: Any, name: str = name) -> int | None:
                return size({**fitted, name: value})

            fitted[name] = nearest_fitting(ranges[name], allowed.get(name), knobs[name],
                                            size_with, budget)
    return fitted


def nearest_fitting(spec: KnobRange, allowed: tuple | None, original: Any,
                     size: Callable[[Any], int | None], budget: int) -> Any:
    """The allowed value nearest `original` that fits; else the least-storing one."""
    choices = allowed or spec.choices
    if choices is not None:
        sized = [(s, c) for c in choices if (s := size(c)) is not None]
        fitting = [c for s, c in sized if s <= budget]
        if fitting:
            return min(fitting, key=lambda c: abs(c - original))
        return min(sized, key=lambda sc: sc[0])[1] if sized else original
    low, high = spec.type(spec.low), spec.type(spec.high)
    end = min((low, high), key=lambda v: least_first(size(v)))  # the least-storing end
    if within(size(original), budget) or not within(size(end), budget):
        return original if within(size(original), budget) else end
    if spec.type is int:  # from the original toward the end: over budget, then fitting
        step = 1 if end > original else -1
        path = range(original, end + step, step)
        return path[bisect.bisect_left(path, True, key=lambda v: within(size(v), budget))]
    inside, outside = float(end), float(original)
    for _ in range(50):
        middle = (inside + outside) / 2
        inside, outside = (middle, outside) if within(size(middle), budget) else (inside, middle)
    return inside


def fitting_bound(sizer: Sizer, method: str, knob: str, budget: int, limit: int = 4096,
                  **fixed: Any) -> tuple[str, int | None]:
    """The end of an integer size knob's range [1, limit] that fits the budget.

    ("max", v): the largest value within budget, for knobs whose size grows with the value
    (ranks, bottlenecks); ("min", v): the smallest, for knobs whose size shrinks as the value
    grows (LST's reduction factor). v is None when no value fits. A value the method's config
    rejects (e.g. IncreLoRA's rank budget above its per-matrix cap) counts as not fitting; such
    limits sit at the far end of a knob's range.
    """
    def size(value: int) -> int | None:
        return stored_or_none(sizer, method, {**fixed, knob: value})

    one, two = size(1), size(2)
    shrinks = one is not None and two is not None and two < one
    value = fit_int(size, 1, limit, budget, shrinks=shrinks)
    return ("min" if shrinks else "max"), value if within(size(value), budget) else None


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


def budget_overview(sizer: Sizer, budget: int) -> list[dict[str, Any]]:
    """Per registered method and choice of its enum size knobs, what fits `budget` on the model:
    the fitting end of its first integer size knob, or whether it fits at all."""
    rows = []
    for name, cls in METHODS.items():
        knobs = cls.config_class.knobs()
        int_size = [k for k in knobs if k.affects_size and k.type is int and not k.choices]
        enum_size = [k for k in knobs if k.affects_size and k.choices]
        variants = [dict(zip([k.name for k in enum_size], combo, strict=True))
                    for combo in itertools.product(*[k.choices for k in enum_size])] or [{}]
        for fixed in variants:
            label = ", ".join(f"{k}={v}" for k, v in fixed.items())
            if stored_or_none(sizer, name, fixed) is None:
                continue  # not applicable to this model
            if int_size:
                knob = int_size[0]
                end, best = fitting_bound(sizer, name, knob.name, budget, **fixed)
                if best is None:
                    stored = sizer.measure(name, {**fixed, knob.name: 1}).stored_params
                    fit = f"does not fit at any {knob.name}"
                else:
                    stored = sizer.measure(name, {**fixed, knob.name: best}).stored_params
                    fit = f"{end} {knob.name}={best}"
            else:
                stored = sizer.measure(name, fixed).stored_params
                fit = "fits" if stored <= budget else "does not fit"
            rows.append({"method": name, "variant": label, "fit": fit, "stored_params": stored})
    return rows
