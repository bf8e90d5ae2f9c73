"""Sparse fine-tuning: the engine, Fisher top-k selection, FISH / Child-Tuning, Child-Tuning_F."""

from __future__ import annotations

import pytest
import torch

from autopeft.backbones.models import load_model, load_tokenizer, resolve_model
from autopeft.methods import build_method
from autopeft.methods.sparse import engine
from autopeft.methods.sparse.fisher import empirical_fisher, top_k
from autopeft.methods.targets import is_head_param
from autopeft.space.sizing import Sizer
from tests.helpers import ListSource, _batch, _train
from tests.roundtrip import assert_artifact_roundtrip


def test_top_k_takes_exactly_the_k_largest_across_tensors():
    scores = {"a": torch.tensor([[0.1, 5.0], [3.0, 0.2]]), "b": torch.tensor([4.0, 0.0, 6.0])}
    chosen = top_k(scores, 3)
    assert chosen["a"].tolist() == [1] and chosen["b"].tolist() == [0, 2]
    assert sum(len(v) for v in top_k(scores, 7).values()) == 7


def test_fisher_is_the_sum_of_squared_per_example_gradients(tiny_bert):
    source = resolve_model(str(tiny_bert))
    model = load_model(source, num_labels=2)
    batches = list(ListSource(load_tokenizer(source)).batches(1))[:3]
    scores = empirical_fisher(model, batches)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    weight = dict(model.named_parameters())[name]
    expected = torch.zeros_like(weight)
    for batch in batches:
        grad, = torch.autograd.grad(model(**batch).loss, weight)
        expected += grad ** 2
    torch.testing.assert_close(scores[name], expected)
    assert all(p.requires_grad for p in model.parameters())  # requires_grad restored


@pytest.mark.parametrize("name", ["fish", "child_tuning_d"])
def test_fisher_masks_select_top_k_train_only_them_and_roundtrip(tiny_bert, tmp_path, name):
    source = resolve_model(str(tiny_bert))
    tokenizer = load_tokenizer(source)
    method = build_method(name, {"density": 0.01, "fisher_samples": 8})
    model = method.apply(load_model(source, num_labels=2, seed=3))
    planned = Sizer(source, 2).measure(name, {"density": 0.01}).stored_params
    assert method.stored_params(model) == planned == int(0.01 * 2_036_992)

    reference = load_model(source, num_labels=2, seed=3)
    scores = empirical_fisher(reference, ListSource(tokenizer).batches(method.fisher_batch_size))
    method.prepare(model, ListSource(tokenizer))
    selection = {n: d.indices for n, d in engine.deltas(model).items()}
    assert sum(len(i) for i in selection.values()) == planned == method.stored_params(model)
    flat = torch.cat([s.flatten() for s in scores.values()])
    threshold = torch.topk(flat, planned).values.min()
    for tensor_name, indices in selection.items():
        assert (scores[tensor_name].flatten()[indices] >= threshold).all()

    originals = {n: engine.original(reference, n).detach().clone() for n in selection}
    _train(model, method, _batch(tokenizer), lr=1e-2, steps=3)
    for tensor_name, indices in selection.items():
        assert torch.equal(engine.original(model, tensor_name), originals[tensor_name])
        effective = engine.effective(model, tensor_name).flatten()
        before = originals[tensor_name].flatten()
        untouched = torch.ones_like(before, dtype=torch.bool)
        untouched[indices] = False
        assert torch.equal(effective[untouched], before[untouched])  # bit-identical
    assert any((d.values != 0).any() for d in engine.deltas(model).values())

    inputs = {k: v for k, v in _batch(tokenizer).items() if k != "labels"}
    loaded = assert_artifact_roundtrip(tmp_path, tiny_bert, method, model, inputs)
    assert engine.stored_bytes(loaded) == planned * (4 + 8)


def test_child_tuning_f_keeps_the_gradient_in_expectation(tiny_bert):
    source = resolve_model(str(tiny_bert))
    method = build_method("bitfit", {"child_f_p": 0.3})
    model = method.apply(load_model(source, num_labels=2))
    params = [p for n, p in model.named_parameters() if p.requires_grad and not is_head_param(n)]
    torch.manual_seed(0)
    grads = [torch.randn_like(p) for p in params]
    total, draws = [torch.zeros_like(g) for g in grads], 400
    kept = 0.0
    for _ in range(draws):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        method.after_backward(model, step=0)
        for acc, p in zip(total, params, strict=True):
            acc += p.grad
        kept += sum((p.grad != 0).sum().item() for p in params) / sum(p.numel() for p in params)
    assert kept / draws == pytest.approx(0.3, abs=0.01)
    mean = torch.cat([(t / draws).flatten() for t in total])
    target = torch.cat([g.flatten() for g in grads])
    # unbiased: E[mask/p · g] = g; with 400 draws the error is ~ sqrt((1-p)/p/400) ≈ 0.08·|g|
    assert torch.corrcoef(torch.stack([mean, target]))[0, 1] > 0.98
    assert (mean - target).abs().mean() < 0.1 * target.abs().mean() + 0.02


@pytest.mark.parametrize(("indices", "block_path"), [
    (torch.tensor([1, 7, 13, 19, 25, 31, 37]), True),  # one input column (1), 7 output rows
    (torch.tensor([0, 7, 14, 21, 28, 35]), False),  # a diagonal: 6 rows × 6 columns, dense block
])
def test_linear_deltas_compute_weight_plus_delta_on_either_path(indices, block_path):
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(6, 8))
    x = torch.randn(3, 5, 6)
    values = torch.randn(len(indices))
    dense = layer[0].weight.detach().clone().flatten()
    dense[indices] += values
    expected = x @ dense.view(8, 6).T + layer[0].bias.detach()

    # the bias first: its parametrization wraps the class, the weight must still get its path
    engine.attach(layer, {"0.bias": torch.tensor([2]), "0.weight": indices})
    delta = engine.deltas(layer)["0.weight"]
    assert isinstance(delta, engine.SparseLinearDelta) == block_path
    with torch.no_grad():
        delta.values.copy_(values)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(engine.effective(layer, "0.weight"), dense.view(8, 6))

    layer(x).pow(2).sum().backward()
    reference = dense.view(8, 6).clone().requires_grad_(True)
    (x @ reference.T + layer[0].bias.detach()).pow(2).sum().backward()
    torch.testing.assert_close(delta.values.grad, reference.grad.flatten()[indices])
    assert engine.original(layer, "0.weight").grad is None  # no dense weight gradient stored
