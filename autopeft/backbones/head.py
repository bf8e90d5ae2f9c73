"""The task head: how it reads the backbone (pooling) and whether its pooler trains.

The head is what the task adds or what pretraining never trained (`targets.HEAD_MODULES`):
the classifier, and the pooler of BERT-like models and DeBERTa-v2. Sentence-transformers
checkpoints (the bundled MiniLM) never trained BERT's pooler — its bias is exactly zero — so a
frozen pooler is a frozen random projection between the backbone and the classifier; every
method therefore trains it as part of the head, counted as head and never charged to the
budget. `--freeze-pooler` keeps it as loaded.

Those checkpoints were also trained to be read by the mean of their token states, not through
the first token: `mean` pooling feeds the pooler that mean instead of token 0 (same tensors, so
artifacts keep their layout). `auto` picks mean where the checkpoint says it was trained so (a
`modules.json` with a `1_Pooling/config.json` asking for mean tokens), else the first token.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autopeft.errors import AutoPeftError
from autopeft.methods.targets import HEAD_MODULES

POOLINGS = ("auto", "cls", "mean")
POOLER = "pooler"  # the module name of BERT's and DeBERTa-v2's pooler (a head module)


@dataclass(frozen=True)
class HeadSettings:
    """How the head of every model of a study is built (pooling already resolved)."""

    pooling: str = "cls"  # "cls": the architecture's own; "mean": masked mean of token states
    train_pooler: bool = True

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def resolve_head(pooling: str, freeze_pooler: bool, location: str,
                 model: nn.Module) -> HeadSettings:
    """The settings for `model` (loaded from `location`), `auto` decided; one line when not
    possible."""
    if pooling not in POOLINGS:
        raise AutoPeftError(f"--pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    has_pooler = _pooler(model) is not None
    if pooling == "auto":
        pooling = "mean" if has_pooler and trained_with_mean_pooling(location) else "cls"
    if pooling == "mean" and not has_pooler:
        raise AutoPeftError(
            f"--pooling mean needs a model with a pooler (BERT-like, DeBERTa-v2); this "
            f"'{getattr(model.config, 'model_type', '?')}' model classifies its own way: "
            "use --pooling cls or auto")
    return HeadSettings(pooling=pooling, train_pooler=not freeze_pooler)


def trained_with_mean_pooling(location: str) -> bool:
    """Whether a local checkpoint is a sentence-transformers model pooled by mean tokens."""
    root = Path(location)
    config = root / "1_Pooling" / "config.json"
    if not (root / "modules.json").is_file() or not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text()).get("pooling_mode_mean_tokens"))
    except (OSError, ValueError):
        return False


def apply_pooling(model: nn.Module, pooling: str) -> nn.Module:
    """Make the model's pooler read the masked mean of the token states (`mean`); before any
    method is applied, so every method (and the side networks' re-pooling) sees it."""
    if pooling == "cls":
        return model
    pooler = _pooler(model)
    if pooler is None:
        raise AutoPeftError("mean pooling needs a model with a pooler (BERT-like, DeBERTa-v2)")
    reader = MeanTokens(pooler)
    pooler.forward = reader  # an instance attribute wins; parameter names stay the same
    model.base_model.register_forward_pre_hook(reader.remember_mask, with_kwargs=True)
    return model


def freeze_pooler(model: nn.Module) -> None:
    """Keep the pooler as loaded (`--freeze-pooler`), after a method made the head trainable."""
    for name, param in model.named_parameters():
        if POOLER in name.split("."):
            param.requires_grad_(False)


def centre_regression_output(model: nn.Module, target_mean: float) -> bool:
    """Start a fresh regression head at the training targets' mean (its output bias), so the
    first steps fit the targets' variation rather than their offset. Returns whether it could.

    Hugging Face starts the bias at 0; on targets far from 0 (STS-B's mean is ~2.7) every
    example's error then points the same way, and a method training a few backbone weights
    at a high learning rate can collapse every input onto one representation that predicts
    the mean (Child-Tuning_D on STS-B: 0.14 at one seed, 0.82 at another). The last
    head layer with a single output is the regressor (BERT's `classifier`, RoBERTa's
    `classifier.out_proj`); heads without a bias (GPT-2's `score`) are left as they are.
    """
    outputs = [module for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and module.out_features == 1
               and any(part in HEAD_MODULES for part in name.split("."))]
    if not outputs or outputs[-1].bias is None:
        return False
    with torch.no_grad():
        outputs[-1].bias.fill_(target_mean)
    return True


def head_settings_of(model: nn.Module) -> HeadSettings:
    """The settings a live model was built with (what an artifact records)."""
    pooler = _pooler(_unwrapped(model))
    pooling = "mean" if pooler is not None and isinstance(pooler.forward, MeanTokens) else "cls"
    pooler_params = [p for n, p in model.named_parameters() if POOLER in n.split(".")]
    return HeadSettings(pooling=pooling,
                        train_pooler=any(p.requires_grad for p in pooler_params))


class MeanTokens:
    """A pooler's forward over the masked mean of the token states instead of token 0.

    BERT's pooler gets only the hidden states, so the attention mask is taken from the base
    model's call by a pre-hook. Prefix tuning lengthens the mask by its virtual tokens (which
    have no hidden state here): the mask's last `seq_len` columns are the real tokens. A plain
    object rather than a module, so it registers nothing; peft's trainable copy of the pooler
    (`modules_to_save`) deep-copies it, and the copy still sees the mask the hook keeps.
    """

    def __init__(self, pooler: nn.Module):
        self.original = type(pooler).forward
        self.pooler = pooler
        self.latest = _LatestMask()

    def remember_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.latest.mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    def __call__(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask = self.latest.mask
        if mask is None or mask.dim() != 2:
            mean = hidden_states.mean(dim=1)
        else:
            weights = mask[:, -hidden_states.shape[1]:].to(hidden_states.dtype).unsqueeze(-1)
            mean = (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.original(self.pooler, mean.unsqueeze(1))  # it reads position 0


class _LatestMask:
    """The attention mask of the base model's current call, shared by every copy of a pooler."""

    mask: torch.Tensor | None = None

    def __deepcopy__(self, memo: dict) -> _LatestMask:
        return self  # copies of the pooler read the one mask the base model's hook writes


def _pooler(model: nn.Module) -> nn.Module | None:
    """BERT's pooler (under the base model) or DeBERTa-v2's (on the model itself)."""
    pooler = getattr(model, POOLER, None)
    if pooler is None:
        base = getattr(model, "base_model", None)
        pooler = getattr(base, POOLER, None) if base is not None and base is not model else None
    pooler = getattr(pooler, "original_module", pooler)  # peft's modules_to_save wrapper
    return pooler if isinstance(pooler, nn.Module) else None


def _unwrapped(model: nn.Module) -> nn.Module:
    """The Hugging Face model under peft's wrappers (PeftModel → LoraModel → the model)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model
