"""Final numbers: Pareto points evaluated on the dev set, after the search has chosen them."""

from __future__ import annotations

from pathlib import Path

import optuna

from autopeft import study as records
from autopeft.artifacts import load_artifact
from autopeft.tasks import TaskSpec
from autopeft.train.data import TokenizedSplit
from autopeft.train.loop import evaluate


def evaluate_front_on_dev(
    study: optuna.Study,
    study_dir: Path,
    dev: TokenizedSplit,
    tokenizer,
    task: TaskSpec,
    trust_remote_code: bool = False,
) -> dict[int, dict[str, float]]:
    """Dev metrics of each Pareto trial not evaluated yet; recorded in the study."""
    done = records.dev_scores(study)
    scores = {}
    for trial in records.feasible_front(study):
        artifact = trial.user_attrs.get(records.ATTR_ARTIFACT)
        if trial.number in done or not artifact:
            continue
        model, _ = load_artifact(study_dir / artifact, trust_remote_code=trust_remote_code)
        scores[trial.number] = evaluate(model, dev, tokenizer, task)
    if scores:
        records.record_dev_scores(study, scores)
    return scores
