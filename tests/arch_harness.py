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

from autopeft.backbones.models import load_model, resolve_model
from autopeft.methods import Method, build_method
from autopeft.methods.targets import is_head_param
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
    initial = delta_snapshot(method, model)
    losses = train_steps(model, method, batch, lr, steps)
    assert losses[-1] < losses[0], f"{name} did not learn: {losses}"
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    assert_delta_trained_and_used(method, model, initial, inputs)
    assert method.stored_params(model) == expected_stored(model)
    return assert_artifact_roundtrip(tmp_path, model_dir, method, model, inputs)


def delta_snapshot(method: Method, model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the method's own trainable tensors (its delta less the head)."""
    return {k: t.detach().clone() for k, t in method.delta_state(model).items()
            if not is_head_param(k)}


def assert_delta_trained_and_used(method: Method, model: nn.Module,
                                  initial: dict[str, torch.Tensor], inputs: dict) -> None:
    """The method's own tensors changed in training, and the logits depend on that change.

    The head always trains, so a falling loss alone passes for a delta that never updates or
    that the forward pass never reads. Here the delta tensors are put back to where training
    started (tensors created during training, e.g. by a phase switch or a rank resize, to zero)
    and the logits must move.
    """
    trained = {k: t for k, t in method.delta_state(model).items() if not is_head_param(k)}
    start = {k: initial[k] if k in initial and initial[k].shape == t.shape
             else torch.zeros_like(t) for k, t in trained.items()}
    changed = [k for k, t in trained.items() if not torch.equal(t.detach(), start[k])]
    assert changed, f"{method.name}: none of its tensors changed in training ({list(trained)})"
    model.eval()
    with torch.no_grad():
        after = model(**inputs).logits
        kept = {k: trained[k].detach().clone() for k in changed}
        for k in changed:
            trained[k].copy_(start[k])
        before = model(**inputs).logits
        for k in changed:
            trained[k].copy_(kept[k])
        assert torch.equal(model(**inputs).logits, after)  # put back exactly
    assert not torch.allclose(before, after, rtol=0, atol=1e-6), (
        f"{method.name}: its trained tensors do not change the logits")
