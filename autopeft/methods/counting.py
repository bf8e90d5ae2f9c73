"""Counting a model's parameters as a budget counts them: every method measures its delta with
this, so it sits with the methods, below the budget that compares the counts (`space/`)."""

from __future__ import annotations

from torch import nn


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Parameters of a module, each shared tensor once (tied embeddings are stored once)."""
    seen: set[int] = set()
    total = 0
    for param in module.parameters():
        if id(param) in seen or (trainable_only and not param.requires_grad):
            continue
        seen.add(id(param))
        total += param.numel()
    return total


def trainable_line(trainable: int, total: int) -> str:
    """The line peft's `print_trainable_parameters` prints, so logs read the same."""
    return (
        f"trainable params: {trainable:,d} || all params: {total:,d} "
        f"|| trainable%: {100 * trainable / max(total, 1):.4f}"
    )
