"""Tiny random checkpoints for tests, benchmarks and smoke runs (no download needed)."""

from __future__ import annotations

from pathlib import Path


def build_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide random BERT with the bundled MiniLM tokenizer, saved as a checkpoint.

    An epoch of MRPC takes seconds on a CPU, so whole searches run in tests.
    """
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
    return Path(directory)
