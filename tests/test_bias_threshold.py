"""U-BitFit / S-BitFit (warm-up-scored bias pruning) and Threshold-Mask (learned binary masks)."""

from __future__ import annotations

import pytest
import torch

from autopeft.backbones.models import load_model, load_tokenizer, resolve_model
from autopeft.methods import build_method
from autopeft.methods.sparse import engine
from autopeft.methods.sparse.bias_pruning import (
    WARMUP_BATCH_SIZE,
    bias_tensors,
    greedy_vectors,
    repeat_batches,
    warmup_saliency,
)
from autopeft.methods.sparse.threshold_mask import ScoreMask
from autopeft.space.sizing import Sizer
from tests.helpers import ListSource, _batch, _train
from tests.roundtrip import assert_artifact_roundtrip

TINY_BIASES = 1_216  # 2 × (4·64 attn + 2·64 LayerNorm + 128 + 64 FFN) + 64 emb. LN (pooler: head)


def _effective(model, tensor_name):
    module, _, attr = tensor_name.rpartition(".")
    return getattr(model.get_submodule(module), attr).detach()


def _assert_roundtrip(tmp_path, tiny_bert, method, model, tokenizer):
    inputs = {k: v for k, v in _batch(tokenizer).items() if k != "labels"}
    return assert_artifact_roundtrip(tmp_path, tiny_bert, method, model, inputs)


def test_warmup_score_is_gradient_times_change_and_leaves_the_model_untouched(tiny_bert):
    source = resolve_model(str(tiny_bert))
    model = build_method("bitfit", {}).apply(load_model(source, num_labels=2, seed=3))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    batch = next(ListSource(load_tokenizer(source)).batches(8))
    tensors = bias_tensors(model)
    name = "bert.encoder.layer.0.intermediate.dense.bias"
    model.eval()
    grad, = torch.autograd.grad(model(**batch).loss, tensors[name])
    model.train()
    scores = warmup_saliency(model, tensors, iter([batch]), steps=1, lr=1e-3)
    # one AdamW step moves by lr·g/(|g|+eps) (bias-corrected moments), so |g·Δ| = lr·g²/(|g|+eps)
    torch.testing.assert_close(scores[name], 1e-3 * grad**2 / (grad.abs() + 1e-8))
    assert sum(p.numel() for p in tensors.values()) == TINY_BIASES
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters()) and model.training


def test_greedy_vectors_fill_the_cap_by_score_per_entry():
    scores = {"a": torch.ones(4), "b": torch.full((2,), 5.0), "c": torch.full((3,), 2.0),
              "d": torch.full((1,), 0.5)}
    # b (2) and c (3) fit; a (4) would exceed 6; d (1) still fits
    assert greedy_vectors(scores, 6) == ["b", "c", "d"]
    assert greedy_vectors(scores, 1) == ["d"] and greedy_vectors(scores, 0) == []


@pytest.mark.parametrize("name", ["u_bitfit", "s_bitfit"])
def test_bias_pruning_keeps_the_best_within_k_trains_only_them_and_roundtrips(
    tiny_bert, tmp_path, name
):
    source = resolve_model(str(tiny_bert))
    tokenizer = load_tokenizer(source)
    knobs = {"density": 0.3, "warmup_steps": 3}
    method = build_method(name, knobs)
    model = method.apply(load_model(source, num_labels=2, seed=3))
    k = int(0.3 * TINY_BIASES)
    assert method.stored_params(model) == Sizer(source, 2).measure(name, knobs).stored_params == k

    reference = build_method(name, knobs).apply(load_model(source, num_labels=2, seed=3))
    pretrained = {n: p.detach().clone() for n, p in reference.named_parameters()}
    batches = repeat_batches(ListSource(tokenizer), WARMUP_BATCH_SIZE)
    scores = warmup_saliency(reference, bias_tensors(reference), batches, 3, 5e-3)
    method.prepare(model, ListSource(tokenizer))

    if name == "u_bitfit":
        kept = {n: d.indices for n, d in engine.deltas(model).items()}
        assert sum(len(i) for i in kept.values()) == k == method.stored_params(model)
        cutoff = torch.topk(torch.cat([s.flatten() for s in scores.values()]), k).values.min()
        assert all((scores[n].flatten()[i] >= cutoff).all() for n, i in kept.items())
    else:
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        kept = {n: torch.arange(scores[n].numel()) for n in scores if n in trainable}
        used = sum(scores[n].numel() for n in kept)
        assert 0 < used <= k and method.stored_params(model) == used
        assert trainable - set(kept) == {"classifier.weight", "classifier.bias",  # the head
                                         "bert.pooler.dense.weight", "bert.pooler.dense.bias"}
        assert kept.keys() == set(greedy_vectors(scores, k))
        assert method.changed_entries(model) == {n: scores[n].numel() for n in kept}
    # restored after the warm-up: biases pretrained, head as initialised
    for tensor_name in scores:
        assert torch.equal(_effective(model, tensor_name), pretrained[tensor_name])
    assert torch.equal(model.classifier.weight, pretrained["classifier.weight"])

    _train(model, method, _batch(tokenizer), lr=1e-2, steps=3)
    changed = 0
    for tensor_name, before in pretrained.items():
        if tensor_name not in scores:
            continue
        effective = _effective(model, tensor_name)
        untouched = torch.ones_like(before, dtype=torch.bool)
        if tensor_name in kept:
            untouched[kept[tensor_name]] = False
            changed += int((effective != before).sum())
        assert torch.equal(effective[untouched], before[untouched])  # bit-identical
    assert changed > 0
    _assert_roundtrip(tmp_path, tiny_bert, method, model, tokenizer)


def test_straight_through_gradient_reaches_masked_and_unmasked_scores():
    torch.manual_seed(0)
    weight, upstream = torch.randn(5, 4), torch.randn(5, 4)
    mask = ScoreMask(weight, threshold=0.01, score_init=0.02)
    with torch.no_grad():
        mask.scores[0] = 0.0  # row 0 masked
    effective = mask(weight)
    assert torch.equal(effective[0], torch.zeros(4)) and torch.equal(effective[1:], weight[1:])
    (effective * upstream).sum().backward()
    torch.testing.assert_close(mask.scores.grad, upstream * weight)  # masked row included


def _train_with_hooks(model, method, batch, lr, steps):
    """The loop's order of calls: backward, after_backward, step, after_step."""
    optimizer = torch.optim.AdamW(method.parameter_groups(model, 0.01), lr=lr)
    for step in range(1, steps + 1):
        model(**batch).loss.backward()
        method.after_backward(model, step)
        optimizer.step()
        optimizer.zero_grad()
        method.after_step(model, step)


def test_threshold_mask_masks_within_the_cap_counts_exactly_and_roundtrips(tiny_bert, tmp_path):
    source = resolve_model(str(tiny_bert))
    tokenizer = load_tokenizer(source)
    knobs = {"targets": "attn", "max_masked": 0.01, "score_init": 0.015}
    method = build_method("threshold_mask", knobs)
    model = method.apply(load_model(source, num_labels=2, seed=3))
    k = int(0.01 * 2 * 4 * 64 * 64)
    assert method.stored_params(model) == Sizer(source, 2).measure(
        "threshold_mask", knobs).stored_params == k
    masks = method.masks(model)
    originals = {n: model.get_submodule(n.rpartition(".")[0]).parametrizations.weight.original
                 .detach().clone() for n in masks}
    assert all(torch.equal(_effective(model, n), w) for n, w in originals.items())

    model(**_batch(tokenizer)).loss.backward()
    assert all(m.scores.grad is not None and m.scores.grad.abs().sum() > 0
               for m in masks.values())
    model.zero_grad()

    _train_with_hooks(model, method, _batch(tokenizer), lr=1e-2, steps=2)
    zeros = sum(int((_effective(model, n) == 0).sum()) for n in masks)
    assert 0 < zeros <= k and method.stored_params(model) == zeros
    assert sum(method.changed_entries(model).values()) == zeros == method.stored_bytes(model) // 8
    for name, weight in originals.items():
        kept = masks[name].scores >= masks[name].threshold
        assert torch.equal(_effective(model, name)[kept], weight[kept])  # bit-identical
    loaded = _assert_roundtrip(tmp_path, tiny_bert, method, model, tokenizer)
    assert sum(int((_effective(loaded, n) == 0).sum()) for n in masks) == zeros
