"""The shared base of methods backed by Hugging Face `peft` (LoRA, KronA, AdaLoRA, prompts).

peft builds, saves and loads these methods; what each one owns is its peft config (built in
`_peft_config` on `_peft_options`) and its own accounting and hooks. The artifact is peft's own
layout, so plain peft reads it too.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from peft import PeftConfig, PeftModel, TaskType, get_peft_model
from torch import nn

from autopeft.methods.base import ArtifactFile, Method
from autopeft.methods.targets import head_module_names

ADAPTER_CONFIG = ArtifactFile("adapter_config.json", "peft's adapter configuration")
ADAPTER_WEIGHTS = ArtifactFile("adapter_model.safetensors",
                               "peft's adapter weights, classification head included")


@contextmanager
def peft_quietly() -> Iterator[None]:
    """peft calls `is_gradient_checkpointing`, which transformers 5 deprecates; not ours to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


class PeftBackedMethod(Method):
    """Applied with `get_peft_model`, saved with `save_pretrained`, loaded with
    `PeftModel.from_pretrained`: the same for every peft method, so written once."""

    artifact_files = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
    # Why plain peft cannot load this method's artifact by itself; None when it can.
    plain_peft_caveat: ClassVar[str | None] = None

    @abstractmethod
    def _peft_config(self, model: nn.Module) -> PeftConfig:
        """The method's peft config for `model` (built on `_peft_options`)."""

    def _peft_options(self, model: nn.Module) -> dict[str, Any]:
        """Options every peft method sets: sequence classification, with the task head trained
        and saved whole beside the adapter (it is counted apart, not charged to the budget)."""
        return {"task_type": TaskType.SEQ_CLS, "modules_to_save": head_module_names(model)}

    def check_applicable(self, model: nn.Module) -> None:  # noqa: B027 - optional hook
        """Raise `MethodNotApplicable` before any work when the model cannot take the method."""

    def apply(self, model: nn.Module) -> nn.Module:
        self.check_applicable(model)
        with peft_quietly():
            return get_peft_model(model, self._peft_config(model))

    def save(self, model: nn.Module, directory: Path) -> None:
        """peft's own layout (adapter_config.json + adapter_model.safetensors)."""
        model.save_pretrained(str(directory))

    def load(self, model: nn.Module, directory: Path) -> nn.Module:
        self.check_applicable(model)
        with peft_quietly():
            return PeftModel.from_pretrained(model, str(directory))
