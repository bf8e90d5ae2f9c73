"""Full fine-tuning: the reference point; feasible only when the budget covers the backbone."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autopeft.methods.base import Method, MethodConfig, knob, learning_rate_knob


@dataclass
class FullConfig(MethodConfig):
    learning_rate: float = learning_rate_knob(1e-4)
    weight_decay: float = knob(0.01, "AdamW weight decay (never on biases/LayerNorm)", minimum=0.0)


class FullFineTuning(Method):
    name = "full"
    summary = "train every parameter (stores a full copy of the backbone)"
    family = "full"
    config_class = FullConfig

    def apply(self, model: nn.Module) -> nn.Module:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
