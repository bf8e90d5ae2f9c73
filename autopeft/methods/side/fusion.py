"""Attention fusion over layers: each token's features are a learned mix of all its layers.

For every token, a query from its top-layer state (W_q·h_L) scores the keys of every layer's
state (W_k·h_l, l = 0 embeddings … L); a softmax over layers weights the states themselves, and
the weighted sum Σ_l w_l·h_l replaces the last hidden state fed to the model's own head (pooler,
first/last token, ...). Values are the untouched hidden states, so the head sees the backbone's
own space. The backbone is frozen and run without autograd; trainable = W_q, W_k (+ the head).

Composing with other methods (not wired here): applied after a method that changes the backbone
(LoRA, BitFit, sparse deltas), the same re-routing would read that method's hidden states; the
delta would then be both methods' tensors, and the backbone would need autograd again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from autopeft.methods.base import Method, MethodConfig, knob, learning_rate_knob
from autopeft.methods.side.hidden_states import LAYER_FUSION, attach, backbone_shape


@dataclass
class FusionConfig(MethodConfig):
    fusion_dim: int = knob(64, "size of the query/key space scoring each layer", minimum=1,
                           affects_size=True)
    learning_rate: float = learning_rate_knob(1e-3)


class LayerFusion(nn.Module):
    def __init__(self, hidden: int, fusion_dim: int, **factory):
        super().__init__()
        self.query = nn.Linear(hidden, fusion_dim, bias=False, **factory)
        # no key bias: it would add the same q·b to every layer's score, which softmax ignores
        self.key = nn.Linear(hidden, fusion_dim, bias=False, **factory)
        for linear in (self.query, self.key):
            nn.init.normal_(linear.weight, std=0.02)  # near-uniform mix at the start

    def scores(self, stack: torch.Tensor) -> torch.Tensor:
        """[batch, tokens, layers + 1, hidden] → one score per token and layer."""
        query = self.query(stack[..., -1, :]).unsqueeze(-1)  # from the top layer
        return (self.key(stack) @ query).squeeze(-1) / math.sqrt(self.query.out_features)

    def weights(self, stack: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scores(stack), dim=-1)

    def forward(self, hidden_states: tuple[torch.Tensor, ...],
                attention_mask: torch.Tensor | None) -> torch.Tensor:
        stack = torch.stack(hidden_states, dim=-2)
        return (self.weights(stack).unsqueeze(-1) * stack).sum(dim=-2)


class AttentionFusion(Method):
    name = "attention_fusion"
    summary = "per-token learned attention over all layers' states feeding the head"
    family = "side"
    config_class = FusionConfig

    def apply(self, model: nn.Module) -> nn.Module:
        shape = backbone_shape(model, self.name)
        fusion = LayerFusion(shape.hidden, self.config.fusion_dim,
                             device=shape.device, dtype=shape.dtype)
        return attach(model, LAYER_FUSION, fusion)

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """The backbone is untouched: the stored tensors are the fusion's own."""
        return {}
