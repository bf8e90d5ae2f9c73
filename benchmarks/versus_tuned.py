"""The search's <=0.5% winner against a tuned hand-set grid, at equal compute, scored on dev.

(a) Grid: full fine-tuning at lr in {5e-5, 1e-4, 2e-4} and LoRA r=8 on q,v at lr in
    {5e-4, 1e-3, 2e-3}, 3 epochs, batch 32, each trained through the project's own training
    path (`train.trial.fit_candidate`) on the search's train split and scored on its selection
    split (the same split, seed and head the search uses). Its compute is the wall time of
    those six runs.
(b) Search: `autopeft search --task mrpc --budget 0.5%` with `--time-budget` equal to the
    grid's compute, everything else at the product's defaults (portfolio first, TPE, epochs by
    optimizer steps, pooling auto). Its compute is the search's wall time (trials, including a
    bounded overrun of the trials running when the budget ran out, plus Ray's start-up).
(c) Each side's best, chosen on the selection split and never on dev — the grid's best full
    fine-tune, and the search's within-budget Pareto point with the best selection score — is
    retrained from scratch on train + selection with 3 seeds, exactly as the search's final
    runs do (same seeds rule, `train.final.final_seed`), and scored on dev.
Printed: both dev means +- std, the difference, and each side's compute.

Target (issue 15), on a 2-core CPU: the search's winner >= the grid's best full fine-tune
(stretch: >= 0.86).

    python benchmarks/versus_tuned.py --data-dir ../shared/data/glue/MRPC --json out.json
        [--part grid|search|retrain|all] [--gpus-per-trial G] [--concurrency K]

The parts read and extend `--json`, so they can run in separate calls: (a) and (b) measure
compute and must run on an otherwise idle machine; (c) only trains and scores, so it may share
the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402

from autopeft import study as records  # noqa: E402
from autopeft.api import SearchRequest, search  # noqa: E402
from autopeft.search.searching import CheckedRequest, check_request  # noqa: E402
from autopeft.space.space import candidate_from_params  # noqa: E402
from autopeft.tasks import subsample  # noqa: E402
from autopeft.train.data import tokenize_frame  # noqa: E402
from autopeft.train.final import final_seed  # noqa: E402
from autopeft.train.loop import evaluate  # noqa: E402
from autopeft.train.trial import TrialContext, fit_candidate  # noqa: E402

MRPC = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "MRPC"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
GRID = ([("full", {}, lr) for lr in (5e-5, 1e-4, 2e-4)]
        + [("lora", {"r": 8, "targets": "qv"}, lr) for lr in (5e-4, 1e-3, 2e-3)])
EPOCHS, BATCH_SIZE, SEEDS, STUDY_SEED = 3, 32, 3, 0
GRID_TRIAL_BASE = 1000  # the grid's runs take trial numbers 1000.. for their seeds


def _checked(args, budget: str, methods: str | None) -> CheckedRequest:
    return check_request(SearchRequest(task="mrpc", budget=budget, model=args.model,
                                       data_dir=str(args.data_dir), methods=methods,
                                       seed=STUDY_SEED))


def _context(checked: CheckedRequest, epochs: int, batch_size: int) -> TrialContext:
    return TrialContext(model=checked.source, task="mrpc", budget_params=10**12, epochs=epochs,
                        batch_size=batch_size, seed=STUDY_SEED,
                        study_dir=tempfile.mkdtemp(prefix="versus-tuned-"), head=checked.head)


def grid_side(args, console: Console) -> dict:
    """(a): every grid configuration on the search's split; the best full fine-tune."""
    checked = _checked(args, "100%", "full,lora")
    data, context = checked.inputs.search_data, _context(checked, EPOCHS, BATCH_SIZE)
    runs, started = [], time.perf_counter()
    for index, (method, knobs, lr) in enumerate(GRID):
        began = time.perf_counter()
        trained = fit_candidate({"method": method, "knobs": {**knobs, "learning_rate": lr}},
                                data.train, data.selection, data.tokenizer, context,
                                seed=STUDY_SEED + GRID_TRIAL_BASE + index)
        runs.append({"method": method, "knobs": knobs, "learning_rate": lr,
                     "selection": trained.last.metrics["score"],
                     "seconds": time.perf_counter() - began})
        console.print(f"grid {method} lr {lr:g}: selection {runs[-1]['selection']:.4f} "
                      f"({runs[-1]['seconds']:.0f} s)")
    full = max((r for r in runs if r["method"] == "full"), key=lambda r: r["selection"])
    best = {"candidate": {"method": full["method"], "knobs": {
        **full["knobs"], "learning_rate": full["learning_rate"]}},
        "trial": GRID_TRIAL_BASE + runs.index(full), "epochs": EPOCHS, "batch_size": BATCH_SIZE,
        "selection": full["selection"]}
    return {"runs": runs, "compute_seconds": time.perf_counter() - started, "best": best,
            "head": checked.head.describe()}


def search_side(args, seconds: float, console: Console) -> dict:
    """(b): the product's search at 0.5% for `seconds`; its best point by selection score."""
    work = Path(tempfile.mkdtemp(prefix="versus-tuned-search-"))
    request = SearchRequest(task="mrpc", budget="0.5%", model=args.model,
                            data_dir=str(args.data_dir), seed=STUDY_SEED, trials=args.trials,
                            time_budget=f"{int(seconds)}s", final_seeds=0,
                            gpus_per_trial=args.gpus_per_trial, concurrency=args.concurrency,
                            studies_dir=str(work / "studies"), reports_dir=str(work / "reports"))
    began = time.perf_counter()
    result = search(request, console=console)
    wall = time.perf_counter() - began
    study = records.read_study(result.study_name, None, work / "studies")
    trials = {t.number: t for t in study.trials}
    front = result.pareto.sort_values(["score", "stored_params"], ascending=[False, True])
    row = front.iloc[0]
    trial = trials[int(row["trial"])]
    candidate = candidate_from_params(trial.params, trial.user_attrs.get(records.ATTR_DERIVED))
    training = candidate.pop("training", {})
    setup = records.study_setup(study)
    finished = [t for t in study.trials if t.state.is_finished()]
    return {"best": {"candidate": candidate, "trial": trial.number,
                     "epochs": training.get("epochs", setup.epochs),
                     "batch_size": training.get("batch_size", setup.batch_size),
                     "selection": float(row["score"]),
                     "stored_params": int(row["stored_params"])},
            "wall_seconds": wall, "trials": len(finished),
            "methods": sorted({t.params.get("method") for t in finished}),
            "study_dir": str(work)}


def retrain_on_dev(best: dict, args, console: Console, label: str) -> list[float]:
    """(c): `best` retrained on train + selection with the final seeds; its dev scores."""
    checked = _checked(args, "100%", best["candidate"]["method"])
    task, inputs, tokenizer = checked.task, checked.inputs, checked.inputs.tokenizer

    def tokenized(frame):
        return tokenize_frame(frame, task.text_columns, tokenizer, checked.request.max_length)

    train = tokenized(subsample(inputs.task_data.train, None, STUDY_SEED))
    dev = tokenized(inputs.task_data.dev)
    context = _context(checked, best["epochs"], best["batch_size"])
    scores = []
    for index in range(SEEDS):
        trained = fit_candidate(best["candidate"], train, None, tokenizer, context,
                                seed=final_seed(STUDY_SEED, best["trial"], index))
        scores.append(evaluate(trained.model, dev, tokenizer, task)["score"])
        console.print(f"{label} seed {index}: dev {scores[-1]:.4f}")
    return scores


def describe(scores: list[float]) -> str:
    if not scores:
        return "not measured"
    spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
    return f"{statistics.mean(scores):.4f} +- {spread:.4f} ({len(scores)} seeds)"


def summary(outcome: dict) -> list[str]:
    grid, lines = outcome["grid"], []
    full = grid["best"]
    lines.append(f"grid: {len(grid['runs'])} runs in {grid['compute_seconds'] / 60:.1f} min "
                 f"(head {grid['head']}); best full fine-tune on selection: lr "
                 f"{full['candidate']['knobs']['learning_rate']:g} ({full['selection']:.4f}); "
                 f"dev {describe(grid.get('dev', []))}")
    found = outcome.get("search")
    if found is not None:
        best = found["best"]
        lines.append(
            f"search: 0.5%, time budget {grid['compute_seconds'] / 60:.1f} min, "
            f"{found['wall_seconds'] / 60:.1f} min wall, {found['trials']} trials "
            f"({', '.join(found['methods'])}); winner trial {best['trial']} "
            f"{best['candidate']['method']} {best['candidate']['knobs']}, "
            f"{best['stored_params']:,} stored, {best['epochs']} epochs, selection "
            f"{best['selection']:.4f}; dev {describe(found.get('dev', []))}")
        if found.get("dev") and grid.get("dev"):
            diff = statistics.mean(found["dev"]) - statistics.mean(grid["dev"])
            lines.append(f"difference (search winner - grid's best full fine-tune) on dev: "
                         f"{diff:+.4f}: target {'met' if diff >= 0 else 'missed'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=MRPC)
    parser.add_argument("--model", default=MINILM)
    parser.add_argument("--part", choices=("grid", "search", "retrain", "all"), default="all")
    parser.add_argument("--json", type=Path, required=True,
                        help="the outcome, read first and rewritten after each part")
    parser.add_argument("--trials", type=int, default=200,
                        help="cap on search trials (the time budget ends the search first)")
    parser.add_argument("--gpus-per-trial", type=float, default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args()
    console = Console(stderr=True)
    outcome = json.loads(args.json.read_text()) if args.json.exists() else {}
    parts = ("grid", "search", "retrain") if args.part == "all" else (args.part,)
    if "grid" in parts:
        outcome["grid"] = grid_side(args, console)
        args.json.write_text(json.dumps(outcome, indent=2))
    if "search" in parts:
        outcome["search"] = search_side(args, outcome["grid"]["compute_seconds"], console)
        args.json.write_text(json.dumps(outcome, indent=2))
    if "retrain" in parts:
        for side in ("grid", "search"):
            if outcome[side].get("dev"):  # retrained by an earlier call
                continue
            outcome[side]["dev"] = retrain_on_dev(outcome[side]["best"], args, console, side)
            args.json.write_text(json.dumps(outcome, indent=2))
    print("\n".join(summary(outcome)))


if __name__ == "__main__":
    main()
