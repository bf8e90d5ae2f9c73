"""Tiny random checkpoints for tests, benchmarks and smoke runs (no download needed)."""

from __future__ import annotations

import csv
import random
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

    from autopeft.backbones.models import resolve_model

    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2").location
    build_tiny_model("bert", directory, vocab_size=30522, seed=seed)
    AutoTokenizer.from_pretrained(minilm).save_pretrained(directory)
    return Path(directory)


GLUE_PAIR_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]  # MRPC's TSV layout
KEYWORDS = ["merger", "lawsuit", "earnings", "storm", "election", "vaccine"]


def keyword_task(directory: Path, words_from: Path, keywords: int = 1, noise: float = 0.0,
                 seed: int = 7, train_size: int = 800, dev_size: int = 200) -> Path:
    """A learnable sentence-pair task in MRPC's layout, for tests and benchmarks.

    Sentences are 8 words drawn from `words_from` (an MRPC-layout TSV); the label is 1 when one
    of the first `keywords` of KEYWORDS occurs in the first sentence, flipped for a `noise`
    fraction of rows. Half the rows are positive. A random tiny BERT learns it in a few
    epochs, which real MRPC does not give it.
    """
    rng = random.Random(seed)
    lines = words_from.read_text(encoding="utf-8-sig").splitlines()[1:]
    words = [w for line in lines for w in line.split("\t")[3].split()
             if w.isalpha() and w.lower() not in KEYWORDS]
    chosen = KEYWORDS[:keywords]

    def row(i: int) -> list[str]:
        label = i % 2
        first = rng.sample(words, 8)
        if label:
            first[rng.randrange(8)] = rng.choice(chosen)
        shown = label if rng.random() >= noise else 1 - label
        return [str(shown), str(i), str(i + 1), " ".join(first), " ".join(rng.sample(words, 8))]

    directory.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", train_size), ("dev", dev_size)):
        with open(directory / f"{split}.tsv", "w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            writer.writerow(GLUE_PAIR_HEADER)
            writer.writerows(row(i) for i in range(size))
    return Path(directory)
