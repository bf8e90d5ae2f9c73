"""Small helpers tests share: run the CLI in-process or as a subprocess, list a folder, read
an error; small search spaces, a toy training task, and in-memory studies for report tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from autopeft import cli
from autopeft.study import (
    ATTR_ALLOCATION,
    ATTR_BUDGET_USED,
    ATTR_CURVE,
    ATTR_ERROR,
    ATTR_EVAL_SECONDS,
    ATTR_HEAD,
    ATTR_METHOD,
    ATTR_METRICS,
    ATTR_STATUS,
    ATTR_STORED,
    ATTR_TRAIN_SECONDS,
    ATTR_TRIAL_SECONDS,
    DEV_SCORES_KEY,
    SETUP_KEY,
    STATUS_ERROR,
    STATUS_INFEASIBLE,
    STATUS_OK,
    STATUS_PRUNED,
    StudySetup,
    record_dev_scores,
)


def run_main(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """`autopeft ARGV` through `cli.main` (its error handling included): (exit status, stderr).

    A run that returns instead of exiting counts as status 0.
    """
    capsys.readouterr()  # what earlier runs printed is not this run's
    monkeypatch.setattr(sys, "argv", ["autopeft", *argv])
    try:
        cli.main()
        code = 0
    except SystemExit as exited:
        code = exited.code if isinstance(exited.code, int) else 1
    return code, capsys.readouterr().err


def listing(root: Path) -> list[str]:
    """Every file and folder under `root`, recursively, as relative paths."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def nonblank_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def assert_refused(code: int, stderr: str, needle: str, max_lines: int = 3) -> str:
    """Exit 2, no traceback, at most `max_lines` lines of which only the usage line may come
    before the error line, and `needle` in the error line; returns the error line."""
    lines = nonblank_lines(stderr)
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert 1 <= len(lines) <= max_lines, stderr
    assert all(line.startswith("Usage: ") for line in lines[:-1]), stderr
    assert lines[-1].startswith("error: "), stderr
    if needle not in lines[-1]:
        pytest.fail(f"{needle!r} is not in the error line {lines[-1]!r}")
    return lines[-1]


TRIAL_TIMEOUT_S = 300  # per search; a tiny trial takes seconds, Ray's start-up ~10 s


def tiny_search_args(tiny_bert: Path, mrpc_dir: Path, study: str, trials: int,
                     *extra: str) -> list[str]:
    """A tiny bitfit-only search: no over-budget candidates, so trial numbers are predictable."""
    return ["search", "--task", "mrpc", "--budget", "2%", "--model", str(tiny_bert),
            "--data-dir", str(mrpc_dir), "--methods", "bitfit", "--trials", str(trials),
            "--max-train-samples", "64", "--batch-size", "16", "--epochs", "2",
            "--sampler", "random", "--seed", "1", "--study", study, "--final-seeds", "0", *extra]


def _inherited() -> dict[str, str]:
    """This process's environment less what an in-process search set (Ray's auth mode): each
    search starts as a user's would."""
    return {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}


class Search:
    """`autopeft search` running in a subprocess, its output in files (no pipe to fill up)."""

    def __init__(self, args: list[str], cwd: Path, name: str, **env: str):
        self.out, self.err = cwd / f"{name}.out", cwd / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "autopeft", *args], cwd=cwd, stdout=out, stderr=err,
                env={**_inherited(), "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **env})

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def wait(self, timeout: float = TRIAL_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"search timed out:\n{self.stderr[-3000:]}") from None

    def wait_until(self, condition: Callable[[], bool], timeout: float = TRIAL_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"search ended first ({self.proc.returncode}):\n"
                                     f"{self.stderr[-3000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"condition not reached:\n{self.stderr[-3000:]}")
            time.sleep(0.3)


def assert_searches_overlapped(trials: list, searches: list[Search]) -> None:
    """Each of two searches on one study added its own trials while the other added its own."""
    from autopeft import study as records

    spans = {}
    for trial in trials:
        owner = trial.user_attrs[records.ATTR_OWNER]["pid"]
        start, end = spans.get(owner, (trial.datetime_start, trial.datetime_complete))
        spans[owner] = (min(start, trial.datetime_start), max(end, trial.datetime_complete))
    assert set(spans) == {s.proc.pid for s in searches}
    (start_a, end_a), (start_b, end_b) = spans.values()
    assert start_a < end_b and start_b < end_a


def run_cli(*args, cwd=None):
    """`python -m autopeft ARGS` in a subprocess, offline, output captured as text."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "autopeft", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


# The small search spaces searches in tests write to a file.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMALL_SPACE_FILE = FIXTURES / "small_space.yaml"  # LoRA on every projection, BitFit
SMALL_QV_SPACE = """
methods:
  bitfit:
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
  lora:
    r: {choices: [2, 4]}
    targets: {choices: [qv]}
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
"""


# A toy sentiment task: methods train a few steps on it.
TEXTS = ["good movie", "great film", "bad movie", "awful film",
         "good show", "terrible show", "great story", "bad story"]
LABELS = [1, 1, 0, 0, 1, 0, 1, 0]


def _batch(tokenizer):
    enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    return {**enc, "labels": torch.tensor(LABELS)}


def _train(model, method, batch, lr, steps):
    optimizer = torch.optim.AdamW(method.parameter_groups(model, 0.01), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


class ListSource:
    """BatchSource over fixed examples (what the trial builds from the train split)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def batches(self, batch_size):
        for start in range(0, len(TEXTS), batch_size):
            texts = TEXTS[start:start + batch_size]
            enc = self.tokenizer(texts, padding=True, return_tensors="pt")
            labels = torch.tensor([1 if t.split()[0] in ("good", "great") else 0 for t in texts])
            yield {**enc, "labels": labels}


# Report tests: autopeft studies built in memory, trial by trial, nothing trained.
optuna.logging.set_verbosity(optuna.logging.WARNING)

BUDGET = 10_000
REPO_ROOT = Path(__file__).resolve().parents[1]

DISTRIBUTIONS = {
    "method": CategoricalDistribution(["lora", "bitfit"]),
    "lora.r": CategoricalDistribution([2, 4, 8, 16, 64]),
    "lora.learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    "bitfit.learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
}


# A LoRA-on-query/value record with the 2-D breakdown, and an older one with the margins only.
LORA_ALLOCATION = {
    "by_layer": {"embeddings": 0.0, "0": 0.25, "1": 0.125, "other": 0.0},
    "by_type": {"embeddings": 0.0, "attn_q": 1.0, "attn_v": 0.5, "ffn_in": 0.0, "bias": 0.0,
                "other": 0.0},
    "by_layer_type": {
        "embeddings": {"embeddings": 0.0},
        "0": {"attn_q": 1.0, "attn_v": 1.0, "ffn_in": 0.0, "bias": 0.0},
        "1": {"attn_q": 1.0, "attn_v": 0.0, "ffn_in": 0.0, "bias": 0.0},
        "other": {"other": 0.0},
    },
}
OLD_BITFIT_ALLOCATION = {
    "by_layer": {"embeddings": 0.001, "0": 0.002, "1": 0.002},
    "by_type": {"embeddings": 0.0, "bias": 1.0, "attn_q": 0.0},
}


def _setup(**changes) -> StudySetup:
    values = {
        "task": "mrpc",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "budget_spec": "0.5%",
        "budget_params": BUDGET,
        "backbone_params": 2_000_000,
        "primary_metric": "f1",
        "methods": ["lora", "bitfit"],
        "data_source": "glue/mrpc (local copy)",
    }
    return StudySetup(**{**values, **changes})


def new_study(name: str = "mrpc-test", storage=None, **setup) -> optuna.Study:
    """An empty autopeft study (in memory unless `storage`); `setup` overrides the setup."""
    study = optuna.create_study(
        study_name=name, directions=["maximize", "minimize"], storage=storage
    )
    study.set_user_attr(SETUP_KEY, asdict(_setup(**setup)))
    study.set_user_attr(DEV_SCORES_KEY, {})
    return study


def trial_params(method: str, lr: float, r: int | None = None) -> dict:
    params = {"method": method, f"{method}.learning_rate": lr}
    if r is not None:
        params["lora.r"] = r
    return params


def add_trial(
    study: optuna.Study,
    state: TrialState,
    params: dict,
    stored: int,
    status: str,
    score: float | None = None,
    epochs: int = 0,
    error: str | None = None,
    allocation: dict | None = None,
    started: datetime | None = None,
) -> None:
    attrs: dict = {
        ATTR_METHOD: params["method"],
        ATTR_STATUS: status,
        ATTR_STORED: stored,
        ATTR_HEAD: 1_538,
        ATTR_BUDGET_USED: stored / BUDGET,
    }
    if score is not None:
        attrs[ATTR_METRICS] = {"f1": score, "accuracy": score + 0.01, "score": score}
        attrs[ATTR_CURVE] = [{"epoch": e + 1, "score": score} for e in range(epochs)]
        attrs[ATTR_TRAIN_SECONDS] = 12.5
        attrs[ATTR_EVAL_SECONDS] = 1.5
    attrs[ATTR_TRIAL_SECONDS] = 15.0
    if error is not None:
        attrs[ATTR_ERROR] = error
    if allocation is not None:
        attrs[ATTR_ALLOCATION] = allocation
    values = [score, float(stored)] if state == TrialState.COMPLETE else None
    trial = create_trial(
        state=state,
        values=values,
        params=params,
        distributions={k: DISTRIBUTIONS[k] for k in params},
        user_attrs=attrs,
    )
    if started is not None:
        trial.datetime_start = started
    study.add_trial(trial)


def fill_example(s: optuna.Study) -> optuna.Study:
    """The trials every report test reads: a front, a dominated, an over-budget, an
    infeasible, a pruned and a crashed trial, dev scores for the front, allocations."""
    complete = TrialState.COMPLETE
    add_trial(s, complete, trial_params("lora", 1e-3, r=4), 5_000, STATUS_OK, 0.80, epochs=2,
              allocation=LORA_ALLOCATION)  # 0 front
    add_trial(s, complete, trial_params("bitfit", 1e-3), 2_000, STATUS_OK, 0.70, epochs=2,
              allocation=OLD_BITFIT_ALLOCATION)  # 1 front
    add_trial(s, complete, trial_params("lora", 3e-4, r=8), 8_000, STATUS_OK, 0.75,
              epochs=2)  # 2 dominated
    add_trial(s, complete, trial_params("lora", 3e-4, r=16), 20_000, STATUS_OK, 0.90,
              epochs=2)  # 3 over
    add_trial(s, TrialState.FAIL, trial_params("lora", 1e-3, r=64), 80_000,
              STATUS_INFEASIBLE)  # 4
    add_trial(s, TrialState.PRUNED, trial_params("bitfit", 1e-4), 2_000, STATUS_PRUNED, 0.5,
              epochs=1)  # 5
    add_trial(s, TrialState.FAIL, trial_params("lora", 1e-2, r=2), 3_000, STATUS_ERROR,
              error="CUDA OOM")  # 6
    add_trial(s, complete, trial_params("lora", 5e-4, r=2), 3_000, STATUS_OK, 0.78, epochs=2,
              allocation=LORA_ALLOCATION)  # 7 front
    record_dev_scores(
        s,
        {
            0: {"f1": 0.79, "accuracy": 0.82, "score": 0.79},
            1: {"f1": 0.68, "accuracy": 0.71, "score": 0.68},
            7: {"f1": 0.77, "accuracy": 0.80, "score": 0.77},
        },
    )
    return s
