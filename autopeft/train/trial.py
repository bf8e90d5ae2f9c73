"""One trial, independent of Ray: everything needed to train and judge a candidate."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autopeft.artifacts.store import save_artifact
from autopeft.backbones.head import HeadSettings, centre_regression_output, freeze_pooler
from autopeft.backbones.models import ModelSource, load_model
from autopeft.errors import AutoPeftError, EmptyDelta
from autopeft.methods import Method, build_method
from autopeft.methods.allocation import backbone_sizes, summarize
from autopeft.methods.counting import count_params, trainable_line
from autopeft.study import ATTR_CHANCE
from autopeft.tasks import artifact_fields, chance_score, resolve_task
from autopeft.train import faults
from autopeft.train.data import SearchData, SplitBatches, TokenizedSplit
from autopeft.train.loop import EpochResult, LoopSettings, evaluate, fit, pick_device


@dataclass(frozen=True)
class TrialContext:
    """Study-wide settings every trial shares (picklable, sent once to the workers)."""

    model: ModelSource
    task: str | dict  # the task's record (`tasks.resolve`): a GLUE name or a custom mapping
    budget_params: int
    epochs: int
    batch_size: int
    seed: int
    study_dir: str  # absolute; artifacts go under its ARTIFACTS_SUBDIR
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    head: HeadSettings = HeadSettings()  # pooling and whether the pooler trains


ARTIFACTS_SUBDIR = "artifacts"  # inside the study directory
METRIC_PREFIX = "selection_"  # reported metrics: selection_accuracy, selection_f1, ...


def artifact_name(trial_number: int) -> str:
    return f"trial-{trial_number:04d}"


@dataclass
class Trained:
    """A candidate after training: the method, the model it was applied to, the last epoch."""

    method: Method
    model: nn.Module
    last: EpochResult  # metrics on the selection split (empty when there was none)
    settings: LoopSettings


def fit_candidate(
    candidate: dict[str, Any],
    train: TokenizedSplit,
    selection: TokenizedSplit | None,
    tokenizer,
    context: TrialContext,
    seed: int,
    *,
    on_built: Callable[[Method, nn.Module], None] | None = None,
    on_epoch_end: Callable[[EpochResult], Any] | None = None,
    rank: int | None = None,
) -> Trained:
    """The one training path of a candidate ({"method", "knobs"}), for trials and final runs.

    Seeds torch, applies the method to a freshly loaded backbone (head initialised from
    `seed`; a regression head's bias at the train targets' mean), lets it prepare on `train`,
    then trains `context.epochs` epochs of `context.batch_size` with the method's optimiser
    knobs and the same `seed` for data order.
    `on_built` sees the model before training (the trial checks the budget there).
    Rank-flexible methods (DyLoRA) get their evaluation rank from `rank` when given (fixed by
    the search), else they choose it on `selection`.
    """
    task = resolve_task(context.task)
    torch.manual_seed(seed)
    method = build_method(candidate["method"], candidate["knobs"])
    backbone = load_model(context.model, task.num_labels, seed=seed, pooling=context.head.pooling)
    if task.is_regression:
        centre_regression_output(backbone, float(train.labels.mean()))
    model = method.apply(backbone).to(pick_device())
    if not context.head.train_pooler:
        freeze_pooler(model)
    method.prepare(model, SplitBatches(train, tokenizer, pick_device(), seed))
    if on_built is not None:
        on_built(method, model)
    settings = LoopSettings(
        epochs=context.epochs,
        batch_size=context.batch_size,
        learning_rate=method.config.learning_rate,
        warmup_ratio=method.config.warmup_ratio,
        weight_decay=method.config.weight_decay,
        seed=seed,
    )
    history = fit(model, method, train, selection, tokenizer, task, settings,
                  on_epoch_end=on_epoch_end)
    last = history[-1]
    select_rank = getattr(method, "select_rank", None)
    if select_rank is not None and rank is not None:
        method.eval_rank = rank  # the rank used when not training, as select_rank sets it
        last = dataclasses.replace(last, metrics={**last.metrics, f"{method.name}_rank": rank})
    elif select_rank is not None and selection is not None:  # choose the rank, store only it
        rank, metrics = select_rank(
            model,
            lambda: evaluate(model, selection, tokenizer, task, settings.eval_batch_size),
            score=lambda m: m["score"],
        )
        last = dataclasses.replace(last, metrics={**metrics, f"{method.name}_rank": rank})
    return Trained(method=method, model=model, last=last, settings=settings)


def run_trial(
    candidate: dict[str, Any],
    data: SearchData,
    context: TrialContext,
    report: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Train `candidate` ({"method", "knobs", "trial_number"}, optionally "seed_trial": the
    number whose seed it trains with, that of the trial a retry repeats) and report each epoch.

    The last report carries `final: True`; a trial stopped before it was early-stopped.
    """
    started = time.perf_counter()
    # a method's search-space block may set its own epochs / batch size (search trials only)
    context = dataclasses.replace(context, **candidate.get("training", {}))
    if context.threads:
        torch.set_num_threads(context.threads)
    number = int(candidate["trial_number"])
    counts: dict[str, Any] = {}
    if data.selection is not None:  # what learning nothing scores, for the scheduler and sampler
        counts[ATTR_CHANCE] = chance_score(resolve_task(context.task), data.selection.labels)

    def empty(method: Method, when: str) -> Exception:
        """A head-only trial is no result of its method: it fails (never COMPLETE), saying why."""
        return EmptyDelta(f"trial {number}: {method.name} stores nothing beyond the head "
                          f"(0 stored params {when}): only the task head would be trained")

    def built(method: Method, model: nn.Module) -> None:
        """Before training: check the budget on the live model and keep the counts."""
        stored, head = method.stored_params(model), method.head_params(model)
        if stored > context.budget_params:  # the searcher checks first; this guards the invariant
            raise AutoPeftError(f"trial {number}: {stored:,} stored params over the budget")
        if stored == 0:  # e.g. an S-BitFit whose data-driven pick kept no bias vector
            raise empty(method, "after preparing, before training")
        counts.update({
            "stored_params": stored,
            "head_params": head,
            "trainable_line": trainable_line(count_params(model, True), count_params(model)),
        })
        faults.inject("built", number, model)  # a no-op unless a fault test asks for one

    def end_epoch(result: EpochResult) -> None:
        if result.epoch < context.epochs:  # the last epoch is reported once saved, below
            report_epoch(result)
        if result.epoch == 1:
            faults.inject("epoch", number)

    def report_epoch(result: EpochResult, **extra: Any) -> None:
        report({
            **counts,
            "score": result.metrics["score"],
            # flat keys: Ray flattens nested result dicts on their way to the searcher
            **{f"{METRIC_PREFIX}{k}": v for k, v in result.metrics.items()},
            "epoch": result.epoch,
            "train_loss": result.train_loss,
            "train_seconds": result.train_seconds,
            "eval_seconds": result.eval_seconds,
            # wall time so far, so a trial stopped early (pruned) has one recorded too
            "trial_seconds": time.perf_counter() - started,
            "final": False,
            **extra,
        })

    trained = fit_candidate(
        candidate, data.train, data.selection, data.tokenizer, context,
        seed=context.seed + int(candidate.get("seed_trial", number)),
        on_built=built,
        on_epoch_end=end_epoch,
    )
    method, model, last = trained.method, trained.model, trained.last
    if method.stored_params(model) == 0:  # e.g. a Threshold-Mask that flipped no mask
        raise empty(method, "after training")
    allocation = summarize(method.changed_entries(model), backbone_sizes(model))
    artifact = Path(context.study_dir) / ARTIFACTS_SUBDIR / artifact_name(number)
    save_artifact(artifact, method, model, {
        "model": context.model.name,
        **artifact_fields(resolve_task(context.task)),
        "stored_params": counts["stored_params"],
        "head_params": counts["head_params"],
        "selection_metrics": last.metrics,
    })
    report_epoch(
        last,
        final=True,
        artifact=f"{ARTIFACTS_SUBDIR}/{artifact.name}",
        stored_params=method.stored_params(model),  # exact after training (may shrink below cap)
        stored_bytes=method.stored_bytes(model),
        allocation=json.dumps(allocation),  # a string: Ray flattens nested dicts
        trial_seconds=time.perf_counter() - started,
    )
    return {"seconds": time.perf_counter() - started}
