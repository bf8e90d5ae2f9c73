"""BitFit (Ben Zaken et al. 2022): train only the bias terms of the backbone."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autopeft.errors import MethodNotApplicable
from autopeft.methods.base import Method, MethodConfig, freeze, learning_rate_knob, unfreeze_head
from autopeft.methods.targets import is_head_param, model_type


@dataclass
class BitFitConfig(MethodConfig):
    learning_rate: float = learning_rate_knob(5e-3)


class BitFit(Method):
    name = "bitfit"
    summary = "train all bias terms (attention, FFN, LayerNorm) and the head"
    family = "bitfit"
    config_class = BitFitConfig

    def apply(self, model: nn.Module) -> nn.Module:
        freeze(model)
        biases = [p for n, p in model.named_parameters()
                  if n.endswith(".bias") and not is_head_param(n)]
        if not biases:
            raise MethodNotApplicable(
                f"bitfit: this '{model_type(model)}' model has no bias terms to train")
        for param in biases:
            param.requires_grad_(True)
        unfreeze_head(model)
        return model
