"""LoRA (Hu et al. 2021) through Hugging Face `peft`: low-rank updates on chosen projections."""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig as PeftLoraConfig
from peft.tuners.lora import LoraLayer
from torch import nn

from autopeft.methods.base import MethodConfig, knob, learning_rate_knob, targets_knob
from autopeft.methods.peft_backed import PeftBackedMethod
from autopeft.methods.peft_backed import peft_quietly as peft_quietly  # re-export: old home
from autopeft.methods.targets import resolve_target_set


@dataclass
class LoraConfig(MethodConfig):
    r: int = knob(8, "rank of each update", minimum=1, affects_size=True)
    lora_alpha: int = knob(16, "scaling numerator (update scaled by alpha / r)", minimum=1)
    lora_dropout: float = knob(0.05, "dropout on the LoRA input", minimum=0.0)
    targets: str = targets_knob()
    learning_rate: float = learning_rate_knob(2e-3)


class Lora(PeftBackedMethod):
    name = "lora"
    summary = "low-rank updates B·A on attention/FFN projections (peft)"
    family = "lora"
    config_class = LoraConfig

    def _peft_config(self, model: nn.Module) -> PeftLoraConfig:
        cfg: LoraConfig = self.config
        targets, transposed = resolve_target_set(model, cfg.targets)
        return PeftLoraConfig(
            **self._peft_options(model),
            r=cfg.r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
            # GPT-2's Conv1D stores its weight transposed
            fan_in_fan_out=transposed,
        )

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """A rank-r update B·A changes every entry of the adapted weight."""
        return {f"{name}.weight": m.weight.numel()
                for name, m in model.named_modules() if isinstance(m, LoraLayer)}
