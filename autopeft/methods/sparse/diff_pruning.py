"""Diff pruning (Guo et al. 2021): learn δ = z ⊙ w under an L0 penalty, then keep its top entries.

Two phases inside one training run, because the study fixes the number of epochs:

1. L0 phase (the first `l0_fraction` of the optimizer steps): every backbone tensor W is
   parametrized as W + z ⊙ w, with z a hard-concrete mask (`l0.py`); w and the gate logits α are
   trained with λ·E[‖δ‖₀]/d added to the loss. This phase is dense: w and α are the size of the
   backbone, which is inherent to the method.
2. At the switch, magnitude projection keeps exactly k = floor(density·d) entries of δ (the
   largest |δ| across the backbone, i.e. the projection onto the L0 ball), the dense
   parametrizations are removed, and those entries are handed to the sparse-update engine,
   initialised to their δ; the remaining steps train only them.

What is stored is the projected sparse delta (plus the head), so the budget sees k from the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import parametrize

from autopeft.errors import AutoPeftError
from autopeft.methods.base import (
    MethodConfig,
    freeze,
    knob,
    learning_rate_knob,
    unfreeze_head,
)
from autopeft.methods.sparse import engine, l0
from autopeft.methods.sparse.base import SparseDeltaMethod
from autopeft.methods.sparse.fisher import density_count, top_k


@dataclass
class DiffPruningConfig(MethodConfig):
    density: float = knob(0.005, "fraction of backbone weights the stored delta may change",
                          minimum=0.0, affects_size=True)
    # Normalised: the penalty is λ times the expected *fraction* of non-zero δ entries, so one
    # range suits every backbone. 3 matches the paper's per-parameter 1.25e-7 on the bundled
    # MiniLM (1.25e-7 · 22.7M ≈ 2.8).
    l0_lambda: float = knob(3.0, "λ of the penalty λ·E[‖δ‖₀]/d (d = backbone size)", minimum=0.0)
    structured: bool = knob(False, "also gate each weight matrix / bias vector as a whole",
                            choices=(False, True))
    alpha_init: float = knob(5.0, "initial gate logit α (5: nearly every gate open)")
    alpha_lr: float = knob(0.1, "AdamW learning rate of the gate logits α", minimum=0.0)
    l0_fraction: float = knob(0.5, "fraction of the optimizer steps spent in the L0 phase",
                              minimum=0.0)
    learning_rate: float = learning_rate_knob(2e-4)


class L0Delta(nn.Module):
    """Parametrization W ↦ W + z ⊙ w; z is sampled while training and deterministic in eval."""

    def __init__(self, like: torch.Tensor, alpha_init: float, structured: bool):
        super().__init__()
        self.w = nn.Parameter(torch.zeros_like(like, dtype=torch.float32))
        self.alpha = nn.Parameter(torch.full_like(like, alpha_init, dtype=torch.float32))
        group = torch.full((), alpha_init, device=like.device) if structured else None
        self.register_parameter("group_alpha", None if group is None else nn.Parameter(group))

    def gates(self) -> list[nn.Parameter]:
        return [p for p in (self.alpha, self.group_alpha) if p is not None]

    def delta(self) -> torch.Tensor:
        """δ under the test-time mask: what the projection ranks."""
        return l0.deterministic_mask(self.alpha, self.group_alpha) * self.w

    def expected_l0(self) -> torch.Tensor:
        return l0.expected_l0(self.alpha, self.group_alpha)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        if self.training:
            mask = l0.sample_mask(self.alpha, self.group_alpha)
        else:
            mask = l0.deterministic_mask(self.alpha, self.group_alpha)
        return original + (mask * self.w).to(original.dtype)


def l0_deltas(model: nn.Module) -> dict[str, L0Delta]:
    """Attached L0 parametrizations by the name of the tensor they change."""
    return engine.parametrizations_of(model, L0Delta)


def attach_l0(model: nn.Module, alpha_init: float, structured: bool) -> None:
    """Give every backbone tensor its own w and α (one group per tensor when structured)."""
    for name, param in engine.backbone_tensors(model).items():
        module_name, _, attr = name.rpartition(".")
        param.requires_grad_(False)
        parametrize.register_parametrization(
            model.get_submodule(module_name), attr, L0Delta(param, alpha_init, structured),
            unsafe=True,  # same shape and dtype by construction; skips a full-size test call
        )


def detach_l0(model: nn.Module) -> None:
    """Remove the L0 parametrizations, restoring the untouched backbone tensors."""
    for name in l0_deltas(model):
        module_name, _, attr = name.rpartition(".")
        parametrize.remove_parametrizations(
            model.get_submodule(module_name), attr, leave_parametrized=False
        )


def magnitude_projection(deltas: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    """Sorted flat indices, per tensor, of the k largest |δ| across all tensors (exactly k).

    Keeping the largest magnitudes is the Euclidean projection onto {δ : ‖δ‖₀ ≤ k}.
    """
    return top_k({name: delta.abs() for name, delta in deltas.items()}, k)


def backbone_size(model: nn.Module) -> int:
    """d: backbone entries, not counting the w/α/values this method adds."""
    added = {id(p) for d in (*l0_deltas(model).values(), *engine.deltas(model).values())
             for p in d.parameters()}
    return sum(p.numel() for p in engine.backbone_tensors(model).values() if id(p) not in added)


class DiffPruning(SparseDeltaMethod):
    name = "diff_pruning"
    summary = "Diff pruning: L0-regularised diff vector, projected to its top-k entries"
    config_class = DiffPruningConfig

    def __init__(self, config: DiffPruningConfig):
        super().__init__(config)
        self.switch_step: int | None = None  # set by `start`; None: never switch

    def apply(self, model: nn.Module) -> nn.Module:
        freeze(model)
        attach_l0(model, self.config.alpha_init, self.config.structured)
        unfreeze_head(model)
        return model

    def planned(self, model: nn.Module) -> int:
        return density_count(self.config.density, backbone_size(model))

    # --- training ----------------------------------------------------------------------
    def start(self, model: nn.Module, total_steps: int) -> None:
        """The switch always falls inside the run, so the trained delta is always projected."""
        steps = math.floor(self.config.l0_fraction * total_steps + 1e-9)
        self.switch_step = min(max(steps, 1), total_steps)

    def parameter_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """The base groups for w / values / head; the gate logits α get their own lr."""
        gates = [g for d in l0_deltas(model).values() for g in d.gates()]
        ids = {id(g) for g in gates}
        groups = super().parameter_groups(model, weight_decay)
        for group in groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        if gates:
            groups.append({"params": gates, "lr": self.config.alpha_lr, "weight_decay": 0.0})
        return groups

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """λ · E[‖δ‖₀] / d during the L0 phase; nothing after the projection."""
        deltas = l0_deltas(model).values()
        if not deltas:
            return None
        expected = torch.stack([d.expected_l0() for d in deltas]).sum()
        return self.config.l0_lambda * expected / sum(d.w.numel() for d in deltas)

    def after_step(self, model: nn.Module, step: int) -> bool:
        if step != self.switch_step or not l0_deltas(model):
            return False
        self.project(model)
        return True

    def projection(self, model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """(sorted flat indices, δ values) per tensor of the top-k projection; non-empty only."""
        k = self.planned(model)
        with torch.no_grad():
            deltas = {name: d.delta() for name, d in l0_deltas(model).items()}
            chosen = magnitude_projection(deltas, k)
            out = {name: (idx, deltas[name].flatten()[idx]) for name, idx in chosen.items()
                   if len(idx)}
        kept = sum(len(idx) for idx, _ in out.values())
        if kept > k:
            raise AutoPeftError(f"diff pruning kept {kept:,} entries, over the planned {k:,}")
        return out

    def project(self, model: nn.Module) -> None:
        """The phase switch: dense L0 deltas → fixed sparse deltas holding the projected δ."""
        planned = self.planned(model)
        kept = self.projection(model)
        detach_l0(model)
        engine.attach(model, {name: idx for name, (idx, _) in kept.items()})
        with torch.no_grad():
            for name, delta in engine.deltas(model).items():
                indices, values = kept[name]
                if not torch.equal(delta.indices, indices):
                    raise AutoPeftError(f"sparse indices of {name} changed on attach")
                delta.values.copy_(values)
        stored = engine.stored_entries(model)
        if stored > planned:
            raise AutoPeftError(f"diff pruning stores {stored:,} entries, over {planned:,}")

    # --- artifacts ---------------------------------------------------------------------
    def save(self, model: nn.Module, directory: Path) -> None:
        """Always the sparse delta: before the switch, the projection of the current δ, written
        without changing the model (so training can go on)."""
        if not l0_deltas(model):
            super().save(model, directory)
            return
        state = {k: v.detach().cpu().contiguous() for k, v in self.head_state(model).items()}
        for name, (indices, values) in self.projection(model).items():
            state[f"{name}.{engine.INDICES}"] = indices.cpu().contiguous()
            state[f"{name}.{engine.VALUES}"] = values.cpu().contiguous()
        save_file(state, str(directory / engine.SPARSE_FILE))

