"""Seconds per training step and peak memory of each method on MiniLM with MRPC batches.

One script run; each method runs in its own child process so its peak memory is its own
(CPU memory has no per-phase peak counter; on CUDA the child reads torch's peak allocation).
Targets: FISH and Child-Tuning_D within 1.2x LoRA's step time and memory; diff pruning's L0
phase within 1.6x full fine-tuning's step time. The other methods are listed for comparison.

    python benchmarks/method_cost.py [--steps 8] [--batch-size 32] [--only fish lora ...]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MRPC = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue" / "MRPC"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BASELINES = ("full FT", "LoRA r=8")  # every ratio is taken to these
CASES = [
    ("full FT", "full", {}),
    ("LoRA r=8", "lora", {"r": 8}),
    ("BitFit", "bitfit", {}),
    ("FISH 0.5%", "fish", {"density": 0.005}),
    ("Child-Tuning_D 0.5%", "child_tuning_d", {"density": 0.005, "fisher_samples": 64}),
    ("Child-Tuning_F p=0.3", "full", {"child_f_p": 0.3}),
    ("diff pruning (L0 phase)", "diff_pruning", {"density": 0.005, "l0_fraction": 1.0}),
    # inserted modules, prompts, LoRA variants, SPT and side methods, each within 0.5%
    ("Houlsby adapter m=8", "adapter_houlsby", {"bottleneck": 8}),
    ("Pfeiffer adapter m=16", "adapter_pfeiffer", {"bottleneck": 16}),
    ("parallel adapter m=8", "adapter_parallel", {"bottleneck": 8}),
    ("prompt tuning 20 tok", "prompt_tuning", {"num_virtual_tokens": 20}),
    ("prefix tuning 20 tok", "prefix_tuning", {"num_virtual_tokens": 20}),
    ("P-tuning 20 tok", "p_tuning", {"num_virtual_tokens": 20}),
    ("KronA", "krona", {}),
    ("AdaLoRA target r=4", "adalora", {"target_r": 4}),
    ("DyLoRA r_max=8", "dylora", {"r_max": 8}),
    ("IncreLoRA", "increlora", {}),
    ("SPT 0.5%", "spt", {"density": 0.005}),
    ("LST reduction 32", "lst", {"reduction": 32}),
    ("AttentionFusion", "attention_fusion", {}),
]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _measure(method_name: str, knobs: dict, steps: int, batch_size: int, queue) -> None:
    import torch

    from autopeft.backbones.models import load_model, load_tokenizer, resolve_model
    from autopeft.methods import METHODS, build_method
    from autopeft.tasks import get_task, load_task_data
    from autopeft.train.data import SplitBatches, tokenize_frame
    from autopeft.train.loop import LoopSettings, build_optimizer, pick_device

    if method_name not in METHODS:
        queue.put(None)
        return
    torch.manual_seed(0)
    task = get_task("mrpc")
    source = resolve_model(MODEL)
    tokenizer = load_tokenizer(source)
    frame = load_task_data(task, MRPC).train.head(batch_size * (steps + 2) + 256)
    split = tokenize_frame(frame, task.text_columns, tokenizer)
    device = pick_device()
    model = load_model(source, task.num_labels).to(device)
    baseline = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    method = build_method(method_name, knobs)
    model = method.apply(model).to(device)
    method.prepare(model, SplitBatches(split, tokenizer, device))
    total = steps + 2
    method.start(model, total)
    optimizer, scheduler, _ = build_optimizer(model, method, LoopSettings(learning_rate=1e-4),
                                         total, 0)
    batches = list(SplitBatches(split, tokenizer, device, seed=1).batches(batch_size))[:total]
    model.train()
    times = []
    for step, batch in enumerate(batches, start=1):
        started = time.perf_counter()
        loss = model(**batch).loss
        penalty = method.penalty(model)
        (loss if penalty is None else loss + penalty).backward()
        method.after_backward(model, step)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        method.after_step(model, step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else _rss_mib() - baseline)
    queue.put({"step_s": sum(times[2:]) / len(times[2:]), "peak_mib": peak,
               "stored": method.stored_params(model)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", nargs="+", metavar="METHOD",
                        help="registry names to run (full FT and LoRA always run: the baselines)")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    results = {}
    for label, name, knobs in CASES:
        if args.only and name not in args.only and label not in BASELINES:
            continue
        queue = context.Queue()
        child = context.Process(target=_measure,
                                args=(name, knobs, args.steps, args.batch_size, queue))
        child.start()
        result = queue.get()
        child.join()
        if result is None:
            print(f"{label}: method '{name}' not registered, skipped")
            continue
        results[label] = result
        print(f"{label}: {result['step_s']:.3f} s/step, peak +{result['peak_mib']:.0f} MiB",
              flush=True)
    full, lora = (results[label] for label in BASELINES)
    print(f"\n{'method':<26}{'s/step':>8}{'peak MiB':>10}{'stored':>12}"
          f"{'time/full':>10}{'time/LoRA':>10}{'mem/full':>10}{'mem/LoRA':>10}")
    for label, r in results.items():
        print(f"{label:<26}{r['step_s']:>8.3f}{r['peak_mib']:>10.0f}{r['stored']:>12,}"
              f"{r['step_s'] / full['step_s']:>10.2f}{r['step_s'] / lora['step_s']:>10.2f}"
              f"{r['peak_mib'] / full['peak_mib']:>10.2f}{r['peak_mib'] / lora['peak_mib']:>10.2f}")
    print("peak = resident memory growth after loading the backbone (CPU) or peak CUDA "
          "allocation; batch", args.batch_size)


if __name__ == "__main__":
    main()
