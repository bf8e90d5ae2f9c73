"""KronA (Edalati et al. 2022) through peft's LoKr: the update of a weight is a Kronecker product.

For a projection W (d_out × d_in) KronA learns ΔW = s · (A ⊗ B) with *full-rank* factors
A (a1 × a2) and B (b1 × b2), a1·b1 = d_out, a2·b2 = d_in. peft's LoKr is the same update with
optional low-rank factorisations of A and B; KronA switches both off:

* ``decompose_both=False``: A is always one dense matrix (``lokr_w1``);
* B is dense (``lokr_w2``) only when LoKr's ``r >= max(b1, b2) / 2``, so ``r`` is set to the
  largest side of any adapted projection — LoKr then never splits B into ``lokr_w2_a @ lokr_w2_b``.
  LoKr scales by ``alpha / r``; ``alpha = scale · r`` keeps the KronA scale at ``scale``.

The split of each dimension is peft's ``factorization(d, decompose_factor)``: ``(f, d / f)`` when
``f`` divides ``d``, otherwise the most balanced pair with the smaller side at most ``f``; ``-1``
is the most balanced pair (A and B both about √d × √d: the fewest parameters). A stores
``a1·a2`` values and B ``b1·b2`` per projection, exactly what peft saves (head excluded).

peft's LoKr adapts ``nn.Linear`` (and convolutions) only, not transformers' ``Conv1D``, so GPT-2
is not applicable.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoKrConfig
from peft.tuners.lokr import LoKrLayer
from torch import nn

from autopeft.errors import MethodNotApplicable
from autopeft.methods.base import MethodConfig, knob, learning_rate_knob, targets_knob
from autopeft.methods.peft_backed import PeftBackedMethod
from autopeft.methods.targets import model_type, projection_shape, resolve_target_set

KRONA_FACTORS = (-1, 2, 4, 8, 16, 32, 64)


@dataclass
class KronaConfig(MethodConfig):
    decompose_factor: int = knob(
        -1, "Kronecker split of each dimension d into (f, d/f); -1 = most balanced (√d·√d)",
        choices=KRONA_FACTORS, affects_size=True,
    )
    targets: str = targets_knob()
    scale: float = knob(1.0, "KronA scale s of the update s·(A ⊗ B)", minimum=0.0)
    learning_rate: float = learning_rate_knob(2e-3)


class Krona(PeftBackedMethod):
    name = "krona"
    summary = "Kronecker-product updates A ⊗ B with full-rank factors (peft LoKr)"
    family = "lora"
    config_class = KronaConfig

    def _peft_config(self, model: nn.Module) -> LoKrConfig:
        cfg: KronaConfig = self.config
        names, conv1d = resolve_target_set(model, cfg.targets)
        if conv1d:
            raise MethodNotApplicable(
                f"krona: peft's LoKr adapts nn.Linear only, not the Conv1D projections of "
                f"'{model_type(model)}'")
        # LoKr keeps B dense when r >= max(b1, b2) / 2; the widest side is always enough.
        r = max(max(projection_shape(model.get_submodule(n))) for n in names)
        return LoKrConfig(
            **self._peft_options(model),
            r=r,
            alpha=cfg.scale * r,
            decompose_both=False,
            decompose_factor=cfg.decompose_factor,
            target_modules=names,
        )

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """A Kronecker product of two dense factors changes every entry of the adapted weight."""
        return {f"{name}.weight": m.get_base_layer().weight.numel()
                for name, m in model.named_modules() if isinstance(m, LoKrLayer)}
