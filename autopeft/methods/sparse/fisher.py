"""Empirical Fisher information and global top-k selection over the backbone."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from autopeft.methods.sparse.engine import backbone_tensors


def empirical_fisher(model: nn.Module, batches: Iterable[dict]) -> dict[str, torch.Tensor]:
    """Σ over batches of (∂ loss / ∂θ)² for every backbone tensor, w.r.t. the gold labels.

    With batches of one example this is the per-example empirical Fisher (FISH); larger batches
    give the cheaper per-batch estimate.
    """
    tensors = backbone_tensors(model)
    previous = {name: p.requires_grad for name, p in tensors.items()}
    scores = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in tensors.items()}
    was_training = model.training
    model.eval()  # no dropout noise in the scores
    try:
        for p in tensors.values():
            p.requires_grad_(True)
        for batch in batches:
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for name, p in tensors.items():
                if p.grad is not None:
                    scores[name] += p.grad.detach().float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        for name, p in tensors.items():
            p.requires_grad_(previous[name])
        model.train(was_training)
    return scores


def top_k(scores: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Flat indices, per tensor, of the k largest scores across all tensors (exactly k)."""
    names = list(scores)
    flat = torch.cat([scores[n].flatten() for n in names])
    k = min(k, flat.numel())
    chosen = torch.topk(flat, k, sorted=False).indices
    out, offset = {}, 0
    for name in names:
        size = scores[name].numel()
        mine = chosen[(chosen >= offset) & (chosen < offset + size)] - offset
        out[name] = mine.sort().values
        offset += size
    return out


def density_count(density: float, total: int) -> int:
    """Entries selected for a density (fraction of the backbone), rounded down."""
    return int(math.floor(density * total + 1e-9))
