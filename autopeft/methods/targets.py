"""Architecture knowledge in one place: which modules play which role, and what the head is.

Methods ask for roles ("attn_q", "ffn_out", ...) and get the module names of the model at hand,
so no method hard-codes BERT names.
"""

from __future__ import annotations

import re

from torch import nn
from transformers.pytorch_utils import Conv1D

from autopeft.errors import MethodNotApplicable

# The task head: what a sequence-classification model adds on top of the backbone (freshly
# initialised), plus the pooler of BERT-like models and DeBERTa-v2, which pretraining left
# unused or never trained (sentence-transformers checkpoints: a random init) — see `head.py`.
# Always trained (unless `--freeze-pooler`), counted as head, never charged to the budget.
HEAD_MODULES = frozenset({"classifier", "score", "pre_classifier", "pooler"})

_BERT_LIKE = {
    "attn_q": r"attention\.self\.query",
    "attn_k": r"attention\.self\.key",
    "attn_v": r"attention\.self\.value",
    "attn_o": r"attention\.output\.dense",
    "ffn_in": r"intermediate\.dense",
    "ffn_out": r"layer\.\d+\.output\.dense",
}

_LLAMA_LIKE = {
    "attn_q": r"self_attn\.q_proj",
    "attn_k": r"self_attn\.k_proj",
    "attn_v": r"self_attn\.v_proj",
    "attn_o": r"self_attn\.o_proj",
    "ffn_in": r"mlp\.(gate|up)_proj",
    "ffn_out": r"mlp\.down_proj",
}

ROLE_PATTERNS: dict[str, dict[str, str]] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "deberta-v2": {
        **_BERT_LIKE,
        "attn_q": r"attention\.self\.query_proj",
        "attn_k": r"attention\.self\.key_proj",
        "attn_v": r"attention\.self\.value_proj",
    },
    "distilbert": {
        "attn_q": r"attention\.q_lin",
        "attn_k": r"attention\.k_lin",
        "attn_v": r"attention\.v_lin",
        "attn_o": r"attention\.out_lin",
        "ffn_in": r"ffn\.lin1",
        "ffn_out": r"ffn\.lin2",
    },
    # GPT-2 fuses q, k and v into one Conv1D: every attention-input role maps to it.
    "gpt2": {
        "attn_q": r"attn\.c_attn",
        "attn_k": r"attn\.c_attn",
        "attn_v": r"attn\.c_attn",
        "attn_o": r"attn\.c_proj",
        "ffn_in": r"mlp\.c_fc",
        "ffn_out": r"mlp\.c_proj",
    },
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
}

# Projection layers roles may resolve to (GPT-2 uses transformers' Conv1D, weight transposed).
PROJECTION_TYPES = (nn.Linear, Conv1D)

_LAYER_INDEX = re.compile(r"\.(\d+)\.")

# Named groups of roles, as LoRA's `targets` knob offers them.
ROLE_SETS = {
    "qv": ("attn_q", "attn_v"),
    "attn": ("attn_q", "attn_k", "attn_v", "attn_o"),
    "all": ("attn_q", "attn_k", "attn_v", "attn_o", "ffn_in", "ffn_out"),
}


def is_head_param(name: str) -> bool:
    return any(part in HEAD_MODULES for part in name.split("."))


def model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", type(model).__name__)


def resolve_roles(model: nn.Module, roles: tuple[str, ...]) -> list[str]:
    """Full names of the Linear modules playing `roles` in this model, in module order."""
    kind = model_type(model)
    patterns = ROLE_PATTERNS.get(kind)
    if patterns is None:
        supported = ", ".join(sorted(ROLE_PATTERNS))
        raise MethodNotApplicable(
            f"model type '{kind}' has no target map yet; supported: {supported}")
    regex = re.compile(r"(^|\.)(" + "|".join(patterns[r] for r in roles) + r")$")
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, PROJECTION_TYPES) and regex.search(name)
        and not is_head_param(name)
    ]
    if not names:
        raise MethodNotApplicable(f"no modules for roles {roles} found in this '{kind}' model")
    return names


def resolve_target_set(model: nn.Module, targets: str) -> tuple[list[str], bool]:
    """The projections a `targets` choice (qv/attn/all) names, and whether they store their
    weight transposed (GPT-2's Conv1D: peft's `fan_in_fan_out`)."""
    names = resolve_roles(model, ROLE_SETS[targets])
    return names, isinstance(model.get_submodule(names[0]), Conv1D)


def layer_index(name: str) -> int | None:
    """The transformer block a module belongs to (the first number in its name), if any."""
    match = _LAYER_INDEX.search(f".{name}.")
    return int(match.group(1)) if match else None


def projection_shape(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of an nn.Linear or a GPT-2 Conv1D."""
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    return module.in_features, module.out_features


def head_module_names(model: nn.Module) -> list[str]:
    """Short names of the head modules present (what peft's `modules_to_save` takes)."""
    present = {part for name, _ in model.named_modules() for part in name.split(".")}
    return sorted(HEAD_MODULES & present)
