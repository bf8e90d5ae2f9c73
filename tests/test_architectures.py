"""Every architecture family the target map knows: roles resolve, and the core methods run."""

from __future__ import annotations

import pytest

from autopeft.backbones.models import build_meta_model, load_model, resolve_model
from autopeft.errors import MethodNotApplicable
from autopeft.methods.targets import ROLE_SETS, is_head_param, projection_shape, resolve_roles
from tests.arch_harness import ARCHITECTURES, check_method


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_lora_on_all_projections_learns_counts_exactly_and_roundtrips(tiny_models, tmp_path,
                                                                      arch):
    def r_times_in_plus_out(model):
        base = load_model(resolve_model(str(tiny_models(arch))), num_labels=2)
        shapes = [projection_shape(base.get_submodule(n))
                  for n in resolve_roles(base, ROLE_SETS["all"])]
        return sum(4 * (d_in + d_out) for d_in, d_out in shapes)

    check_method(tiny_models(arch), tmp_path, "lora", {"r": 4, "targets": "all"},
                 r_times_in_plus_out, lr=5e-3)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_bitfit_learns_and_counts_every_backbone_bias(tiny_models, tmp_path, arch):
    def biases(model):
        base = load_model(resolve_model(str(tiny_models(arch))), num_labels=2)
        return sum(p.numel() for n, p in base.named_parameters()
                   if n.endswith("bias") and not is_head_param(n))  # the pooler is head

    if arch == "llama":  # no biases at all: BitFit has nothing to train
        with pytest.raises(MethodNotApplicable, match="bias"):
            check_method(tiny_models(arch), tmp_path, "bitfit", {}, biases)
        return
    check_method(tiny_models(arch), tmp_path, "bitfit", {}, biases, lr=3e-2)


def test_an_unknown_architecture_is_not_applicable_in_one_line(tiny_models):
    model = build_meta_model(resolve_model(str(tiny_models("bert"))), 2)
    model.config.model_type = "my-own-arch"
    with pytest.raises(MethodNotApplicable, match="my-own-arch.*supported: bert"):
        resolve_roles(model, ROLE_SETS["qv"])


def test_search_skips_methods_that_cannot_apply_or_fit_saying_why(tiny_models, tmp_path):
    from autopeft.space.fitting import feasible_methods
    from autopeft.space.sizing import Sizer
    from autopeft.space.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text("methods: {lora: {r: {choices: [1, 2]}}, bitfit: {}, "
                    "adapter_houlsby: {bottleneck: {choices: [4]}, "
                    "drop_layers: {choices: [0, 1]}}}")
    sizer = Sizer(resolve_model(str(tiny_models("llama"))), num_labels=2)
    # the budget fits adapters only in the upper block: a larger drop_layers stores less
    budget = sizer.measure("adapter_houlsby", {"bottleneck": 4, "drop_layers": 1}).stored_params
    assert budget < sizer.measure("adapter_houlsby", {"bottleneck": 4}).stored_params
    space, skipped = feasible_methods(load_space(path), sizer, budget)
    assert sorted(space.methods) == ["adapter_houlsby", "lora"]
    assert list(skipped) == ["bitfit"] and "no bias terms" in skipped["bitfit"]


@pytest.mark.parametrize(("arch", "side"), [("gpt2", "left"), ("llama", "left"), ("bert", "right")])
def test_decoder_classifiers_get_left_padded_batches(tiny_models, arch, side):
    from transformers import AutoTokenizer, DataCollatorWithPadding

    from autopeft.backbones.models import load_tokenizer

    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2").location
    AutoTokenizer.from_pretrained(minilm).save_pretrained(tiny_models(arch))
    tokenizer = load_tokenizer(resolve_model(str(tiny_models(arch))))
    batch = DataCollatorWithPadding(tokenizer)([tokenizer("a b c d"), tokenizer("a")])
    mask = batch["attention_mask"][1]
    assert tokenizer.padding_side == side
    assert (mask[-1] == 1) if side == "left" else (mask[0] == 1 and mask[-1] == 0)
