"""Engine overhead: search wall time ÷ summed in-trial train+eval time, tiny-model search.

Everything `autopeft.api.search` does outside training and evaluating candidates counts as
overhead: Ray start-up, Tune's trial start, worker imports, model loading, budget checks,
artifact writing, the dev evaluation of the front and the report. Not counted: importing
autopeft in the driver and Ray's shutdown at process exit. Target: ≤ 1.15 at concurrency 1.

    python benchmarks/overhead.py [--trials 8] [--epochs 2] [--concurrency 1 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from autopeft.api import SearchRequest, search  # noqa: E402
from autopeft.testing import build_tiny_bert  # noqa: E402

MRPC = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "MRPC"


def measure(model: Path, work: Path, trials: int, concurrency: int, epochs: int,
            data_dir: Path) -> dict:
    request = SearchRequest(
        task="mrpc", budget="5%", model=str(model), data_dir=str(data_dir),
        methods="lora,bitfit", trials=trials, concurrency=concurrency, epochs=epochs,
        study=f"overhead-c{concurrency}", studies_dir=str(work / "studies"),
        reports_dir=str(work / "reports"),
    )
    started = time.perf_counter()
    result = search(request)
    wall = time.perf_counter() - started
    rows = pd.read_csv(result.report_dir / "trials.csv")
    done = rows[rows.state == "COMPLETE"]
    in_trial = float((done.train_seconds + done.eval_seconds).sum())
    return {"concurrency": concurrency, "trials": len(done), "wall_s": wall,
            "in_trial_s": in_trial, "ratio": wall / in_trial}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2, help="per trial (full MRPC train)")
    parser.add_argument("--data-dir", type=Path, default=MRPC)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_bert(work / "tiny-bert")
        results = [measure(model, work, args.trials, c, args.epochs, args.data_dir)
                   for c in args.concurrency]
    print(f"\nengine overhead (tiny BERT, MRPC, {args.epochs} epoch(s) per trial, LoRA + BitFit)")
    print(f"{'concurrency':>11} {'trials':>6} {'wall s':>8} {'in-trial s':>10} {'ratio':>6}")
    for r in results:
        print(f"{r['concurrency']:>11} {r['trials']:>6} {r['wall_s']:>8.1f} "
              f"{r['in_trial_s']:>10.1f} {r['ratio']:>6.2f}")
    print("ratio = search wall time / summed in-trial train+eval time (target <= 1.15 at "
          "concurrency 1; with more concurrent trials than cores' worth of work the ratio "
          "also reflects parallel speed-up)")


if __name__ == "__main__":
    main()
