"""AdaLoRA (Zhang et al. 2023) through peft: SVD-form updates P·Λ·Q whose ranks are reallocated.

Every adapted projection starts with ``init_r`` triplets (a column of P = ``lora_B``, a singular
value in Λ = ``lora_E``, a row of Q = ``lora_A``). peft's RankAllocator scores triplets by
smoothed sensitivity and, on a cubic schedule between ``tinit`` and ``T - tfinal``, masks the
least important ones until ``target_r × (number of adapted matrices)`` triplets remain in total —
possibly more in one matrix than in another. peft's forward adds the orthogonality penalty
``orth_reg_weight · mean‖PᵀP − I‖ / ‖QQᵀ − I‖`` to the loss whenever labels are given, which the
training loop always does, so `penalty` stays None.

Schedule: ``tinit`` / ``tfinal`` are fractions of the run, turned into steps in `start` (peft's
config needs ``total_step`` at construction, so `apply` builds it with a placeholder and `start`
writes the real schedule into the live config, which the allocator reads on every call).
`after_backward` calls ``update_and_allocate`` (it needs the gradients) with the method's own
1-based step count; on the step where peft masks the triplets `after_step` masks them again,
because the optimizer step in between may have moved them (peft's own recipe calls it after
the optimizer step). On the final allocation (step ``T - tfinal``) `after_step` *removes* the
pruned triplets from the live model (peft's ``resize_modules_by_rank_pattern``) and asks for a
fresh optimizer: the remaining ``tfinal`` steps train exactly the tensors that will be stored,
and the saved artifact reproduces the trained model bit for bit.

Budget. The stored count is ``Σ r_m · (d_in,m + d_out,m + 1)`` over adapted matrices m at their
final ranks r_m, with ``Σ r_m ≤ target_r · M`` (peft masks every triplet at or below the k-th
score, so ties only prune more). Before training the split among matrices is unknown, so the
planned count is the most the final allocation can store: ``target_r · M · max_m(d_in + d_out
+ 1)`` — exactly ``target_r · M · (d_in + d_out + 1)`` when all adapted matrices have one shape
(q/v everywhere but GPT-2's fused c_attn, attention on BERT-like models). `stored_params` is that
plan until the allocator has produced a rank pattern, and from then on counts exactly what
`save` writes: peft's ``save_pretrained`` keeps only the allocated triplets (its rank pattern
in adapter_config.json, the sliced A/E/B in adapter_model.safetensors; ``ranknum`` is not
saved), which after the final resize is every live A/E/B entry. So after training
``stored_params ≤`` the planned count. `save` refuses a model whose ranks were never allocated
(it would write all ``init_r`` triplets, over the plan).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from peft import AdaLoraConfig as PeftAdaLoraConfig
from peft.tuners.adalora import AdaLoraLayer
from torch import nn

from autopeft.errors import AutoPeftError
from autopeft.methods.base import MethodConfig, knob, learning_rate_knob, targets_knob
from autopeft.methods.peft_backed import PeftBackedMethod
from autopeft.methods.targets import resolve_target_set

ADAPTER = "default"


@dataclass
class AdaLoraConfig(MethodConfig):
    target_r: int = knob(
        4, "average rank per adapted matrix after allocation (the budget)",
        minimum=1, affects_size=True,
    )
    init_r: int = knob(12, "rank each matrix starts with, pruned to the budget; > target_r",
                       minimum=2)
    targets: str = targets_knob()
    lora_alpha: int = knob(32, "scaling numerator (update scaled by alpha / init_r)", minimum=1)
    lora_dropout: float = knob(0.05, "dropout on the AdaLoRA input", minimum=0.0)
    orth_reg_weight: float = knob(0.1, "weight of the orthogonality penalty on P and Q",
                                  minimum=0.0)
    tinit: float = knob(0.1, "fraction of the steps trained at init_r before pruning starts",
                        minimum=0.0)
    tfinal: float = knob(0.2, "fraction of the last steps trained at the final ranks",
                         minimum=0.0)
    delta_t: int = knob(1, "steps between two rank reallocations", minimum=1)
    learning_rate: float = learning_rate_knob(2e-3)


class AdaLora(PeftBackedMethod):
    name = "adalora"
    summary = "SVD-form low-rank updates, ranks reallocated by importance to a budget (peft)"
    family = "lora"
    config_class = AdaLoraConfig

    def __init__(self, config: AdaLoraConfig):
        super().__init__(config)
        self._step = 0  # update_and_allocate calls since `start` (1-based when called)
        self._remask = False  # peft masked triplets before this optimizer step
        self._final = False  # pruned triplets removed; nothing left to allocate

    # --- building -------------------------------------------------------------------------
    def _peft_config(self, model: nn.Module) -> PeftAdaLoraConfig:
        cfg: AdaLoraConfig = self.config
        names, conv1d = resolve_target_set(model, cfg.targets)
        return PeftAdaLoraConfig(
            **self._peft_options(model),
            init_r=cfg.init_r,
            target_r=cfg.target_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            orth_reg_weight=cfg.orth_reg_weight,
            deltaT=cfg.delta_t,
            total_step=1, tinit=0, tfinal=0,  # placeholder: the real schedule is set in `start`
            target_modules=names,
            fan_in_fan_out=conv1d,  # GPT-2's Conv1D stores its weight transposed
        )

    # --- schedule and allocation ---------------------------------------------------------
    def start(self, model: nn.Module, total_steps: int) -> None:
        cfg: AdaLoraConfig = self.config
        if cfg.init_r <= cfg.target_r:
            raise AutoPeftError(
                f"adalora.init_r={cfg.init_r} must exceed target_r={cfg.target_r}: "
                "AdaLoRA prunes from init_r down to the target")
        total = max(1, int(total_steps))
        tinit = min(int(cfg.tinit * total), total - 1)
        tfinal = min(int(cfg.tfinal * total), total - 1 - tinit)  # peft: tinit < total - tfinal
        schedule = _peft_config_of(model)
        schedule.total_step, schedule.tinit, schedule.tfinal = total, tinit, tfinal
        schedule.rank_pattern = None
        self._step, self._remask, self._final = 0, False, False

    def after_backward(self, model: nn.Module, step: int) -> None:
        """peft's ``update_and_allocate`` (importance from these gradients, masks on schedule),
        then the base hook (Child-Tuning_F masks the gradients the optimizer will use)."""
        if not self._final:
            self._step += 1
            tuner = model.base_model
            schedule = _peft_config_of(model)
            allocator = tuner.rankallocator
            if self._step == schedule.total_step - schedule.tfinal and not allocator.exp_avg_ipt:
                allocator.update_ipt(tuner.model)  # a run too short for any scoring step before
            before = schedule.rank_pattern
            tuner.update_and_allocate(self._step)
            self._remask = schedule.rank_pattern is not before
        super().after_backward(model, step)

    def after_step(self, model: nn.Module, step: int) -> bool:
        """Re-apply a mask made before this optimizer step; at the final allocation, drop the
        pruned triplets from the model (new tensors: the loop builds a fresh optimizer)."""
        if not self._remask:
            return False
        self._remask = False
        tuner = model.base_model
        schedule = _peft_config_of(model)
        if self._step < schedule.total_step - schedule.tfinal:
            tuner.rankallocator.mask_using_rank_pattern(tuner.model, schedule.rank_pattern)
            return False
        tuner.resize_modules_by_rank_pattern(schedule.rank_pattern, ADAPTER)
        self._final = True
        return True

    # --- accounting ----------------------------------------------------------------------
    def planned_params(self, model: nn.Module) -> int:
        """What the final allocation can store at most: target_r·M triplets of the widest kind."""
        widths = [m.in_features + m.out_features + 1 for m in _layers(model).values()]
        return self.config.target_r * len(widths) * max(widths)

    def allocated_ranks(self, model: nn.Module) -> dict[str, int] | None:
        """Adapted module (name inside the backbone) → triplets kept; None before allocation."""
        pattern = _peft_config_of(model).rank_pattern
        if pattern is None:
            return None
        ranks = {}
        for key, kept in pattern.items():
            module = key.replace(f".{ADAPTER}", "").removesuffix(".lora_E")
            ranks[module] = int(sum(kept))
        return ranks

    def stored_params(self, model: nn.Module) -> int:
        """The plan before any allocation; afterwards exactly the values `save` writes."""
        ranks = self.allocated_ranks(model)
        if ranks is None:
            return self.planned_params(model)
        layers = _layers(model)
        return sum(r * (layers[name].in_features + layers[name].out_features + 1)
                   for name, r in ranks.items())

    def stored_bytes(self, model: nn.Module) -> int:
        size = next(iter(_layers(model).values())).lora_A[ADAPTER].element_size()
        return self.stored_params(model) * size

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        """P·Λ·Q with at least one triplet changes every entry of the adapted weight."""
        ranks = self.allocated_ranks(model)
        return {f"base_model.model.{name}.weight": m.get_base_layer().weight.numel()
                for name, m in _layers(model).items() if ranks is None or ranks[name] > 0}

    # --- artifacts -----------------------------------------------------------------------
    def save(self, model: nn.Module, directory: Path) -> None:
        """peft's layout: adapter_config.json (rank pattern included) + the allocated triplets."""
        if self.allocated_ranks(model) is None:
            raise AutoPeftError(
                "adalora: ranks were never allocated (train through step T - tfinal first); "
                "saving now would store all init_r triplets, over the planned budget")
        with warnings.catch_warnings():  # a matrix pruned to rank 0 is legitimate here
            warnings.filterwarnings("ignore", message=r".*LoRA tensor\(s\) have invalid shape")
            super().save(model, directory)

    def load(self, model: nn.Module, directory: Path) -> nn.Module:
        with warnings.catch_warnings():
            # AdaLoRA's rank pattern (kept triplets) is not LoRA's per-module rank override
            warnings.filterwarnings("ignore", message="The following rank_pattern keys")
            return super().load(model, directory)


def _peft_config_of(model: nn.Module) -> PeftAdaLoraConfig:
    return model.peft_config[ADAPTER]


def _layers(model: nn.Module) -> dict[str, AdaLoraLayer]:
    """Adapted modules by their name inside the backbone (the rank pattern's names)."""
    return {name: m for name, m in model.base_model.model.named_modules()
            if isinstance(m, AdaLoraLayer)}
