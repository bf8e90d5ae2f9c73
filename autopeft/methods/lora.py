"""LoRA (Hu et al. 2021) through Hugging Face `peft`: low-rank updates on chosen projections."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from autopeft.methods.base import Method, MethodConfig, knob, learning_rate_knob, targets_knob
from autopeft.methods.targets import head_module_names, resolve_target_set


@dataclass
class LoraConfig(MethodConfig):
    r: int = knob(8, "rank of each update", minimum=1, affects_size=True)
    lora_alpha: int = knob(16, "scaling numerator (update scaled by alpha / r)", minimum=1)
    lora_dropout: float = knob(0.05, "dropout on the LoRA input", minimum=0.0)
    targets: str = targets_knob()
    learning_rate: float = learning_rate_knob(2e-3)


class Lora(Method):
    name = "lora"
    summary = "low-rank updates B·A on attention/FFN projections (peft)"
    config_class = LoraConfig

    def _peft_config(self, model: nn.Module) -> PeftLoraConfig:
        cfg: LoraConfig = self.config
        targets, transposed = resolve_target_set(model, cfg.targets)
        return PeftLoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=cfg.r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
            # GPT-2's Conv1D stores its weight transposed
            fan_in_fan_out=transposed,
            modules_to_save=head_module_names(model),
        )

    def apply(self, model: nn.Module) -> nn.Module:
        with peft_quietly():
            return get_peft_model(model, self._peft_config(model))

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """A rank-r update B·A changes every entry of the adapted weight."""
        return {f"{name}.weight": m.weight.numel()
                for name, m in model.named_modules() if isinstance(m, LoraLayer)}

    def save(self, model: nn.Module, directory: Path) -> None:
        """peft's own layout (adapter_config.json + adapter_model.safetensors)."""
        model.save_pretrained(str(directory))

    def load(self, model: nn.Module, directory: Path) -> nn.Module:
        with peft_quietly():
            return PeftModel.from_pretrained(model, str(directory))


@contextmanager
def peft_quietly():
    """peft calls `is_gradient_checkpointing`, which transformers 5 deprecates; not ours to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield
