"""Tokenized splits, prepared once per study and shared by every trial."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

DEFAULT_MAX_LENGTH = 128  # GLUE convention


@dataclass
class TokenizedSplit:
    """Un-padded token ids per example (padding happens per batch) and their labels."""

    features: list[dict[str, list[int]]]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    def lengths(self) -> list[int]:
        return [len(f["input_ids"]) for f in self.features]


@dataclass
class SearchData:
    """What every trial needs: the tokenizer (for padding), train and selection splits.

    The dev split is deliberately absent: trials cannot see it.
    """

    tokenizer: PreTrainedTokenizerBase
    train: TokenizedSplit
    selection: TokenizedSplit


def tokenize_frame(
    frame: pd.DataFrame,
    text_columns: tuple[str, ...],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> TokenizedSplit:
    texts = [frame[c].astype(str).tolist() for c in text_columns]
    encoded = tokenizer(*texts, truncation=True, max_length=max_length)
    keys = list(encoded.keys())
    features = [{k: encoded[k][i] for k in keys} for i in range(len(frame))]
    return TokenizedSplit(features=features, labels=frame["label"].to_numpy())


def _batches_with_labels(split: TokenizedSplit, order) -> list[dict]:
    return [{**split.features[i], "labels": split.labels[i].item()} for i in order]


def train_loader(
    split: TokenizedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int, seed: int
) -> DataLoader:
    """Shuffled, length-grouped batches: similar lengths pad less (~30% faster on MRPC)."""
    examples = _batches_with_labels(split, range(len(split)))
    generator = torch.Generator().manual_seed(seed)
    sampler = LengthGroupedSampler(batch_size, lengths=split.lengths(), generator=generator)
    return DataLoader(
        examples,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )


def eval_batches(
    split: TokenizedSplit, tokenizer: PreTrainedTokenizerBase, batch_size: int
) -> tuple[DataLoader, np.ndarray]:
    """Batches sorted by length (least padding) and the order to map predictions back."""
    order = np.argsort(split.lengths(), kind="stable")
    loader = DataLoader(
        _batches_with_labels(split, order),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )
    return loader, order


class SplitBatches:
    """A `BatchSource` over a tokenized split: shuffled, padded batches on `device`."""

    def __init__(self, split: TokenizedSplit, tokenizer: PreTrainedTokenizerBase,
                 device: torch.device, seed: int = 0):
        self.split, self.tokenizer, self.device, self.seed = split, tokenizer, device, seed

    def batches(self, batch_size: int):
        order = torch.randperm(len(self.split), generator=torch.Generator().manual_seed(self.seed))
        loader = DataLoader(
            _batches_with_labels(self.split, order.tolist()),
            batch_size=batch_size,
            collate_fn=DataCollatorWithPadding(self.tokenizer),
        )
        for batch in loader:
            yield {k: v.to(self.device) for k, v in batch.items()}
