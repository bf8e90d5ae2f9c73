"""SPT: the σ_opt split of the top-τ sensitive entries into fixed-rank LoRA, vectors, sparse."""

from __future__ import annotations

import pytest
import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from autopeft.backbones.models import build_meta_model, load_model, resolve_model
from autopeft.errors import MethodNotApplicable
from autopeft.methods import build_method
from autopeft.methods.sparse import engine
from autopeft.methods.sparse.fisher import density_count
from autopeft.methods.spt import allocate, structured_threshold
from autopeft.methods.targets import is_head_param
from autopeft.space.sizing import Sizer
from tests.arch_harness import ARCHITECTURES, ToySource, check_method, toy_batch

LAYER0 = "bert.encoder.layer.0"
QUERY = f"{LAYER0}.attention.self.query"  # 64 × 64: each LoRA rank costs 128 entries
FFN_IN = f"{LAYER0}.intermediate.dense"  # 64 → 128: each rank costs 192
NORM = f"{LAYER0}.attention.output.LayerNorm.weight"  # 64 entries
BIAS = f"{QUERY}.bias"  # 64 entries
KNOBS = {"density": 0.05, "sigma_opt": 0.02, "sensitivity_samples": 16}


def independent_count(model: nn.Module) -> int:
    """r·(d_in + d_out) per LoRA layer + sparse indices + trainable backbone vectors."""
    lora = sum(m.r["default"] * (m.in_features + m.out_features)
               for m in model.modules() if isinstance(m, LoraLayer))
    sparse = sum(len(d.indices) for d in engine.deltas(model).values())
    whole = sum(p.numel() for n, p in model.named_parameters()
                if p.requires_grad and p.ndim == 1 and n.endswith((".weight", ".bias"))
                and not is_head_param(n) and "lora_" not in n)
    return lora + sparse + whole


def lora_ranks(model: nn.Module) -> dict[str, int]:
    return {n: m.r["default"] for n, m in model.named_modules() if isinstance(m, LoraLayer)}


def handmade_scores(model: nn.Module) -> dict[str, torch.Tensor]:
    """Zero everywhere except: 300 query entries, 200 FFN entries, 40 norm and 10 bias entries."""
    scores = {n: torch.zeros_like(p) for n, p in engine.backbone_tensors(model).items()}
    scores[f"{QUERY}.weight"].view(-1)[:300] = 10.0
    scores[f"{FFN_IN}.weight"].view(-1)[::40][:200] = 9.0
    scores[NORM][:40] = 8.0
    scores[BIAS][5:15] = 7.0
    return scores


@pytest.mark.parametrize("lora_r", [1, 2])
def test_sigma_opt_splits_lora_whole_vectors_and_sparse(tiny_models, lora_r):
    source = resolve_model(str(tiny_models("bert")))
    method = build_method("spt", {"sigma_opt": 0.05, "lora_r": lora_r})
    model = method.apply(load_model(source, num_labels=2))
    scores = handmade_scores(model)
    # thresholds: ⌈0.05·4096⌉ = 205 for the query, ⌈0.05·8192⌉ = 410 for FFN
    assert structured_threshold(0.05, 64, 64) == 205
    assert structured_threshold(0.05, 64, 128) == 410
    assert structured_threshold(0.0, 64, 64) == 1  # a matrix needs one selected entry

    budget = 550  # exactly the scored entries
    lora = lora_r * 128  # the query's LoRA, charged to τ
    plan = allocate(model, scores, budget, sigma_opt=0.05, lora_r=lora_r)
    assert plan.ranks == {QUERY: lora_r}  # 300 ≥ 205 → LoRA of the fixed rank
    assert plan.whole == [NORM]  # 40 of 64 ≥ half, and 64 fits
    assert plan.sparse[f"{FFN_IN}.weight"].tolist() == list(range(0, 8000, 40))  # 200 < 410
    assert set(range(5, 15)) <= set(plan.sparse[BIAS].tolist())
    assert f"{QUERY}.weight" not in plan.sparse and NORM not in plan.sparse
    # the rest of τ is sparse: the 210 selected plus the next best
    assert sum(len(i) for i in plan.sparse.values()) == budget - lora - 64

    method.realize(model, plan)
    assert lora_ranks(model) == {QUERY: lora_r}
    assert method.stored_params(model) == independent_count(model) == budget
    params = dict(model.named_parameters())
    assert params[NORM].requires_grad and not params[f"{QUERY}.base_layer.weight"].requires_grad
    assert f"{QUERY}.base_layer.bias" in engine.deltas(model)  # engine on the wrapped name
    changed = method.changed_entries(model)
    assert changed[f"{QUERY}.base_layer.weight"] == 4096 and changed[NORM] == 64
    assert changed[f"{FFN_IN}.weight"] == 200


def test_sigma_opt_threshold_is_inclusive(tiny_models):
    model = load_model(resolve_model(str(tiny_models("bert"))), num_labels=2)
    scores = {n: torch.zeros_like(p) for n, p in engine.backbone_tensors(model).items()}
    scores[f"{QUERY}.weight"].view(-1)[:205] = 10.0  # exactly the query's threshold
    scores[f"{FFN_IN}.weight"].view(-1)[::16][:410] = 9.0
    plan = allocate(model, scores, 205 + 409, sigma_opt=0.05, lora_r=1)  # FFN one short
    assert plan.ranks == {QUERY: 1}
    assert set(range(0, 16 * 410, 16)) <= set(plan.sparse[f"{FFN_IN}.weight"].tolist())
    assert sum(len(i) for i in plan.sparse.values()) == 205 + 409 - 128  # FFN stays sparse
    plan = allocate(model, scores, 205 + 410, sigma_opt=0.05, lora_r=1)
    assert plan.ranks == {QUERY: 1, FFN_IN: 1}


def test_a_lora_that_would_overflow_tau_stays_sparse(tiny_models):
    source = resolve_model(str(tiny_models("bert")))
    model = load_model(source, num_labels=2)
    scores = {n: torch.zeros_like(p) for n, p in engine.backbone_tensors(model).items()}
    scores[f"{FFN_IN}.weight"].view(-1)[::16][:450] = 10.0
    scores[f"{QUERY}.weight"].view(-1)[:300] = 9.0
    budget = 700  # selects all 450 FFN (≥ 410) and 250 query (≥ 205) entries
    # rank 2: 384 + 256 ≤ 700, both fit
    assert allocate(model, scores, budget, 0.05, lora_r=2).ranks == {FFN_IN: 2, QUERY: 2}
    # rank 3: the most selected (FFN) first, 576; the query's 384 more would overflow τ
    plan = allocate(model, scores, budget, 0.05, lora_r=3)
    assert plan.ranks == {FFN_IN: 3}
    assert plan.sparse[f"{QUERY}.weight"].tolist() == list(range(budget - 576))
    method = build_method("spt", {"sigma_opt": 0.05, "lora_r": 3})
    method.realize(method.apply(model), plan)
    assert method.stored_params(model) == independent_count(model) == budget
    # a LoRA larger than τ itself is never made, whatever σ_opt says
    plan = allocate(load_model(source, num_labels=2), scores, 300, 0.05, lora_r=8)
    assert plan.ranks == {} and sum(len(i) for i in plan.sparse.values()) == 300


def test_a_whole_vector_that_does_not_fit_stays_sparse(tiny_models):
    model = load_model(resolve_model(str(tiny_models("bert"))), num_labels=2)
    scores = {n: torch.zeros_like(p) for n, p in engine.backbone_tensors(model).items()}
    scores[NORM][:40] = 8.0
    scores[BIAS][5:15] = 7.0
    plan = allocate(model, scores, 50, sigma_opt=0.05, lora_r=1)  # the 40 norm + 10 bias entries
    assert plan.ranks == {} and plan.whole == []  # 64 > 50: the norm cannot be whole
    assert len(plan.sparse[NORM]) == 40 and len(plan.sparse[BIAS]) == 10
    assert sum(len(i) for i in plan.sparse.values()) == 50


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_spt_learns_counts_exactly_and_roundtrips(tiny_models, tmp_path, arch):
    loaded = check_method(tiny_models(arch), tmp_path, "spt", KNOBS, independent_count)
    assert lora_ranks(loaded), "no matrix reached σ_opt on the toy task"
    assert engine.deltas(loaded), "no sparse deltas"
    assert independent_count(loaded) <= Sizer(resolve_model(str(tiny_models(arch))), 2).measure(
        "spt", KNOBS).stored_params


def test_a_non_default_rank_roundtrips(tiny_models, tmp_path):
    knobs = {**KNOBS, "lora_r": 4}
    loaded = check_method(tiny_models("bert"), tmp_path, "spt", knobs, independent_count)
    assert set(lora_ranks(loaded).values()) == {4}


@pytest.mark.parametrize("lora_r", [4, 8])
def test_sizer_plans_tau_and_the_live_count_stays_within_it(tiny_models, lora_r):
    source = resolve_model(str(tiny_models("bert")))
    knobs = {**KNOBS, "lora_r": lora_r}
    sizer = Sizer(source, 2)
    planned = sizer.measure("spt", knobs).stored_params
    method = build_method("spt", knobs)
    model = method.apply(load_model(source, num_labels=2, seed=0))
    backbone = sum(p.numel() for n, p in model.named_parameters() if not is_head_param(n))
    assert planned == density_count(0.05, sizer.backbone_params()) == int(0.05 * backbone)
    assert method.stored_params(model) == planned
    method.prepare(model, ToySource(toy_batch()))
    assert engine.deltas(model)  # both paths on bert, every LoRA of the fixed rank
    assert lora_ranks(model) and set(lora_ranks(model).values()) == {lora_r}
    assert method.stored_params(model) == independent_count(model) <= planned
    assert method.planned(model) == planned  # LoRA factors and sparse values are not backbone
    assert method.stored_bytes(model) == (
        4 * independent_count(model) + 8 * engine.stored_entries(model))


def test_spt_is_not_applicable_without_projection_roles(tiny_models):
    model = build_meta_model(resolve_model(str(tiny_models("bert"))), 2)
    model.config.model_type = "my-own-arch"
    with pytest.raises(MethodNotApplicable, match="my-own-arch"):
        build_method("spt", {}).apply(model)
