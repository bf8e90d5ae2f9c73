"""Human-readable numbers for plots and the summary, so both show values the same way."""

from __future__ import annotations

from typing import Any

MISSING = "—"


def is_missing(value: Any) -> bool:
    """None, NaN and pandas' NA all count as 'no value'."""
    if value is None:
        return True
    try:
        return bool(value != value)  # only NaN differs from itself
    except (TypeError, ValueError):  # pandas.NA refuses bool()
        return True


def count(value: Any) -> str:
    """An integer with thousands separators: 12,345."""
    return MISSING if is_missing(value) else f"{int(value):,}"


def score(value: Any) -> str:
    """A metric to four decimals, enough to tell close trials apart."""
    return MISSING if is_missing(value) else f"{float(value):.4f}"


def percent(fraction: Any, digits: int = 1) -> str:
    """A fraction as a percentage: 0.123 -> 12.3%."""
    return MISSING if is_missing(fraction) else f"{100 * float(fraction):.{digits}f}%"


def knob(value: Any) -> str:
    """A knob value; tiny or huge floats (learning rates) in scientific notation."""
    if is_missing(value):
        return MISSING
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)


def knobs(values: dict[str, Any], sep: str = ", ") -> str:
    """`r=8, alpha=16, learning_rate=3.00e-04`."""
    return sep.join(f"{name}={knob(v)}" for name, v in sorted(values.items())) or MISSING


def dev_score(mean: Any, std: Any = None, seeds: Any = 0) -> str:
    """A Pareto point's dev score: `0.8123 ± 0.0100 (K=3)` over K retrained seeds.

    K=1 has no spread: `0.8123 (K=1)`; K=0 (the trial artifact evaluated) is the bare score.
    """
    if is_missing(mean):
        return MISSING
    k = 0 if is_missing(seeds) else int(seeds)
    if k == 0:
        return score(mean)
    if k == 1 or is_missing(std):
        return f"{score(mean)} (K={k})"
    return f"{score(mean)} ± {score(std)} (K={k})"


def share(fraction: Any, digits: int = 3) -> str:
    """A fraction as a percentage with `digits` significant digits, for heatmap cells where
    sparse methods change 0.012% and LoRA 100%: `0.012%`, `12.3%`, `100%`."""
    if is_missing(fraction):
        return MISSING
    value = 100 * float(fraction)
    return "0%" if value == 0 else f"{value:.{digits}g}%"
