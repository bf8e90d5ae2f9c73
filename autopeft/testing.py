"""Tiny random checkpoints for tests, benchmarks and smoke runs (no download needed)."""

from __future__ import annotations

from pathlib import Path

# One small config per architecture family the targets map knows: 2 blocks, 64 wide.
_COMMON = {"num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 64,
           "intermediate_size": 128, "max_position_embeddings": 256}
TINY_ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "bert": ("BertConfig", _COMMON),
    "roberta": ("RobertaConfig", {**_COMMON, "pad_token_id": 1}),
    "electra": ("ElectraConfig", {**_COMMON, "embedding_size": 64}),
    "deberta-v2": ("DebertaV2Config", {**_COMMON, "relative_attention": True,
                                       "position_buckets": 32, "pos_att_type": ["p2c", "c2p"]}),
    "distilbert": ("DistilBertConfig", {"n_layers": 2, "n_heads": 4, "dim": 64,
                                        "hidden_dim": 128, "max_position_embeddings": 256}),
    "gpt2": ("GPT2Config", {"n_layer": 2, "n_head": 4, "n_embd": 64, "n_positions": 256,
                            "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 2}),
    "llama": ("LlamaConfig", {**_COMMON, "num_key_value_heads": 2, "pad_token_id": 0}),
}


def build_tiny_model(architecture: str, directory: Path, vocab_size: int = 1000,
                     seed: int = 0, num_labels: int = 2) -> Path:
    """A random 2-block sequence classifier of `architecture`, saved as a checkpoint."""
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification

    config_name, values = TINY_ARCHITECTURES[architecture]
    config = getattr(transformers, config_name)(vocab_size=vocab_size, num_labels=num_labels,
                                                **values)
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    return Path(directory)


def build_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide random BERT with the bundled MiniLM tokenizer, saved as a checkpoint.

    An epoch of MRPC takes seconds on a CPU, so whole searches run in tests.
    """
    from transformers import AutoTokenizer

    from autopeft.models import resolve_model

    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2").location
    build_tiny_model("bert", directory, vocab_size=30522, seed=seed)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(directory)
    return Path(directory)
