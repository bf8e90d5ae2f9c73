"""LST and attention fusion: every architecture, frozen backbone, exact counts, layer weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autopeft.backbones.models import load_model, resolve_model
from autopeft.errors import MethodNotApplicable
from autopeft.methods import build_method
from autopeft.methods.allocation import backbone_sizes
from autopeft.methods.side.hidden_states import ADDONS
from autopeft.methods.targets import is_head_param
from autopeft.space.sizing import Sizer
from tests.arch_harness import ARCHITECTURES, check_method, toy_batch, train_steps


def _fresh(model_dir, seed: int = 0) -> nn.Module:
    return load_model(resolve_model(str(model_dir)), num_labels=2, seed=seed)


def _dims(model_dir) -> tuple[int, int]:
    """Hidden size and block count, read off a real forward pass (not the method's config)."""
    model = _fresh(model_dir).eval()
    batch = toy_batch(2)
    with torch.no_grad():
        hidden = model.base_model(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"],
                                  output_hidden_states=True).hidden_states
    return hidden[-1].shape[-1], len(hidden) - 1


def lst_count(d: int, layers: int, reduction: int) -> int:
    r = d // reduction
    downsample = (layers + 1) * (d * r + r)
    gates = layers
    norms = 2 * (2 * r)
    attention = (3 * r * r + 3 * r) + (r * r + r)  # qkv, out
    ffn = (4 * r * r + 4 * r) + (4 * r * r + r)  # r -> 4r -> r
    block = norms + attention + ffn
    final_norm, upsample = 2 * r, r * d + d
    return downsample + gates + layers * block + final_norm + upsample


def fusion_count(d: int, fusion_dim: int) -> int:
    return 2 * d * fusion_dim  # W_q and W_k, no biases


def _backbone(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters()
            if not is_head_param(n) and n.split(".")[0] not in ADDONS}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lst_learns_counts_exactly_and_roundtrips(tiny_models, tmp_path, arch):
    d, layers = _dims(tiny_models(arch))
    check_method(tiny_models(arch), tmp_path, "lst", {"reduction": 8},
                 lambda model: lst_count(d, layers, 8), lr=5e-3)


def test_lst_count_by_hand():
    # d=64, L=2, r=8: downs 3·(512+8) + gates 2 + blocks 2·(12·64+13·8) + norm 16 + up 512+64
    assert lst_count(64, 2, 8) == 1560 + 2 + 1744 + 16 + 576


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_attention_fusion_learns_counts_exactly_and_roundtrips(tiny_models, tmp_path, arch):
    d, _ = _dims(tiny_models(arch))
    check_method(tiny_models(arch), tmp_path, "attention_fusion", {"fusion_dim": 16},
                 lambda model: fusion_count(d, 16), lr=1e-2)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_lst_never_backpropagates_into_the_backbone_and_leaves_it_unchanged(tiny_models, arch):
    reference = _fresh(tiny_models(arch)).eval()
    method = build_method("lst", {"reduction": 8})
    model = method.apply(_fresh(tiny_models(arch)))
    before = {n: p.detach().clone() for n, p in _backbone(model).items()}
    assert before and all(not p.requires_grad for p in _backbone(model).values())

    grad_modes = []
    first_block = next(m for n, m in model.base_model.named_modules()
                       if n.endswith(("layer.0", "layers.0", "h.0")))
    first_block.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    batch = toy_batch()
    model.train()
    model(**batch).loss.backward()
    assert grad_modes == [False]  # the backbone ran under torch.no_grad()
    assert all(p.grad is None for p in _backbone(model).values())
    side = [p for n, p in model.named_parameters() if n.startswith("side_network.")]
    assert side and all(p.grad is not None for p in side)
    assert model.side_network.gate_logits.grad.abs().sum() > 0  # the ladder gates learn

    train_steps(model, method, batch, lr=1e-2, steps=3)
    assert all(torch.equal(before[n], p) for n, p in _backbone(model).items())
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    model.eval()
    with torch.no_grad():
        ours = model.base_model(**inputs, output_hidden_states=True)
        theirs = reference.base_model(**inputs, output_hidden_states=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    for mine, original in zip(ours.hidden_states, theirs.hidden_states, strict=True):
        torch.testing.assert_close(mine, original, rtol=0, atol=0)
    assert not torch.equal(ours.last_hidden_state, theirs.last_hidden_state)  # the side output


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_lst_logits_ignore_padding(tiny_models, arch):
    model = build_method("lst", {"reduction": 8}).apply(_fresh(tiny_models(arch))).eval()
    batch = toy_batch(4)
    pad = model.config.pad_token_id or 0
    padded = {"input_ids": torch.cat([batch["input_ids"], torch.full((4, 5), pad)], dim=1),
              "attention_mask": torch.cat([batch["attention_mask"],
                                           torch.zeros(4, 5, dtype=torch.long)], dim=1)}
    with torch.no_grad():
        plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        longer = model(**padded)
    torch.testing.assert_close(longer.logits, plain.logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fusion_weights_are_a_softmax_over_layers_and_can_select_one(tiny_models, arch):
    method = build_method("attention_fusion", {"fusion_dim": 8})
    model = method.apply(_fresh(tiny_models(arch)))
    batch = toy_batch(4)
    train_steps(model, method, batch, lr=1e-2, steps=2)  # away from the initial weights
    model.eval()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        hidden = model.base_model(**inputs, output_hidden_states=True).hidden_states
        stack = torch.stack(hidden, dim=-2)
        weights = model.layer_fusion.weights(stack)
    assert weights.shape == (4, 12, len(hidden))
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 12))

    fusion, scores = model.layer_fusion, model.layer_fusion.scores
    for chosen in (1, len(hidden) - 1):
        def only(stack, chosen=chosen):
            forced = torch.full_like(scores(stack), -1e4)
            forced[..., chosen] = scores(stack)[..., chosen]
            return forced
        fusion.scores = only
        with torch.no_grad():
            fused = model.base_model(**inputs).last_hidden_state
        torch.testing.assert_close(fused, hidden[chosen], rtol=0, atol=0)
    # the top layer alone is the untouched model: same head, same logits
    reference = _fresh(tiny_models(arch)).eval()
    reference.load_state_dict({n: p for n, p in model.state_dict().items() if is_head_param(n)},
                              strict=False)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reference(**inputs).logits)


@pytest.mark.parametrize(("name", "knobs"), [("lst", {"reduction": 16}),
                                             ("lst", {"reduction": 4}),
                                             ("attention_fusion", {"fusion_dim": 32})])
@pytest.mark.parametrize("arch", ["bert", "distilbert", "gpt2", "llama"])
def test_sizer_on_meta_equals_the_live_count(tiny_models, arch, name, knobs):
    source = resolve_model(str(tiny_models(arch)))
    footprint = Sizer(source, 2).measure(name, knobs)
    method = build_method(name, knobs)
    live = method.apply(_fresh(tiny_models(arch)))
    assert footprint.stored_params == method.stored_params(live) > 0
    assert footprint.head_params == method.head_params(live) > 0


@pytest.mark.parametrize("name", ["lst", "attention_fusion"])
def test_side_tensors_are_not_backbone_and_change_no_backbone_entry(tiny_models, name):
    method = build_method(name, {})
    model = method.apply(_fresh(tiny_models("bert")))
    assert backbone_sizes(model) == backbone_sizes(_fresh(tiny_models("bert")))
    assert method.changed_entries(model) == {}
    assert model.config.model_type == "bert"  # still the Hugging Face model


@pytest.mark.parametrize("name", ["lst", "attention_fusion"])
def test_a_model_without_a_base_model_is_not_applicable(name):
    with pytest.raises(MethodNotApplicable, match=name):
        build_method(name, {}).apply(nn.Linear(4, 2))
