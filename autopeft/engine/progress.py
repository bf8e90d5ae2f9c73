"""Progress of a search in the terminal: trials done/running, best score so far, ETA, and
the time budget left."""

from __future__ import annotations

import math
import time

from ray.tune import Callback
from rich.console import Console


class SearchProgress(Callback):
    """Prints one line per finished trial and a status line; works in CI logs too (no TTY)."""

    def __init__(self, total: int, concurrency: int, console: Console | None = None,
                 time_budget_s: float | None = None):
        self.total = total
        self.concurrency = max(1, concurrency)
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.started = time.monotonic()
        self.time_budget_s = time_budget_s
        self.running: set[str] = set()
        self.finished = 0
        self.durations: list[float] = []
        self.best: tuple[float, str] | None = None
        self.last: dict[str, dict] = {}

    def __getstate__(self) -> dict:
        # Ray pickles callbacks with the experiment; a Console holds locks and a live stream,
        # so the copy gets a fresh one that stays as quiet as the caller's.
        state = {k: v for k, v in self.__dict__.items() if k != "console"}
        return {**state, "quiet": self.console.quiet}

    def __setstate__(self, state: dict) -> None:
        quiet = state.pop("quiet", False)
        self.__dict__.update(state, console=Console(stderr=True, soft_wrap=True, quiet=quiet))

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self.console.print(f"[dim]▶ {_label(trial.config)}: {_describe(trial.config)}[/dim]")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.last[trial.trial_id] = result

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, ok=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, ok=False)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.last.pop(trial.trial_id, None)  # the retry starts over
        self.console.print(f"[yellow]↻ {_label(trial.config)}: its worker "
                           f"was lost (failure {trial.num_failures}); Ray retries it[/yellow]")

    def _finish(self, trial, ok: bool) -> None:
        self.running.discard(trial.trial_id)
        self.finished += 1
        result = self.last.pop(trial.trial_id, {})
        self.durations.append(result.get("trial_seconds", result.get("time_total_s", 0.0)))
        label = _label(trial.config)
        score = result.get("score")
        if ok and result.get("final") and score is not None and math.isfinite(score):
            # one best across a sweep's studies would compare different tasks' scores
            if "study" not in trial.config and (self.best is None or score > self.best[0]):
                self.best = (score, f"{label} {trial.config.get('method')}")
            line = (f"✔ {label} {trial.config.get('method')}: score {score:.4f}, "
                    f"{result.get('stored_params', 0):,} stored params · "
                    f"{result.get('trainable_line', '')}")
        elif ok and "error" not in result:
            line = f"■ {label}: stopped early"
        else:
            line = f"✘ {label}: {result.get('error', 'failed (see the Ray trial log)')}"
        self.console.print(line, markup=False)
        self.console.print(f"[bold]{self.status()}[/bold]")

    def status(self) -> str:
        elapsed = time.monotonic() - self.started
        best = f" · best {self.best[0]:.4f} ({self.best[1]})" if self.best else ""
        return (f"[{self.finished}/{self.total} done, {len(self.running)} running] "
                f"elapsed {clock(elapsed)}{best}{self._eta(elapsed)}{self._budget_left(elapsed)}")

    def _eta(self, elapsed: float) -> str:
        remaining = self.total - self.finished
        if not self.durations or remaining <= 0:
            return ""
        mean = sum(self.durations) / len(self.durations)
        seconds = mean * math.ceil(remaining / self.concurrency)
        if self.time_budget_s is not None:
            # no trial starts after the budget: the last ones end about a trial later
            seconds = min(seconds, max(self.time_budget_s - elapsed, 0.0) + mean)
        return f" · ETA {clock(seconds)}"

    def _budget_left(self, elapsed: float) -> str:
        """What is left of --time-budget, so a user sees when proposals will stop."""
        if self.time_budget_s is None:
            return ""
        left = self.time_budget_s - elapsed
        if left > 0:
            return f" · time budget left {clock(left)}"
        return " · time budget spent: running trials finish"


def _label(config: dict) -> str:
    """"trial 3", or "trial 3 of <study>" in a sweep, where trial numbers repeat across studies."""
    study = config.get("study")
    return f"trial {config.get('trial_number')}" + (f" of {study}" if study else "")


def _describe(config: dict) -> str:
    knobs = ", ".join(f"{k}={_short(v)}" for k, v in config.get("knobs", {}).items())
    return f"{config.get('method')} ({knobs})"


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def clock(seconds: float) -> str:
    """"4m05s", or "1h02m05s" from an hour on."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
