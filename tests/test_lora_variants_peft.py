"""KronA (peft LoKr with full-rank factors) and AdaLoRA (peft) on every architecture family.

Expected counts are computed here from module shapes and knobs (KronA) or from the trained
singular values (AdaLoRA), never from the method's own accounting.
"""

from __future__ import annotations

import math

import pytest
import torch
from peft.tuners.adalora import AdaLoraLayer
from peft.tuners.lokr import LoKrLayer
from safetensors.torch import load_file

from autopeft.backbones.models import build_meta_model, load_model, resolve_model
from autopeft.errors import AutoPeftError, MethodNotApplicable
from autopeft.methods import build_method
from autopeft.methods.targets import ROLE_SETS, projection_shape, resolve_roles
from autopeft.space.sizing import Sizer
from tests.arch_harness import ARCHITECTURES, check_method, toy_batch, train_steps


def _shapes(model_dir, targets: str) -> list[tuple[int, int]]:
    """(d_in, d_out) of every projection `targets` names, read off a fresh backbone."""
    base = build_meta_model(resolve_model(str(model_dir)), 2)
    names = resolve_roles(base, ROLE_SETS[targets])
    return [projection_shape(base.get_submodule(n)) for n in names]


def _split(d: int, factor: int) -> tuple[int, int]:
    """KronA's split of a dimension: (f, d/f) for a divisor f, else the most balanced pair."""
    if factor > 0 and d % factor == 0:
        return factor, d // factor
    small = max(m for m in range(1, math.isqrt(d) + 1) if d % m == 0)
    return small, d // small


def _krona_count(shapes, factor: int) -> int:
    total = 0
    for d_in, d_out in shapes:
        (a1, b1), (a2, b2) = _split(d_out, factor), _split(d_in, factor)
        total += a1 * a2 + b1 * b2  # A (a1 × a2) ⊗ B (b1 × b2) is d_out × d_in
    return total


def _adalora_kept(model) -> dict[str, tuple[int, int, int]]:
    """Adapted module → (live singular values ≠ 0, d_in, d_out), from the trained tensors."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, AdaLoraLayer):
            d_in, d_out = projection_shape(module.get_base_layer())
            out[name] = (int((module.lora_E["default"] != 0).sum()), d_in, d_out)
    return out


# --- KronA -----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_krona_learns_counts_both_dense_factors_and_roundtrips(tiny_models, tmp_path, arch):
    knobs = {"decompose_factor": 4, "targets": "all"}
    expected = _krona_count(_shapes(tiny_models(arch), "all"), 4)

    if arch == "gpt2":  # peft's LoKr has no Conv1D layer
        with pytest.raises(MethodNotApplicable, match="krona.*Conv1D"):
            check_method(tiny_models(arch), tmp_path, "krona", knobs, lambda m: expected)
        return
    model = check_method(tiny_models(arch), tmp_path, "krona", knobs, lambda m: expected)
    names = [n for n, _ in model.named_parameters() if ".lokr_" in n]
    assert names and all(".lokr_w1." in n or ".lokr_w2." in n for n in names)  # no low rank
    layer = next(m for m in model.modules() if isinstance(m, LoKrLayer))
    w1, w2 = layer.lokr_w1["default"], layer.lokr_w2["default"]
    assert w1.shape == (4, 4)
    torch.testing.assert_close(layer.get_delta_weight("default"),  # ΔW = s·(A ⊗ B), s = 1
                               torch.kron(w1, w2).reshape(layer.get_base_layer().weight.shape))


@pytest.mark.parametrize("factor", [-1, 2, 8])
def test_krona_planned_count_follows_the_kronecker_split(tiny_models, factor):
    sizer = Sizer(resolve_model(str(tiny_models("bert"))), 2)
    for targets in ROLE_SETS:
        stored = sizer.measure("krona", {"decompose_factor": factor, "targets": targets})
        assert stored.stored_params == _krona_count(_shapes(tiny_models("bert"), targets), factor)
    # factor 2 on a 128-wide FFN: B is 64 × 32 and still one dense matrix (no lokr_w2_a/_b)
    model = build_method("krona", {"decompose_factor": factor, "targets": "all"}).apply(
        build_meta_model(resolve_model(str(tiny_models("bert"))), 2))
    assert not [n for n, _ in model.named_parameters() if "_a." in n or "_b." in n]


def test_krona_saves_exactly_what_it_counts(tiny_models, tmp_path):
    method = build_method("krona", {"targets": "attn"})
    model = method.apply(load_model(resolve_model(str(tiny_models("llama"))), 2))
    method.save(model, tmp_path)
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert sum(t.numel() for k, t in saved.items() if ".lokr_" in k) == method.stored_params(model)
    assert method.stored_params(model) == _krona_count(_shapes(tiny_models("llama"), "attn"), -1)


# --- AdaLoRA ---------------------------------------------------------------------------------
ADALORA = {"init_r": 4, "target_r": 2, "targets": "attn", "tinit": 0.2, "tfinal": 0.3,
           "lora_dropout": 0.0}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_adalora_learns_prunes_to_the_budget_counts_exactly_and_roundtrips(
    tiny_models, tmp_path, arch
):
    def from_singular_values(model):
        kept = _adalora_kept(model)
        assert sum(r for r, _, _ in kept.values()) <= ADALORA["target_r"] * len(kept)
        return sum(r * (d_in + d_out + 1) for r, d_in, d_out in kept.values())

    loaded = check_method(tiny_models(arch), tmp_path, "adalora", ADALORA, from_singular_values,
                          steps=16)
    planned = Sizer(resolve_model(str(tiny_models(arch))), 2).measure("adalora", ADALORA)
    stored = build_method("adalora", ADALORA).stored_params(loaded)  # read off the artifact
    assert stored == from_singular_values(loaded) <= planned.stored_params


def test_adalora_planned_count_is_the_target_rank_formula_and_training_stays_under_it(
    tiny_models, tmp_path
):
    source = resolve_model(str(tiny_models("bert")))
    knobs = {**ADALORA, "init_r": 6, "target_r": 3, "targets": "qv", "tinit": 0.25,
             "tfinal": 0.25, "orth_reg_weight": 0.0}
    shapes = _shapes(tiny_models("bert"), "qv")  # every q/v is 64 × 64
    planned = Sizer(source, 2).measure("adalora", knobs).stored_params
    assert planned == 3 * len(shapes) * (64 + 64) + 3 * len(shapes)  # P, Q and Λ at target_r
    mixed = Sizer(source, 2).measure("adalora", {**knobs, "targets": "all"}).stored_params
    shapes_all = _shapes(tiny_models("bert"), "all")  # FFN 64 × 128: the widest triplet bounds
    assert mixed == 3 * len(shapes_all) * max(i + o + 1 for i, o in shapes_all)

    torch.manual_seed(0)
    method = build_method("adalora", knobs)
    model = method.apply(load_model(source, 2))
    assert method.stored_params(model) == planned  # before any allocation: the plan
    with pytest.raises(AutoPeftError, match="never allocated"):
        method.save(model, tmp_path)
    original, rebuild_steps = method.after_step, []

    def after_step(m, s):
        changed = original(m, s)
        if changed:
            rebuild_steps.append(s)
        return changed

    method.after_step = after_step  # type: ignore[method-assign]
    train_steps(model, method, toy_batch(), 1e-2, 20)  # tinit 5 steps, final allocation at 15
    assert rebuild_steps == [15]
    kept = _adalora_kept(model)
    allocated = sum(r for r, _, _ in kept.values())
    assert allocated <= 3 * len(shapes)
    layers = [m for m in model.modules() if isinstance(m, AdaLoraLayer)]
    assert sum(m.lora_E["default"].shape[0] for m in layers) == allocated  # pruned ones removed
    assert method.stored_params(model) == allocated * (64 + 64 + 1) <= planned
    method.save(model, tmp_path)
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert sum(t.numel() for k, t in saved.items() if ".lora_" in k) == method.stored_params(model)


def test_adalora_masks_nothing_before_tinit_and_masked_triplets_stay_zero(tiny_models):
    source = resolve_model(str(tiny_models("distilbert")))
    method = build_method("adalora", {**ADALORA, "init_r": 6, "tinit": 0.25, "tfinal": 0.25})
    model = method.apply(load_model(source, 2))
    method.start(model, 20)
    schedule = model.peft_config["default"]
    assert (schedule.total_step, schedule.tinit, schedule.tfinal) == (20, 5, 5)
    batch = toy_batch()
    optimizer = torch.optim.AdamW(method.parameter_groups(model, 0.0), lr=1e-2)
    for step in range(1, 12):
        model(**batch).loss.backward()
        method.after_backward(model, step)
        optimizer.step()
        optimizer.zero_grad()
        assert not method.after_step(model, step)
        pattern = schedule.rank_pattern
        if step <= 5:
            assert pattern is None
            continue
        for name, keep in pattern.items():  # what peft masked stays masked after the step
            values = model.base_model.model.get_parameter(name).view(-1)
            assert (values[~torch.tensor(keep)] == 0).all()
    kept = sum(sum(k) for k in schedule.rank_pattern.values())
    assert 2 * len(schedule.rank_pattern) <= kept < 6 * len(schedule.rank_pattern)


def test_adalora_orthogonal_penalty_is_inside_the_loss(tiny_models):
    source = resolve_model(str(tiny_models("bert")))
    batch = toy_batch()
    losses = {}
    for weight in (0.0, 0.5):
        method = build_method("adalora", {**ADALORA, "orth_reg_weight": weight})
        model = method.apply(load_model(source, 2)).eval()
        assert method.penalty(model) is None
        with torch.no_grad():
            plain = model.base_model.model(**batch).loss  # the backbone's own loss
            losses[weight] = (model(**batch).loss - plain).item()
    assert losses[0.0] == 0.0 and losses[0.5] > 0.1


def test_adalora_needs_init_r_above_target_r(tiny_models):
    method = build_method("adalora", {"init_r": 4, "target_r": 4})
    model = method.apply(build_meta_model(resolve_model(str(tiny_models("bert"))), 2))
    with pytest.raises(AutoPeftError, match="init_r=4 must exceed target_r=4"):
        method.start(model, 10)


@pytest.mark.parametrize("steps", [1, 2])
def test_adalora_allocates_even_in_a_run_of_one_or_two_steps(tiny_models, steps):
    method = build_method("adalora", {**ADALORA, "tinit": 0.9, "tfinal": 0.9})
    model = method.apply(load_model(resolve_model(str(tiny_models("bert"))), 2))
    train_steps(model, method, toy_batch(), 1e-2, steps)
    ranks = method.allocated_ranks(model)
    assert ranks is not None and sum(ranks.values()) <= 2 * len(ranks)
    assert model.peft_config["default"].tinit < steps - model.peft_config["default"].tfinal
