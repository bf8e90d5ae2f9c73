"""Threshold-Mask (Zhao et al. 2020): learn a binary mask over pretrained weights, not new values.

Each target matrix W gets a real-valued score per entry; the forward pass uses W ⊙ m with
m = [score ≥ threshold], and the gradient reaches the scores straight through the step function
(∂L/∂score = ∂L/∂(W⊙m) ⊙ W). Scores start at `score_init` ≥ threshold, so training starts from the
pretrained weights. The task's delta is −W at the masked entries: stored as their indices only
(values come from the backbone), so the budget caps how many entries may be masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from autopeft.errors import AutoPeftError
from autopeft.methods.base import (
    ArtifactFile,
    Method,
    MethodConfig,
    freeze,
    knob,
    learning_rate_knob,
    targets_knob,
    unfreeze_head,
)
from autopeft.methods.sparse.fisher import density_count
from autopeft.methods.targets import ROLE_SETS, is_head_param, resolve_roles

MASK_FILE = "threshold_mask.safetensors"
MASK = ArtifactFile(MASK_FILE, "per masked weight the flat indices of the masked entries, "
                               "plus the head")
MASKED = "masked"  # key suffix of a tensor's masked flat indices in MASK_FILE


@dataclass
class ThresholdMaskConfig(MethodConfig):
    targets: str = targets_knob("all", "matrices masked")
    max_masked: float = knob(0.005, "fraction of the target matrices' entries that may be masked",
                             minimum=0.0, affects_size=True)
    threshold: float = knob(0.01, "an entry is kept while its score is >= this")
    score_init: float = knob(0.02, "initial score of every entry (>= threshold: start unmasked)")
    learning_rate: float = learning_rate_knob(1e-3)


class _StraightThrough(torch.autograd.Function):
    """W ⊙ [scores ≥ t] forward; backward passes ∂L/∂(W⊙m) ⊙ W to the scores as if m = scores."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
        ctx.save_for_backward(weight, scores)  # both live anyway: nothing extra kept
        ctx.threshold = threshold
        return weight * (scores >= threshold).to(weight.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight, scores = ctx.saved_tensors
        grad_weight = grad_scores = None
        if ctx.needs_input_grad[0]:
            grad_weight = grad * (scores >= ctx.threshold).to(grad.dtype)
        if ctx.needs_input_grad[1]:
            grad_scores = (grad * weight).to(scores.dtype)
        return grad_weight, grad_scores, None


class ScoreMask(nn.Module):
    """Parametrization W ↦ W ⊙ [scores ≥ threshold] with trainable float32 `scores`."""

    def __init__(self, weight: torch.Tensor, threshold: float, score_init: float):
        super().__init__()
        self.threshold = threshold
        self.scores = nn.Parameter(torch.full_like(weight, score_init, dtype=torch.float32))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return _StraightThrough.apply(original, self.scores, self.threshold)

    def masked(self) -> torch.Tensor:
        return self.scores < self.threshold


@torch.no_grad()
def enforce_cap(masks: list[ScoreMask], k: int) -> None:
    """Keep at most k entries masked, those with the k lowest scores; lift the rest to the
    threshold (the smallest change that unmasks them), so the budget holds after every step."""
    below = [m.masked() for m in masks]
    counts = torch.stack([b.sum() for b in below]).tolist() if masks else []
    if sum(counts) <= k:
        return
    values = torch.cat([m.scores[b] for m, b in zip(masks, below, strict=True)])
    keep = torch.zeros_like(values, dtype=torch.bool)
    keep[torch.topk(values, k, largest=False).indices] = True
    offset = 0
    for mask, b, count in zip(masks, below, counts, strict=True):
        lift = torch.zeros_like(b)
        lift[b] = ~keep[offset:offset + count]
        mask.scores[lift] = mask.threshold
        offset += count


class ThresholdMasking(Method):
    name = "threshold_mask"
    summary = "Threshold-Mask: learn which pretrained weights to zero (straight-through scores)"
    family = "sparse"
    config_class = ThresholdMaskConfig
    artifact_files = (MASK,)

    _trained = False  # stored_params is the cap until a step (or a load) fixes the mask

    def apply(self, model: nn.Module) -> nn.Module:
        cfg: ThresholdMaskConfig = self.config
        if cfg.score_init < cfg.threshold:
            raise AutoPeftError(
                f"{self.name}.score_init={cfg.score_init} must be >= threshold={cfg.threshold}: "
                "training starts from the unmasked pretrained weights"
            )
        freeze(model)
        for name in resolve_roles(model, ROLE_SETS[cfg.targets]):
            module = model.get_submodule(name)
            mask = ScoreMask(module.weight, cfg.threshold, cfg.score_init)
            parametrize.register_parametrization(module, "weight", mask, unsafe=True)
        unfreeze_head(model)
        return model

    def masks(self, model: nn.Module) -> dict[str, ScoreMask]:
        """The attached masks by the name of the weight they act on."""
        names = resolve_roles(model, ROLE_SETS[self.config.targets])
        return {f"{n}.weight": model.get_submodule(n).parametrizations.weight[0] for n in names}

    def planned(self, model: nn.Module) -> int:
        """The cap k = floor(max_masked · target entries), from shapes alone (meta device)."""
        total = sum(m.scores.numel() for m in self.masks(model).values())
        return density_count(self.config.max_masked, total)

    def stored_params(self, model: nn.Module) -> int:
        """The cap before training (an upper bound); the exact masked count once trained."""
        return sum(self.changed_entries(model).values()) if self._trained else self.planned(model)

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """Weight → entries masked (set to 0) now."""
        return {name: int(m.masked().sum()) for name, m in self.masks(model).items()}

    def stored_bytes(self, model: nn.Module) -> int:
        """int64 indices only: the values are implied (−W)."""
        return 8 * sum(self.changed_entries(model).values())

    def parameter_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """The head's usual groups plus the scores without decay: decay would pull every score
        towards 0, i.e. below the threshold, masking weights for no reason of the task's."""
        scores = [m.scores for m in self.masks(model).values()]
        ids = {id(s) for s in scores}
        groups = super().parameter_groups(model, weight_decay)
        for group in groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        return [*groups, {"params": scores, "weight_decay": 0.0}]

    def after_step(self, model: nn.Module, step: int) -> bool:
        enforce_cap(list(self.masks(model).values()), self.planned(model))
        self._trained = True
        return False

    def save(self, model: nn.Module, directory: Path) -> None:
        """Masked flat indices per weight plus the head: the whole delta, values implied."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.delta_state(model).items()
                 if is_head_param(k)}
        for name, mask in self.masks(model).items():
            state[f"{name}.{MASKED}"] = mask.masked().flatten().nonzero().flatten().cpu()
        save_file(state, str(directory / MASK_FILE))

    def load(self, model: nn.Module, directory: Path) -> nn.Module:
        model = self.apply(model)
        state = load_file(str(directory / MASK_FILE))
        masks = self.masks(model)
        suffix = f".{MASKED}"
        indices = {k[: -len(suffix)]: v for k, v in state.items() if k.endswith(suffix)}
        head = {k: v for k, v in state.items() if not k.endswith(suffix)}
        unknown = (set(indices) - set(masks)) | (set(head) - set(dict(model.named_parameters())))
        if unknown:
            raise AutoPeftError(f"artifact {directory} does not match the model: "
                                f"{sorted(unknown)[:3]}")
        with torch.no_grad():
            for name, flat in indices.items():
                masks[name].scores.view(-1)[flat.to(masks[name].scores.device)] = -torch.inf
        model.load_state_dict(head, strict=False)
        self._trained = True
        return model
