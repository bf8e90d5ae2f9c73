"""Exact stored-parameter counts of candidates before any training.

The method is applied to the architecture on the meta device (shapes, no weights), so the count
is the one the live model will have, at a cost of milliseconds; results are cached on the knobs
that change the size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autopeft.backbones.models import ModelSource, build_meta_model
from autopeft.methods import build_method
from autopeft.methods.counting import count_params
from autopeft.methods.targets import is_head_param


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
