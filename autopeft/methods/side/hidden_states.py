"""Shared plumbing of the methods that read every layer of a frozen backbone (LST, fusion).

Both leave the pretrained network untouched and change only what the task head sees. The base
model (`model.base_model`: `bert`, `transformer`, `model`, ...) runs under `torch.no_grad()` with
`output_hidden_states=True`; an add-on module turns its hidden states (embeddings + one per block)
into new features of the backbone's width, and those replace the last hidden state. The model's
own head then pools and classifies them exactly as the architecture does (BERT's pooler, the first
token of RoBERTa/ELECTRA/DistilBERT, DeBERTa's context pooler, the last non-pad token of
GPT-2/Llama by `config.pad_token_id`) and computes the loss (cross-entropy, MSE for one label).
So every `*ForSequenceClassification` keeps its signature and outputs, and the object `apply`
returns is still the Hugging Face model (`config`, `.to`, `save_pretrained`, ...).

The re-routing is an instance-level `forward` on the base model; the add-on is a top-level child
of the model named in `ADDONS` (stable tensor names for save/load, never a backbone tensor).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from autopeft.errors import MethodNotApplicable
from autopeft.methods.base import freeze, unfreeze_head
from autopeft.methods.targets import model_type

SIDE_NETWORK = "side_network"  # LST
LAYER_FUSION = "layer_fusion"  # attention fusion
ADDONS = (SIDE_NETWORK, LAYER_FUSION)


@dataclass(frozen=True)
class BackboneShape:
    """What an add-on is sized from; new tensors go on the backbone's device and dtype."""

    hidden: int
    layers: int  # transformer blocks; the base model yields layers + 1 hidden states
    device: torch.device
    dtype: torch.dtype


def backbone_shape(model: nn.Module, method: str) -> BackboneShape:
    base = getattr(model, "base_model", None)
    config = getattr(model, "config", None)
    hidden = getattr(config, "hidden_size", None)
    layers = getattr(config, "num_hidden_layers", None)
    if base is None or base is model or not isinstance(hidden, int) or not isinstance(layers, int):
        raise MethodNotApplicable(
            f"{method}: this '{model_type(model)}' model exposes no base model with "
            "hidden_size/num_hidden_layers to read every layer from")
    reference = next(base.parameters())
    return BackboneShape(hidden, layers, reference.device, reference.dtype)


def attach(model: nn.Module, name: str, addon: nn.Module) -> nn.Module:
    """Freeze the model, add `addon` as child `name`, route the base model's output through it."""
    freeze(model)
    model.add_module(name, addon)
    base = model.base_model
    base.forward = ReadAllLayers(base, addon)  # an instance attribute wins over the class method
    unfreeze_head(model)
    return model


class ReadAllLayers:
    """The base model's forward: frozen pass without autograd, then the add-on's features.

    `addon(hidden_states, attention_mask)` gets the detached tuple of every layer's hidden states
    and returns the features that become `last_hidden_state` (and, where the base model has a
    pooler, are pooled again). `hidden_states` stay the backbone's, returned when asked for.
    A plain object rather than a module, so it registers nothing; deep copies follow it.
    """

    def __init__(self, base: nn.Module, addon: nn.Module):
        self.base = base
        self.addon = addon
        self.original = type(base).forward
        self.argument_names = list(inspect.signature(self.original).parameters)[1:]  # minus self

    def __call__(self, *args, **kwargs):
        wanted = kwargs.get("output_hidden_states")
        kwargs["output_hidden_states"] = True
        with torch.no_grad():
            out = self.original(self.base, *args, **kwargs)
        hidden = tuple(h.detach() for h in out.hidden_states)
        features = self.addon(hidden, self._argument("attention_mask", args, kwargs))
        fields = {**out, "last_hidden_state": features}
        pooler = getattr(self.base, "pooler", None)
        if fields.get("pooler_output") is not None and pooler is not None:
            fields["pooler_output"] = pooler(features)
        if not wanted:
            fields.pop("hidden_states")
        return type(out)(**fields)

    def _argument(self, name: str, args: tuple, kwargs: dict):
        if name in kwargs:
            return kwargs[name]
        names = self.argument_names
        index = names.index(name) if name in names else len(args)
        return args[index] if index < len(args) else None
