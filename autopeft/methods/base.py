"""The interface every PEFT method implements, and how methods declare their knobs.

A method is a config dataclass (its knobs, with types, defaults and help) plus a `Method`
subclass that applies it to a model. Search ranges live in `search_spaces/*.yaml`, not here,
so one file says what is searched.

The training loop knows nothing about particular methods: it asks the method for parameter
groups and calls its hooks (after backward, after each optimizer step), which is where gradient
masks, rank reallocation or phase switches of later methods plug in.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autopeft.errors import AutoPeftError
from autopeft.methods.targets import ROLE_SETS, is_head_param

DELTA_FILE = "delta.safetensors"


@dataclass(frozen=True)
class ArtifactFile:
    """One file a method's `save` writes and what it holds: the method says it, so the exported
    model card describes an artifact without knowing any method."""

    name: str
    holds: str


DELTA = ArtifactFile(DELTA_FILE, "every trained tensor by its parameter name in the model with "
                                 "the method applied (head included); the rest is the frozen "
                                 "backbone")


@dataclass(frozen=True)
class Knob:
    """A searchable setting of a method: its name, type, default and meaning."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple | None = None  # allowed values when the knob is an enumeration
    minimum: float | None = None  # smallest valid value for numeric knobs
    affects_size: bool = False  # changes the stored parameter count


def knob(
    default: Any,
    help: str,
    *,
    choices: tuple | None = None,
    minimum: float | None = None,
    affects_size: bool = False,
) -> Any:
    """Declare a knob as a dataclass field (type comes from the annotation)."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "affects_size": affects_size}
    return field(default=default, metadata={"knob": meta})


def targets_knob(default: str = "qv", what: str = "projections adapted") -> Any:
    """Which projection roles a method touches (resolved per architecture in `targets.py`)."""
    return knob(default, f"{what}: qv, attn (q,k,v,o) or all (attn + FFN)",
                choices=tuple(ROLE_SETS), affects_size=True)


def learning_rate_knob(default: float) -> Any:
    """Every method searches its own learning rate; only the default differs."""
    return knob(default, "peak AdamW learning rate", minimum=0.0)


@dataclass
class MethodConfig:
    """Training knobs every method has; subclasses add their own and override defaults."""

    learning_rate: float = learning_rate_knob(1e-3)
    warmup_ratio: float = knob(0.06, "fraction of steps with linear warmup", minimum=0.0)
    weight_decay: float = knob(0.0, "AdamW weight decay (never on biases/LayerNorm)", minimum=0.0)
    child_f_p: float = knob(
        0.0, "Child-Tuning_F: keep each gradient entry with prob. p, scaled 1/p (0 = off)",
        minimum=0.0,
    )

    @classmethod
    def knobs(cls) -> list[Knob]:
        hints = {f.name: f.type for f in dataclasses.fields(cls)}
        types = {"int": int, "float": float, "str": str, "bool": bool}
        out = []
        for f in dataclasses.fields(cls):
            meta = f.metadata.get("knob")
            if meta is None:
                continue
            out.append(Knob(name=f.name, type=types.get(str(hints[f.name]), str), default=f.default,
                            **meta))
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], method: str) -> MethodConfig:
        """Build and validate a config, naming the bad knob and what it accepts."""
        knobs = {k.name: k for k in cls.knobs()}
        unknown = sorted(set(values) - set(knobs))
        if unknown:
            raise AutoPeftError(
                f"unknown knob(s) {', '.join(unknown)} for method '{method}'; "
                f"accepted: {', '.join(sorted(knobs))}"
            )
        for name, value in values.items():
            spec = knobs[name]
            if spec.choices is not None and value not in spec.choices:
                raise AutoPeftError(
                    f"{method}.{name}={value!r} is not allowed; choose one of {list(spec.choices)}"
                )
            if spec.minimum is not None and value < spec.minimum:
                raise AutoPeftError(f"{method}.{name}={value!r} must be >= {spec.minimum}")
        return cls(**values)

    def size_key(self) -> tuple:
        """The knob values that determine the stored size (cache key for budget checks)."""
        return tuple((k.name, getattr(self, k.name)) for k in self.knobs() if k.affects_size)


class BatchSource(Protocol):
    """Training batches on demand (model inputs + labels, on the model's device)."""

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]: ...


class Method(ABC):
    """Applies one PEFT method to a model and accounts for what it must store."""

    name: ClassVar[str]
    summary: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    # The family the sweep report draws one line for (lora, sparse, adapter, ...).
    family: ClassVar[str]
    # What `save` writes (the artifact store adds its JSON description beside it); a method
    # whose `save` writes other files says so here.
    artifact_files: ClassVar[tuple[ArtifactFile, ...]] = (DELTA,)

    def __init__(self, config: MethodConfig):
        self.config = config

    @abstractmethod
    def apply(self, model: nn.Module) -> nn.Module:
        """Freeze the backbone, add/unfreeze what this method trains; return the model to train.

        The task head is always trainable; it is counted separately, not charged to the budget.
        """

    # --- accounting -------------------------------------------------------------------
    def stored_params(self, model: nn.Module) -> int:
        """Exact count of what must be stored per task beyond the frozen backbone (no head).

        Default: every trainable non-head value. Sparse methods override with their non-zeros.
        """
        return sum(t.numel() for name, t in self.delta_state(model).items()
                   if not is_head_param(name))

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """Backbone tensor → entries this method may change (for the per-layer picture).

        Default: every trainable non-head tensor changes whole (BitFit, full fine-tuning).
        """
        return {name: t.numel() for name, t in self.delta_state(model).items()
                if not is_head_param(name)}

    def stored_bytes(self, model: nn.Module) -> int:
        """Bytes of the stored delta (no head); sparse methods add their indices."""
        return sum(t.numel() * t.element_size() for name, t in self.delta_state(model).items()
                   if not is_head_param(name))

    def head_params(self, model: nn.Module) -> int:
        return sum(t.numel() for name, t in self.delta_state(model).items() if is_head_param(name))

    def delta_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The tensors that make up the task's delta (trainable ones, head included)."""
        seen: set[int] = set()
        state = {}
        for name, param in model.named_parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                state[name] = param
        return state

    # --- training hooks (no-ops unless a method needs them) --------------------------------
    def parameter_groups(self, model: nn.Module, weight_decay: float) -> list[dict]:
        """AdamW groups: decay on matrices only, as is conventional for transformers."""
        decay, no_decay = [], []
        for param in self.delta_state(model).values():
            (decay if param.ndim >= 2 else no_decay).append(param)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def prepare(self, model: nn.Module, data: BatchSource) -> None:  # noqa: B027 - optional hook
        """Data-dependent set-up after `apply`, before training (e.g. choosing a sparse mask)."""

    def start(self, model: nn.Module, total_steps: int) -> None:  # noqa: B027 - optional hook
        """Called once before the first step, with the number of optimizer steps to come."""

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """A term added to the loss (e.g. diff pruning's λ·E[‖δ‖₀]); None for none."""
        return None

    def after_backward(self, model: nn.Module, step: int) -> None:
        """Called between backward and the optimizer step; gradient masks go here.

        Applies Child-Tuning_F (Xu et al. 2021) when `child_f_p` is set: a fresh Bernoulli(p)
        mask on every trainable backbone gradient, survivors scaled by 1/p so the expected
        gradient is unchanged. Subclasses that override this call `super()`.
        """
        p = getattr(self.config, "child_f_p", 0.0)
        if not 0.0 < p < 1.0:
            return
        for name, param in self.delta_state(model).items():
            if param.grad is not None and not is_head_param(name):
                keep = torch.rand_like(param.grad) < p
                param.grad.mul_(keep).div_(p)

    def after_step(self, model: nn.Module, step: int) -> bool:
        """Called after optimizer step number `step` (1-based): reallocation, projections, phase
        switches. Return True when the set of trainable tensors changed: the loop then builds a
        new AdamW over `parameter_groups` whose lr continues the run's schedule at this step;
        tensors trainable before and after (the same objects) keep their AdamW state, new ones
        start fresh. A method that activates entries inside tensors already being trained
        (IncreLoRA's new rank components) returns False and warms them up itself."""
        return False

    # --- artifacts ---------------------------------------------------------------------
    def save(self, model: nn.Module, directory: Path) -> None:
        """Write the delta as safetensors; the caller writes the JSON description beside it."""
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.delta_state(model).items()}
        save_file(state, str(directory / DELTA_FILE))

    def load(self, model: nn.Module, directory: Path) -> nn.Module:
        """Apply the method to a fresh backbone and load a saved delta into it."""
        model = self.apply(model)
        state = load_file(str(directory / DELTA_FILE))
        missing = set(state) - set(dict(model.named_parameters()))
        if missing:
            raise AutoPeftError(
                f"artifact {directory} does not match the model: {sorted(missing)[:3]}"
            )
        model.load_state_dict(state, strict=False)
        return model


def freeze(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


def unfreeze_head(model: nn.Module) -> None:
    for name, param in model.named_parameters():
        if is_head_param(name):
            param.requires_grad_(True)
