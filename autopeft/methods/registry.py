"""Registered methods by name: what `--methods` takes and what trials.csv shows."""

from __future__ import annotations

import difflib

from autopeft.errors import AutoPeftError
from autopeft.methods.adapters import HoulsbyAdapter, ParallelAdapter, PfeifferAdapter
from autopeft.methods.base import Method
from autopeft.methods.bitfit import BitFit
from autopeft.methods.full import FullFineTuning
from autopeft.methods.lora import Lora
from autopeft.methods.lora_family.adalora import AdaLora
from autopeft.methods.lora_family.dylora import DyLora
from autopeft.methods.lora_family.increlora import IncreLora
from autopeft.methods.lora_family.krona import Krona
from autopeft.methods.prompts import PrefixTuning, PromptTuning, PTuning
from autopeft.methods.side import AttentionFusion, LadderSideTuning
from autopeft.methods.sparse.bias_pruning import SBitFit, UBitFit
from autopeft.methods.sparse.diff_pruning import DiffPruning
from autopeft.methods.sparse.fisher_mask import ChildTuningD, Fish
from autopeft.methods.sparse.threshold_mask import ThresholdMasking
from autopeft.methods.spt import Spt

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        FullFineTuning, BitFit, Lora,
        DiffPruning, Fish, ChildTuningD, UBitFit, SBitFit, ThresholdMasking,
        HoulsbyAdapter, PfeifferAdapter, ParallelAdapter,
        Spt,
        DyLora, IncreLora, Krona, AdaLora,
        LadderSideTuning, AttentionFusion,
        PromptTuning, PrefixTuning, PTuning,
    )
}

# Each method's family (its class says it): the sweep report draws one line per family (the
# best configuration of the family at each budget), so every registered method must have one.
METHOD_FAMILIES: dict[str, str] = {name: cls.family for name, cls in METHODS.items()}


def get_method_class(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        close = [m for m in sorted(METHODS) if m.startswith(name)] or difflib.get_close_matches(
            name, METHODS, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise AutoPeftError(
            f"unknown method '{name}'; {hint}registered: {', '.join(sorted(METHODS))}"
        ) from None


def build_method(name: str, knobs: dict) -> Method:
    cls = get_method_class(name)
    return cls(cls.config_class.from_dict(knobs, name))


def parse_method_list(spec: str | None) -> list[str]:
    """`lora,bitfit` → validated names; None → every registered method."""
    if not spec:
        return list(METHODS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        get_method_class(name)
    return list(dict.fromkeys(names))
