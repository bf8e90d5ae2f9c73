"""Sweeps: one study per (task, budget, model), run together on one Ray cluster, one report.

`autopeft sweep --tasks mrpc,rte --budgets 0.1%,1% --models A,B --trials 40` is a grid of
ordinary studies (each resumable and reportable on its own, named `<sweep>-<task>-<model>-
<budget>`) plus a manifest, `studies/<sweep>.sweep/sweep.json`, naming them. Running the same
command again continues every study to its trial target. Studies of one (task, model) share
their tokenised data and, where a trial fits a smaller budget, their trials (`reuse`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.console import Console

from autopeft import study as records
from autopeft.errors import AutoPeftError
from autopeft.inputs import names
from autopeft.inputs.options import check_positive
from autopeft.search.reuse import BudgetReuse, Sibling
from autopeft.search.searching import (
    DEFAULT_MODEL,
    CheckedRequest,
    PreparedStudy,
    RunSettings,
    SearchRequest,
    SearchResult,
    SharedInputs,
    check_request,
    check_resumable,
    engine_settings,
    evaluate_as_trained,
    open_checked,
    plan_final,
    report_study,
    run_final_plans,
)
from autopeft.space.budget import parse_budget
from autopeft.tasks import record_of
from autopeft.tasks.resolve import task_and_note, task_label

MANIFEST = "sweep.json"
# What a trial's score depends on: a sweep continued with other values would mix incomparable
# trials in its fronts and share them between budgets.
COMPARABILITY = ("epochs", "batch_size", "max_length", "max_train_samples", "selection_fraction",
                 "seed", "data_dir", "drop_invalid_rows")


@dataclass(kw_only=True)
class SweepRequest(RunSettings):
    """Everything `autopeft sweep` accepts; the run settings apply to every study.

    `data_dir` is a GLUE root holding every task's folder (MRPC/, RTE/, ...); a task file's
    task names its own files.
    """

    tasks: str  # "mrpc,rte" (a control: "mrpc:shuffled"), task files too: "mrpc,my_task.yaml"
    budgets: str  # "0.1%,0.5%,1%"
    models: str = DEFAULT_MODEL  # comma-separated ids or local paths
    trials: int = 12  # per study, trials shared from a sibling budget included
    sweep: str | None = None  # name; default: derived from the grid
    reuse: bool = True  # share trials between budgets of the same (task, model)


@dataclass
class SweepResult:
    name: str
    manifest: Path
    report_dir: Path
    studies: list[SearchResult] = field(default_factory=list)
    launched: dict[str, int] = field(default_factory=dict)  # trials trained, per study
    shared: dict[str, int] = field(default_factory=dict)  # trials reused, per study
    wall_seconds: float = 0.0


def sweep(request: SweepRequest, console: Console | None = None) -> SweepResult:
    """Run (or continue) every study of the sweep, then report each and all together."""
    from autopeft.engine.multiplex import SweepMember, run_sweep_trials

    started = time.perf_counter()
    console = console or Console(stderr=True)
    if request.sweep is not None:  # a name, never a path: refused before anything else
        names.check_name(request.sweep, "--sweep")
    grid, tasks, notes = _grid(request)
    name = names.check_name(request.sweep or default_sweep_name(grid), "--sweep")
    requests = _study_requests(request, name, grid, tasks)
    for study in requests:  # <sweep>-<task>-<model>-<budget> may grow too long
        names.check_name(study.study, f"--sweep '{name}': its study")
    shared = SharedInputs()
    # each task file's line (what was inferred) once, not once per study, once all is checked
    checked = [dataclasses.replace(_checked(r, shared), task_note="") for r in requests]
    for cell in checked:
        check_resumable(cell)
    manifest = _write_manifest(request, name, grid, checked)  # every input is valid by now
    for note in notes:
        console.print(note, highlight=False, markup=False)
    covered = _covered_by_smaller_budget(checked) if request.reuse else {}
    prepared = [open_checked(c, console, skip_coverage=covered.get(c.study_name, set()))
                for c in checked]
    sharing = BudgetReuse(_sibling_groups(prepared) if request.reuse else [])
    if caught_up := sharing.catch_up():
        console.print(f"budget reuse: {caught_up} earlier trial(s) shared with sibling budgets")
    members = [SweepMember(name=p.name, study=p.study, space=p.space, context=p.context,
                           data_key=_data_key(p),
                           remaining=request.trials - records.counted_trials(p.study))
               for p in prepared]
    held = sum(records.counted_trials(p.study) for p in prepared)
    console.print(f"sweep '{name}': {len(members)} studies holding {held} trained trials → "
                  f"this run adds up to {sum(max(0, m.remaining) for m in members)} "
                  f"(--trials {request.trials} per study, shared trials included)")
    settings = engine_settings(request, sum(max(0, m.remaining) for m in members))
    data = {_data_key(p): p.inputs.search_data for p in prepared}
    outcome = run_sweep_trials(members, data, settings, manifest.parent / "ray",
                               sharing.share, console)
    _final_numbers(request, prepared, sharing, console, settings)
    results = [report_study(p, outcome.infeasible.get(p.name, 0)) for p in prepared]
    report_dir = build_sweep_report(name, request.studies_dir, request.reports_dir,
                                    rebuild_studies=False)
    return SweepResult(name, manifest, report_dir, results, outcome.launched, sharing.received,
                       time.perf_counter() - started)


def _final_numbers(request: SweepRequest, prepared: list[PreparedStudy], sharing: BudgetReuse,
                   console: Console, settings: Any) -> None:
    """Every study's final runs submitted together (no study waits for another's), each shared
    point retrained once, in its own study, and copied to the other budgets' fronts."""
    if not request.final_seeds:
        for study in prepared:
            evaluate_as_trained(study)
        return
    deferred = {p.name: sharing.deferred(p.name) for p in prepared}
    run_final_plans([plan_final(p, console, settings, deferred[p.name]) for p in prepared],
                    console, settings)
    missing = []
    for study in prepared:
        if copied := sharing.share_final_runs(study.name):
            console.print(f"{study.name}: final runs of {copied} shared point(s) taken from "
                          "the study that trained them")
        if deferred[study.name] - set(records.final_runs(study.study)):
            missing.append(plan_final(study, console, settings))  # its twin had none to give
    run_final_plans(missing, console, settings)


def build_sweep_report(name: str, studies_dir: str = "studies", reports_dir: str = "reports",
                       out: str | None = None, rebuild_studies: bool = True) -> Path:
    """Rebuild each study's report (unless just built) and the sweep's combined one, from the
    stored studies."""
    from autopeft.report import build_report
    from autopeft.report.sweep_report import build_sweep_report as build_combined

    manifest = read_manifest(name, studies_dir)
    studies = [records.read_study(entry["study"], None, Path(studies_dir))
               for entry in manifest["studies"]]
    own = [names.inside(reports_dir, s.study_name) for s in studies]
    if rebuild_studies:
        own = [build_report(s, directory) for s, directory in zip(studies, own, strict=True)]
    target = Path(out) if out else names.inside(reports_dir, name)
    return build_combined(name, studies, own, target)


def read_manifest(name: str, studies_dir: str = "studies") -> dict[str, Any]:
    """A sweep's manifest; a one-line error naming the sweeps there are otherwise."""
    path = manifest_path(name, studies_dir)
    if not path.exists():
        known = sorted(p.parent.name.removesuffix(".sweep")
                       for p in Path(studies_dir).glob(f"*.sweep/{MANIFEST}"))
        raise AutoPeftError(f"no sweep '{name}' under {studies_dir}/ "
                            f"(found: {', '.join(known) or 'none'})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AutoPeftError(f"cannot read the sweep manifest {path}: {exc}") from None


def manifest_path(name: str, studies_dir: str = "studies") -> Path:
    """`<studies_dir>/<name>.sweep/sweep.json`; a `name` that is not a usable name is refused."""
    return names.inside(studies_dir, f"{names.check_name(name, '--sweep')}.sweep") / MANIFEST


def default_sweep_name(grid: dict[str, list[str]]) -> str:
    """`sweep-<hash of the grid>`: the same command names, and so resumes, the same sweep."""
    text = json.dumps(grid, sort_keys=True)
    return "sweep-" + hashlib.sha1(text.encode()).hexdigest()[:8]


# --- helpers -----------------------------------------------------------------------------------
def _grid(request: SweepRequest
          ) -> tuple[dict[str, list[str]], dict[str, str | dict], list[str]]:
    """The checked, de-duplicated lists of tasks (by name), budgets and models; each task
    name's record (a GLUE name, or a task file's complete mapping, read once here); and what
    was inferred about each task file."""
    def split(flag: str, text: str) -> list[str]:
        items = list(dict.fromkeys(x.strip() for x in str(text).split(",") if x.strip()))
        if not items:
            raise AutoPeftError(f"--{flag} is empty; pass a comma-separated list")
        return items

    tasks: dict[str, str | dict] = {}
    notes = []
    for text in split("tasks", request.tasks):
        spec, note = task_and_note(text)
        if spec.name in tasks and tasks[spec.name] != record_of(spec):
            raise AutoPeftError(f"--tasks names two different tasks '{spec.name}' (one is "
                                f"{text}); give each task file its own name")
        if spec.name not in tasks and note:
            notes.append(note)
        tasks[spec.name] = record_of(spec)
    budgets = split("budgets", request.budgets)
    for budget in budgets:
        parse_budget(budget)
    check_positive(trials=request.trials)
    return ({"tasks": list(tasks), "budgets": budgets,
             "models": split("models", request.models)}, tasks, notes)


def _checked(request: SearchRequest, shared: SharedInputs) -> CheckedRequest:
    """`check_request`, its one-line errors saying which cell of the grid they concern."""
    try:
        return check_request(request, shared)
    except AutoPeftError as exc:
        raise AutoPeftError(f"{task_label(request.task)} at {request.budget} on "
                            f"{request.model}: {exc}") from None


def _study_requests(request: SweepRequest, name: str, grid: dict[str, list[str]],
                    tasks: dict[str, str | dict] | None = None) -> list[SearchRequest]:
    """One search request per cell; a custom task's cell gets its mapping (no --data-dir)."""
    common = {f.name: getattr(request, f.name) for f in fields(RunSettings)}
    tasks = tasks or {}
    return [SearchRequest(**{**common, "task": tasks.get(task, task), "budget": budget,
                             "model": model, "trials": request.trials,
                             **({"data_dir": None} if isinstance(tasks.get(task), dict) else {}),
                             "study": f"{name}-{records.default_study_name(task, model, budget)}"})
            for task in grid["tasks"] for model in grid["models"] for budget in grid["budgets"]]


def _write_manifest(request: SweepRequest, name: str, grid: dict[str, list[str]],
                    checked: list[CheckedRequest]) -> Path:
    """Record (or check, on a rerun) what the sweep is: its grid and its studies."""
    path = manifest_path(name, request.studies_dir)
    entries = [{"study": c.study_name, "task": c.task.name, "budget": c.budget.spec,
                "budget_params": c.budget_params, "model": c.request.model} for c in checked]
    if path.exists():
        old = read_manifest(name, request.studies_dir)
        if old.get("grid") != grid:
            raise AutoPeftError(
                f"sweep '{name}' exists with another grid ({_describe(old.get('grid', {}))}); "
                f"pass the same --tasks/--budgets/--models to continue it, or another --sweep")
        before = old.get("settings", {})
        changed = [f"--{k.replace('_', '-')} {before.get(k)} → {getattr(request, k)}"
                   for k in COMPARABILITY if k in before and before[k] != getattr(request, k)]
        if changed:
            raise AutoPeftError(
                f"sweep '{name}' was run with other training settings ({'; '.join(changed)}); "
                "its trials would not be comparable: pass the earlier values, or another --sweep")
    settings = {k: v for k, v in asdict(request).items()
                if k not in ("tasks", "budgets", "models", "sweep")}
    body = {"sweep": name, "grid": grid, "trials_per_study": request.trials,
            "settings": settings, "studies": entries,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash leaves the old manifest, never half a file
    return path


def _describe(grid: dict[str, list[str]]) -> str:
    return "; ".join(f"{k} {','.join(v)}" for k, v in grid.items())


def _data_key(prepared: PreparedStudy) -> str:
    return repr(prepared.inputs_key)


def _siblings(items: list, key) -> list[list]:
    """`items` grouped by their (task, model, data) inputs, each group by budget, smallest first.

    Studies with the same inputs train a candidate identically (one sweep: same epochs, seed
    and selection split), so they differ only in budget.
    """
    groups: dict[tuple, list] = {}
    for item in items:
        groups.setdefault(item.inputs_key, []).append(item)
    return [sorted(group, key=key) for group in groups.values()]


def _covered_by_smaller_budget(checked: list[CheckedRequest]) -> dict[str, set[str]]:
    """Per study, the methods whose first (coverage) trial a smaller sibling budget runs.

    That trial fits the larger budget too and is shared with it, so running it twice would
    only repeat work.
    """
    covered: dict[str, set[str]] = {}
    for group in _siblings(checked, key=lambda c: c.budget_params):
        seen: set[str] = set()
        for study in group:
            covered[study.study_name] = set(seen)
            seen |= set(study.space.methods)
    return covered


def _sibling_groups(prepared: list[PreparedStudy]) -> list[list[Sibling]]:
    return [[Sibling(p.name, p.study, p.study_dir, p.space)
             for p in group]
            for group in _siblings(prepared, key=lambda p: p.budget_params) if len(group) > 1]
