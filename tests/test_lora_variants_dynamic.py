"""DyLoRA and IncreLoRA: dynamic-rank LoRA on top of peft's LoRA layers.

Counts are checked against numbers derived here from the backbone's shapes and the knobs (and,
for IncreLoRA, from which rank components are non-zero in the trained model), not from the
methods' own accounting.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers.pytorch_utils import Conv1D

from autopeft.artifacts.store import load_artifact, save_artifact
from autopeft.backbones.models import build_meta_model, load_model, load_tokenizer, resolve_model
from autopeft.errors import AutoPeftError
from autopeft.methods import build_method
from autopeft.methods.base import DELTA_FILE
from autopeft.methods.targets import ROLE_SETS, projection_shape, resolve_roles
from autopeft.train.data import SearchData, TokenizedSplit
from autopeft.train.trial import TrialContext, run_trial
from tests.arch_harness import ARCHITECTURES, check_method, toy_batch, train_steps

PEFT_PREFIX = "base_model.model."


def backbone_shapes(model_dir, targets: str) -> dict[str, tuple[int, int]]:
    """Adapted projection → (d_in, d_out), read off a fresh backbone."""
    base = load_model(resolve_model(str(model_dir)), num_labels=2)
    names = resolve_roles(base, ROLE_SETS[targets])
    return {n: projection_shape(base.get_submodule(n)) for n in names}


def lora_pairs(model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Backbone module name → (A, B) of the peft LoRA layer wrapping it."""
    pairs = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            pairs[name.removeprefix(PEFT_PREFIX)] = (module.lora_A["default"].weight,
                                                     module.lora_B["default"].weight)
    return pairs


def logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def randomize_b(model, seed: int = 1) -> None:
    """B starts at zero; give it values so every rank component changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, weight_b in lora_pairs(model).values():
            weight_b.copy_(torch.randn(weight_b.shape, generator=generator) * 0.5)


# --- every architecture -----------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_dylora_on_every_architecture_counts_r_max_and_roundtrips(tiny_models, tmp_path, arch):
    knobs = {"r_max": 4, "targets": "all", "lora_dropout": 0.0}
    shapes = backbone_shapes(tiny_models(arch), "all")
    planned = sum(4 * (d_in + d_out) for d_in, d_out in shapes.values())

    meta_method = build_method("dylora", knobs)
    meta = meta_method.apply(build_meta_model(resolve_model(str(tiny_models(arch))), 2))
    assert meta_method.stored_params(meta) == planned

    loaded = check_method(tiny_models(arch), tmp_path, "dylora", knobs, lambda m: planned,
                          lr=5e-3)
    assert set(lora_pairs(loaded)) == set(shapes)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_increlora_on_every_architecture_counts_active_components_and_roundtrips(
        tiny_models, tmp_path, arch):
    knobs = {"rank_budget": 3, "init_r": 1, "r_cap": 4, "targets": "all"}
    shapes = backbone_shapes(tiny_models(arch), "all")
    costs = sorted((d_in + d_out for d_in, d_out in shapes.values()), reverse=True)
    # the costliest final allocation: 1 everywhere, the other 2·n ranks on the widest, ≤ 4 each
    left, planned = 2 * len(costs), 0
    for cost in costs:
        extra = min(3, left)
        left -= extra
        planned += (1 + extra) * cost

    meta_method = build_method("increlora", knobs)
    meta = meta_method.apply(build_meta_model(resolve_model(str(tiny_models(arch))), 2))
    assert meta_method.stored_params(meta) == planned

    def active_components(model) -> int:
        total = 0
        for name, (weight_a, weight_b) in lora_pairs(model).items():
            active = (weight_a != 0).any(dim=1)
            k = int(active.sum())
            assert active[:k].all() and not active[k:].any()  # a prefix is active
            assert not weight_b[:, k:].any()
            d_in, d_out = shapes[name]
            total += k * (d_in + d_out)
        assert len(costs) < total / max(costs)  # grew past init_r = 1 somewhere
        assert total <= planned
        return total

    loaded = check_method(tiny_models(arch), tmp_path, "increlora", knobs, active_components,
                          lr=5e-3)
    assert set(lora_pairs(loaded)) == set(shapes)


# --- DyLoRA -------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["bert", "gpt2"])  # nn.Linear and GPT-2's transposed Conv1D
@pytest.mark.parametrize("rank", [1, 3, 6])
def test_dylora_at_rank_b_is_lora_truncated_to_b(tiny_models, arch, rank):
    source = resolve_model(str(tiny_models(arch)))
    method = build_method("dylora", {"r_max": 6, "lora_alpha": 12, "targets": "attn"})
    model = method.apply(load_model(source, num_labels=2, seed=0))
    randomize_b(model)
    method.eval_rank = rank

    # by hand: W + (alpha / b) · B[:, :b] A[:b] merged into a fresh copy of the backbone
    reference = load_model(source, num_labels=2, seed=0)
    with torch.no_grad():
        for name, (weight_a, weight_b) in lora_pairs(model).items():
            delta = 12 / rank * weight_b[:, :rank] @ weight_a[:rank]
            module = reference.get_submodule(name)
            module.weight += delta.T if isinstance(module, Conv1D) else delta
    batch = toy_batch()
    torch.testing.assert_close(logits(model, batch), logits(reference, batch),
                               rtol=1e-4, atol=1e-4)
    if rank < 6:  # and the rank matters
        method.eval_rank = 6
        assert (logits(model, batch) - logits(reference, batch)).abs().max() > 1e-2


def test_dylora_samples_ranks_each_step_and_frozen_mode_trains_only_component_b(tiny_models):
    source = resolve_model(str(tiny_models("bert")))
    method = build_method("dylora", {"r_max": 4, "frozen": True, "lora_dropout": 0.0})
    model = method.apply(load_model(source, num_labels=2, seed=0))
    randomize_b(model)
    torch.manual_seed(0)
    method.start(model, 40)
    seen = set()
    for step in range(1, 41):
        b = method.rank_in_use(training=True)
        seen.add(b)
        model.train()
        model(**toy_batch()).loss.backward()
        method.after_backward(model, step)
        for weight_a, weight_b in lora_pairs(model).values():
            assert not weight_a.grad[:b - 1].any() and not weight_b.grad[:, :b - 1].any()
            assert weight_b.grad[:, b - 1].any()  # component b learns
            assert not weight_a.grad[b:].any() and not weight_b.grad[:, b:].any()  # unused
        model.zero_grad(set_to_none=True)
        method.after_step(model, step)
    assert seen == {1, 2, 3, 4}
    assert method.rank_in_use(training=False) == 4  # evaluation: r_max until a rank is chosen


def test_dylora_rank_selection_picks_the_best_scoring_rank(tiny_models):
    source = resolve_model(str(tiny_models("bert")))
    method = build_method("dylora", {"r_max": 6, "eval_ranks": "all"})
    model = method.apply(load_model(source, num_labels=2, seed=0))
    randomize_b(model)
    batch = toy_batch()
    method.eval_rank = 3
    target = logits(model, batch)

    # a scorer that runs the model: closest to the rank-3 logits wins
    rank, result = method.select_rank(model, lambda: -float((logits(model, batch) - target)
                                                            .abs().max()))
    assert (rank, result, method.eval_rank) == (3, 0.0, 3)

    scores = {1: 0.2, 2: 0.7, 3: 0.5, 4: 0.7, 5: float("nan"), 6: 0.1}
    rank, result = method.select_rank(model, lambda: {"score": scores[method.eval_rank]},
                                      score=lambda r: r["score"])
    assert (rank, result) == (2, {"score": 0.7})  # a tie goes to the smaller rank

    assert build_method("dylora", {"r_max": 6}).evaluation_ranks() == [1, 2, 4, 6]
    assert build_method("dylora", {"r_max": 8}).evaluation_ranks() == [1, 2, 4, 8]


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_dylora_stores_only_the_chosen_rank_and_loads_it_back_exactly(tiny_models, tmp_path,
                                                                      arch):
    model_dir = tiny_models(arch)
    knobs = {"r_max": 8, "targets": "qv"}
    method = build_method("dylora", knobs)
    model = method.apply(load_model(resolve_model(str(model_dir)), num_labels=2, seed=0))
    batch = toy_batch()
    train_steps(model, method, batch, 5e-3, 6)
    shapes = backbone_shapes(model_dir, "qv")
    assert method.stored_params(model) == 8 * sum(a + b for a, b in shapes.values())

    method.select_rank(model, lambda: {2: 1.0}.get(method.eval_rank, 0.0))
    assert method.eval_rank == 2
    assert method.stored_params(model) == 2 * sum(a + b for a, b in shapes.values())
    expected = logits(model, batch)

    path = save_artifact(tmp_path / "artifact", method, model, {
        "model": str(model_dir), "task": "mrpc", "num_labels": 2})
    saved = load_file(str(path / DELTA_FILE))
    lora = {k: v for k, v in saved.items() if ".lora_" in k}
    assert sum(v.numel() for v in lora.values()) == method.stored_params(model)
    assert all(v.shape[0] == 2 for k, v in lora.items() if ".lora_A." in k)

    loaded, _ = load_artifact(path)
    torch.testing.assert_close(logits(loaded, batch), expected, rtol=0, atol=0)
    again = build_method("dylora", knobs)
    again.load(load_model(resolve_model(str(model_dir)), num_labels=2), path)
    assert again.eval_rank == 2


def test_a_trial_chooses_and_reports_the_dylora_rank(tiny_bert, tmp_path):
    source = resolve_model(str(tiny_bert))
    rng = np.random.default_rng(0)

    def split(n: int) -> TokenizedSplit:
        labels = np.arange(n) % 2
        features = []
        for label in labels:
            ids = [101, *rng.integers(1000, 2000, 10).tolist(), 102]
            if label:
                ids[5] = 7
            features.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
        return TokenizedSplit(features=features, labels=labels)

    data = SearchData(tokenizer=load_tokenizer(source), train=split(32), selection=split(16))
    context = TrialContext(model=source, task="mrpc", budget_params=10**6, epochs=1,
                           batch_size=8, seed=0, study_dir=str(tmp_path))
    reports = []
    knobs = {"r_max": 4, "targets": "qv"}
    run_trial({"method": "dylora", "knobs": knobs, "trial_number": 0}, data, context,
              reports.append)
    final = reports[-1]
    assert final["final"]
    rank = final["selection_dylora_rank"]
    assert rank in (1, 2, 4)
    shapes = backbone_shapes(tiny_bert, "qv")
    assert final["stored_params"] == rank * sum(a + b for a, b in shapes.values())
    _, description = load_artifact(tmp_path / final["artifact"])
    assert description["selection_metrics"]["dylora_rank"] == rank


# --- IncreLoRA ----------------------------------------------------------------------------------
def test_increlora_grows_to_the_budget_without_changing_the_output(tiny_models):
    source = resolve_model(str(tiny_models("bert")))
    knobs = {"rank_budget": 3, "init_r": 1, "r_cap": 5, "add_per_step": 2, "interval": 2,
             "targets": "attn"}
    method = build_method("increlora", knobs)
    model = method.apply(load_model(source, num_labels=2, seed=0))
    n = len(lora_pairs(model))  # 4 projections × 2 blocks
    planned = method.stored_params(model)
    assert n == 8 and planned == 8 * 3 * (64 + 64)

    totals = []
    original = method.after_step

    def recording(model, step):
        rebuilt = original(model, step)
        totals.append(sum(int((a != 0).any(dim=1).sum()) for a, _ in lora_pairs(model).values()))
        return rebuilt

    method.after_step = recording
    batch = toy_batch()
    train_steps(model, method, batch, 1e-2, 10)  # growth at steps 2, 4, ..., 2 matrices each
    assert totals == [8, 10, 10, 12, 12, 14, 14, 16, 16, 18]
    assert totals == sorted(totals) and max(totals) <= 3 * n
    assert all(1 <= k <= 5 for k in method.active_ranks().values())
    assert method.stored_params(model) == totals[-1] * 128 < planned

    # a new component leaves the model's output unchanged at that moment
    before = logits(model, batch)
    grown = method.grow(model, 3)
    assert len(grown) == 3 and method.total_rank() == 21
    torch.testing.assert_close(logits(model, batch), before, rtol=0, atol=0)
    # ... and learns from the next step on
    name = grown[0].removeprefix(PEFT_PREFIX)
    k = method.active_ranks()[grown[0]]
    train_steps(model, method, batch, 1e-2, 1)
    assert lora_pairs(model)[name][1][:, k - 1].any()

    # growth stops at the budget
    method.grow(model, 100)
    assert method.total_rank() == 3 * n
    assert method.grow(model, 1) == []
    assert method.stored_params(model) <= planned


def test_increlora_spreads_growth_to_reach_the_budget_in_time(tiny_models):
    source = resolve_model(str(tiny_models("bert")))
    method = build_method("increlora", {"rank_budget": 4, "targets": "qv"})  # 4 matrices
    model = method.apply(load_model(source, num_labels=2, seed=0))
    train_steps(model, method, toy_batch(), 1e-2, 20)  # 12 ranks to add by step 14
    assert method.total_rank() == 16


def test_increlora_rejects_inconsistent_ranks():
    with pytest.raises(AutoPeftError, match="init_r <= rank_budget <= r_cap"):
        build_method("increlora", {"rank_budget": 8, "r_cap": 4})
