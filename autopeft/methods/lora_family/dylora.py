"""DyLoRA (Valipour et al. 2023): one LoRA trained to work at every rank b ≤ r_max.

Neither `peft` nor any other library we depend on implements DyLoRA, so it is written here, on
top of peft's own LoRA layers rather than beside them: plain peft LoRA is applied at `r_max`,
and the effective rank b is imposed by keeping only the first b rank components (rows of A,
columns of B) — a forward pre-hook on `lora_B` multiplies its input by a 0/1 prefix mask, and
one on the LoRA layer sets the scaling to alpha / b. No LoRA code is copied.

Training samples b ~ U{1..r_max} at every step (the same b for every layer) and trains the
first b components (the paper's "frozen" mode, a knob, trains only component b). The rank the
task is evaluated at is `eval_rank` (r_max until chosen): the trial calls `select_rank` after
training, which evaluates the ranks `evaluation_ranks()` on the selection split and keeps the
best. The budget is charged at r_max (what is searched, counted on the meta model); once a rank
is chosen the artifact stores only its b components, `stored_params` counts exactly that, and
loading pads them back into an r_max layer with the same prefix mask, so the loaded model
computes exactly what the trained one did.

`RankPrefixLora` is the part shared with IncreLoRA (`increlora.py`): LoRA at an allocated rank
whose layers each use a prefix of their rank components, saved and loaded truncated.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from torch import nn

from autopeft.errors import AutoPeftError
from autopeft.methods.base import (
    DELTA,
    DELTA_FILE,
    Method,
    MethodConfig,
    knob,
    learning_rate_knob,
    targets_knob,
)
from autopeft.methods.lora import Lora, LoraConfig
from autopeft.methods.targets import is_head_param

ADAPTER = "default"  # peft's adapter name
T = TypeVar("T")


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    """Full module name → peft LoRA layer, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def lora_weights(layer: LoraLayer) -> tuple[nn.Parameter, nn.Parameter]:
    """(A, B): A is (rank, d_in), B is (d_out, rank), also for GPT-2's Conv1D."""
    return layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight


def _keys(name: str) -> tuple[str, str]:
    return f"{name}.lora_A.{ADAPTER}.weight", f"{name}.lora_B.{ADAPTER}.weight"


class RankPrefixLora(Method):
    """peft LoRA at `allocated_rank()`; each layer's effective update uses a prefix of its rank
    components, and what is saved (and counted) is that prefix: A[:k] and B[:, :k]."""

    family = "lora"
    artifact_files = (DELTA,)  # its own `save`: the truncated factors, by their peft names

    def __init__(self, config: MethodConfig):
        super().__init__(config)
        self._layers: dict[str, LoraLayer] = {}
        self._model_id: int | None = None  # the model `apply` returned (whose layers are cached)

    @abstractmethod
    def allocated_rank(self) -> int:
        """The rank peft allocates in every layer."""

    @abstractmethod
    def saved_ranks(self, model: nn.Module) -> dict[str, int]:
        """LoRA layer name → the rank components (a prefix) that saving writes."""

    @abstractmethod
    def restore_ranks(self, model: nn.Module, ranks: dict[str, int]) -> None:
        """After `load`: the method's state for the ranks found in the artifact."""

    def attach(self, model: nn.Module) -> None:  # noqa: B027 - optional hook
        """After peft's layers exist: hooks, masks, scaling (also on a meta model)."""

    def apply(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        plain = Lora(LoraConfig(r=self.allocated_rank(), lora_alpha=cfg.lora_alpha,
                                lora_dropout=cfg.lora_dropout, targets=cfg.targets))
        model = plain.apply(model)
        self._layers, self._model_id = lora_layers(model), id(model)
        self.attach(model)
        return model

    def layers(self, model: nn.Module) -> dict[str, LoraLayer]:
        """The LoRA layers of `model` (cached from `apply` when it is that model)."""
        return self._layers if id(model) == self._model_id else lora_layers(model)

    # --- accounting and artifacts -------------------------------------------------------
    def saved_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Exactly what `save` writes: each layer's A[:k], B[:, :k], and the head."""
        state = dict(self.delta_state(model))
        for name, k in self.saved_ranks(model).items():
            key_a, key_b = _keys(name)
            state[key_a] = state[key_a][:k]
            state[key_b] = state[key_b][:, :k]
        return state

    def stored_params(self, model: nn.Module) -> int:
        return sum(t.numel() for n, t in self.saved_state(model).items() if not is_head_param(n))

    def stored_bytes(self, model: nn.Module) -> int:
        return sum(t.numel() * t.element_size() for n, t in self.saved_state(model).items()
                   if not is_head_param(n))

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """A low-rank update B·A changes every entry of the adapted weight."""
        return {f"{name}.weight": m.weight.numel() for name, m in self.layers(model).items()}

    def save(self, model: nn.Module, directory: Path) -> None:
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.saved_state(model).items()}
        save_file(state, str(directory / DELTA_FILE))

    def load(self, model: nn.Module, directory: Path) -> nn.Module:
        """Apply at the allocated rank, put each saved prefix back (zeros after it), load the
        head; the method then uses the saved ranks, so the forward is the trained one's."""
        model = self.apply(model)
        state = load_file(str(directory / DELTA_FILE))
        ranks = {}
        with torch.no_grad():
            for name, layer in self.layers(model).items():
                key_a, key_b = _keys(name)
                if key_a not in state or key_b not in state:
                    raise AutoPeftError(f"artifact {directory} lacks the LoRA weights of {name}")
                saved_a, saved_b = state.pop(key_a), state.pop(key_b)
                weight_a, weight_b = lora_weights(layer)
                k = saved_a.shape[0]
                if (k > weight_a.shape[0] or saved_a.shape[1:] != weight_a.shape[1:]
                        or saved_b.shape != (weight_b.shape[0], k)):
                    raise AutoPeftError(f"artifact {directory} does not match the model at {name}")
                weight_a.zero_()
                weight_a[:k].copy_(saved_a)
                weight_b.zero_()
                weight_b[:, :k].copy_(saved_b)
                ranks[name] = k
        unknown = set(state) - set(dict(model.named_parameters()))
        if unknown:
            raise AutoPeftError(
                f"artifact {directory} does not match the model: {sorted(unknown)[:3]}")
        model.load_state_dict(state, strict=False)
        self.restore_ranks(model, ranks)
        return model


@dataclass
class DyLoraConfig(MethodConfig):
    r_max: int = knob(8, "largest rank: LoRA is allocated (and charged) at r_max, every step "
                      "trains a rank b ~ U{1..r_max}", minimum=1, affects_size=True)
    lora_alpha: int = knob(16, "scaling numerator (rank-b update scaled by alpha / b)", minimum=1)
    lora_dropout: float = knob(0.05, "dropout on the LoRA input", minimum=0.0)
    targets: str = targets_knob()
    frozen: bool = knob(False, "the paper's frozen mode: a step at rank b updates only "
                        "component b (default: the first b together)")
    eval_ranks: str = knob("pow2", "ranks tried when choosing the evaluation rank: powers of "
                           "two up to r_max (and r_max), or all of 1..r_max",
                           choices=("pow2", "all"))
    learning_rate: float = learning_rate_knob(2e-3)


class DyLora(RankPrefixLora):
    name = "dylora"
    summary = "DyLoRA: LoRA trained at random ranks b ≤ r_max, the best b chosen after training"
    config_class = DyLoraConfig

    def __init__(self, config: DyLoraConfig):
        super().__init__(config)
        self.eval_rank: int = config.r_max  # the rank used when not training
        self._train_rank: int | None = None  # b of the current training step

    def allocated_rank(self) -> int:
        return self.config.r_max

    def evaluation_ranks(self) -> list[int]:
        """The ranks `select_rank` tries, ascending."""
        r_max = self.config.r_max
        if self.config.eval_ranks == "all":
            return list(range(1, r_max + 1))
        return sorted({2 ** i for i in range(int(math.log2(r_max)) + 1)} | {r_max})

    def rank_in_use(self, training: bool) -> int:
        """b of the current step while training (r_max before `start`); else `eval_rank`."""
        if not training:
            return self.eval_rank
        return self._train_rank or self.config.r_max

    # --- the rank-b forward ---------------------------------------------------------------
    def attach(self, model: nn.Module) -> None:
        for layer in self._layers.values():
            layer.register_forward_pre_hook(self._set_scaling)
            layer.lora_B[ADAPTER].register_forward_pre_hook(self._keep_prefix)

    def _set_scaling(self, layer: nn.Module, args: tuple) -> None:
        layer.scaling[ADAPTER] = self.config.lora_alpha / self.rank_in_use(layer.training)

    def _keep_prefix(self, lora_b: nn.Module, args: tuple) -> tuple | None:
        b = self.rank_in_use(lora_b.training)
        if b >= self.config.r_max:
            return None
        hidden = args[0]
        keep = (torch.arange(hidden.shape[-1], device=hidden.device) < b).to(hidden.dtype)
        return (hidden * keep, *args[1:])

    # --- training ---------------------------------------------------------------------------
    def _sample_rank(self) -> None:
        self._train_rank = int(torch.randint(1, self.config.r_max + 1, ()).item())

    def start(self, model: nn.Module, total_steps: int) -> None:
        self._sample_rank()

    def after_backward(self, model: nn.Module, step: int) -> None:
        super().after_backward(model, step)
        b = self._train_rank
        if not self.config.frozen or b is None or b < 2:
            return
        for layer in self.layers(model).values():  # frozen mode: only component b learns
            weight_a, weight_b = lora_weights(layer)
            if weight_a.grad is not None:
                weight_a.grad[:b - 1] = 0
            if weight_b.grad is not None:
                weight_b.grad[:, :b - 1] = 0

    def after_step(self, model: nn.Module, step: int) -> bool:
        self._sample_rank()
        return False

    # --- choosing the rank the task is evaluated (and stored) at ------------------------------
    def select_rank(self, model: nn.Module, evaluate: Callable[[], T],
                    score: Callable[[T], float] = float) -> tuple[int, T]:
        """Evaluate every rank of `evaluation_ranks()` and keep the best (ties: the smaller).

        `evaluate()` runs the model as it is (in eval mode) and returns a result; `score` turns
        that into a number to maximise. The trial calls this after training with an evaluation
        on the selection split. Sets `eval_rank` and returns (rank, its result).
        """
        best: tuple[int, float, Any] | None = None
        for rank in self.evaluation_ranks():
            self.eval_rank = rank
            result = evaluate()
            value = float(score(result))
            value = -math.inf if math.isnan(value) else value
            if best is None or value > best[1]:
                best = (rank, value, result)
        assert best is not None
        self.eval_rank = best[0]
        return best[0], best[2]

    # --- accounting / artifacts ---------------------------------------------------------------
    def saved_ranks(self, model: nn.Module) -> dict[str, int]:
        return dict.fromkeys(self.layers(model), self.eval_rank)

    def restore_ranks(self, model: nn.Module, ranks: dict[str, int]) -> None:
        chosen = set(ranks.values())
        if len(chosen) != 1:
            raise AutoPeftError(f"a DyLoRA artifact stores one rank in every layer, not {chosen}")
        self.eval_rank = chosen.pop()
