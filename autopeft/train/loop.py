"""The training loop: AdamW, linear warmup/decay, per-epoch evaluation.

Written by hand rather than with `transformers.Trainer` because methods need hooks between
backward and the optimizer step (gradient masks, rank reallocation, phase switches) and each
epoch's evaluation is reported to the search as it happens; both are awkward through Trainer.
The loop calls the method's hooks and knows nothing about any particular method.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from autopeft.errors import TrainingDiverged
from autopeft.methods.base import Method
from autopeft.tasks import TaskSpec, compute_metrics
from autopeft.train.data import TokenizedSplit, eval_batches, train_loader


@dataclass
class LoopSettings:
    epochs: int = 1
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0


@dataclass
class EpochResult:
    epoch: int
    metrics: dict[str, float]
    train_seconds: float
    eval_seconds: float
    train_loss: float


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    """bf16 autocast on GPUs; full precision on the CPU (bf16 matmuls are slow there)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def fit(
    model: nn.Module,
    method: Method,
    train: TokenizedSplit,
    selection: TokenizedSplit | None,
    tokenizer,
    task: TaskSpec,
    settings: LoopSettings,
    on_epoch_end: Callable[[EpochResult], None] | None = None,
) -> list[EpochResult]:
    """Train for `settings.epochs`, evaluating on the selection split after each epoch.

    With `selection` None (the final retraining, whose train set includes the selection split)
    no epoch is evaluated and each result's metrics are empty. A NaN or infinite loss raises
    `TrainingDiverged` at once.
    """
    device = pick_device()
    model.to(device)
    loader = train_loader(train, tokenizer, settings.batch_size, settings.seed)
    total_steps = max(1, settings.epochs * len(loader))
    method.start(model, total_steps)
    warmup_steps = math.ceil(settings.warmup_ratio * total_steps)
    optimizer, scheduler, trainable = build_optimizer(
        model, method, settings, total_steps, warmup_steps
    )
    history, step = [], 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        started, losses = time.perf_counter(), []
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device):
                loss = model(**batch).loss
                penalty = method.penalty(model)
            value = loss.item()
            if not math.isfinite(value):  # NaN weights would only give a meaningless score
                raise TrainingDiverged(
                    f"training loss became {value} at epoch {epoch}, step {step + 1} "
                    f"(learning rate {settings.learning_rate:g}); the candidate diverged")
            (loss if penalty is None else loss + penalty).backward()
            method.after_backward(model, step)
            torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if method.after_step(model, step):  # new trainable tensors: rebuild, same schedule
                optimizer, scheduler, trainable = build_optimizer(
                    model, method, settings, total_steps, warmup_steps, done=step,
                    previous=optimizer,
                )
            losses.append(value)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        metrics = ({} if selection is None
                   else evaluate(model, selection, tokenizer, task, settings.eval_batch_size))
        result = EpochResult(
            epoch=epoch,
            metrics=metrics,
            train_seconds=train_seconds,
            eval_seconds=time.perf_counter() - started,
            train_loss=float(np.mean(losses)) if losses else float("nan"),
        )
        history.append(result)
        if on_epoch_end is not None:
            on_epoch_end(result)
    return history


def linear_schedule(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The lr multiplier at a global step (transformers' linear warmup then decay to 0), as one
    function of the step so that an optimizer rebuilt mid-run can resume it exactly."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return multiplier


def build_optimizer(model, method: Method, settings: LoopSettings, steps: int, warmup_steps: int,
                    done: int = 0, previous: torch.optim.Optimizer | None = None):
    """AdamW over the method's parameter groups (a group may set its own lr) with the linear
    schedule over `steps`, resumed after `done` steps.

    A rebuild passes the old optimizer as `previous`: tensors trainable in both keep their AdamW
    state, since a fresh one would restart bias correction (a first update of about ±lr on
    every entry, whatever its gradient history).
    """
    optimizer = torch.optim.AdamW(
        method.parameter_groups(model, settings.weight_decay), lr=settings.learning_rate
    )
    if previous is not None:
        carry_state(previous, optimizer)
    multiplier = linear_schedule(warmup_steps, max(1, steps))
    # LambdaLR applies its lambda at 0 on construction: the lr is the schedule's at step `done`
    scheduler = LambdaLR(optimizer, lambda step: multiplier(step + done))
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    return optimizer, scheduler, trainable


def carry_state(old: torch.optim.Optimizer, new: torch.optim.Optimizer) -> None:
    """Move per-parameter state to `new` for each of its parameters that `old` had (by tensor
    identity, same shape); the others start fresh."""
    for group in new.param_groups:
        for param in group["params"]:
            state = old.state.get(param)
            if state and all(not torch.is_tensor(v) or v.ndim == 0 or v.shape == param.shape
                             for v in state.values()):
                new.state[param] = state


def evaluate(
    model: nn.Module, split: TokenizedSplit, tokenizer, task: TaskSpec, batch_size: int = 64
) -> dict[str, float]:
    return compute_metrics(task, predict_logits(model, split, tokenizer, batch_size),
                           split.labels)


@torch.no_grad()
def predict_logits(model: nn.Module, split: TokenizedSplit, tokenizer,
                   batch_size: int = 64) -> np.ndarray:
    """The model's logits per example, in the split's order (batched by length, eval mode)."""
    device = pick_device()
    model.to(device)
    model.eval()
    loader, order = eval_batches(split, tokenizer, batch_size)
    outputs = []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        with autocast(device):
            outputs.append(model(**batch).logits.float().cpu())
    predictions = torch.cat(outputs).numpy()
    restored = np.empty_like(predictions)
    restored[order] = predictions
    return restored
