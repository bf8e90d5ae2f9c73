"""Exact stored-parameter counts of candidates before any training.

The method is applied to the architecture on the meta device (shapes, no weights), so the count
is the one the live model will have, at a cost of milliseconds; results are cached on the knobs
that change the size.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from autopeft.backbones.models import ModelSource, build_meta_model
from autopeft.errors import AutoPeftError
from autopeft.methods import build_method
from autopeft.methods.targets import is_head_param
from autopeft.space.budget import count_params


@dataclass(frozen=True)
class Footprint:
    stored_params: int  # charged to the budget
    head_params: int  # reported separately


class Sizer:
    """Measures candidates for one backbone; picklable (the meta model is rebuilt per call)."""

    def __init__(self, source: ModelSource, num_labels: int):
        self.source = source
        self.num_labels = num_labels
        self._cache: dict[tuple, Footprint] = {}

    def backbone_params(self) -> int:
        """Parameters of the pretrained backbone, excluding the task head."""
        model = build_meta_model(self.source, self.num_labels)
        head = sum(p.numel() for n, p in model.named_parameters() if is_head_param(n))
        return count_params(model) - head

    def measure(self, method_name: str, knobs: dict[str, Any]) -> Footprint:
        method = build_method(method_name, knobs)
        key = (method_name, method.config.size_key())
        if key not in self._cache:
            model = method.apply(build_meta_model(self.source, self.num_labels))
            self._cache[key] = Footprint(method.stored_params(model), method.head_params(model))
        return self._cache[key]

    def fitting_bound(self, method_name: str, knob: str, budget: int, limit: int = 4096,
                      **fixed: Any) -> tuple[str, int | None]:
        """The end of an integer size knob's range that fits the budget.

        ("max", v): the largest value within budget, for knobs whose size grows with the value
        (ranks, bottlenecks); ("min", v): the smallest, for knobs whose size shrinks as the value
        grows (LST's reduction factor). v is None when no value in [1, limit] fits. A value the
        method's config rejects (e.g. IncreLoRA's rank budget above its per-matrix cap) counts
        as not fitting; such limits sit at the far end of a knob's range.
        """
        def fits(value: int) -> bool:
            try:
                stored = self.measure(method_name, {**fixed, knob: value}).stored_params
            except AutoPeftError:
                return False
            return stored <= budget

        values = range(1, limit + 1)
        if self._shrinks_with(method_name, knob, fixed):
            first = bisect.bisect_left(values, True, key=fits)
            return "min", values[first] if first < len(values) else None
        first_over = bisect.bisect_left(values, True, key=lambda v: not fits(v))
        return "max", values[first_over - 1] if first_over else None

    def _shrinks_with(self, method_name: str, knob: str, fixed: dict[str, Any]) -> bool:
        try:
            one, two = (self.measure(method_name, {**fixed, knob: v}).stored_params
                        for v in (1, 2))
        except AutoPeftError:
            return False
        return two < one
