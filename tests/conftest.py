"""Shared fixtures: tiny random models built from configs, the real MRPC files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
MRPC_DIR = REPO.parent / "shared" / "data" / "glue" / "MRPC"


def build_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide random BERT with the MiniLM tokenizer, saved like a checkpoint."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from autopeft.models import resolve_model

    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2").location
    config = BertConfig(
        vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=256,
    )
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def mrpc_dir() -> Path:
    assert (MRPC_DIR / "train.tsv").exists(), f"MRPC files missing at {MRPC_DIR}"
    return MRPC_DIR
