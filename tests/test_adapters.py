"""Native bottleneck adapters (Houlsby, Pfeiffer, parallel) on every tiny architecture."""

from __future__ import annotations

import pytest
import torch

from autopeft.backbones.models import load_model, resolve_model
from autopeft.errors import MethodNotApplicable
from autopeft.methods import build_method
from autopeft.methods.allocation import backbone_sizes
from autopeft.methods.targets import is_head_param, layer_index, projection_shape, resolve_roles
from autopeft.space.sizing import Sizer
from tests.arch_harness import ARCHITECTURES, check_method, toy_batch

M = 4  # bottleneck size in these tests
METHODS = ("adapter_houlsby", "adapter_pfeiffer", "adapter_parallel")
# Roles whose output gets an adapter, and (parallel) the role whose input the adapter reads.
PLACES = {
    "adapter_houlsby": (("attn_o", None), ("ffn_out", None)),
    "adapter_pfeiffer": (("ffn_out", None),),
    "adapter_parallel": (("attn_o", "attn_q"), ("ffn_out", "ffn_in")),
}


def expected_count(model_dir, name: str, m: int = M, drop_layers: int = 0) -> int:
    """d_in·m + m + m·d_out + d_out per adapter, shapes read off the un-adapted model."""
    base = load_model(resolve_model(str(model_dir)), num_labels=2)
    total = 0
    for target_role, source_role in PLACES[name]:
        inputs = {}
        if source_role:  # the block input's width, from that block's input projection
            for n in resolve_roles(base, (source_role,)):
                inputs[layer_index(n)] = projection_shape(base.get_submodule(n))[0]
        for n in resolve_roles(base, (target_role,)):
            if layer_index(n) < drop_layers:
                continue
            d_out = projection_shape(base.get_submodule(n))[1]
            d_in = inputs[layer_index(n)] if source_role else d_out
            total += d_in * m + m + m * d_out + d_out
    return total


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_adapter_learns_counts_exactly_and_roundtrips(tiny_models, tmp_path, arch, name):
    model_dir = tiny_models(arch)
    model = check_method(model_dir, tmp_path, name, {"bottleneck": M},
                         lambda _: expected_count(model_dir, name), lr=5e-3)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".adapter." in n or is_head_param(n) for n in trainable)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama", "deberta-v2"])
def test_adapters_at_init_leave_the_logits_bit_identical(tiny_models, arch, name):
    # up-projections start at exactly zero, so y + 0 == y bit for bit
    source = resolve_model(str(tiny_models(arch)))
    inputs = {k: v for k, v in toy_batch(size=4).items() if k != "labels"}
    plain = load_model(source, num_labels=2, seed=0).eval()
    adapted = build_method(name, {"bottleneck": M}).apply(
        load_model(source, num_labels=2, seed=0)).eval()
    with torch.no_grad():
        assert torch.equal(adapted(**inputs).logits, plain(**inputs).logits)


@pytest.mark.parametrize("name", METHODS)
def test_drop_layers_leaves_adapters_only_in_the_upper_block(tiny_models, name):
    source = resolve_model(str(tiny_models("bert")))
    full = build_method(name, {"bottleneck": M})
    dropped = build_method(name, {"bottleneck": M, "drop_layers": 1})
    model = dropped.apply(load_model(source, num_labels=2))
    blocks = {layer_index(n) for n, _ in model.named_parameters() if ".adapter." in n}
    assert blocks == {1}
    whole = full.stored_params(full.apply(load_model(source, num_labels=2)))
    assert dropped.stored_params(model) * 2 == whole
    assert dropped.stored_params(model) == expected_count(tiny_models("bert"), name, drop_layers=1)
    with pytest.raises(MethodNotApplicable, match="drop_layers=2"):
        build_method(name, {"drop_layers": 2}).apply(load_model(source, num_labels=2))


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("arch", ["distilbert", "gpt2", "llama"])
def test_meta_device_count_equals_the_live_count(tiny_models, arch, name):
    source = resolve_model(str(tiny_models(arch)))
    knobs = {"bottleneck": 3, "drop_layers": 1}
    method = build_method(name, knobs)
    live = method.stored_params(method.apply(load_model(source, num_labels=2)))
    assert Sizer(source, 2).measure(name, knobs).stored_params == live
    assert live == expected_count(tiny_models(arch), name, m=3, drop_layers=1)


@pytest.mark.parametrize("blocks", ["attn", "ffn"])
def test_parallel_blocks_knob_places_one_adapter_per_block(tiny_models, blocks):
    source = resolve_model(str(tiny_models("llama")))
    model = build_method("adapter_parallel", {"bottleneck": M, "blocks": blocks}).apply(
        load_model(source, num_labels=2))
    wrapped = sorted({n.split(".adapter.")[0] for n, _ in model.named_parameters()
                      if ".adapter." in n})
    suffix = "self_attn.o_proj" if blocks == "attn" else "mlp.down_proj"
    assert wrapped == [f"model.layers.{i}.{suffix}" for i in range(2)]


def test_adapter_tensors_are_not_counted_as_pretrained_and_change_no_entries(tiny_models):
    source = resolve_model(str(tiny_models("roberta")))
    method = build_method("adapter_houlsby", {"bottleneck": M})
    model = method.apply(load_model(source, num_labels=2))
    assert backbone_sizes(model) == backbone_sizes(load_model(source, num_labels=2))
    assert method.changed_entries(model) == {}
