"""Final numbers: Pareto points evaluated on the dev set, after the search has chosen them.

Two ways, chosen by ``--final-seeds K``:

* K >= 1 (default 3): each point is retrained from scratch on the full training data (train +
  the selection split, capped like the search) with K seeds, through the same training path as
  a trial (:func:`autopeft.train.trial.fit_candidate`), and each run is evaluated on dev. The
  report shows the mean ± std over seeds. The runs are independent: an `Executor` runs them
  (one after another here by default; `engine.final_runs` spreads them over the Ray cluster),
  and each run is recorded as soon as it finishes.
* K = 0: each point's trial artifact (trained on the search's train split) is evaluated on dev.

A point whose selection score is at or below its chance score (what a constant prediction scores,
its `beats_chance` constraint violated; `report.tables.at_chance` decides, for the report too)
learned nothing: K >= 1 does not retrain it, saying so in one line. K = 0 still evaluates it, since
that costs no training.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from rich.console import Console

from autopeft import study as records
from autopeft.artifacts.store import load_artifact, save_artifact
from autopeft.report.tables import at_chance
from autopeft.space.space import candidate_from_params
from autopeft.tasks import TaskSpec, artifact_fields, resolve_task
from autopeft.train.data import TokenizedSplit
from autopeft.train.loop import evaluate
from autopeft.train.trial import ARTIFACTS_SUBDIR, TrialContext, artifact_name, fit_candidate


@dataclass(frozen=True)
class FinalSettings:
    seeds: int = 3  # K runs per Pareto point
    epochs: int | None = None  # --final-epochs; None: each trial's own epochs
    top: int | None = None  # --final-top K: only the K best points by selection score; None: all
    save_first: bool = True  # keep seed 0's delta as artifacts/trial-NNNN-final-s0


def final_seed(study_seed: int, trial_number: int, index: int) -> int:
    """Seed of run `index` of a point: from the study seed and trial number, distinct per index."""
    entropy = [study_seed & 0xFFFFFFFF, trial_number, index, 0xF1A1]  # tag: not a trial's seed
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def final_artifact_name(trial_number: int, index: int) -> str:
    return f"{artifact_name(trial_number)}-final-s{index}"


@dataclass(frozen=True)
class FinalPoint:
    """One Pareto point to retrain: its candidate, and the settings of its final runs."""

    trial: optuna.trial.FrozenTrial
    candidate: dict[str, Any]
    context: TrialContext
    fidelity: dict[str, int]  # what a recorded run must match to count as finished


def _point(trial: optuna.trial.FrozenTrial, context: TrialContext, settings: FinalSettings,
           train_samples: int) -> FinalPoint:
    candidate = candidate_from_params(trial.params, trial.user_attrs.get(records.ATTR_DERIVED))
    # The trial's own epochs and batch size (a method's space block may set them), so the final
    # runs train like the search did, on more data; --final-epochs overrides the epochs.
    training = dict(candidate.pop("training", {}))
    if settings.epochs is not None:
        training["epochs"] = settings.epochs
    run_context = dataclasses.replace(context, **training)
    fidelity = {"epochs": run_context.epochs, "batch_size": run_context.batch_size,
                "train_samples": train_samples}
    return FinalPoint(trial, candidate, run_context, fidelity)


@dataclass(frozen=True)
class FinalInputs:
    """What every final run of a study reads (sent once to wherever the runs happen)."""

    train: TokenizedSplit
    dev: TokenizedSplit
    tokenizer: Any
    task: TaskSpec
    settings: FinalSettings


@dataclass
class FinalPlan:
    """One study's final runs still to do, and what they read."""

    study: optuna.Study
    jobs: list[tuple[FinalPoint, int]]  # (point, seed index)
    inputs: FinalInputs


# batches of (point, seed index) jobs with their inputs → (batch, point, seed index, run) as
# each run finishes, in any order
Batch = tuple[list[tuple[FinalPoint, int]], FinalInputs]
Executor = Callable[[list[Batch]], Iterator[tuple[int, FinalPoint, int, dict[str, Any]]]]


def in_process(batches: list[Batch]) -> Iterator[tuple[int, FinalPoint, int, dict[str, Any]]]:
    """Run the final runs one after another in this process."""
    for number, (jobs, inputs) in enumerate(batches):
        for point, index in jobs:
            yield number, point, index, retrain_once(point, index, inputs)


def retrain_front(
    study: optuna.Study,
    train: TokenizedSplit,
    dev: TokenizedSplit,
    tokenizer,
    context: TrialContext,
    settings: FinalSettings,
    console: Console | None = None,
    execute: Executor = in_process,
    where: str = "one at a time in this process",
    skip: frozenset[int] = frozenset(),
) -> int:
    """Retrain each feasible Pareto point (but trials `skip` and points at chance) with
    `settings.seeds` seeds, each scored on dev.

    Seeds already recorded at the same fidelity are skipped. Returns how many runs were trained.
    """
    console = console or Console(stderr=True)
    plan = plan_front(study, train, dev, tokenizer, context, settings, console, where, skip)
    return run_plans([plan], console, execute)


def plan_front(study: optuna.Study, train: TokenizedSplit, dev: TokenizedSplit, tokenizer,
               context: TrialContext, settings: FinalSettings, console: Console,
               where: str = "one at a time in this process",
               skip: frozenset[int] = frozenset()) -> FinalPlan:
    """The final runs a study's front (but trials `skip`, retrained elsewhere) still needs;
    says so in one line, and in one line for the points it leaves out (at chance, or beyond
    `settings.top`, which counts the points in `skip` too)."""
    task = resolve_task(context.task)
    front = records.feasible_front(study)
    for trial in (t for t in front if at_chance(t) and t.number not in skip):
        console.print(
            f"final ({study.study_name}): trial {trial.number} "
            f"{trial.params.get('method')} not retrained: its selection score "
            f"{trial.values[0]:.4f} is at or below chance "
            f"({trial.user_attrs.get(records.ATTR_CHANCE, float('nan')):.4f}, what a constant "
            "prediction scores): it learned nothing",
            highlight=False,
        )
    learned = _best_first([t for t in front if not at_chance(t)])
    kept = learned if settings.top is None else learned[:settings.top]
    left_out = learned[len(kept):]
    if left_out:
        why = (f"not retrained: --final-top {settings.top} retrains only the best "
               f"{settings.top} by selection score")
        records.record_final_skips(study, {t.number: why for t in left_out})
        console.print(f"final ({study.study_name}): trial(s) "
                      f"{', '.join(str(t.number) for t in left_out)} {why}", highlight=False)
    points = [_point(t, context, settings, len(train)) for t in kept if t.number not in skip]
    todo = [(point, index) for point in points for index in range(settings.seeds)
            if records.finished_final_run(study, point.trial.number, index, point.fidelity)
            is None]
    epochs = "/".join(str(e) for e in sorted({p.fidelity["epochs"] for p in points}))
    console.print(
        f"final ({study.study_name}): {len(points)} Pareto point(s) × {settings.seeds} seed(s), "
        f"retrained on {len(train)} examples (train + selection), "
        f"{epochs or context.epochs} epoch(s), scored on {len(dev)} dev examples; "
        f"{len(todo)} run(s) to go, {where}"
    )
    return FinalPlan(study, todo, FinalInputs(train, dev, tokenizer, task, settings))


def _best_first(front: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Best selection score first, ties to the cheaper point (`report.tables.best_point`)."""
    return sorted(front, key=lambda t: (-t.values[0], t.values[1]))


def run_plans(plans: list[FinalPlan], console: Console, execute: Executor = in_process) -> int:
    """Do every plan's runs (several studies' side by side with a parallel executor), each
    recorded in its study as soon as it finishes. Returns how many runs were trained."""
    batches = [(plan.jobs, plan.inputs) for plan in plans if plan.jobs]
    owners = [plan for plan in plans if plan.jobs]
    if not batches:
        return 0
    for number, point, index, run in execute(batches):
        study, seeds = owners[number].study, owners[number].inputs.settings.seeds
        recorded = records.record_final_run(study, point.trial.number, index, run,
                                            point.fidelity)
        console.print(
            f"[green]✔[/green] final trial {point.trial.number} {point.candidate['method']} "
            f"seed {index + 1}/{seeds}: dev {run['metrics']['score']:.4f} "
            f"(mean {recorded['score_mean']:.4f} over {recorded['seeds']}) · "
            f"{run['seconds']:.1f}s",
            highlight=False,
        )
    return sum(len(jobs) for jobs, _ in batches)


def retrain_once(point: FinalPoint, index: int, inputs: FinalInputs) -> dict[str, Any]:
    """Final run `index` of `point`: train from scratch, score on dev, keep seed 0's delta."""
    train, dev, tokenizer = inputs.train, inputs.dev, inputs.tokenizer
    task, settings = inputs.task, inputs.settings
    started = time.perf_counter()
    trial, candidate, context = point.trial, point.candidate, point.context
    seed = final_seed(context.seed, trial.number, index)
    # A rank-flexible method keeps the rank the search chose on the selection split.
    rank = (trial.user_attrs.get(records.ATTR_METRICS) or {}).get(f"{candidate['method']}_rank")
    trained = fit_candidate(candidate, train, None, tokenizer, context, seed,
                            rank=None if rank is None else int(rank))
    metrics = evaluate(trained.model, dev, tokenizer, task, trained.settings.eval_batch_size)
    run: dict[str, Any] = {
        "seed": seed,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "seconds": time.perf_counter() - started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if settings.save_first and index == 0:
        name = final_artifact_name(trial.number, index)
        save_artifact(Path(context.study_dir) / ARTIFACTS_SUBDIR / name, trained.method,
                      trained.model, {
                          "model": context.model.name,
                          **artifact_fields(task),
                          "stored_params": trained.method.stored_params(trained.model),
                          "head_params": trained.method.head_params(trained.model),
                          "dev_metrics": run["metrics"],
                          "seed": seed,
                          "train_samples": len(train),
                      })
        run["artifact"] = f"{ARTIFACTS_SUBDIR}/{name}"
    return run


def evaluate_front_on_dev(
    study: optuna.Study,
    study_dir: Path,
    dev: TokenizedSplit,
    tokenizer,
    task: TaskSpec,
    trust_remote_code: bool = False,
) -> dict[int, dict[str, float]]:
    """Dev metrics of each Pareto trial's artifact not evaluated yet; recorded in the study.

    A trial whose artifact folder is gone (deleted to save disk, or a study journal carried to
    another machine without its artifacts) keeps no dev score instead of stopping the search.
    """
    done = records.dev_scores(study)
    scores = {}
    for trial in records.feasible_front(study):
        artifact = trial.user_attrs.get(records.ATTR_ARTIFACT)
        if trial.number in done or not artifact or not (study_dir / artifact).exists():
            continue
        model, _ = load_artifact(study_dir / artifact, trust_remote_code=trust_remote_code)
        scores[trial.number] = evaluate(model, dev, tokenizer, task)
    if scores:
        records.record_dev_scores(study, scores)
    return scores
