"""SPT: sensitivity-aware parameter-efficient fine-tuning (He et al. 2023, ICCV).

Every backbone entry is scored by its sensitivity, Σ (∂ loss / ∂θ)² over a few training examples
(the empirical Fisher FISH uses too), and the top τ = floor(density · backbone) entries are the
budget. Where those entries go decides how each tensor is tuned:

* a projection matrix (any role of `ROLE_SETS["all"]`) holding at least σ_opt of them gets a
  structured module, LoRA of one fixed rank r (`lora_r`, the paper's default 8), which costs
  r·(d_in + d_out) of τ. σ_opt (`sigma_opt`) is a fraction of the matrix's entries, so one value
  means the same on any width (and a matrix needs at least one selected entry). Matrices are
  taken most selected first (ties in model order); one whose LoRA does not fit in what is left
  of τ stays sparse.
* a vector (bias, LayerNorm) with at least half of its entries selected is tuned whole, most
  selected fraction first, while it fits in what is left of τ; otherwise it stays sparse.
* the rest of τ goes to the most sensitive entries of every remaining tensor (the selected ones
  first, topped up with the next best — or cut, where LoRA cost more than its matrix's entries),
  trained through the sparse-update engine.

So the stored count is exact, never above τ, and equals it whenever the sparse pool is large
enough; `planned` (τ) is what the budget check sees on a meta-device model before any data.

Selection needs data, so all of this happens in `prepare`; `apply` only freezes. LoRA is injected
in place with peft's `inject_adapter_in_model` (one call, per-matrix ranks via `rank_pattern`),
after which an adapted module's own tensors live under `<module>.base_layer.`; the sparse engine
attaches to those names. An artifact is the engine's safetensors file (sparse indices/values plus
LoRA factors, whole vectors and head) and `spt_structure.json` (ranks and whole vectors), which
rebuild the same model on a fresh backbone without data.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers.pytorch_utils import Conv1D

from autopeft.errors import AutoPeftError
from autopeft.methods.base import (
    ArtifactFile,
    BatchSource,
    Method,
    MethodConfig,
    freeze,
    knob,
    learning_rate_knob,
    unfreeze_head,
)
from autopeft.methods.peft_backed import peft_quietly
from autopeft.methods.sparse import engine
from autopeft.methods.sparse.fisher import density_count, empirical_fisher, top_k
from autopeft.methods.targets import ROLE_SETS, is_head_param, projection_shape, resolve_roles

STRUCTURE_FILE = "spt_structure.json"
STRUCTURE = ArtifactFile(STRUCTURE_FILE, "SPT's allocation: LoRA ranks per matrix and whole "
                                         "tensors")
WHOLE_VECTOR_FRACTION = 0.5  # a vector this much selected is tuned whole (if it fits in τ)
SENSITIVITY_BATCH_SIZE = 1  # per-example squared gradients, as FISH


@dataclass
class SptConfig(MethodConfig):
    density: float = knob(0.005, "budget τ as a fraction of the backbone (top-τ sensitive entries)",
                          minimum=0.0, affects_size=True)
    sensitivity_samples: int = knob(256, "training examples used to estimate sensitivity",
                                    minimum=1)
    sigma_opt: float = knob(
        0.01, "σ_opt: a matrix holding this fraction of its entries in the top-τ gets LoRA "
        "(if it fits in what is left of τ)", minimum=0.0)
    structured: str = knob("lora", "structured module for sensitive matrices", choices=("lora",))
    lora_r: int = knob(8, "fixed rank of the structured LoRA (costs r·(d_in + d_out) of τ)",
                       minimum=1, affects_size=True)
    lora_alpha: int = knob(16, "LoRA scaling numerator (update scaled by alpha / r)", minimum=1)
    learning_rate: float = learning_rate_knob(1e-3)


@dataclass
class Allocation:
    """Where τ goes, in the backbone's own tensor names (before any LoRA wrapping)."""

    ranks: dict[str, int]  # projection module → LoRA rank
    whole: list[str]  # vectors tuned whole
    sparse: dict[str, torch.Tensor]  # tensor → flat indices trained sparsely


def structured_threshold(sigma_opt: float, d_in: int, d_out: int) -> int:
    """Selected entries from which a d_in × d_out matrix gets LoRA (at least one)."""
    return max(math.ceil(sigma_opt * d_in * d_out - 1e-9), 1)


def projection_shapes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of every projection SPT may adapt (raises MethodNotApplicable if none)."""
    return {m: projection_shape(model.get_submodule(m))
            for m in resolve_roles(model, ROLE_SETS["all"])}


def allocate(model: nn.Module, scores: dict[str, torch.Tensor], budget: int,
             sigma_opt: float, lora_r: int) -> Allocation:
    """Split the top-`budget` entries of `scores` into LoRA matrices, whole vectors, sparse."""
    counts = {n: len(i) for n, i in top_k(scores, budget).items()}
    shapes = projection_shapes(model)
    eligible = [m for m, (d_in, d_out) in shapes.items()
                if counts.get(f"{m}.weight", 0) >= structured_threshold(sigma_opt, d_in, d_out)]
    ranks, used = {}, 0
    for module in sorted(eligible, key=lambda m: -counts[f"{m}.weight"]):  # stable: model order
        cost = lora_r * sum(shapes[module])
        if used + cost <= budget:
            ranks[module] = lora_r
            used += cost

    candidates = [n for n, s in scores.items()
                  if s.ndim == 1 and counts.get(n, 0) > 0
                  and counts[n] >= WHOLE_VECTOR_FRACTION * s.numel()]
    whole = []
    for name in sorted(candidates, key=lambda n: -counts[n] / scores[n].numel()):
        if used + scores[name].numel() <= budget:
            whole.append(name)
            used += scores[name].numel()

    taken = {f"{m}.weight" for m in ranks} | set(whole)
    pool = {n: s for n, s in scores.items() if n not in taken}
    sparse = top_k(pool, budget - used) if pool else {}
    chosen = set(whole)
    return Allocation(ranks, [n for n in scores if n in chosen],
                      {n: i for n, i in sparse.items() if len(i)})


def wrapped_name(tensor: str, ranks: dict[str, int]) -> str:
    """A backbone tensor's name once its module (if adapted) is wrapped by a LoRA layer."""
    module, _, attr = tensor.rpartition(".")
    return f"{module}.base_layer.{attr}" if module in ranks else tensor


class Spt(Method):
    name = "spt"
    summary = "SPT: top-τ sensitive entries; rank-r LoRA on matrices holding ≥ σ_opt, sparse else"
    family = "spt"
    config_class = SptConfig
    artifact_files = (STRUCTURE, engine.SPARSE)

    def __init__(self, config: SptConfig):
        super().__init__(config)
        self._ranks: dict[str, int] | None = None  # LoRA ranks; None until prepare/load
        self._whole: list[str] = []  # vectors tuned whole (backbone names)

    def apply(self, model: nn.Module) -> nn.Module:
        projection_shapes(model)  # not applicable where no projection roles resolve
        freeze(model)
        unfreeze_head(model)
        return model

    def planned(self, model: nn.Module) -> int:
        """τ = floor(density · backbone), from shapes alone (the live count is ≤ τ)."""
        backbone = sum(p.numel() for n, p in engine.backbone_tensors(model).items()
                       if _is_pretrained(n))
        return density_count(self.config.density, backbone)

    def prepare(self, model: nn.Module, data: BatchSource) -> None:
        cfg: SptConfig = self.config
        batches = itertools.islice(data.batches(SENSITIVITY_BATCH_SIZE),
                                   -(-cfg.sensitivity_samples // SENSITIVITY_BATCH_SIZE))
        scores = empirical_fisher(model, batches)
        self.realize(model, allocate(model, scores, self.planned(model), cfg.sigma_opt,
                                    cfg.lora_r))

    def realize(self, model: nn.Module, allocation: Allocation) -> None:
        """Build the allocation on `model` in place: LoRA, whole vectors, sparse deltas."""
        self._build(model, allocation.ranks, allocation.whole)
        engine.attach(model, {wrapped_name(n, allocation.ranks): i
                              for n, i in allocation.sparse.items()})

    def _build(self, model: nn.Module, ranks: dict[str, int], whole: list[str]) -> None:
        freeze(model)
        if ranks:
            first = model.get_submodule(next(iter(ranks)))
            config = PeftLoraConfig(
                r=1, lora_alpha=self.config.lora_alpha, lora_dropout=0.0,
                target_modules=list(ranks),
                rank_pattern={re.escape(m): r for m, r in ranks.items()},
                fan_in_fan_out=isinstance(first, Conv1D),  # GPT-2 stores W transposed
            )
            with peft_quietly():
                inject_adapter_in_model(config, model)
        params = dict(model.named_parameters())
        for name in whole:
            params[wrapped_name(name, ranks)].requires_grad_(True)
        unfreeze_head(model)
        self._ranks, self._whole = dict(ranks), list(whole)

    # --- accounting -------------------------------------------------------------------
    def stored_params(self, model: nn.Module) -> int:
        """τ until prepared; then every trained value: LoRA factors, whole vectors, sparse."""
        return self.planned(model) if self._ranks is None else super().stored_params(model)

    def _dense_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Trainable tensors stored as they are (LoRA, whole vectors, head): not sparse values."""
        sparse = {id(d.values) for d in engine.deltas(model).values()}
        return {n: p for n, p in self.delta_state(model).items() if id(p) not in sparse}

    def stored_bytes(self, model: nn.Module) -> int:
        dense = sum(t.numel() * t.element_size() for n, t in self._dense_state(model).items()
                    if not is_head_param(n))
        return dense + engine.stored_bytes(model)

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """LoRA-adapted matrices and whole vectors change whole, sparse tensors their entries."""
        out = {f"{name}.base_layer.weight": m.get_base_layer().weight.numel()
               for name, m in model.named_modules() if isinstance(m, LoraLayer)}
        params = dict(model.named_parameters())
        for name in self._whole:
            tensor = wrapped_name(name, self._ranks or {})
            out[tensor] = params[tensor].numel()
        return {**out, **engine.changed_entries(model)}

    # --- artifacts ---------------------------------------------------------------------
    def save(self, model: nn.Module, directory: Path) -> None:
        if self._ranks is None:
            raise AutoPeftError("spt: nothing to save before prepare() chose the allocation")
        structure = {"structured": self.config.structured, "lora_ranks": self._ranks,
                     "whole": self._whole}
        (directory / STRUCTURE_FILE).write_text(json.dumps(structure, indent=2))
        dense = {k: v.detach() for k, v in self._dense_state(model).items()}
        engine.save_sparse(model, directory, extra=dense)

    def load(self, model: nn.Module, directory: Path) -> nn.Module:
        """The backbone rebuilt with the saved LoRA ranks, whole vectors and sparse deltas."""
        structure = json.loads((directory / STRUCTURE_FILE).read_text())
        self._build(model, structure["lora_ranks"], structure["whole"])
        dense = engine.load_sparse(model, directory)
        missing = set(dense) - set(dict(model.named_parameters()))
        if missing:
            raise AutoPeftError(
                f"artifact {directory} does not match the model: {sorted(missing)[:3]}")
        model.load_state_dict(dense, strict=False)
        return model


def _is_pretrained(name: str) -> bool:
    """A backbone tensor as loaded: not a LoRA factor nor the values of a sparse delta."""
    if "lora_" in name or f".{engine.LINEAR_DELTA}." in name:
        return False
    return ".parametrizations." not in name or name.endswith(".original")


