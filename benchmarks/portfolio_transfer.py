"""Portfolio transfer: does a portfolio learned on other tasks find a good point sooner?

Leave-one-task-out over the four shared tasks (MRPC, CR, MPQA, STS-B; issue 18). Each task is
first searched without a portfolio (`--portfolio none`): those studies are the baseline, and
the ones portfolios are learned from. Then, per held-out task, a portfolio is learned from the
other three tasks' baseline studies (`autopeft portfolio build`) and the same search (same
model, budget, methods, trials, seed) runs with it. Printed per held-out task, for both runs:
the best selection score after 2, 4, 8 and 12 trained trials and the winner's dev mean (its
final runs: `--final-seeds` seeds, `--final-top 1`). Target: with the portfolio, the 4-trial
best ≥ the 12-trial best without it on at least 3 of the 4 tasks.

Once every search's trials are done, a portfolio is also learned from all of the run's
studies (`--work`/portfolio-all-tasks-s<seed>.yaml). The shipped default is learned from these
studies and the hand-set entries' (benchmarks/default_portfolio.py, same `--work`).

Everything is kept under `--work`, and every search is resumable: running the same command
again continues what an interrupted run left (a portfolio file already written is reused, so
delete it after extending the baseline studies).

What it assumes (fix `TASKS` if the task interface changes): MRPC is the GLUE task read from
`--glue-dir`; CR, MPQA and STS-B are task mappings as a task file holds them (README, "Custom
tasks"): headerless TSVs under `--text-dir`, CR and MPQA `label<TAB>text` (binary, accuracy),
STS-B GLUE's 10 columns (sentences in columns 7 and 8, the score in 9: regression, mean of
Pearson and Spearman).

    python benchmarks/portfolio_transfer.py [--trials 12] [--budget 0.5%] [--seed 0]
        [--tasks mrpc,cr,mpqa,stsb] [--work DIR] [--portfolio-size 8] [--json FILE]

On 2 CPU cores one MiniLM trial takes minutes, so the 8 searches of 12 trials take hours;
on a GPU pass --concurrency and --gpus-per-trial.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CHECKPOINTS = (2, 4, 8, 12)  # trained trials after which the best selection score is read
NEEDED = 3  # tasks on which the target must hold
# A learned run that could not start (no portfolio to learn): printed as '-', never a target hit
NOT_RUN = {"study": None, "best_after": dict.fromkeys(CHECKPOINTS), "winner_dev": None,
           "winner_method": None}


# How each task is named to `search` (fix here if the task interface changes): MRPC by its
# GLUE name; the others as task mappings: folder, text columns, label column, extra keys.
TEXT_TASKS: dict[str, tuple[str, list[int], int, dict[str, Any]]] = {
    "cr": ("CR", [1], 0, {}),
    "mpqa": ("MPQA", [1], 0, {}),
    "stsb": ("STS-B", [7, 8], 9, {"problem_type": "regression"}),
}
TASKS = ("mrpc", *TEXT_TASKS)


def task_settings(name: str, text_dir: Path, glue_dir: Path) -> dict[str, Any]:
    """The `SearchRequest` fields naming one task."""
    if name == "mrpc":
        return {"task": "mrpc", "data_dir": str(glue_dir / "MRPC")}
    if name not in TEXT_TASKS:
        raise ValueError(f"unknown task '{name}'; known: {', '.join(TASKS)}")
    folder, text_columns, label, extra = TEXT_TASKS[name]
    root = text_dir / folder
    return {"task": {"name": name, "train": str(root / "train.tsv"),
                     "dev": str(root / "dev.tsv"), "text_columns": text_columns,
                     "label_column": label, "header": False, **extra}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help="comma-separated, at least 3 (each held out against the others)")
    parser.add_argument("--model", default=MINILM)
    parser.add_argument("--budget", default="0.5%")
    parser.add_argument("--trials", type=int, default=max(CHECKPOINTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=None, help="default: every registered method")
    parser.add_argument("--portfolio-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--final-seeds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--gpus-per-trial", type=float, default=None)
    parser.add_argument("--text-dir", type=Path, default=SHARED / "text")
    parser.add_argument("--glue-dir", type=Path, default=SHARED / "glue")
    parser.add_argument("--work", type=Path, default=Path("portfolio_transfer"))
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    args = parser.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if len(args.tasks) < 3:
        parser.error("--tasks: at least 3, so each portfolio is learned from 2 or more")
    unknown = [name for name in args.tasks if name not in TASKS]
    if unknown:
        parser.error(f"--tasks: unknown task '{unknown[0]}'; known: {', '.join(TASKS)}")
    return args


def run_search(args: argparse.Namespace, task: str, study: str, portfolio: str,
               final_seeds: int) -> dict:
    """One search (resumed if it exists); its best-so-far curve and winner's dev mean."""
    from rich.console import Console

    from autopeft.api import SearchRequest, search

    request = SearchRequest(
        **task_settings(task, args.text_dir, args.glue_dir), budget=args.budget,
        model=args.model, methods=args.methods, trials=args.trials, seed=args.seed,
        epochs=args.epochs, batch_size=args.batch_size, max_train_samples=args.max_train_samples,
        final_seeds=final_seeds, final_top=1, concurrency=args.concurrency,
        gpus_per_trial=args.gpus_per_trial, portfolio=portfolio, study=study,
        studies_dir=str(args.work / "studies"), reports_dir=str(args.work / "reports"),
        drop_invalid_rows=True)  # CR's train.tsv has one line without a text (1763)
    result = search(request, console=Console(stderr=True))
    winner = result.winner()
    dev = None if winner is None else winner.get("dev_score")
    return {"study": study, "best_after": best_after(args.work / "studies", study),
            "winner_dev": None if dev is None or math.isnan(dev) else float(dev),
            "winner_method": None if winner is None else str(winner.method)}


def best_after(studies: Path, name: str) -> dict[int, float | None]:
    """The best selection score (COMPLETE, within budget) among the first n trained trials.

    Trained as a trial target counts them (`study.front.counts`): a trial cut off by an
    interrupted run, retrained when the run resumed, is not counted twice; in the order they
    started (a retry, numbered after the candidates queued before it, runs before them).
    """
    from autopeft import study as records

    study = records.read_study(name, None, studies)
    budget = records.study_setup(study).budget_params
    best, running = -math.inf, []
    def started(trial: FrozenTrial) -> tuple[datetime, int]:
        return trial.datetime_start or datetime.max, trial.number

    for trial in sorted(study.get_trials(deepcopy=False), key=started):
        if not records.counts(trial):
            continue
        if trial.state == TrialState.COMPLETE and trial.values[1] <= budget:
            best = max(best, trial.values[0])
        running.append(best)  # a failed or pruned trial keeps the best so far
    return {n: running[n - 1] if len(running) >= n and running[n - 1] > -math.inf else None
            for n in CHECKPOINTS}


def learned_portfolio(args: argparse.Namespace, held_out: str, baselines: dict[str, str]
                      ) -> Path | None:
    """The portfolio learned without `held_out` (built once, then reused); None, said on
    stderr, when there is nothing to learn (no trial of the other tasks above chance)."""
    return portfolio_from(args, f"portfolio-without-{held_out}-s{args.seed}.yaml",
                          [s for t, s in baselines.items() if t != held_out],
                          f"no portfolio without {held_out}")


def portfolio_from(args: argparse.Namespace, file_name: str, studies: list[str], refusal: str
                   ) -> Path | None:
    """`autopeft portfolio build` of `studies` into `--work`/`file_name`, once (an existing file
    is reused); None, with `refusal` and the reason on stderr, when the build refuses."""
    from autopeft.errors import AutoPeftError
    from autopeft.results.portfolio_build import build_portfolio

    path = args.work / file_name
    if not path.exists():
        try:
            build_portfolio(path, studies, size=args.portfolio_size,
                            studies_dir=args.work / "studies")
        except AutoPeftError as exc:
            print(f"{refusal}: {exc}", file=sys.stderr)
            return None
    return path


def all_task_portfolio(args: argparse.Namespace, studies: list[str]) -> Path | None:
    """The portfolio learned from every study of the run (both arms, every task): what the
    method defaults alone teach (the shipped default adds the hand-set entries' studies)."""
    path = portfolio_from(args, f"portfolio-all-tasks-s{args.seed}.yaml", studies,
                          "no portfolio from all tasks")
    if path is not None:
        print(f"portfolio learned from all {len(studies)} studies: {path}", file=sys.stderr)
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    baselines = {task: f"{task}-none-s{args.seed}" for task in args.tasks}
    runs = [(task, "none", baselines[task]) for task in args.tasks]  # portfolios learn from these
    runs += [(task, "learned", f"{task}-learned-s{args.seed}") for task in args.tasks]
    # Every search's trials first, then the winners' final runs (a resumed search whose trials
    # are done only retrains), so an interrupted run has the selection curves soonest.
    for final_seeds in dict.fromkeys((0, args.final_seeds)):
        results: dict[str, dict[str, dict]] = {task: {} for task in args.tasks}
        for task, label, study in runs:
            portfolio = "none" if label == "none" else learned_portfolio(args, task, baselines)
            results[task][label] = (NOT_RUN if portfolio is None else
                                    run_search(args, task, study, str(portfolio), final_seeds))
        if final_seeds == 0:  # every search's trials are done: what a default would learn
            all_task_portfolio(args, [run["study"] for runs_of in results.values()
                                      for run in runs_of.values() if run["study"]])
    report(results, args)


def report(results: dict[str, dict[str, dict]], args: argparse.Namespace) -> None:
    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    print(f"{'task':<6} {'run':<8} " + " ".join(f"best@{n:<3}" for n in CHECKPOINTS)
          + "  winner dev")
    met = 0
    for task, runs in results.items():
        for label, run in runs.items():
            cells = " ".join(f"{shown(run['best_after'][n]):<7}" for n in CHECKPOINTS)
            print(f"{task:<6} {label:<8} {cells}  {shown(run['winner_dev'])} "
                  f"({run['winner_method'] or 'none'})")
        early, late = runs["learned"]["best_after"][4], runs["none"]["best_after"][12]
        met += early is not None and late is not None and early >= late
    print(f"target: with the learned portfolio the 4-trial best >= the 12-trial best without "
          f"it on {met} of {len(results)} tasks (needed: {NEEDED}): "
          f"{'met' if met >= NEEDED else 'not met'}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results, "met": met}, indent=2))


if __name__ == "__main__":
    main()
