"""The three registered adapter methods: one implementation, differing only in placement.

* `adapter_houlsby` (Houlsby et al. 2019): sequential adapters after the attention output
  projection and after the FFN output, each applied to that projection's output before the
  residual add / LayerNorm: y ← y + up(act(down(y))).
* `adapter_pfeiffer` (Pfeiffer et al. 2021): the same, after the FFN output only.
* `adapter_parallel` (He et al. 2022): an adapter beside the attention and/or FFN block, reading
  the block input and adding s · up(act(down(x))) to the block's output projection. The
  attention block input is tapped at the `attn_v` projection: in every supported architecture it
  has the same input as `attn_q`, and unlike DeBERTa's query projection it is not also run on the
  relative position embeddings.

AdapterDrop (Rücklé et al. 2021): `drop_layers` leaves out the adapters of the lowest n blocks.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from torch import nn

from autopeft.methods.adapters.modules import AdaptedProjection, Bottleneck
from autopeft.methods.adapters.placement import Placement, resolve_sites
from autopeft.methods.base import (
    Method,
    MethodConfig,
    freeze,
    knob,
    learning_rate_knob,
    unfreeze_head,
)
from autopeft.methods.targets import projection_shape


@dataclass
class AdapterConfig(MethodConfig):
    bottleneck: int = knob(64, "bottleneck size m of each adapter (d → m → d)", minimum=1,
                           affects_size=True)
    drop_layers: int = knob(0, "AdapterDrop: no adapters in the lowest n blocks", minimum=0,
                            affects_size=True)
    activation: str = knob("relu", "nonlinearity inside the bottleneck", choices=("relu", "gelu"))
    learning_rate: float = learning_rate_knob(1e-3)


@dataclass
class ParallelAdapterConfig(AdapterConfig):
    blocks: str = knob("both", "blocks that get a parallel adapter",
                       choices=("attn", "ffn", "both"), affects_size=True)
    scaling: float = knob(4.0, "factor s on the adapter output (He et al. use 4)", minimum=0.0)


class BottleneckAdapter(Method):
    """Wraps each target projection in `AdaptedProjection`; subclasses only choose placements."""

    family = "adapter"
    config_class = AdapterConfig

    @abstractmethod
    def placements(self) -> tuple[Placement, ...]:
        """The roles whose outputs get adapters (and, for parallel ones, where they read)."""

    def scaling(self) -> float:
        return 1.0

    def apply(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        sites = resolve_sites(model, self.placements(), cfg.drop_layers, self.name)
        freeze(model)
        for site in sites:
            target = model.get_submodule(site.target)
            d_out = projection_shape(target)[1]
            source = model.get_submodule(site.source) if site.source else None
            d_in = projection_shape(source)[0] if source is not None else d_out
            weight = target.weight  # new parameters follow it (meta device for budget checks)
            adapter = Bottleneck(d_in, cfg.bottleneck, d_out, cfg.activation, self.scaling(),
                                 device=weight.device, dtype=weight.dtype)
            wrapped = AdaptedProjection(target, adapter, parallel=source is not None)
            model.set_submodule(site.target, wrapped)
            if source is not None:
                source.register_forward_pre_hook(wrapped.capture)
        unfreeze_head(model)
        return model

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """None: adapters add new modules and leave every backbone tensor as it was."""
        return {}


class HoulsbyAdapter(BottleneckAdapter):
    name = "adapter_houlsby"
    summary = "sequential bottleneck adapters after attention output and FFN output"

    def placements(self) -> tuple[Placement, ...]:
        return (Placement("attn_o"), Placement("ffn_out"))


class PfeifferAdapter(BottleneckAdapter):
    name = "adapter_pfeiffer"
    summary = "sequential bottleneck adapters after the FFN output only"

    def placements(self) -> tuple[Placement, ...]:
        return (Placement("ffn_out"),)


class ParallelAdapter(BottleneckAdapter):
    name = "adapter_parallel"
    summary = "bottleneck adapters beside the attention and/or FFN block (He et al. 2022)"
    config_class = ParallelAdapterConfig

    def placements(self) -> tuple[Placement, ...]:
        attn, ffn = Placement("attn_o", source="attn_v"), Placement("ffn_out", source="ffn_in")
        return {"attn": (attn,), "ffn": (ffn,), "both": (attn, ffn)}[self.config.blocks]

    def scaling(self) -> float:
        return self.config.scaling
