"""Methods apply, train, save and load as declared; the frozen backbone stays untouched."""

from __future__ import annotations

import pytest
import torch

from autopeft.artifacts.store import read_description
from autopeft.backbones.models import load_model, load_tokenizer, resolve_model
from autopeft.errors import AutoPeftError
from autopeft.methods import METHODS, build_method, parse_method_list
from tests.arch_harness import assert_delta_trained_and_used, delta_snapshot
from tests.helpers import _batch, _train
from tests.roundtrip import assert_artifact_roundtrip

CASES = [("lora", {"r": 4, "targets": "all"}, 3e-3), ("bitfit", {}, 1e-2), ("full", {}, 1e-4)]


@pytest.mark.parametrize(("name", "knobs", "lr"), CASES)
def test_each_method_learns_a_toy_task_on_the_pretrained_minilm(name, knobs, lr):
    source = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    method = build_method(name, knobs)
    model = method.apply(load_model(source, num_labels=2, seed=1))
    initial = delta_snapshot(method, model)
    batch = _batch(load_tokenizer(source))
    losses = _train(model, method, batch, lr, steps=12)
    assert losses[-1] < 0.5 * losses[0], losses
    assert_delta_trained_and_used(method, model, initial,
                                  {k: v for k, v in batch.items() if k != "labels"})


@pytest.mark.parametrize(("name", "knobs", "lr"), CASES)
def test_training_changes_only_the_delta_and_roundtrips_through_the_artifact(
    tiny_bert, tmp_path, name, knobs, lr
):
    source = resolve_model(str(tiny_bert))
    method = build_method(name, knobs)
    model = method.apply(load_model(source, num_labels=2, seed=1))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    initial = delta_snapshot(method, model)
    batch = _batch(load_tokenizer(source))
    _train(model, method, batch, lr=1e-2, steps=3)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    assert_delta_trained_and_used(method, model, initial, inputs)
    changed = {k for k, v in model.named_parameters() if not torch.equal(before[k], v.detach())}
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    assert changed and changed <= trainable  # frozen weights bit-identical (weight decay incl.)

    assert_artifact_roundtrip(tmp_path, tiny_bert, method, model, inputs)
    description = read_description(tmp_path / "artifact")
    assert description["knobs"]["learning_rate"] == method.config.learning_rate


def test_method_names_and_knob_validation():
    assert {"full", "bitfit", "lora", "fish", "child_tuning_d"} <= set(METHODS)
    assert parse_method_list("lora, bitfit,lora") == ["lora", "bitfit"]
    with pytest.raises(AutoPeftError, match="unknown method 'adapter'; did you mean "
                       "adapter_houlsby, adapter_parallel, adapter_pfeiffer\\? registered: "):
        parse_method_list("lora,adapter")
    with pytest.raises(AutoPeftError, match="lora.targets='qk' is not allowed"):
        build_method("lora", {"targets": "qk"})
    with pytest.raises(AutoPeftError, match="unknown knob"):
        build_method("bitfit", {"r": 4})


def test_not_an_artifact(tmp_path):
    with pytest.raises(AutoPeftError, match="not an autopeft artifact"):
        read_description(tmp_path)
