"""One check every method passes on every architecture it applies to (tiny random models).

A learnable toy task (label = whether token 7 occurs), a few AdamW steps, then: the loss went
down, the stored count equals an independent count, and the saved artifact loads back to
identical logits. Methods that cannot apply to an architecture must say so with
`MethodNotApplicable`, which the caller asserts explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from autopeft.methods import Method, build_method
from autopeft.models import load_model, resolve_model
from autopeft.testing import TINY_ARCHITECTURES
from tests.roundtrip import assert_artifact_roundtrip

ARCHITECTURES = tuple(TINY_ARCHITECTURES)
SIGNAL_TOKEN = 7


def toy_batch(size: int = 16, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids in [10, 1000) (no special tokens), half of the rows carrying token 7."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 1000, (size, length), generator=generator)
    labels = torch.arange(size) % 2
    ids[labels == 1, length // 2] = SIGNAL_TOKEN
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def train_steps(model: nn.Module, method: Method, batch: dict, lr: float, steps: int
                ) -> list[float]:
    """The training loop's contract in miniature: hooks, penalty, optimizer rebuilds."""
    method.start(model, steps)
    optimizer = torch.optim.AdamW(method.parameter_groups(model, 0.0), lr=lr)
    losses = []
    model.train()
    for step in range(1, steps + 1):
        loss = model(**batch).loss
        penalty = method.penalty(model)
        (loss if penalty is None else loss + penalty).backward()
        method.after_backward(model, step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if method.after_step(model, step):
            optimizer = torch.optim.AdamW(method.parameter_groups(model, 0.0), lr=lr)
        losses.append(loss.item())
    return losses


class ToySource:
    """A `BatchSource` over the toy batch, for methods that look at data in `prepare`."""

    def __init__(self, batch: dict):
        self.batch = batch

    def batches(self, batch_size: int):
        for start in range(0, len(self.batch["labels"]), batch_size):
            yield {k: v[start:start + batch_size] for k, v in self.batch.items()}


def check_method(
    model_dir: Path,
    tmp_path: Path,
    name: str,
    knobs: dict,
    expected_stored: Callable[[nn.Module], int],
    lr: float = 1e-2,
    steps: int = 12,
) -> nn.Module:
    """Apply, train, count and round-trip `name` on the checkpoint at `model_dir`."""
    torch.manual_seed(0)
    source = resolve_model(str(model_dir))
    method = build_method(name, knobs)
    model = method.apply(load_model(source, num_labels=2, seed=0))
    batch = toy_batch()
    method.prepare(model, ToySource(batch))
    losses = train_steps(model, method, batch, lr, steps)
    assert losses[-1] < losses[0], f"{name} did not learn: {losses}"
    assert method.stored_params(model) == expected_stored(model)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return assert_artifact_roundtrip(tmp_path, model_dir, method, model, inputs)
