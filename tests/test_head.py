"""The head: the pooler trains and counts as head (or stays frozen when asked); mean pooling."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from autopeft.artifacts.store import load_artifact, read_description, save_artifact
from autopeft.backbones.head import HeadSettings, resolve_head
from autopeft.backbones.models import build_meta_model, load_model, load_tokenizer, resolve_model
from autopeft.errors import AutoPeftError
from autopeft.methods import build_method
from autopeft.space.sizing import Sizer
from autopeft.train.data import tokenize_frame
from autopeft.train.trial import TrialContext, fit_candidate

METHODS = [("lora", {"r": 2}), ("bitfit", {}), ("adapter_houlsby", {"bottleneck": 4}),
           ("prompt_tuning", {"num_virtual_tokens": 4}), ("lst", {}), ("fish", {"density": 0.01})]


def _pooler(model):
    """The pooler's tensors as used (peft's trainable copy, not the original it wraps)."""
    return {n: p for n, p in model.named_parameters()
            if ".pooler." in f".{n}" and "original_module" not in n}


def _frame(n=32):
    import pandas as pd

    words = ["good movie", "great film plot", "bad movie", "awful film",
             "good show", "terrible show today", "great story", "bad story"]
    return pd.DataFrame({"sentence1": [words[i % 8] for i in range(n)],
                         "sentence2": [words[(i * 3) % 8] for i in range(n)],
                         "label": [int("good" in words[i % 8] or "great" in words[i % 8])
                                   for i in range(n)]})


def _fit(tiny_bert, tmp_path, name, knobs, head):
    source = resolve_model(str(tiny_bert))
    tokenizer = load_tokenizer(source)
    train = tokenize_frame(_frame(), ("sentence1", "sentence2"), tokenizer, 32)
    context = TrialContext(model=source, task="mrpc", budget_params=10**9, epochs=1,
                           batch_size=8, seed=0, study_dir=str(tmp_path), head=head)
    candidate = {"method": name, "knobs": {**knobs, "learning_rate": 1e-2}}
    return fit_candidate(candidate, train, None, tokenizer, context, seed=0), source


@pytest.mark.parametrize(("name", "knobs"), METHODS)
def test_every_method_trains_the_pooler_and_counts_it_as_head(tiny_bert, tmp_path, name, knobs):
    source = resolve_model(str(tiny_bert))
    loaded = _pooler(load_model(source, 2, seed=0))
    trained, _ = _fit(tiny_bert, tmp_path, name, knobs, HeadSettings())
    pooler = _pooler(trained.model)
    assert pooler and all(p.requires_grad for p in pooler.values())
    assert any(not torch.equal(p.detach().cpu(), loaded[_match(loaded, n)])
               for n, p in pooler.items())  # trained: some pooler tensor moved
    method, model = trained.method, trained.model
    pooler_size = sum(p.numel() for p in pooler.values())
    classifier = sum(p.numel() for n, p in model.named_parameters()
                     if "classifier" in n and p.requires_grad)
    assert method.head_params(model) == pooler_size + classifier
    assert method.stored_params(model) > 0
    assert not any("pooler" in n for n in method.changed_entries(model))


def _match(loaded: dict, name: str):
    """The loaded model's pooler tensor that a (possibly peft-wrapped) trained name stands for."""
    suffix = name.split("pooler.", 1)[1].replace("modules_to_save.default.", "")
    suffix = suffix.replace("original_module.", "")
    (key,) = [k for k in loaded if k.endswith("pooler." + suffix)]
    return key


@pytest.mark.parametrize(("name", "knobs"), METHODS[:3])
def test_freeze_pooler_keeps_it_as_loaded_and_uncounted(tiny_bert, tmp_path, name, knobs):
    source = resolve_model(str(tiny_bert))
    loaded = _pooler(load_model(source, 2, seed=0))
    trained, _ = _fit(tiny_bert, tmp_path, name, knobs, HeadSettings(train_pooler=False))
    method, model = trained.method, trained.model
    for n, p in _pooler(model).items():
        assert not p.requires_grad
        assert torch.equal(p.detach().cpu(), loaded[_match(loaded, n)])
    classifier = sum(p.numel() for n, p in model.named_parameters()
                     if "classifier" in n and p.requires_grad)
    assert method.head_params(model) == classifier


def test_the_backbone_excludes_the_pooler_so_budgets_are_of_the_pretrained_encoder(tiny_bert):
    source = resolve_model(str(tiny_bert))
    model = build_meta_model(source, 2)
    total = sum(p.numel() for p in model.parameters())
    pooler = sum(p.numel() for p in _pooler(model).values())
    classifier = sum(p.numel() for n, p in model.named_parameters() if "classifier" in n)
    assert Sizer(source, 2).backbone_params() == total - pooler - classifier


def test_mean_pooling_ignores_padding_and_differs_from_the_first_token(tiny_bert):
    source = resolve_model(str(tiny_bert))
    ids = torch.randint(5, 500, (1, 9))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 9), torch.zeros(1, 5)], dim=1).long()
    for name, knobs in [("lora", {"r": 2}), ("prefix_tuning", {"num_virtual_tokens": 3}),
                        ("lst", {})]:
        method = build_method(name, knobs)
        mean = method.apply(load_model(source, 2, seed=0, pooling="mean")).eval()
        short = mean(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        long = mean(input_ids=padded, attention_mask=mask).logits
        assert torch.allclose(short, long, atol=1e-5), name
        cls = build_method(name, knobs).apply(load_model(source, 2, seed=0)).eval()
        assert not torch.allclose(cls(input_ids=ids).logits, short, atol=1e-4), name


def test_auto_pooling_is_mean_for_sentence_transformers_checkpoints_only(tiny_bert, tmp_path,
                                                                         tiny_models):
    plain = resolve_model(str(tiny_bert))
    assert resolve_head("auto", False, plain.location, build_meta_model(plain, 2)).pooling == "cls"
    st = tmp_path / "st-bert"
    shutil.copytree(tiny_bert, st)
    (st / "modules.json").write_text(json.dumps([{"idx": 1, "path": "1_Pooling"}]))
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    source = resolve_model(str(st))
    assert resolve_head("auto", False, source.location, build_meta_model(source, 2)) == (
        HeadSettings(pooling="mean", train_pooler=True))
    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert resolve_head("auto", True, minilm.location,
                        build_meta_model(minilm, 2)) == HeadSettings("mean", False)
    distil = resolve_model(str(tiny_models("distilbert")))
    assert resolve_head("auto", False, distil.location,
                        build_meta_model(distil, 2)).pooling == "cls"
    with pytest.raises(AutoPeftError, match="needs a model with a pooler"):
        resolve_head("mean", False, distil.location, build_meta_model(distil, 2))
    with pytest.raises(AutoPeftError, match="not one of auto, cls, mean"):
        resolve_head("max", False, plain.location, build_meta_model(plain, 2))


def test_deberta_v2_context_pooler_is_head_and_takes_mean_pooling(tiny_models):
    source = resolve_model(str(tiny_models("deberta-v2")))
    method = build_method("lora", {"r": 2})
    model = method.apply(load_model(source, 2, seed=0, pooling="mean"))
    pooler = _pooler(model)
    assert pooler and all(p.requires_grad for p in pooler.values())
    classifier = sum(p.numel() for n, p in model.named_parameters()
                     if "classifier" in n and p.requires_grad)
    assert method.head_params(model) == sum(p.numel() for p in pooler.values()) + classifier


@pytest.mark.parametrize(("name", "knobs"), [("lora", {"r": 2}), ("bitfit", {})])
def test_an_artifact_records_its_head_and_loads_with_the_same_pooling(tiny_bert, tmp_path, name,
                                                                      knobs):
    trained, source = _fit(tiny_bert, tmp_path, name, knobs, HeadSettings(pooling="mean"))
    path = save_artifact(tmp_path / "artifact", trained.method, trained.model,
                         {"model": str(tiny_bert), "task": "mrpc", "num_labels": 2})
    assert read_description(path)["head"] == {"pooling": "mean", "train_pooler": True}
    loaded, _ = load_artifact(path)
    ids = torch.randint(5, 500, (2, 6))
    trained.model.eval()
    with torch.no_grad():
        expected = trained.model(input_ids=ids.to(next(trained.model.parameters()).device))
        assert torch.allclose(loaded(input_ids=ids).logits, expected.logits.cpu(), atol=1e-5)


@pytest.mark.parametrize("architecture", ["bert", "roberta", "distilbert", "gpt2"])
def test_a_regression_head_starts_at_the_targets_mean(tiny_models, architecture):
    """The regressor's bias starts at the train targets' mean (BERT's classifier, RoBERTa's
    classifier.out_proj, DistilBERT's classifier after pre_classifier); GPT-2's score layer
    has no bias and is left alone."""
    from autopeft.backbones.head import centre_regression_output

    model = load_model(resolve_model(str(tiny_models(architecture))), 1, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    centred = centre_regression_output(model, 2.7)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    expected = {"bert": ["classifier.bias"], "roberta": ["classifier.out_proj.bias"],
                "distilbert": ["classifier.bias"], "gpt2": []}[architecture]
    assert changed == expected
    assert centred == bool(expected)
    for name in expected:
        assert dict(model.named_parameters())[name].item() == pytest.approx(2.7)


def test_fit_centres_regression_heads_only(tiny_bert, tmp_path):
    """Every trial and final run (`fit_candidate`) starts a regression head at the mean of the
    targets it trains on, before the method prepares (Fisher scores see it); classification
    heads keep Hugging Face's zero bias."""
    source = resolve_model(str(tiny_bert))
    tokenizer = load_tokenizer(source)
    frame = _frame()
    frame["label"] = [1.0 + 0.25 * (i % 13) for i in range(len(frame))]  # mean ≈ 2.5, not 0
    seen = {}
    for task in ("stsb", "mrpc"):
        if task == "mrpc":
            frame["label"] = [i % 2 for i in range(len(frame))]
        train = tokenize_frame(frame, ("sentence1", "sentence2"), tokenizer, 32)
        context = TrialContext(model=source, task=task, budget_params=10**9, epochs=1,
                               batch_size=8, seed=0, study_dir=str(tmp_path / task))
        fit_candidate({"method": "bitfit", "knobs": {"learning_rate": 1e-3}}, train, None,
                      tokenizer, context, seed=0,
                      on_built=lambda method, model, task=task: seen.__setitem__(
                          task, model.classifier.bias.detach().clone()))
        seen[task + "-mean"] = float(train.labels.mean())
    assert seen["stsb"].tolist() == pytest.approx([seen["stsb-mean"]])
    assert seen["stsb-mean"] > 2.0
    assert seen["mrpc"].tolist() == [0.0, 0.0]
