"""The prompt family through Hugging Face `peft`: trainable virtual tokens, the backbone frozen.

- prompt tuning (Lester et al. 2021): soft prompt embeddings prepended to the input;
- prefix tuning (Li & Liang 2021): key/value prefixes in every attention layer, optionally
  reparameterised through an MLP while training;
- P-tuning (Liu et al. 2021): soft prompts produced by an MLP or LSTM prompt encoder.

What a task stores is what peft's `save_pretrained` writes: the final prompt embeddings, computed
through any reparameterisation encoder, which is therefore not stored. The encoder is trained
(it is in `delta_state`) but does not count against the budget.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from types import MethodType
from typing import Any

import torch
from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig
from peft.config import PromptLearningConfig
from torch import nn

from autopeft.errors import MethodNotApplicable
from autopeft.methods.base import MethodConfig, knob, learning_rate_knob
from autopeft.methods.peft_backed import PeftBackedMethod
from autopeft.methods.targets import is_head_param, model_type


@dataclass
class PromptConfig(MethodConfig):
    num_virtual_tokens: int = knob(20, "virtual tokens prepended (prompt length)", minimum=1,
                                   affects_size=True)


# Soft prompts want learning rates of 1e-2 to 3e-1; the head (the classifier, and a pooler
# trained from a random init) diverges there, so its groups are capped at this rate.
HEAD_MAX_LR = 3e-3


class PromptMethod(PeftBackedMethod):
    """One peft prompt-learning method; subclasses name the peft config and its extra knobs."""

    family = "prompt"

    def parameter_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """The base groups, with the head's tensors apart at min(learning rate, HEAD_MAX_LR)."""
        head = {id(p) for n, p in self.delta_state(model).items() if is_head_param(n)}
        head_lr = min(self.config.learning_rate, HEAD_MAX_LR)
        groups = []
        for group in super().parameter_groups(model, weight_decay):
            prompt = [p for p in group["params"] if id(p) not in head]
            heads = [p for p in group["params"] if id(p) in head]
            groups += [{**group, "params": prompt}] if prompt else []
            groups += [{**group, "params": heads, "lr": head_lr}] if heads else []
        return groups

    def _peft_options(self, model: nn.Module) -> dict[str, Any]:
        """The common options plus the prompt's length and the backbone's shape."""
        # attribute access honours config aliases (DistilBERT's `dim`), peft's dict look-up
        # does not; None leaves the look-up to peft
        config = model.config
        return {
            **super()._peft_options(model),
            "num_virtual_tokens": self.config.num_virtual_tokens,
            "token_dim": getattr(config, "hidden_size", None),
            "num_layers": getattr(config, "num_hidden_layers", None),
            "num_attention_heads": getattr(config, "num_attention_heads", None),
        }

    # --- accounting: what `save_pretrained` writes besides the head -------------------------
    def _stored_shape(self, model: nn.Module) -> tuple[int, int]:
        """Shape of peft's saved `prompt_embeddings` (from the config peft completed)."""
        cfg = model.peft_config[model.active_adapter]
        return cfg.num_virtual_tokens * cfg.num_transformer_submodules, cfg.token_dim

    def stored_params(self, model: nn.Module) -> int:
        rows, cols = self._stored_shape(model)
        return rows * cols

    def stored_bytes(self, model: nn.Module) -> int:
        encoder = model.prompt_encoder[model.active_adapter]
        return self.stored_params(model) * encoder.embedding.weight.element_size()

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """Virtual tokens change no backbone tensor."""
        return {}

    # --- artifacts -------------------------------------------------------------------------
    def save(self, model: nn.Module, directory: Path) -> None:
        """peft's own layout: adapter_config.json + adapter_model.safetensors.

        peft stores the prompt as the encoder computes it now; computed as in evaluation (eval
        mode, no autograd: CPU LSTMs take another kernel with autograd on) so that the reloaded
        model's logits equal the evaluated model's bit for bit.
        """
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                super().save(model, directory)
        finally:
            model.train(training)


@dataclass
class PromptTuningKnobs(PromptConfig):
    prompt_init: str = knob("sample_vocab",
                            "initial prompt: embeddings of random vocabulary tokens, or N(0, 1)",
                            choices=("sample_vocab", "random"))
    learning_rate: float = learning_rate_knob(3e-2)


class PromptTuning(PromptMethod):
    name = "prompt_tuning"
    summary = "soft prompt embeddings prepended to the input (peft)"
    config_class = PromptTuningKnobs

    def _peft_config(self, model: nn.Module) -> PromptLearningConfig:
        return PromptTuningConfig(**self._peft_options(model),
                                  prompt_tuning_init=self.config.prompt_init.upper())


@dataclass
class PrefixTuningKnobs(PromptConfig):
    prefix_projection: bool = knob(
        False, "train the prefix through an MLP (only its output is stored)")
    encoder_hidden_size: int = knob(
        512, "hidden width of the prefix MLP (with prefix_projection)", minimum=1)
    learning_rate: float = learning_rate_knob(1e-2)


class PrefixTuning(PromptMethod):
    name = "prefix_tuning"
    summary = "trainable key/value prefixes in every attention layer (peft)"
    config_class = PrefixTuningKnobs
    plain_peft_caveat = ("peft hands the prefixes to the model's own forward only where its "
                         "signature names the cache; `autopeft.load` installs the forward "
                         "that does")

    def check_applicable(self, model: nn.Module) -> None:
        _accept_prefix_cache(model)

    def _peft_config(self, model: nn.Module) -> PromptLearningConfig:
        return PrefixTuningConfig(**self._peft_options(model),
                                  prefix_projection=self.config.prefix_projection,
                                  encoder_hidden_size=self.config.encoder_hidden_size)

    def apply(self, model: nn.Module) -> nn.Module:
        model = super().apply(model)
        _encode_once(model.prompt_encoder[model.active_adapter])
        return model

    def _stored_shape(self, model: nn.Module) -> tuple[int, int]:
        """One key and one value vector per layer and virtual token (KV width under GQA)."""
        cfg = model.peft_config[model.active_adapter]
        return cfg.num_virtual_tokens, cfg.num_layers * 2 * cfg.token_dim


@dataclass
class PTuningKnobs(PromptConfig):
    encoder_type: str = knob("MLP", "prompt encoder reparameterising the prompt (not stored)",
                             choices=("MLP", "LSTM"))
    encoder_hidden_size: int = knob(128, "hidden width of the prompt encoder", minimum=1)
    learning_rate: float = learning_rate_knob(1e-3)


class PTuning(PromptMethod):
    name = "p_tuning"
    summary = "soft prompts produced by a trained MLP/LSTM prompt encoder (peft)"
    config_class = PTuningKnobs

    def _peft_config(self, model: nn.Module) -> PromptLearningConfig:
        return PromptEncoderConfig(**self._peft_options(model),
                                   encoder_reparameterization_type=self.config.encoder_type,
                                   encoder_hidden_size=self.config.encoder_hidden_size)


def _accept_prefix_cache(model: nn.Module) -> None:
    """Let peft hand prefix tuning's key/value cache to the model, or say why it cannot.

    peft calls the model's own forward only when its signature names the cache keyword peft
    passes (`_peft_cache_keyword`); otherwise it runs the backbone and the classifier itself,
    which in a decoder classifies the cache instead of the last token. Where the backbone takes
    a cache and the classifier passes it on, the model gets a `forward` naming that keyword (set
    on the instance, so `apply` and `load` both install it). DeBERTa-v2 and DistilBERT have none.
    """
    keyword = _peft_cache_keyword()
    top = inspect.signature(model.forward).parameters
    if keyword in top:
        return
    backbone = inspect.signature(model.base_model.forward).parameters
    passes_on = "cache" in top or any(p.kind is p.VAR_KEYWORD for p in top.values())
    if "cache" not in backbone or not passes_on:
        raise MethodNotApplicable(
            f"prefix tuning needs a key/value cache; '{model_type(model)}' models take none")
    shim = _forward_with_cache if keyword == "cache" else _forward_with_past_key_values
    model.forward = MethodType(shim, model)


def _peft_cache_keyword() -> str:
    """`cache` from peft 0.22 on transformers >= 5.24 (its rename), `past_key_values` before.

    peft decides the name; older peft has no function saying it and always used the old one.
    """
    try:
        from peft.import_utils import get_transformers_cache_name
    except ImportError:
        return "past_key_values"
    return get_transformers_cache_name()


def _forward_with_past_key_values(self: nn.Module, *args, past_key_values=None, **kwargs):
    return type(self).forward(self, *args, cache=past_key_values, **kwargs)


def _forward_with_cache(self: nn.Module, *args, cache=None, **kwargs):
    return type(self).forward(self, *args, cache=cache, **kwargs)


def _encode_once(encoder: nn.Module) -> None:
    """Run the prefix encoder on one row of virtual-token ids and expand it over the batch.

    peft feeds prefix tuning's encoder the same ids for every example (for prompt tuning and
    P-tuning it already encodes one row). Once is cheaper, and it is what `save_pretrained`
    computes, so the reloaded prefix equals the trained one bit for bit on any matmul kernel.
    """
    encoder.forward = MethodType(_forward_once, encoder)


def _forward_once(self: nn.Module, indices: torch.Tensor) -> torch.Tensor:
    prompt = type(self).forward(self, indices[:1])
    return prompt.expand(indices.shape[0], *prompt.shape[1:])
