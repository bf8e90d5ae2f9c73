"""Where a trained configuration changed the backbone: changed entries per layer and module type.

The diff pruning paper's per-layer picture: which layers and which kinds of module a task
needed. Each method reports `changed_entries` (backbone tensor → entries it may change); this module
divides by the backbone's sizes per group.
"""

from __future__ import annotations

import re

from torch import nn

from autopeft.methods.sparse.engine import LINEAR_DELTA
from autopeft.methods.targets import is_head_param

_LAYER = re.compile(r"\.(?:layer|layers|h|block)\.(\d+)\.")
_PREFIXES = ("base_model.model.",)
_TYPES = (
    # (type, pattern on the normalised tensor name); first match wins
    ("bias", re.compile(r"\.bias$")),
    ("layernorm", re.compile(r"(LayerNorm|layer_norm|ln_\w+|norm)\.weight$", re.IGNORECASE)),
    ("embeddings", re.compile(r"(embeddings|embed_tokens|wte|wpe)\.")),
    ("attn_q", re.compile(r"(query|q_lin|q_proj|query_proj)\.weight$")),
    ("attn_k", re.compile(r"(key|k_lin|k_proj|key_proj)\.weight$")),
    ("attn_v", re.compile(r"(value|v_lin|v_proj|value_proj)\.weight$")),
    ("attn_qkv", re.compile(r"c_attn\.weight$")),
    ("attn_o", re.compile(r"(attention\.output\.dense|out_lin|o_proj|attn\.c_proj)\.weight$")),
    ("ffn_in", re.compile(r"(intermediate\.dense|lin1|up_proj|gate_proj|c_fc)\.weight$")),
    ("ffn_out", re.compile(r"(output\.dense|lin2|down_proj|mlp\.c_proj)\.weight$")),
)


def normalise(name: str) -> str:
    """Backbone tensor name without wrapper prefixes/parametrization paths."""
    for prefix in _PREFIXES:
        name = name.removeprefix(prefix)
    name = name.replace(".parametrizations.", ".").replace(".original", "")
    return name.replace(".base_layer.", ".")


MODULE_TYPES = (*(kind for kind, _ in _TYPES), "other")  # every value of `module_type`


def module_type(name: str) -> str:
    """The kind of module a backbone tensor belongs to (first matching pattern, else other)."""
    for kind, pattern in _TYPES:
        if pattern.search(name):
            return kind
    return "other"


def layer_of(name: str) -> str:
    """The block index of a tensor ("0", "1", ...), else "embeddings" or "other"."""
    match = _LAYER.search(name)
    if match:
        return match.group(1)
    return "embeddings" if "embed" in name else "other"


def backbone_sizes(model: nn.Module) -> dict[str, int]:
    """Every backbone tensor (normalised name → entries), the denominators of the picture."""
    return {normalise(n): p.numel() for n, p in model.named_parameters()
            if not is_head_param(n) and _is_backbone(n)}


def _is_backbone(name: str) -> bool:
    """Pretrained tensors only: not tensors a method adds (LoRA/LoKr factors, prompts,
    adapters, sparse-delta values, side networks) nor values of a parametrization."""
    added = ("lora_", "lokr_", "prompt_encoder", f".{LINEAR_DELTA}.", ".adapter.")
    if any(marker in name for marker in added):
        return False
    if name.split(".")[0] in ("side_network", "layer_fusion"):  # LST / attention fusion add-ons
        return False
    return ".parametrizations." not in name or name.endswith(".original")


def summarize(changed: dict[str, int], sizes: dict[str, int]) -> dict[str, dict]:
    """Fraction of the backbone's entries changed, by layer, by module type and by both.

    ``by_layer_type`` (layer → type → fraction) is the report's heatmap; ``by_layer`` and
    ``by_type`` are its margins, kept because older studies have only those. A group exists
    only where the backbone has entries, so a missing cell means "no such module there", not 0.
    """
    changed = {normalise(n): c for n, c in changed.items()}
    counts: dict[str, dict] = {"by_layer": {}, "by_type": {}, "by_layer_type": {}}
    for name, total in sizes.items():
        count, layer, kind = changed.get(name, 0), layer_of(name), module_type(name)
        for acc in (
            counts["by_layer"].setdefault(layer, [0, 0]),
            counts["by_type"].setdefault(kind, [0, 0]),
            counts["by_layer_type"].setdefault(layer, {}).setdefault(kind, [0, 0]),
        ):
            acc[0] += count
            acc[1] += total
    return {
        "by_layer": _fractions(counts["by_layer"]),
        "by_type": _fractions(counts["by_type"]),
        "by_layer_type": {layer: _fractions(kinds)
                          for layer, kinds in counts["by_layer_type"].items()},
    }


def _fractions(groups: dict[str, list[int]]) -> dict[str, float]:
    return {group: changed / total for group, (changed, total) in groups.items() if total}
