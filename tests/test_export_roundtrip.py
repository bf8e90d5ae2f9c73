"""Every registered method's artifact loads with `autopeft.load` in a fresh Python process.

Each method is applied to a tiny BERT (1,000-token vocabulary, so even full fine-tuning steps
are quick), trained a few steps on the toy task, saved; its logits
on a fixed batch are kept. One subprocess (no state shared with the training process: no RNG,
no module caches, another working directory) then loads every artifact and compares the logits
exactly. No method is skipped: all apply to BERT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from autopeft.artifacts.store import save_artifact
from autopeft.backbones.models import load_model, resolve_model
from autopeft.methods import METHODS, build_method
from autopeft.results.export import PEFT_NEEDS_AUTOPEFT
from autopeft.testing import build_tiny_model
from tests.arch_harness import ToySource, toy_batch, train_steps

# Small sizes so a dozen steps change something; methods not listed run at their defaults.
KNOBS: dict[str, dict] = {
    "lora": {"r": 4, "targets": "all"},
    "diff_pruning": {"density": 0.01, "l0_fraction": 0.5},  # L0 phase, projection, fixed mask
    "fish": {"density": 0.01, "fisher_samples": 16},
    "child_tuning_d": {"density": 0.01, "fisher_samples": 16},
    "u_bitfit": {"density": 0.5, "warmup_steps": 2},
    "s_bitfit": {"density": 0.5, "warmup_steps": 2},
    "adapter_houlsby": {"bottleneck": 8},
    "adapter_pfeiffer": {"bottleneck": 8, "drop_layers": 1},
    "adapter_parallel": {"bottleneck": 8},
    "spt": {"density": 0.05, "sigma_opt": 0.02, "sensitivity_samples": 16},
    "dylora": {"r_max": 4, "targets": "attn"},
    "increlora": {"rank_budget": 4, "init_r": 1, "r_cap": 8},
    "adalora": {"init_r": 4, "target_r": 2, "targets": "attn", "tinit": 0.2, "tfinal": 0.3,
                "lora_dropout": 0.0},
    "attention_fusion": {"fusion_dim": 16},
    "prompt_tuning": {"num_virtual_tokens": 4},
    "prefix_tuning": {"num_virtual_tokens": 4},
    "p_tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 16},
}
STEPS = 5
DYLORA_RANK = 2  # stored rank, as a search would fix it (only that rank is saved)

LOADER = """
import json, os, sys, warnings
import torch
from safetensors.torch import load_file
import autopeft
from autopeft.results.export import PEFT_NEEDS_AUTOPEFT

warnings.simplefilter("ignore", FutureWarning)  # peft vs transformers 5 deprecations

manifest = json.load(open(sys.argv[1]))
tensors = load_file(manifest["tensors"])
inputs = {k: tensors[k] for k in ("input_ids", "attention_mask")}
results = {}
for name, directory in manifest["artifacts"].items():
    try:
        loaded = autopeft.load(directory)
        with torch.no_grad():
            logits = loaded.model(**inputs).logits
        expected = tensors[f"logits.{name}"]
        results[name] = {"equal": bool(torch.equal(logits, expected)),
                         "max_diff": float((logits - expected).abs().max()),
                         "training": loaded.model.training, "task": loaded.task.name}
        peft_format = os.path.exists(os.path.join(directory, "adapter_config.json"))
        results[name]["peft_format"] = peft_format
        if peft_format and name not in PEFT_NEEDS_AUTOPEFT:  # what the model card promises
            from peft import PeftModel
            from transformers import AutoModelForSequenceClassification

            base = AutoModelForSequenceClassification.from_pretrained(manifest["model"],
                                                                      num_labels=2)
            plain = PeftModel.from_pretrained(base, directory).eval()
            with torch.no_grad():
                results[name]["plain_peft_equal"] = bool(torch.equal(plain(**inputs).logits,
                                                                     expected))
    except Exception as exc:
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def bert_small_vocab(tmp_path_factory):
    """A tiny random BERT whose embeddings are small, with a tokenizer (`load` wants one)."""
    from transformers import AutoTokenizer

    directory = build_tiny_model("bert", tmp_path_factory.mktemp("bert-1k"), vocab_size=1000)
    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2").location
    AutoTokenizer.from_pretrained(minilm).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def fresh_process_results(tmp_path_factory, bert_small_vocab):
    """Train and save every method here, then load them all in one new interpreter."""
    work = tmp_path_factory.mktemp("roundtrip")
    source = resolve_model(str(bert_small_vocab))
    batch = toy_batch()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    tensors = {k: v.contiguous() for k, v in inputs.items()}
    artifacts = {}
    for name in METHODS:
        torch.manual_seed(0)
        method = build_method(name, KNOBS.get(name, {}))
        model = method.apply(load_model(source, num_labels=2, seed=0))
        method.prepare(model, ToySource(batch))
        train_steps(model, method, batch, lr=1e-2, steps=STEPS)
        if name == "dylora":
            method.eval_rank = DYLORA_RANK
        model.eval()
        with torch.no_grad():
            tensors[f"logits.{name}"] = model(**inputs).logits.contiguous()
        artifacts[name] = str(save_artifact(work / name, method, model, {
            "model": str(bert_small_vocab), "task": "mrpc", "num_labels": 2}))
    save_file(tensors, str(work / "tensors.safetensors"))
    manifest = work / "manifest.json"
    manifest.write_text(json.dumps({"tensors": str(work / "tensors.safetensors"),
                                    "model": str(bert_small_vocab), "artifacts": artifacts}))
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # relative paths would break here
    result = subprocess.run([sys.executable, "-c", LOADER, str(manifest)], capture_output=True,
                            text=True, cwd=elsewhere, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_artifact_loads_to_identical_logits_in_a_fresh_process(fresh_process_results, name):
    result = fresh_process_results[name]
    assert "error" not in result, result.get("error")
    assert result["equal"], f"{name}: logits differ by up to {result['max_diff']}"
    assert result["max_diff"] == 0.0
    assert result["training"] is False  # ready for inference
    assert result["task"] == "mrpc"
    # peft's format: plain transformers + peft read it to the same logits (as the card says)
    assert result.get("plain_peft_equal", True), f"{name}: plain peft gives other logits"


def test_peft_format_methods_load_with_plain_peft(fresh_process_results):
    peft_format = {n for n, r in fresh_process_results.items() if r.get("peft_format")}
    checked = {n for n, r in fresh_process_results.items() if "plain_peft_equal" in r}
    assert {"lora", "krona", "adalora", "prompt_tuning", "p_tuning"} <= checked
    assert checked == peft_format - set(PEFT_NEEDS_AUTOPEFT)


def test_every_registered_method_was_checked(fresh_process_results):
    assert sorted(fresh_process_results) == sorted(METHODS)
    assert len(METHODS) >= 22
