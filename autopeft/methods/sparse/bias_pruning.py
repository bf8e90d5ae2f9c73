"""U-BitFit and S-BitFit: BitFit pruned to a budget by each bias's first-order effect on the loss.

A short warm-up of plain BitFit (all backbone biases + head, AdamW, no dropout) scores every bias
entry by Σ_t |g_t · Δb_t|: the gradient at step t times the change step t made. Each term is the
first-order estimate of how much that entry moved the loss in that step, so the sum is an entry's
share of the warm-up's progress. Summing per step (rather than final gradient × total change)
keeps every term a small-step Taylor estimate, averages over the warm-up's different batches, and
does not vanish for entries whose gradient has already been driven to ~0 by the end.

Then every trained value goes back to where it started (biases to the pretrained values, head to
its seeded initialisation) and only the kept entries train: U-BitFit keeps the top-k entries
through the sparse-update engine; S-BitFit keeps whole bias vectors (no indices to store).
"""

from __future__ import annotations

import itertools
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from autopeft.errors import AutoPeftError
from autopeft.methods.base import (
    DELTA_FILE,
    BatchSource,
    Method,
    MethodConfig,
    freeze,
    knob,
    learning_rate_knob,
    unfreeze_head,
)
from autopeft.methods.sparse import engine
from autopeft.methods.sparse.base import SparseDeltaMethod
from autopeft.methods.sparse.fisher import density_count, top_k
from autopeft.methods.targets import is_head_param

WARMUP_BATCH_SIZE = 16  # a scoring run, not the real training: small batches, more steps per pass


@dataclass
class BiasPruningConfig(MethodConfig):
    density: float = knob(0.5, "fraction of the backbone's bias entries kept (k = floor(d·N))",
                          minimum=0.0, affects_size=True)
    warmup_steps: int = knob(20, "plain-BitFit AdamW steps used to score the biases", minimum=1)
    learning_rate: float = learning_rate_knob(5e-3)


def bias_tensors(model: nn.Module) -> dict[str, nn.Parameter]:
    """Backbone bias vectors (attention, FFN, LayerNorm, pooler): BitFit's candidates, no head."""
    return {n: p for n, p in engine.backbone_tensors(model).items() if n.endswith(".bias")}


def repeat_batches(data: BatchSource, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """Pass over the data again and again, so a warm-up may be longer than the train split."""
    while True:
        empty = True
        for batch in data.batches(batch_size):
            empty = False
            yield batch
        if empty:
            raise AutoPeftError("no training batches to score the biases with")


def warmup_saliency(
    model: nn.Module,
    tensors: dict[str, nn.Parameter],
    batches: Iterator[dict[str, torch.Tensor]],
    steps: int,
    lr: float,
) -> dict[str, torch.Tensor]:
    """Σ_t |g_t · Δθ_t| per entry of `tensors` over `steps` AdamW steps that also train the head.

    Leaves the model as it found it: values, requires_grad flags, no gradients, train/eval mode.
    """
    head = [p for n, p in model.named_parameters() if is_head_param(n)]
    trained = list(tensors.values()) + head
    snapshot = [p.detach().clone() for p in trained]
    flags = [p.requires_grad for p in trained]
    scores = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in tensors.items()}
    was_training = model.training
    model.eval()  # no dropout noise in the scores
    try:
        for p in trained:
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
        for batch in itertools.islice(batches, steps):
            optimizer.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            before = {n: (p.detach().float().clone(), p.grad) for n, p in tensors.items()}
            optimizer.step()
            for name, p in tensors.items():
                value, grad = before[name]
                if grad is not None:
                    scores[name] += (grad.float() * (p.detach().float() - value)).abs()
    finally:
        model.zero_grad(set_to_none=True)  # nothing may leak into the first real step
        with torch.no_grad():
            for p, value in zip(trained, snapshot, strict=True):
                p.copy_(value)
        for p, flag in zip(trained, flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    return scores


def greedy_vectors(scores: dict[str, torch.Tensor], k: int) -> list[str]:
    """Whole tensors, best mean score first, each taken while the total still fits in k.

    Mean, not sum: the budget is counted in entries, so score per stored entry is the knapsack
    ratio; by the sum, large FFN vectors would win merely for being large. A vector that does not
    fit is skipped and smaller ones after it may still fill the remainder.
    """
    order = sorted(scores, key=lambda n: -scores[n].float().mean().item())  # stable on ties
    kept, used = set(), 0
    for name in order:
        if used + scores[name].numel() <= k:
            kept.add(name)
            used += scores[name].numel()
    return [n for n in scores if n in kept]


class BiasPruning(Method):
    """Shared by U- and S-BitFit: candidates, the planned k, warm-up scoring; `keep` differs.

    What is saved differs too, so `artifact_files` is not set here: U-BitFit's come from
    `SparseDeltaMethod`, S-BitFit's (whole vectors, `Method.save`) from `Method`.
    """

    family = "sparse"
    config_class = BiasPruningConfig

    def apply(self, model: nn.Module) -> nn.Module:
        freeze(model)
        unfreeze_head(model)
        return model

    def planned(self, model: nn.Module) -> int:
        """k = floor(density · backbone bias entries), known from shapes alone (meta device)."""
        total = sum(p.numel() for p in bias_tensors(model).values())
        return min(total, density_count(self.config.density, total))

    def prepare(self, model: nn.Module, data: BatchSource) -> None:
        cfg: BiasPruningConfig = self.config
        batches = repeat_batches(data, WARMUP_BATCH_SIZE)
        scores = warmup_saliency(model, bias_tensors(model), batches, cfg.warmup_steps,
                                 cfg.learning_rate)
        self.keep(model, scores)

    @abstractmethod
    def keep(self, model: nn.Module, scores: dict[str, torch.Tensor]) -> None:
        """Make the chosen (already restored) biases trainable, within `planned(model)`."""


class UBitFit(BiasPruning, SparseDeltaMethod):
    """Exactly k entries, trained, counted and saved through the sparse-update engine."""

    name = "u_bitfit"
    summary = "U-BitFit: train the top-k bias entries by warm-up |gradient × change| (sparse)"

    def keep(self, model: nn.Module, scores: dict[str, torch.Tensor]) -> None:
        engine.attach(model, top_k(scores, self.planned(model)))


class SBitFit(BiasPruning):
    """Whole bias vectors, greedily within k: stores only values; realised count may be < k."""

    name = "s_bitfit"
    summary = "S-BitFit: train whole bias vectors chosen by warm-up |gradient × change| within k"

    _kept: list[str] | None = None  # None until prepare/load has chosen

    def keep(self, model: nn.Module, scores: dict[str, torch.Tensor]) -> None:
        self._mark(model, greedy_vectors(scores, self.planned(model)))

    def _mark(self, model: nn.Module, names: list[str]) -> None:
        params = dict(model.named_parameters())
        for name in names:
            params[name].requires_grad_(True)
        self._kept = names

    def stored_params(self, model: nn.Module) -> int:
        """The cap k until vectors are chosen (an upper bound); then their exact entry count."""
        return self.planned(model) if self._kept is None else super().stored_params(model)

    def load(self, model: nn.Module, directory: Path) -> nn.Module:
        """Method.load, then the saved vectors trainable again, as they were when saved."""
        model = super().load(model, directory)
        with safe_open(str(directory / DELTA_FILE), framework="pt") as saved:
            names = saved.keys()
        self._mark(model, [n for n in names if not is_head_param(n)])
        return model
