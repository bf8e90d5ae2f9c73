"""IncreLoRA (Zhang et al. 2023): LoRA ranks that grow during training where they matter most.

`peft` has no IncreLoRA (its AdaLoRA only prunes), so it is written here on top of peft's LoRA
layers rather than as a copy of them: plain peft LoRA is allocated at a per-matrix cap `r_cap`,
and matrix i uses only its first k_i rank components (rows of A, columns of B). Components past
k_i are zero in both A and B, so they contribute nothing and receive zero gradient (the gradient
is masked in `after_backward` as well, e.g. against Child-Tuning_F). Every matrix starts at
`init_r`; at each growth event the `add_per_step` most important matrices below the cap get one
more component — its A row drawn like peft's initialisation, its B column zero, so the model's
output is unchanged at that moment — until the total rank reaches the budget
`rank_budget × #matrices`. Importance is AdaLoRA's smoothed sensitivity: per entry
Ī ← β Ī + (1-β)|w·∇w|, Ū ← β Ū + (1-β)|(|w·∇w|) - Ī|, averaged as Ī·Ū over a matrix's active
entries. The scaling is alpha / rank_budget throughout, so a new component rescales nothing.

Warm-up of new components (the paper restarts warm-up for them): a component is a slice of
tensors already in the optimizer, so it cannot have its own param group. Instead its update
is scaled by j / NEW_RANK_WARMUP on its j-th step (snapshot before the optimizer step in
`after_backward`, interpolation in `after_step`); AdamW's update is linear in the lr, weight
decay included, so this is exactly an lr ramp from 0 to the schedule's value for that slice.

Accounting: before training (the meta-model count the budget is charged with), `stored_params`
is the most the final allocation can cost — every matrix at `init_r`, the rest of the budget on
the matrices with the largest d_in + d_out, each up to `r_cap` — computed exactly from shapes.
Once training has started it is exactly what `save` writes: the active prefix A[:k_i], B[:, :k_i]
of every matrix, i.e. Σ k_i (d_in + d_out) — never more than the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from autopeft.errors import AutoPeftError
from autopeft.methods.base import MethodConfig, knob, learning_rate_knob, targets_knob
from autopeft.methods.lora_family.dylora import ADAPTER, RankPrefixLora, lora_weights

BETA = 0.85  # AdaLoRA's smoothing of sensitivity and of its uncertainty
GROW_UNTIL = 0.7  # with interval=0, the budget is reached by this fraction of training
# Steps over which a new component's lr ramps up. Its Adam moments start at zero while the
# tensor's step count (so its bias correction) is already advanced: unwarmed, its first update
# would be ≈ (1-β1)/√(1-β2) ≈ 3× lr·sign(g). 10 ≈ 1/(1-β1), the time the first moment takes to
# fill; short, so a new component trains at the full lr for most of the run.
NEW_RANK_WARMUP = 10


@dataclass
class IncreLoraConfig(MethodConfig):
    rank_budget: int = knob(4, "average final rank per adapted matrix: the total rank budget is "
                            "rank_budget × matrices", minimum=1, affects_size=True)
    init_r: int = knob(1, "rank every matrix starts with", minimum=1, affects_size=True)
    r_cap: int = knob(16, "most ranks one matrix may grow to (allocated up front)", minimum=1,
                      affects_size=True)
    interval: int = knob(0, "steps between growth events (a short run may then end below the "
                         f"budget); 0 = spaced so that the budget is reached at {GROW_UNTIL:.0%} "
                         "of training", minimum=0)
    add_per_step: int = knob(2, "matrices given one more rank at each growth event (the most "
                             "important first)", minimum=1)
    lora_alpha: int = knob(16, "scaling numerator (updates scaled by alpha / rank_budget)",
                           minimum=1)
    lora_dropout: float = knob(0.05, "dropout on the LoRA input", minimum=0.0)
    targets: str = targets_knob()
    learning_rate: float = learning_rate_knob(2e-3)

    def __post_init__(self) -> None:
        if not self.init_r <= self.rank_budget <= self.r_cap:
            raise AutoPeftError(
                f"increlora needs init_r <= rank_budget <= r_cap, got {self.init_r}, "
                f"{self.rank_budget}, {self.r_cap}")


class IncreLora(RankPrefixLora):
    name = "increlora"
    summary = "IncreLoRA: LoRA ranks start small and grow on the most important matrices"
    config_class = IncreLoraConfig

    def __init__(self, config: IncreLoraConfig):
        super().__init__(config)
        self._ranks: dict[str, int] = {}  # active components per matrix (a prefix)
        self._importance: dict[str, list[torch.Tensor]] = {}  # [Ī_A, Ū_A, Ī_B, Ū_B]
        self._interval, self._per_event = 0, 0  # growth schedule, set by `start`
        self._trained = False  # stored_params is the plan until training starts (or a load)
        self._warming: dict[tuple[str, int], int] = {}  # (matrix, component) → steps warmed
        self._before: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def allocated_rank(self) -> int:
        return self.config.r_cap

    def attach(self, model: nn.Module) -> None:
        """Every matrix at `init_r` (the rest zero), scaling alpha / rank_budget."""
        cfg: IncreLoraConfig = self.config
        self._ranks = dict.fromkeys(self._layers, cfg.init_r)
        for layer in self._layers.values():
            layer.scaling[ADAPTER] = cfg.lora_alpha / cfg.rank_budget
            weight_a, weight_b = lora_weights(layer)
            if weight_a.device.type != "meta":
                with torch.no_grad():
                    weight_a[cfg.init_r:] = 0
                    weight_b.zero_()

    # --- ranks ----------------------------------------------------------------------------
    def active_ranks(self) -> dict[str, int]:
        return dict(self._ranks)

    def total_rank(self) -> int:
        return sum(self._ranks.values())

    def total_budget(self) -> int:
        """Total rank across matrices when growth is done."""
        return self.config.rank_budget * len(self._ranks)

    def planned(self, model: nn.Module) -> int:
        """The costliest allocation the budget allows: init_r everywhere, then the rest on the
        matrices with the most entries per rank (d_in + d_out), each up to r_cap."""
        cfg: IncreLoraConfig = self.config
        costs = []
        for layer in self.layers(model).values():
            weight_a, weight_b = lora_weights(layer)  # (r, d_in), (d_out, r)
            costs.append(weight_a.shape[1] + weight_b.shape[0])
        costs.sort(reverse=True)
        left = cfg.rank_budget * len(costs) - cfg.init_r * len(costs)
        total = 0
        for cost in costs:
            extra = min(cfg.r_cap - cfg.init_r, left)
            left -= extra
            total += (cfg.init_r + extra) * cost
        return total

    def saved_ranks(self, model: nn.Module) -> dict[str, int]:
        return dict(self._ranks)

    def restore_ranks(self, model: nn.Module, ranks: dict[str, int]) -> None:
        self._ranks = dict(ranks)
        self._trained = True

    def stored_params(self, model: nn.Module) -> int:
        """The plan (an upper bound) before training; then exactly the saved components."""
        return super().stored_params(model) if self._trained else self.planned(model)

    # --- training ---------------------------------------------------------------------------
    def start(self, model: nn.Module, total_steps: int) -> None:
        """Spread the growth events: `interval` apart, or so the budget is reached in time."""
        cfg: IncreLoraConfig = self.config
        self._trained = True
        needed = self.total_budget() - self.total_rank()
        events = math.ceil(needed / cfg.add_per_step)
        span = max(1, int(GROW_UNTIL * total_steps))
        if cfg.interval or events == 0:
            self._interval, self._per_event = cfg.interval, cfg.add_per_step
        elif events <= span:
            self._interval, self._per_event = span // events, cfg.add_per_step
        else:  # more additions than steps to make them in: several per event
            self._interval, self._per_event = 1, math.ceil(needed / span)

    def after_backward(self, model: nn.Module, step: int) -> None:
        self._update_importance(model)
        super().after_backward(model, step)
        for name, layer in self.layers(model).items():  # inactive components stay zero
            k = self._ranks[name]
            weight_a, weight_b = lora_weights(layer)
            if weight_a.grad is not None:
                weight_a.grad[k:] = 0
            if weight_b.grad is not None:
                weight_b.grad[:, k:] = 0
        layers = self.layers(model)
        with torch.no_grad():  # warming components as they are before the optimizer step
            self._before = {(name, k): tuple(w.clone() for w in _component(layers[name], k))
                            for name, k in self._warming}

    @torch.no_grad()
    def _update_importance(self, model: nn.Module) -> None:
        for name, layer in self.layers(model).items():
            weights = lora_weights(layer)
            if name not in self._importance:
                self._importance[name] = [torch.zeros_like(w) for w in weights for _ in (0, 1)]
            smoothed = self._importance[name]
            for i, weight in enumerate(weights):
                if weight.grad is None:
                    continue
                sensitivity = (weight * weight.grad).abs()
                mean, spread = smoothed[2 * i], smoothed[2 * i + 1]
                mean.mul_(BETA).add_(sensitivity, alpha=1 - BETA)
                spread.mul_(BETA).add_((sensitivity - mean).abs(), alpha=1 - BETA)

    def importance(self, name: str) -> float:
        """Mean smoothed importance Ī·Ū over the matrix's active entries (0 before any)."""
        smoothed = self._importance.get(name)
        if not smoothed:
            return 0.0
        k = self._ranks[name]
        total = (smoothed[0][:k] * smoothed[1][:k]).sum() + \
            (smoothed[2][:, :k] * smoothed[3][:, :k]).sum()
        return float(total) / (smoothed[0][:k].numel() + smoothed[2][:, :k].numel())

    def after_step(self, model: nn.Module, step: int) -> bool:
        self._trained = True
        self._warm_up(model)
        if self._interval and step % self._interval == 0:
            self.grow(model, self._per_event)
        return False  # the same tensors stay trainable (new components are slices of them)

    @torch.no_grad()
    def _warm_up(self, model: nn.Module) -> None:
        """Scale the step just taken by each warming component to j / NEW_RANK_WARMUP of it."""
        layers = self.layers(model)
        for key, before in self._before.items():
            done = self._warming[key] + 1
            for weight, old in zip(_component(layers[key[0]], key[1]), before, strict=True):
                weight.copy_(torch.lerp(old, weight, done / NEW_RANK_WARMUP))
            if done < NEW_RANK_WARMUP:
                self._warming[key] = done
            else:
                del self._warming[key]
        self._before = {}

    @torch.no_grad()
    def grow(self, model: nn.Module, count: int) -> list[str]:
        """Give one more component to the `count` most important matrices below the cap,
        within the budget; returns their names."""
        room = self.total_budget() - self.total_rank()
        open_ = [n for n in self._ranks if self._ranks[n] < self.config.r_cap]
        chosen = sorted(open_, key=self.importance, reverse=True)[:max(0, min(count, room))]
        layers = self.layers(model)
        for name in chosen:
            k = self._ranks[name]
            weight_a, weight_b = lora_weights(layers[name])
            bound = 1 / math.sqrt(weight_a.shape[1])  # peft's kaiming_uniform(a=√5) on A
            weight_a[k].uniform_(-bound, bound)
            weight_b[:, k] = 0
            self._ranks[name] = k + 1
            self._warming[(name, k)] = 0
        return chosen


def _component(layer: nn.Module, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views of rank component k: row k of A, column k of B."""
    weight_a, weight_b = lora_weights(layer)
    return weight_a[k], weight_b[:, k]
