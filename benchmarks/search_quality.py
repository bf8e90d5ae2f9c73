"""Search quality: hypervolume per sampler, with and without MO-ASHA, against random search.

Each setting runs the same number of trials with the same seeds. The front is scored by its
hypervolume over (error = 1 - selection score, stored params / budget), both minimised, with
the reference point (1 - chance, 1), chance being the best score of a constant prediction on
the selection split: a candidate that learned nothing (always answers one label), however
cheap, adds nothing. The hypervolume with reference (1, 1), where such a candidate counts, is
printed beside it. Compute = epochs trained, summed over every trial, pruned ones included (it
does not depend on what else the machine runs); summed in-trial seconds are printed beside it.

Suites:
  tiny   - synthetic keyword tasks (MRPC layout, sentence pairs built from MRPC's vocabulary,
           label = a keyword occurs) of graded difficulty, on a tiny random BERT; several seeds.
  minilm - MiniLM on MRPC at reduced fidelity (few epochs). Meant for a GPU: on a 2-core CPU
           a trial on 2,000 examples x 3 epochs takes 3.4 min and candidates sit near chance
           (0.7411; LoRA r=8 at lr 2e-3 scored 0.7175, a Houlsby adapter 0.7575). On one H100
           a setting of 24 trials (full train, 3 epochs, 4 at a time) takes about 4 min, so
           split the settings over runs of at most 10 min (--baseline joins them):
           --suite minilm --trials 24 --seeds 0 --samplers tpe random --epochs 3
           --budget 0.5% --concurrency 4 --gpus-per-trial 0.25 --schedulers none --json A
           then the same with --schedulers mo-asha --baseline A
           Measured (none): TPE 1.02x random's hypervolume (0.0376 / 0.0369), one seed.

Targets (issue 5): the default configuration (TPE) >= 1.15x random's hypervolume at equal
trials; with the scheduler, random's final hypervolume reached with <= 50% of its compute.
A scheduler setting therefore runs up to `--scheduler-trials` trials (default 2x `--trials`):
its hypervolume column is still taken after `--trials` trials, and the compute-to-reach column
follows it trial by trial until it reaches random's final hypervolume (or runs out of trials).

    python benchmarks/search_quality.py [--suite tiny] [--trials 12] [--seeds 0 1]
        [--samplers tpe nsga2 gp random] [--epochs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
from rich.console import Console  # noqa: E402

from autopeft.api import SearchRequest, search  # noqa: E402
from autopeft.report.hypervolume import REFERENCE, hypervolume, reference_point  # noqa: E402
from autopeft.report.tables import chance_level  # noqa: E402
from autopeft.testing import build_tiny_bert, keyword_task  # noqa: E402

MRPC = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "MRPC"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Setting:
    sampler: str
    scheduler: str  # "none" or "mo-asha"

    @property
    def label(self) -> str:
        return self.sampler + (" + MO-ASHA" if self.scheduler != "none" else "")


def run(setting: Setting, model: str, data_dir: Path, work: Path, seed: int, args) -> dict:
    budgeted_trials = args.trials if setting.scheduler == "none" else args.scheduler_trials
    request = SearchRequest(
        task="mrpc", budget=args.budget, model=model, data_dir=str(data_dir),
        methods=args.methods, trials=budgeted_trials, epochs=args.epochs, seed=seed,
        sampler=setting.sampler, scheduler=setting.scheduler, reduction_factor=3,
        grace_epochs=args.grace_epochs, final_seeds=0, max_train_samples=args.max_train_samples,
        max_length=args.max_length, batch_size=args.batch_size,
        concurrency=args.concurrency, gpus_per_trial=args.gpus_per_trial,
        study=f"{setting.sampler}-{setting.scheduler}-s{seed}",
        studies_dir=str(work / "studies"), reports_dir=str(work / "reports"),
    )
    result = search(request, console=Console(quiet=True))
    trials = pd.read_csv(result.report_dir / "trials.csv")
    failed = trials[trials.state == "FAIL"]
    trials = trials[trials.state.isin(["COMPLETE", "PRUNED"])].sort_values("trial")
    compute = trials.epochs.cumsum().tolist()
    seconds = float((trials.train_seconds + trials.eval_seconds).iloc[:args.trials].sum())
    complete = (trials.state == "COMPLETE").tolist()
    points = list(zip(1 - trials.score, trials.budget_used, strict=True))
    at_chance = reference_point(chance_level(trials))

    def finished(n: int) -> list[tuple[float, float]]:  # pruned trials never count
        return [pt for pt, done in zip(points[:n], complete[:n], strict=True) if done]

    # hypervolume after each trial
    curve = [hypervolume(finished(i + 1), at_chance) for i in range(len(points))]
    n = min(args.trials, len(points))
    return {"hv": curve[n - 1] if curve else 0.0, "curve": curve, "compute": compute,
            "failed": failed[["trial", "method", "error"]].astype(str).to_dict("records"),
            "hv_unit": hypervolume(finished(n), REFERENCE),
            "seconds": seconds, "compute_at_equal_trials": compute[n - 1] if compute else 0}


def compute_to_reach(outcome: dict, target: float) -> float | None:
    for hv, spent in zip(outcome["curve"], outcome["compute"], strict=True):
        if hv >= target:
            return spent
    return None


# What makes two runs comparable: a ratio between runs that differ in any of these says nothing.
COMPARABLE = ("suite", "model", "trials", "scheduler_trials", "epochs", "budget", "methods",
              "max_train_samples", "max_length", "batch_size", "train_size", "grace_epochs")


def run_meta(task: str, seed: int, args: argparse.Namespace) -> dict:
    """What a run's outcome is recorded with: its task and seed, and the flags it ran under."""
    return {"task": task, "seed": seed, **{k: getattr(args, k) for k in COMPARABLE}}


def baseline_runs(results: dict, baseline: Path | None) -> list | None:
    """Random search's runs, in the order of this run's: its own, else those of `baseline`,
    which must have run under the same flags (`COMPARABLE`)."""
    if "random" in results:
        return results["random"]
    if baseline is None:
        return None
    by_run = {(meta["task"], meta["seed"]): (outcome, meta)
              for outcome, meta in json.loads(baseline.read_text(encoding="utf-8"))["random"]}
    first = next(iter(results.values()))
    missing = [meta for _, meta in first if (meta["task"], meta["seed"]) not in by_run]
    if missing:
        raise SystemExit(f"--baseline {baseline} has no random run for {missing}")
    for _, meta in first:
        other = by_run[meta["task"], meta["seed"]][1]
        differ = {k: (other.get(k, "not recorded"), meta[k]) for k in COMPARABLE
                  if other.get(k, "not recorded") != meta[k]}
        if differ:
            raise SystemExit(f"--baseline {baseline} ran {meta['task']} seed {meta['seed']} "
                             f"under other flags (baseline, this run): {differ}")
    return [by_run[meta["task"], meta["seed"]] for _, meta in first]


def ratio_summary(values: list[float], bases: list[float]) -> tuple[float, float, int]:
    """(ratio of the means, mean of the per-run ratios, runs in that mean): runs whose base is 0
    (random found nothing above chance) have no ratio of their own and are left out of it."""
    mean_base = sum(bases) / len(bases)
    of_means = (sum(values) / len(values)) / mean_base if mean_base else float("nan")
    per_run = [v / b for v, b in zip(values, bases, strict=True) if b]
    return of_means, (sum(per_run) / len(per_run) if per_run else float("nan")), len(per_run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("tiny", "minilm"), default="tiny")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "gp", "random"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--budget", default="5%")
    parser.add_argument("--methods", default="lora,bitfit,adapter_houlsby,fish")
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per example")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="trials at once (default 1 locally: seeded runs then repeat)")
    parser.add_argument("--gpus-per-trial", type=float, default=None,
                        help="e.g. 0.25 to run four MiniLM trials on one GPU")
    parser.add_argument("--train-size", type=int, default=800,
                        help="training examples of each synthetic task")
    parser.add_argument("--scheduler-trials", type=int, default=None,
                        help="trials of a scheduler setting (default: 2x --trials)")
    parser.add_argument("--grace-epochs", type=int, default=1, help="MO-ASHA's first rung")
    parser.add_argument("--schedulers", nargs="+", choices=("none", "mo-asha"),
                        default=["none", "mo-asha"],
                        help="settings to run: without a scheduler (every sampler), with MO-ASHA "
                             "(tpe and random only)")
    parser.add_argument("--model", default=MINILM,
                        help="minilm suite: the model (a name or a local folder)")
    parser.add_argument("--data-dir", type=Path, default=MRPC,
                        help="MRPC in GLUE layout (the tiny suite takes its vocabulary from it)")
    parser.add_argument("--json", type=Path, default=None,
                        help="write every finished run's outcome here, rewritten after each run")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="an earlier run's --json whose random-search runs are the baseline "
                             "(when this run has no random setting)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the studies and reports here (default: a temporary folder)")
    args = parser.parse_args()
    args.scheduler_trials = args.scheduler_trials or 2 * args.trials
    settings = [Setting(s, "none") for s in args.samplers if "none" in args.schedulers]
    if "mo-asha" in args.schedulers:
        settings += [Setting(s, "mo-asha") for s in ("tpe", "random") if s in args.samplers]

    results: dict[str, list[tuple[dict, dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        if args.suite == "tiny":
            model = str(build_tiny_bert(work / "tiny-bert"))
            vocabulary = args.data_dir / "train.tsv"
            tasks = {f"keywords={k},noise={n}": keyword_task(work / f"task-{k}-{n}", vocabulary,
                                                              k, n, 7, args.train_size)
                     for k, n in ((1, 0.0), (3, 0.1))}
        else:
            model, tasks = args.model, {"mrpc": args.data_dir}
        for task, data_dir in tasks.items():
            for seed in args.seeds:
                for setting in settings:
                    outcome = run(setting, model, data_dir, work / task, seed, args)
                    results.setdefault(setting.label, []).append(
                        (outcome, run_meta(task, seed, args)))
                    if args.json:  # a run cut short still leaves the finished ones
                        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
                    print(f"{task} seed {seed} {setting.label}: hv {outcome['hv']:.4f} "
                          f"compute {outcome['compute_at_equal_trials']:.0f} epochs "
                          f"({outcome['seconds']:.0f}s), {len(outcome['failed'])} failed",
                          flush=True)
                    for failure in outcome["failed"]:
                        print(f"  failed trial {failure['trial']} {failure['method']}: "
                              f"{failure['error']}", flush=True)

    random_runs = baseline_runs(results, args.baseline)
    if random_runs is None:
        print("no random-search runs (run the random setting or pass --baseline): no ratios")
        return
    print(f"\nsearch quality ({args.suite} suite, {args.trials} trials, seeds {args.seeds}, "
          f"budget {args.budget}; hypervolume of (1 - score, stored/budget), reference "
          "(1 - chance, 1); hv(1,1): reference (1, 1))")
    print(f"{'setting':<18}{'mean hv':>9}{'hv/random':>20}{'hv(1,1)/random':>20}{'epochs':>8}"
          f"{'seconds':>9}{'compute to reach random hv':>27}")
    print(f"{'':<18}{'':>9}{'of means, per run':>20}{'of means, per run':>20}")
    for label, runs in results.items():
        reach = []
        for (outcome, _), (base, _) in zip(runs, random_runs, strict=True):
            spent = compute_to_reach(outcome, base["hv"])
            reach.append(spent / base["compute"][-1] if spent is not None else float("nan"))
        hv = ratio_summary([o["hv"] for o, _ in runs], [b["hv"] for b, _ in random_runs])
        unit = ratio_summary([o["hv_unit"] for o, _ in runs],
                             [b["hv_unit"] for b, _ in random_runs])
        mean_hv = sum(o["hv"] for o, _ in runs) / len(runs)
        compute = sum(o["compute_at_equal_trials"] for o, _ in runs) / len(runs)
        seconds = sum(o["seconds"] for o, _ in runs) / len(runs)
        reached = pd.Series(reach).dropna()
        print(f"{label:<18}{mean_hv:>9.4f}"
              f"{f'{hv[0]:.2f}, {hv[1]:.2f} ({hv[2]}/{len(runs)})':>20}"
              f"{f'{unit[0]:.2f}, {unit[1]:.2f} ({unit[2]}/{len(runs)})':>20}"
              f"{compute:>8.0f}{seconds:>9.0f}"
              f"{reached.mean():>12.0%} in {len(reached)}/{len(reach)} runs")
    print("targets: tpe >= 1.15x random's hypervolume; with MO-ASHA, random's final hypervolume "
          "reached with <= 50% of random's compute")


if __name__ == "__main__":
    main()
