"""Engine overhead: search wall time ÷ summed in-trial train+eval time, tiny-model search.

Everything `autopeft search` does outside training and evaluating candidates counts as
overhead: Ray start-up, worker start, model loading, budget checks, artifact writing, the dev
evaluation of the front and the report. Target: ≤ 1.15 at concurrency 1.

    python benchmarks/overhead.py [--trials 8] [--concurrency 1 2]
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


def measure(model: Path, work: Path, trials: int, concurrency: int, data_dir: Path) -> dict:
    request = SearchRequest(
        task="mrpc", budget="5%", model=str(model), data_dir=str(data_dir),
        methods="lora,bitfit", trials=trials, concurrency=concurrency, epochs=1,
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
    parser.add_argument("--data-dir", type=Path, default=MRPC)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny_bert(work / "tiny-bert")
        results = [measure(model, work, args.trials, c, args.data_dir) for c in args.concurrency]
    print("\nengine overhead (tiny BERT, MRPC, 1 epoch per trial, LoRA + BitFit)")
    print(f"{'concurrency':>11} {'trials':>6} {'wall s':>8} {'in-trial s':>10} {'ratio':>6}")
    for r in results:
        print(f"{r['concurrency']:>11} {r['trials']:>6} {r['wall_s']:>8.1f} "
              f"{r['in_trial_s']:>10.1f} {r['ratio']:>6.2f}")
    print("ratio = search wall time / summed in-trial train+eval time (target <= 1.15 at "
          "concurrency 1; with more concurrent trials than cores' worth of work the ratio "
          "also reflects parallel speed-up)")


if __name__ == "__main__":
    main()
