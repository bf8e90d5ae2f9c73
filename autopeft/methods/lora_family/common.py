"""Pieces the peft-based LoRA variants share: which modules they adapt, and on what layer type."""

from __future__ import annotations

from torch import nn
from transformers.pytorch_utils import Conv1D

from autopeft.methods.lora import peft_quietly
from autopeft.methods.targets import ROLE_SETS, resolve_roles

peft_quietly = peft_quietly  # one name for the variants; lora.py keeps its own


def target_modules(model: nn.Module, targets: str) -> tuple[list[str], bool]:
    """Full names of the projections a `targets` choice (qv/attn/all) adapts, and whether they
    are GPT-2 Conv1D layers (weight stored transposed: peft's `fan_in_fan_out`)."""
    names = resolve_roles(model, ROLE_SETS[targets])
    return names, isinstance(model.get_submodule(names[0]), Conv1D)
