"""Ladder Side-Tuning (Sung et al. 2022): a small side network beside a frozen backbone.

At each backbone layer i the side network takes a down-projection of the *detached* hidden state
h_i and mixes it into its running state with a learned gate μ_i = sigmoid(α_i / T):
side = μ_i·down_i(h_i) + (1 − μ_i)·side, then side block i. It starts from down_0(embeddings) and
its final state, normalised and up-projected to the backbone's width, feeds the model's own head.
The backbone runs under `torch.no_grad()`: no backpropagation through it, hence LST's memory
saving. The side blocks are pre-LN transformer blocks (one attention head, FFN 4× wide) of width
hidden / reduction; the paper's pruned-backbone initialisation of the side network is not done.

Stored per task: every side tensor (projections, gates, blocks, final LayerNorm); exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from autopeft.errors import AutoPeftError
from autopeft.methods.base import Method, MethodConfig, knob, learning_rate_knob
from autopeft.methods.side.hidden_states import SIDE_NETWORK, attach, backbone_shape

GATE_TEMPERATURE = 0.1  # T in μ_i = sigmoid(α_i / T), as in the paper; α_i starts at 0 (μ = ½)


@dataclass
class LstConfig(MethodConfig):
    reduction: int = knob(8, "side network width = hidden size // reduction", minimum=1,
                          affects_size=True)
    learning_rate: float = learning_rate_knob(3e-3)


class SideBlock(nn.Module):
    """A pre-LN transformer block of width r: single-head self-attention, then a 4r FFN."""

    def __init__(self, width: int, **factory):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, **factory)
        self.qkv = nn.Linear(width, 3 * width, **factory)
        self.out = nn.Linear(width, width, **factory)
        self.norm2 = nn.LayerNorm(width, **factory)
        self.ffn_in = nn.Linear(width, 4 * width, **factory)
        self.ffn_out = nn.Linear(4 * width, width, **factory)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(x)).unsqueeze(1).chunk(3, dim=-1)  # one head
        x = x + self.out(F.scaled_dot_product_attention(q, k, v, attn_mask=keep).squeeze(1))
        return x + self.ffn_out(F.gelu(self.ffn_in(self.norm2(x))))


class LadderSideNetwork(nn.Module):
    def __init__(self, hidden: int, layers: int, reduction: int, **factory):
        super().__init__()
        width = max(1, hidden // reduction)
        self.downsample = nn.ModuleList(nn.Linear(hidden, width, **factory)
                                        for _ in range(layers + 1))
        self.gate_logits = nn.Parameter(torch.zeros(layers, **factory))
        self.blocks = nn.ModuleList(SideBlock(width, **factory) for _ in range(layers))
        self.norm = nn.LayerNorm(width, **factory)
        self.upsample = nn.Linear(width, hidden, **factory)

    def gates(self) -> torch.Tensor:
        return torch.sigmoid(self.gate_logits / GATE_TEMPERATURE)

    def forward(self, hidden_states: tuple[torch.Tensor, ...],
                attention_mask: torch.Tensor | None) -> torch.Tensor:
        if len(hidden_states) != len(self.downsample):
            raise AutoPeftError(f"lst: expected {len(self.downsample)} hidden states "
                                f"(embeddings + one per layer), got {len(hidden_states)}")
        keep = None if attention_mask is None else attention_mask[:, None, None, :].bool()
        side = self.downsample[0](hidden_states[0])
        for i, (gate, block) in enumerate(zip(self.gates(), self.blocks, strict=True), start=1):
            side = gate * self.downsample[i](hidden_states[i].detach()) + (1 - gate) * side
            side = block(side, keep)
        return self.upsample(self.norm(side))


class LadderSideTuning(Method):
    name = "lst"
    summary = "ladder side network fed by every frozen layer; no backprop through the backbone"
    family = "side"
    config_class = LstConfig

    def apply(self, model: nn.Module) -> nn.Module:
        shape = backbone_shape(model, self.name)
        side = LadderSideNetwork(shape.hidden, shape.layers, self.config.reduction,
                                 device=shape.device, dtype=shape.dtype)
        return attach(model, SIDE_NETWORK, side)

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """The backbone is untouched: everything stored is new side-network tensors."""
        return {}
