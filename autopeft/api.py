"""The public Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from rich.console import Console

from autopeft import study as records
from autopeft.backbones.models import resolve_model
from autopeft.errors import AutoPeftError
from autopeft.inputs import names
from autopeft.methods import METHODS
from autopeft.report import build_comparison, build_report, comparison_name
from autopeft.search.searching import (
    DEFAULT_MODEL,
    SearchRequest,
    SearchResult,
    engine_settings,
    finish_study,
    prepare_study,
)
from autopeft.search.sweep import SweepRequest, SweepResult, sweep
from autopeft.search.sweep import build_sweep_report as sweep_report
from autopeft.space import fitting
from autopeft.space.budget import parse_budget
from autopeft.space.sizing import Sizer
from autopeft.space.space import load_space
from autopeft.tasks import TaskSpec, resolve_task

__all__ = ["DEFAULT_MODEL", "SearchRequest", "SearchResult", "SweepRequest", "SweepResult",
           "budget_overview", "methods_overview", "report", "search", "sweep", "sweep_report"]


def search(request: SearchRequest, console: Console | None = None) -> SearchResult:
    """Run (or continue) a study: propose, train and judge candidates, then report the front."""
    # Heavy imports stay here so `autopeft methods`/`report` start fast and without Ray.
    from autopeft.engine.runner import run_trials

    console = console or Console(stderr=True)
    prepared = prepare_study(request, console)
    held = records.counted_trials(prepared.study)
    to_add = request.trials - held
    within = f" within the time budget {request.time_budget}" if request.time_budget else ""
    if to_add <= 0:
        console.print(f"study '{prepared.name}' holds {held} trained trials, --trials "
                      f"{request.trials} reached: nothing to train (a larger --trials extends it)")
        return finish_study(prepared, console)
    console.print(f"study '{prepared.name}' holds {held} trained trials → this run adds up to "
                  f"{to_add} (--trials {request.trials}){within}, {prepared.request.epochs} "
                  "epoch(s) each")
    settings = engine_settings(request, to_add)
    outcome = run_trials(prepared.study, prepared.space, prepared.inputs.search_data,
                         prepared.context, settings, prepared.study_dir / "ray", console)
    return finish_study(prepared, console, outcome.infeasible, outcome.wall_seconds, settings)


def report(study: str | list[str], storage: str | None = None, studies_dir: str = "studies",
           reports_dir: str = "reports", out: str | None = None) -> Path:
    """Rebuild `reports/<study>/` from the stored study alone (no training, no Ray).

    Several studies (any tasks, models, budgets) also get a comparison, in `out` or
    `reports/compare-<a>-vs-<b>/`, linking each study's own report (rebuilt as well). Returns
    the single study's report directory, or the comparison's.
    """
    studies = list(dict.fromkeys([study] if isinstance(study, str) else study))
    if not studies:
        raise AutoPeftError("name at least one study to report")
    for name in studies:  # every name checked before any study is read or report written
        names.check_name(name, "--study")
    loaded = [_stored_study(name, storage, studies_dir) for name in studies]
    if len(studies) == 1:
        return build_report(loaded[0],
                            Path(out) if out else names.inside(reports_dir, studies[0]))
    own = [build_report(s, names.inside(reports_dir, name))
           for s, name in zip(loaded, studies, strict=True)]
    target = Path(out) if out else names.inside(reports_dir, comparison_name(studies))
    return build_comparison(loaded, own, target)


def _stored_study(name: str, storage: str | None, studies_dir: str) -> optuna.Study:
    """An existing study by name; a one-line error naming the studies there are otherwise."""
    study_dir = names.inside(studies_dir, names.check_name(name, "--study"))
    if storage is None and not (study_dir / "optuna.journal").exists():
        known = sorted(p.name for p in Path(studies_dir).glob("*/optuna.journal"))
        raise AutoPeftError(
            f"no study '{name}' under {studies_dir}/ (found: {', '.join(known) or 'none'}); "
            "pass --storage for studies stored elsewhere"
        )
    return records.open_study(name, records.make_storage(storage, study_dir), setup=None)


def budget_overview(model: str, budget: str, task: str = "mrpc",
                    trust_remote_code: bool = False) -> dict[str, Any]:
    """What fits a budget on a model: the cap, and per method the largest setting that fits."""
    spec: TaskSpec = resolve_task(task)  # a GLUE name or a task file
    parsed = parse_budget(budget)
    sizer = Sizer(resolve_model(model, trust_remote_code), spec.num_labels)
    backbone = sizer.backbone_params()
    cap = parsed.params(backbone)
    rows = fitting.budget_overview(sizer, cap)
    return {"budget": parsed.describe(backbone), "budget_params": cap,
            "backbone_params": backbone, "rows": rows}


def methods_overview(space_file: str | None = None) -> list[dict[str, Any]]:
    """Every registered method with its knobs, defaults and default search ranges."""
    space = load_space(space_file)
    rows = []
    for name, cls in METHODS.items():
        ranges = space.methods.get(name, {})
        for knob in cls.config_class.knobs():
            rng = ranges.get(knob.name)
            rows.append({
                "method": name,
                "summary": cls.summary,
                "knob": knob.name,
                "type": knob.type.__name__,
                "default": knob.default,
                "searched": rng.describe() if rng else "fixed",
                "help": knob.help,
            })
        rows.extend({"method": name, "summary": cls.summary, **row}
                    for row in space.extra_rows(name))  # budget fraction, training overrides
    return rows
