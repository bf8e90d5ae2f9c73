"""The bottleneck adapter and the wrapper that adds its output to a frozen projection's output.

Adapter parameters live under a submodule named `adapter` (`...dense.adapter.down.weight`), the
wrapped projection under `base_layer` (as in peft), so allocation code can tell adapter tensors
from pretrained ones by name.
"""

from __future__ import annotations

import torch
from torch import nn

ADAPTER = "adapter"  # attribute (and name part) of every adapter module
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class Bottleneck(nn.Module):
    """x ↦ scaling · up(act(down(x))), d_in → m → d_out; `up` starts at zero, so the output is 0."""

    def __init__(self, d_in: int, size: int, d_out: int, activation: str, scaling: float = 1.0,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.down = nn.Linear(d_in, size, device=device, dtype=dtype)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, d_out, device=device, dtype=dtype)
        self.scaling = scaling
        nn.init.normal_(self.down.weight, std=1e-2)  # near-identity init (Houlsby et al.)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)  # exactly zero output at init: the model is unchanged
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(x)))
        return out if self.scaling == 1.0 else out * self.scaling


class AdaptedProjection(nn.Module):
    """A frozen projection whose output gets an adapter's output added to it.

    Sequential (Houlsby, Pfeiffer): y ← y + adapter(y). Parallel (He et al.): y ← y + adapter(x_b),
    x_b being the block input, which `capture` (a forward pre-hook on the block's input
    projection) hands over just before; it is consumed once, so nothing is held between passes.
    """

    def __init__(self, base_layer: nn.Module, adapter: Bottleneck, parallel: bool):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter
        self.parallel = parallel
        self._block_input: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The wrapped projection's weight, for code that reads it (dtype/device checks)."""
        return self.base_layer.weight

    def capture(self, module: nn.Module, args: tuple) -> None:
        self._block_input = args[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if not self.parallel:
            return y + self.adapter(y)
        source, self._block_input = self._block_input, None
        if source is None:
            raise RuntimeError("parallel adapter ran before its block input was captured")
        return y + self.adapter(source)
