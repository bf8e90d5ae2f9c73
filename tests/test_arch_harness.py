"""The harness's "the method's own tensors trained and matter" check fails on broken methods.

Guards `arch_harness.assert_delta_trained_and_used`: a loss that goes down proves nothing
when the head trains anyway, so the check must catch a delta that never updates and one the
forward pass never reads.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autopeft.backbones.models import load_model, resolve_model
from autopeft.methods import build_method
from autopeft.methods.bitfit import BitFit
from autopeft.methods.lora import Lora
from tests.arch_harness import assert_delta_trained_and_used, delta_snapshot, toy_batch, train_steps


class FrozenLora(Lora):
    """LoRA whose adapters are frozen after `apply`: only the head trains."""

    def apply(self, model: nn.Module) -> nn.Module:
        model = super().apply(model)
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(False)
        return model


class UnreadBitFit(BitFit):
    """A 'delta' that changes every step but that the forward pass never reads."""

    def apply(self, model: nn.Module) -> nn.Module:
        model = super().apply(model)
        for param in model.parameters():
            param.requires_grad_(False)
        model.classifier.requires_grad_(True)
        model.unread = nn.Parameter(torch.zeros(8))
        return model

    def after_step(self, model: nn.Module, step: int) -> bool:
        with torch.no_grad():
            model.unread.add_(1.0)
        return False


def _run(tiny_bert, method):
    model = method.apply(load_model(resolve_model(str(tiny_bert)), num_labels=2, seed=0))
    batch = toy_batch()
    initial = delta_snapshot(method, model)
    train_steps(model, method, batch, lr=1e-2, steps=4)
    return method, model, initial, {k: v for k, v in batch.items() if k != "labels"}


def test_a_real_method_passes(tiny_bert):
    assert_delta_trained_and_used(*_run(tiny_bert, build_method("lora", {"r": 4})))


def test_a_frozen_delta_fails(tiny_bert):
    method = FrozenLora(build_method("lora", {"r": 4}).config)
    with pytest.raises(AssertionError, match="none of its tensors changed"):
        assert_delta_trained_and_used(*_run(tiny_bert, method))


def test_a_delta_the_forward_pass_never_reads_fails(tiny_bert):
    method = UnreadBitFit(build_method("bitfit", {}).config)
    with pytest.raises(AssertionError, match="do not change the logits"):
        assert_delta_trained_and_used(*_run(tiny_bert, method))
