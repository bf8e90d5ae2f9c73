"""Diff pruning: hard-concrete math, the magnitude projection, the phase switch, artifacts."""

from __future__ import annotations

import math

import pytest
import torch

from autopeft.artifacts.store import load_artifact, save_artifact
from autopeft.backbones.models import load_model, load_tokenizer, resolve_model
from autopeft.methods import METHODS, build_method
from autopeft.methods.sparse import engine, l0
from autopeft.methods.sparse.diff_pruning import DiffPruning, l0_deltas, magnitude_projection
from autopeft.space.sizing import Sizer
from autopeft.tasks import get_task, load_task_data
from autopeft.train.data import tokenize_frame
from autopeft.train.loop import LoopSettings, fit
from tests.roundtrip import assert_artifact_roundtrip

TINY_BACKBONE = 2_036_992  # parameters of the tiny BERT without its head
SAMPLES = 20_000


def test_registered():
    assert METHODS["diff_pruning"] is DiffPruning


@pytest.mark.parametrize(("low", "high"), [(l0.LOW, l0.HIGH), (-0.1, 1.1)])
def test_expected_l0_matches_monte_carlo(low, high):
    torch.manual_seed(0)
    alpha = torch.linspace(-4.0, 4.0, 41)
    draws = l0.sample_mask(alpha.expand(SAMPLES, -1).contiguous(), low=low, high=high)
    assert ((draws >= 0) & (draws <= 1)).all()
    observed = (draws != 0).float().sum(dim=1).mean()
    assert observed.item() == pytest.approx(l0.expected_l0(alpha, low=low, high=high).item(),
                                            rel=0.02)


def test_structured_expected_l0_matches_monte_carlo():
    torch.manual_seed(1)
    alpha = torch.empty(5, 8).uniform_(-3.0, 3.0)  # 5 groups of 8 entries
    group_alpha = torch.tensor([[-2.0], [-0.5], [0.0], [1.0], [3.0]])
    draws = l0.sample_mask(alpha.expand(SAMPLES, -1, -1).contiguous(),
                           group_alpha.expand(SAMPLES, -1, -1).contiguous())
    observed = (draws != 0).float().sum(dim=(1, 2)).mean()
    expected = l0.expected_l0(alpha, group_alpha)
    assert observed.item() == pytest.approx(expected.item(), rel=0.03)
    # a whole group is zero together: a group gate of 0 silences all its entries
    silent = (draws.flatten(2) == 0).all(dim=2).float().mean(dim=0)
    assert silent[0] > 1.0 - l0.prob_nonzero(group_alpha[0]).item() - 0.02


def test_deterministic_mask_is_exact_zero_and_one_at_the_extremes():
    z = l0.deterministic_mask(torch.tensor([-5.0, 0.0, math.log(2.0), 5.0]))
    assert z.tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0])  # σ(log 2)·3 − 1.5 = 0.5
    assert z[0] == 0.0 and z[-1] == 1.0  # exactly, not nearly


def test_magnitude_projection_keeps_exactly_the_k_largest():
    deltas = {"a": torch.tensor([[0.1, -5.0], [3.0, 0.0]]), "b": torch.tensor([-4.0, 0.2, 6.0])}
    chosen = magnitude_projection(deltas, 3)
    assert chosen["a"].tolist() == [1] and chosen["b"].tolist() == [0, 2]

    torch.manual_seed(2)
    deltas = {"x": torch.randn(40, 30), "y": torch.randn(500), "z": torch.zeros(7)}
    for k in (1, 17, 1000, 1707):
        chosen = magnitude_projection(deltas, k)
        assert sum(len(i) for i in chosen.values()) == k
        kept, rest = [], []
        for name, indices in chosen.items():
            flat = deltas[name].flatten().abs()
            dropped = torch.ones_like(flat, dtype=torch.bool)
            dropped[indices] = False
            kept.append(flat[indices])
            rest.append(flat[dropped])
        kept, rest = torch.cat(kept), torch.cat(rest)
        assert rest.numel() == 0 or kept.min() >= rest.max()


def _mrpc(tiny_bert, mrpc_dir, rows):
    task = get_task("mrpc")
    source = resolve_model(str(tiny_bert))
    tokenizer = load_tokenizer(source)
    frame = load_task_data(task, mrpc_dir).train.head(rows)
    return task, source, tokenizer, tokenize_frame(frame, task.text_columns, tokenizer)


@pytest.mark.parametrize("structured", [False, True])
def test_training_crosses_the_switch_and_roundtrips(tiny_bert, mrpc_dir, tmp_path, structured):
    task, source, tokenizer, split = _mrpc(tiny_bert, mrpc_dir, rows=24)
    density = 0.002
    method = build_method("diff_pruning", {"density": density, "structured": structured,
                                           "learning_rate": 1e-2, "l0_fraction": 0.5})
    planned = math.floor(density * TINY_BACKBONE)
    assert Sizer(source, 2).measure("diff_pruning", {"density": density}).stored_params == planned
    model = method.apply(load_model(source, num_labels=2, seed=3))
    assert method.stored_params(model) == planned
    gates = l0_deltas(model)
    assert all((d.group_alpha is not None) == structured for d in gates.values())
    alpha_groups = [g for g in method.parameter_groups(model, 0.0) if "lr" in g]
    assert len(alpha_groups) == 1 and alpha_groups[0]["lr"] == method.config.alpha_lr

    penalties, switches = [], []
    penalty, after_step = method.penalty, method.after_step
    method.penalty = lambda m: penalties.append(penalty(m)) or penalties[-1]
    method.after_step = lambda m, s: switches.append(after_step(m, s)) or switches[-1]
    settings = LoopSettings(epochs=1, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0)
    fit(model, method, split, split, tokenizer, task, settings)

    assert switches == [False, False, True, False, False, False]  # 6 steps, switch after 3
    assert all(p is not None and p.item() > 0 for p in penalties[:3])
    assert all(p is None for p in penalties[3:])
    assert not l0_deltas(model)
    assert engine.stored_entries(model) == planned == method.stored_params(model)
    sparse = engine.deltas(model)
    assert sum(int((d.values != 0).sum()) for d in sparse.values()) <= planned
    assert any((d.values != 0).any() for d in sparse.values())

    reference = load_model(source, num_labels=2, seed=3)
    for name, original in engine.backbone_tensors(reference).items():
        effective = engine.effective(model, name).flatten()
        untouched = torch.ones_like(effective, dtype=torch.bool)
        if name in sparse:
            untouched[sparse[name].indices] = False
        assert torch.equal(effective[untouched], original.detach().flatten()[untouched]), name

    inputs = {k: v for k, v in _batch(tokenizer, split).items() if k != "labels"}
    loaded = assert_artifact_roundtrip(tmp_path, tiny_bert, method, model, inputs)
    assert engine.stored_entries(loaded) == planned


def test_saving_before_the_switch_writes_the_projection(tiny_bert, mrpc_dir, tmp_path):
    _, source, tokenizer, split = _mrpc(tiny_bert, mrpc_dir, rows=4)
    method = build_method("diff_pruning", {"density": 0.001, "structured": True})
    model = method.apply(load_model(source, num_labels=2, seed=4))
    torch.manual_seed(5)
    with torch.no_grad():
        for delta in l0_deltas(model).values():
            delta.w.normal_(0.0, 0.05)
            delta.alpha.uniform_(-1.0, 2.0)
    inputs = {k: v for k, v in _batch(tokenizer, split).items() if k != "labels"}
    path = save_artifact(tmp_path / "early", method, model, {
        "model": str(tiny_bert), "task": "mrpc", "num_labels": 2})
    assert l0_deltas(model)  # saving leaves the dense phase in place
    method.project(model)
    model.eval()
    loaded, _ = load_artifact(path)
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits,
                                   rtol=0, atol=0)


def _batch(tokenizer, split):
    features = [dict(f) for f in split.features[:4]]
    batch = tokenizer.pad(features, return_tensors="pt")
    return {**batch, "labels": torch.tensor(split.labels[:4])}
