"""Engine overhead: search wall time ÷ summed in-trial train+eval time, tiny-model search.

Everything `autopeft.api.search` does outside training and evaluating candidates counts as
overhead: Ray start-up, Tune's trial start, worker imports, model loading, budget checks,
artifact writing, the dev evaluation of the front's own artifacts and the report. The final
retraining is off (`final_seeds=0`): its runs are training too, but not trials, so they would
land in the wall time and not in the in-trial time. Not counted: importing autopeft in the
driver and Ray's shutdown at process exit. Target: ≤ 1.15 at concurrency 1.

Most of the overhead is paid once per search (Ray's start, the worker importing torch,
transformers and peft, the dev evaluation and report), so the ratio falls as trials get
longer; the table splits it into that fixed part and the part each trial adds, and runs two
trial lengths side by side to show it.

    python benchmarks/overhead.py [--trials 8] [--epochs 2 4] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from autopeft.api import SearchRequest, search  # noqa: E402
from autopeft.testing import build_tiny_bert  # noqa: E402

MRPC = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "MRPC"


def measure(model: Path, work: Path, trials: int, concurrency: int, epochs: int,
            data_dir: Path) -> dict:
    request = SearchRequest(
        task="mrpc", budget="5%", model=str(model), data_dir=str(data_dir),
        methods="lora,bitfit", trials=trials, concurrency=concurrency, epochs=epochs,
        study=f"overhead-e{epochs}-c{concurrency}", studies_dir=str(work / "studies"),
        reports_dir=str(work / "reports"),
        final_seeds=0,  # the front's own artifacts scored on dev: no retraining in the wall time
    )
    started = time.perf_counter()
    result = search(request)
    wall = time.perf_counter() - started
    ray.shutdown()  # the next search pays Ray's start-up too, as a fresh CLI run would
    rows = pd.read_csv(result.report_dir / "trials.csv")
    done = rows[rows.state == "COMPLETE"]
    in_trial = float((done.train_seconds + done.eval_seconds).sum())
    # Inside the worker but outside train+eval: model load, method set-up, artifact save.
    trial_setup = float(done.trial_seconds.sum()) - in_trial
    return {"concurrency": concurrency, "epochs": epochs, "trials": len(done), "wall_s": wall,
            "in_trial_s": in_trial, "per_trial_s": trial_setup / max(1, len(done)),
            "once_s": wall - in_trial - trial_setup, "ratio": wall / in_trial}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1])
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 4],
                        help="per trial (full MRPC train); one search per value")
    parser.add_argument("--data-dir", type=Path, default=MRPC)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_bert(work / "tiny-bert")
        results = [measure(model, work, args.trials, c, e, args.data_dir)
                   for e in args.epochs for c in args.concurrency]
    print("\nengine overhead (tiny BERT, MRPC, LoRA + BitFit)")
    print(f"{'epochs':>6} {'concurrency':>11} {'trials':>6} {'wall s':>8} {'in-trial s':>10} "
          f"{'once s':>7} {'per trial s':>11} {'ratio':>6}")
    for r in results:
        print(f"{r['epochs']:>6} {r['concurrency']:>11} {r['trials']:>6} {r['wall_s']:>8.1f} "
              f"{r['in_trial_s']:>10.1f} {r['once_s']:>7.1f} {r['per_trial_s']:>11.2f} "
              f"{r['ratio']:>6.2f}")
    print("ratio = search wall time / summed in-trial train+eval time (target <= 1.15 at "
          "concurrency 1). once = overhead not inside any trial (Ray start, first worker's "
          "imports, Tune's bookkeeping, dev evaluation, report); per trial = model load, method "
          "set-up and artifact save inside the worker. With concurrency > 1 the ratio also "
          "reflects parallel speed-up.")


if __name__ == "__main__":
    main()
