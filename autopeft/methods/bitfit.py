"""BitFit (Ben Zaken et al. 2022): train only the bias terms of the backbone."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autopeft.methods.base import Method, MethodConfig, freeze, learning_rate_knob, unfreeze_head


@dataclass
class BitFitConfig(MethodConfig):
    learning_rate: float = learning_rate_knob(5e-3)


class BitFit(Method):
    name = "bitfit"
    summary = "train all bias terms (attention, FFN, LayerNorm) and the head"
    config_class = BitFitConfig

    def apply(self, model: nn.Module) -> nn.Module:
        freeze(model)
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.requires_grad_(True)
        unfreeze_head(model)
        return model
