"""Prompt tuning, prefix tuning and P-tuning (peft) on every tiny architecture.

Expected stored counts come from the checkpoint's config, and are checked against what peft's
`save_pretrained` actually wrote (the head excluded), against the meta-device count the Sizer
uses, and against the harness's live count.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

from autopeft.backbones.models import load_model, resolve_model
from autopeft.errors import MethodNotApplicable
from autopeft.methods import build_method, get_method_class
from autopeft.methods.targets import is_head_param
from autopeft.space.fitting import fitting_bound
from autopeft.space.sizing import Sizer
from tests.arch_harness import ARCHITECTURES, check_method, toy_batch, train_steps
from tests.roundtrip import assert_artifact_roundtrip

TOKENS = 4
METHODS = ("prompt_tuning", "prefix_tuning", "p_tuning")
ENCODERS = ("bert", "roberta", "electra", "deberta-v2", "distilbert")
DECODERS = ("gpt2", "llama")
# prefix tuning goes through the KV cache; DeBERTa-v2 and DistilBERT have none
APPLICABLE = {
    "prompt_tuning": set(ARCHITECTURES),
    "p_tuning": set(ARCHITECTURES),
    "prefix_tuning": {"bert", "roberta", "electra", "gpt2", "llama"},
}
KNOBS = {
    "prompt_tuning": {"num_virtual_tokens": TOKENS},
    "prefix_tuning": {"num_virtual_tokens": TOKENS},
    "p_tuning": {"num_virtual_tokens": TOKENS, "encoder_hidden_size": 16},
}
LR = {"prompt_tuning": 3e-2, "prefix_tuning": 1e-2, "p_tuning": 3e-3}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"  # bundled pretrained BERT


def expected_stored(model_dir: Path, method: str, tokens: int = TOKENS) -> int:
    """From the config: one hidden vector per virtual token, or for prefix tuning one key and
    one value vector per layer and virtual token (grouped-query models: KV heads x head dim)."""
    config = AutoConfig.from_pretrained(model_dir)
    hidden = config.hidden_size
    if method != "prefix_tuning":
        return tokens * hidden
    heads = config.num_attention_heads
    kv_width = getattr(config, "num_key_value_heads", heads) * (hidden // heads)
    return tokens * config.num_hidden_layers * 2 * kv_width


def saved_values(artifact: Path) -> int:
    """Values peft wrote to adapter_model.safetensors, the head excluded."""
    state = load_file(str(artifact / "adapter_model.safetensors"))
    assert "prompt_embeddings" in state
    return sum(t.numel() for name, t in state.items() if not is_head_param(name))


def check_without_learning(model_dir: Path, tmp_path: Path, name: str, knobs: dict,
                           lr: float, steps: int = 12) -> torch.nn.Module:
    """`check_method` minus its loss assertion: train, count, round-trip."""
    torch.manual_seed(0)
    method = build_method(name, knobs)
    model = method.apply(load_model(resolve_model(str(model_dir)), num_labels=2, seed=0))
    before = {n: p.detach().clone() for n, p in method.delta_state(model).items()}
    batch = toy_batch()
    train_steps(model, method, batch, lr, steps)
    assert any(not torch.equal(p, before[n]) for n, p in method.delta_state(model).items()
               if "prompt_encoder" in n), "the prompt did not change"
    tokens = knobs["num_virtual_tokens"]
    assert method.stored_params(model) == expected_stored(model_dir, name, tokens)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return assert_artifact_roundtrip(tmp_path, model_dir, method, model, inputs)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_prompt_method_on_every_architecture(tiny_models, tmp_path, arch, method):
    model_dir = tiny_models(arch)
    knobs = KNOBS[method]
    if arch not in APPLICABLE[method]:
        with pytest.raises(MethodNotApplicable, match="key/value cache"):
            check_method(model_dir, tmp_path, method, knobs, lambda m: 0)
        return
    if method != "prefix_tuning" and arch in ENCODERS:
        # peft prepends the prompt, so an encoder's classifier pools a virtual token; in a random
        # tiny encoder its state hardly depends on the input (logits vary ~1e-4 across examples)
        # and nothing is learnable. Learning is checked on a pretrained BERT below.
        check_without_learning(model_dir, tmp_path, method, knobs, LR[method])
    else:
        check_method(model_dir, tmp_path, method, knobs,
                     lambda m: expected_stored(model_dir, method), lr=LR[method])
    assert saved_values(tmp_path / "artifact") == expected_stored(model_dir, method)


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
def test_prompts_learn_on_a_pretrained_encoder(tmp_path, method):
    model_dir = Path(resolve_model(MINILM).location)
    check_method(model_dir, tmp_path, method, KNOBS[method],
                 lambda m: expected_stored(model_dir, method), lr=3e-2)
    assert saved_values(tmp_path / "artifact") == TOKENS * 384


@pytest.mark.parametrize(("method", "knobs"), [
    ("prefix_tuning", {"prefix_projection": True, "encoder_hidden_size": 16}),
    ("p_tuning", {"encoder_type": "LSTM", "encoder_hidden_size": 16}),
    ("prompt_tuning", {"prompt_init": "random"}),
])
@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
def test_reparameterised_prompts_store_only_their_output(tiny_models, tmp_path, arch, method,
                                                         knobs):
    """The MLP/LSTM encoder trains but is not stored: peft saves the prompt it computes, and the
    reloaded model's logits are identical (encoded in eval mode without autograd)."""
    model_dir = tiny_models(arch)
    knobs = {"num_virtual_tokens": TOKENS, **knobs}
    expected = expected_stored(model_dir, method)
    if arch == "bert" and method != "prefix_tuning":
        model = check_without_learning(model_dir, tmp_path, method, knobs, LR[method])
    else:
        model = check_method(model_dir, tmp_path, method, knobs, lambda m: expected,
                             lr=LR[method])
    assert saved_values(tmp_path / "artifact") == expected
    # the reloaded model (peft's inference mode: the encoder is gone) counts the same
    assert build_method(method, knobs).stored_params(model) == expected


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_meta_device_count_equals_live_count(tiny_models, arch, method):
    model_dir = tiny_models(arch)
    sizer = Sizer(resolve_model(str(model_dir)), num_labels=2)
    if arch not in APPLICABLE[method]:
        with pytest.raises(MethodNotApplicable, match="key/value cache"):
            sizer.measure(method, KNOBS[method])
        return
    meta = sizer.measure(method, KNOBS[method])
    live_method = build_method(method, KNOBS[method])
    live = live_method.apply(load_model(resolve_model(str(model_dir)), num_labels=2))
    assert meta.stored_params == live_method.stored_params(live) == expected_stored(model_dir,
                                                                                    method)
    assert meta.head_params == live_method.head_params(live) > 0
    assert live_method.stored_bytes(live) == 4 * meta.stored_params


def test_only_the_prompt_length_changes_the_stored_size(tiny_models):
    sizer = Sizer(resolve_model(str(tiny_models("gpt2"))), num_labels=2)
    small = sizer.measure("prefix_tuning", {"num_virtual_tokens": 2, "prefix_projection": True,
                                            "encoder_hidden_size": 8})
    large = sizer.measure("prefix_tuning", {"num_virtual_tokens": 2, "prefix_projection": False})
    assert small.stored_params == large.stored_params == 2 * 2 * 2 * 64
    for method in METHODS:
        sized = [k.name for k in get_method_class(method).config_class.knobs() if k.affects_size]
        assert sized == ["num_virtual_tokens"]
    assert fitting_bound(sizer, "prompt_tuning", "num_virtual_tokens",
                         budget=64 * 10) == ("max", 10)


def test_prompts_change_no_backbone_tensor(tiny_models):
    method = build_method("p_tuning", KNOBS["p_tuning"])
    model = method.apply(load_model(resolve_model(str(tiny_models("bert"))), num_labels=2))
    assert method.changed_entries(model) == {}
    trainable = sum(p.numel() for n, p in method.delta_state(model).items()
                    if not is_head_param(n))
    assert trainable > method.stored_params(model)  # the MLP encoder trains, is not stored
