"""Budgets of stored, task-specific parameters: parsing and exact counting on live models."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from autopeft.errors import AutoPeftError

_ACCEPTED = (
    "accepted: a percentage (0.5%), a fraction below 1 (0.005), "
    "or a count (120k, 1.2M, 120000)"
)
_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
_PATTERN = re.compile(r"^\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>%|[kKmMbB])?\s*$")


@dataclass(frozen=True)
class Budget:
    """A cap on stored parameters: either a fraction of the backbone or an absolute count."""

    spec: str
    fraction: float | None = None
    count: int | None = None

    def params(self, backbone_params: int) -> int:
        """The cap in parameters for a backbone of this size (fractions round down).

        A fraction that rounds to no parameter at all is refused here, where the model is
        known: a zero cap would make every candidate over budget (or divide by zero).
        """
        if self.count is not None:
            return self.count
        cap = int(self.fraction * backbone_params)
        if cap < 1:
            raise AutoPeftError(
                f"budget '{self.spec}' is less than one parameter of this model's "
                f"{backbone_params:,}; {_ACCEPTED}"
            )
        return cap

    def describe(self, backbone_params: int) -> str:
        cap = self.params(backbone_params)
        return f"{self.spec} = {cap:,} params ({cap / backbone_params:.3%} of {backbone_params:,})"


def parse_budget(spec: str) -> Budget:
    """Parse `0.5%`, `0.005`, `120k`, `1.2M` or `120000`.

    A bare number below 1 is a fraction of the backbone; 1 or more is a parameter count.
    """
    match = _PATTERN.match(str(spec))
    if not match:
        raise AutoPeftError(f"invalid budget '{spec}'; {_ACCEPTED}")
    number = float(match["num"])
    unit = (match["unit"] or "").lower()
    if not math.isfinite(number):  # hundreds of digits read as inf
        raise AutoPeftError(f"budget '{spec}' is too large; {_ACCEPTED}")
    if number <= 0:
        raise AutoPeftError(f"budget '{spec}' must be positive; {_ACCEPTED}")
    if unit == "%":
        if number > 100:
            raise AutoPeftError(f"budget '{spec}' is over 100%; {_ACCEPTED}")
        return Budget(spec=spec.strip(), fraction=number / 100)
    if unit == "" and number < 1:
        return Budget(spec=spec.strip(), fraction=number)
    count = number * _SUFFIXES[unit]
    if count != int(count):
        raise AutoPeftError(f"budget '{spec}' is not a whole number of parameters; {_ACCEPTED}")
    return Budget(spec=spec.strip(), count=int(count))
