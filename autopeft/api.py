"""The public Python API; the CLI is a thin layer over these functions."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from rich.console import Console

from autopeft import study as records
from autopeft.budget import parse_budget
from autopeft.errors import AutoPeftError, MethodNotApplicable
from autopeft.methods import METHODS, get_method_class, parse_method_list
from autopeft.models import load_tokenizer, resolve_model
from autopeft.report import build_comparison, build_report, comparison_name, pareto_frame
from autopeft.sizing import Sizer
from autopeft.space import SearchSpace, load_space, param_name
from autopeft.tasks import TaskSpec, get_task, load_task_data, selection_split, subsample
from autopeft.warm_start import load_front, warm_start

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class SearchRequest:
    """Everything `autopeft search` accepts; defaults are the CLI's."""

    task: str
    budget: str
    model: str = DEFAULT_MODEL
    data_dir: str | None = None
    methods: str | None = None
    space: str | None = None
    trials: int = 12
    concurrency: int = 1
    gpus_per_trial: float | None = None
    study: str | None = None
    storage: str | None = None
    address: str | None = None
    seed: int = 0
    epochs: int = 1
    max_train_samples: int | None = None
    selection_fraction: float = 0.1
    batch_size: int = 32
    max_length: int = 128
    sampler: str = "tpe"
    warm_start: str | None = None  # a study whose Pareto configurations are tried first
    scheduler: str = "none"  # "mo-asha": stop trials early by multi-objective halving
    reduction_factor: float = 3  # mo-asha's η: about 1/η of a rung's trials go on
    grace_epochs: int = 1  # mo-asha's first rung (epochs)
    studies_dir: str = "studies"
    reports_dir: str = "reports"
    trust_remote_code: bool = False
    final_seeds: int = 3  # retrain each Pareto point with K seeds on train+selection; 0: no
    final_epochs: int | None = None  # None: the search's epochs


@dataclass
class SearchResult:
    study_name: str
    study_dir: Path
    report_dir: Path
    pareto: pd.DataFrame
    infeasible: int
    wall_seconds: float
    skipped_methods: dict[str, str] = field(default_factory=dict)


def search(request: SearchRequest, console: Console | None = None) -> SearchResult:
    """Run (or continue) a study: propose, train and judge candidates, then report the front."""
    # Heavy imports stay here so `autopeft methods`/`report` start fast and without Ray.
    from autopeft.engine.runner import EngineSettings, run_trials
    from autopeft.engine.samplers import check_sampler
    from autopeft.engine.scheduler import check_scheduler
    from autopeft.train.data import SearchData, tokenize_frame
    from autopeft.train.final import FinalSettings, evaluate_front_on_dev, retrain_front
    from autopeft.train.trial import TrialContext

    console = console or Console(stderr=True)
    _check_positive(trials=request.trials, concurrency=request.concurrency,
                    epochs=request.epochs, batch_size=request.batch_size)
    _check_final(request.final_seeds, request.final_epochs)
    task = get_task(request.task)
    budget = parse_budget(request.budget)
    check_sampler(request.sampler)
    warm_front = (load_front(request.warm_start, request.storage, request.studies_dir)
                  if request.warm_start else None)
    check_scheduler(request.scheduler, request.reduction_factor, request.grace_epochs,
                    request.epochs)
    space = load_space(request.space)
    if request.methods:
        space = space.restrict(parse_method_list(request.methods))
    source = resolve_model(request.model, request.trust_remote_code)
    sizer = Sizer(source, task.num_labels)
    backbone = sizer.backbone_params()
    budget_params = budget.params(backbone)
    space, skipped = _feasible_methods(space, sizer, budget_params)
    task_data = load_task_data(task, request.data_dir)
    train, selection = selection_split(task_data.train, task, request.selection_fraction,
                                       request.seed)
    train = subsample(train, request.max_train_samples, request.seed)
    tokenizer = load_tokenizer(source)

    # The study is opened once every input has been checked, so a refused run writes nothing,
    # and before anything is printed, so a damaged or mismatched study is one line too.
    name = request.study or records.default_study_name(task.name, request.model, request.budget)
    study_dir = Path(request.studies_dir) / name
    storage = records.make_storage(request.storage, study_dir)
    setup = records.StudySetup(
        task=task.name,
        model=request.model,
        budget_spec=budget.spec,
        budget_params=budget_params,
        backbone_params=backbone,
        primary_metric=task.primary_metric,
        methods=list(space.methods),
        seed=request.seed,
        selection_fraction=request.selection_fraction,
        epochs=request.epochs,
        max_train_samples=request.max_train_samples,
        data_source=task_data.source,
    )
    study = records.open_study(name, storage, setup)

    console.print(f"budget {budget.describe(backbone)}")
    for method, why in skipped.items():
        console.print(f"[yellow]skipping {method}: {why}[/yellow]")
    data = SearchData(
        tokenizer=tokenizer,
        train=tokenize_frame(train, task.text_columns, tokenizer, request.max_length),
        selection=tokenize_frame(selection, task.text_columns, tokenizer, request.max_length),
    )
    console.print(f"data {task_data.source}: {len(train)} train, {len(selection)} selection "
                  f"(held out of train), {len(task_data.dev)} dev (final numbers only)")
    finished = sum(t.state.is_finished() for t in study.trials)
    if warm_front is not None:
        console.print(warm_start(study, request.warm_start, warm_front, space, sizer,
                                 budget_params).describe())
    _enqueue_uncovered_methods(study, space, sizer, budget_params)
    console.print(f"study '{name}' ({finished} finished trials so far) → adding "
                  f"{request.trials} trained trials")

    context = TrialContext(
        model=source,
        task=task.name,
        budget_params=budget_params,
        epochs=request.epochs,
        batch_size=request.batch_size,
        seed=request.seed,
        study_dir=str(study_dir.resolve()),
    )
    settings = EngineSettings(
        trials=request.trials,
        concurrency=request.concurrency,
        gpus_per_trial=request.gpus_per_trial,
        address=request.address,
        seed=request.seed,
        sampler=request.sampler,
        scheduler=request.scheduler,
        reduction_factor=request.reduction_factor,
        grace_epochs=request.grace_epochs,
    )
    outcome = run_trials(study, space, sizer, budget_params, data, context, settings,
                         study_dir / "ray")

    dev = tokenize_frame(task_data.dev, task.text_columns, tokenizer, request.max_length)
    if request.final_seeds:  # honest final numbers: retrain on all of train, K seeds
        full_train = subsample(task_data.train, request.max_train_samples, request.seed)
        final = FinalSettings(seeds=request.final_seeds, epochs=request.final_epochs)
        retrain_front(study, tokenize_frame(full_train, task.text_columns, tokenizer,
                                            request.max_length),
                      dev, tokenizer, context, final, console)
    else:  # the trial artifacts themselves, trained without the selection split
        evaluate_front_on_dev(study, study_dir, dev, tokenizer, task, request.trust_remote_code)
    report_dir = build_report(study, Path(request.reports_dir) / name)
    return SearchResult(
        study_name=name,
        study_dir=study_dir,
        report_dir=report_dir,
        pareto=pareto_frame(study),
        infeasible=outcome.infeasible,
        wall_seconds=outcome.wall_seconds,
        skipped_methods=skipped,
    )


def report(study: str | list[str], storage: str | None = None, studies_dir: str = "studies",
           reports_dir: str = "reports", out: str | None = None) -> Path:
    """Rebuild `reports/<study>/` from the stored study alone (no training, no Ray).

    Several studies (any tasks, models, budgets) also get a comparison, in `out` or
    `reports/compare-<a>-vs-<b>/`, linking each study's own report (rebuilt as well). Returns
    the single study's report directory, or the comparison's.
    """
    names = list(dict.fromkeys([study] if isinstance(study, str) else study))
    if not names:
        raise AutoPeftError("name at least one study to report")
    loaded = [_stored_study(name, storage, studies_dir) for name in names]
    if len(names) == 1:
        return build_report(loaded[0], Path(out) if out else Path(reports_dir) / names[0])
    own = [build_report(s, Path(reports_dir) / name) for s, name in zip(loaded, names, strict=True)]
    target = Path(out) if out else Path(reports_dir) / comparison_name(names)
    return build_comparison(loaded, own, target)


def _stored_study(name: str, storage: str | None, studies_dir: str) -> optuna.Study:
    """An existing study by name; a one-line error naming the studies there are otherwise."""
    study_dir = Path(studies_dir) / name
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
    spec: TaskSpec = get_task(task)
    parsed = parse_budget(budget)
    sizer = Sizer(resolve_model(model, trust_remote_code), spec.num_labels)
    backbone = sizer.backbone_params()
    cap = parsed.params(backbone)
    rows = []
    for name, cls in METHODS.items():
        knobs = cls.config_class.knobs()
        int_size = [k for k in knobs if k.affects_size and k.type is int and not k.choices]
        enum_size = [k for k in knobs if k.affects_size and k.choices]
        variants = [dict(zip([k.name for k in enum_size], combo, strict=True))
                    for combo in itertools.product(*[k.choices for k in enum_size])] or [{}]
        for fixed in variants:
            label = ", ".join(f"{k}={v}" for k, v in fixed.items())
            if _stored_or_none(sizer, name, fixed) is None:
                continue  # not applicable to this model
            if int_size:
                knob = int_size[0]
                end, best = sizer.fitting_bound(name, knob.name, cap, **fixed)
                if best is None:
                    stored = sizer.measure(name, {**fixed, knob.name: 1}).stored_params
                    fit = f"does not fit at any {knob.name}"
                else:
                    stored = sizer.measure(name, {**fixed, knob.name: best}).stored_params
                    fit = f"{end} {knob.name}={best}"
            else:
                stored = sizer.measure(name, fixed).stored_params
                fit = "fits" if stored <= cap else "does not fit"
            rows.append({"method": name, "variant": label, "fit": fit, "stored_params": stored})
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


# --- helpers ---------------------------------------------------------------------------------
def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise AutoPeftError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")


def _check_final(seeds: int, epochs: int | None) -> None:
    if seeds < 0:
        raise AutoPeftError(f"--final-seeds must be 0 (no retraining) or more (got {seeds})")
    if epochs is not None:
        _check_positive(final_epochs=epochs)


def _size_extremes(space: SearchSpace, method: str) -> list[dict[str, Any]]:
    """Candidates with every size knob at an end of its searched range (each enum choice).

    Both ends, since a larger value may store less (e.g. more dropped adapter layers).
    """
    ranges = space.methods[method]
    size_knobs = [k for k in get_method_class(method).config_class.knobs() if k.affects_size]
    options = []
    for knob in size_knobs:
        rng = ranges.get(knob.name)
        if rng is None:
            options.append([knob.default])
        elif rng.choices is not None and knob.type in (int, float):
            options.append(sorted({min(rng.choices), max(rng.choices)}))
        elif rng.choices is not None:
            options.append(list(rng.choices))
        else:
            options.append([rng.type(rng.low), rng.type(rng.high)])
    names = [k.name for k in size_knobs]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*options)]


def _fits(stored: int | None, budget: int) -> bool:
    return stored is not None and stored <= budget


def _stored_or_none(sizer: Sizer, method: str, knobs: dict[str, Any]) -> int | None:
    """The candidate's stored count; None when it cannot apply to this model."""
    try:
        return sizer.measure(method, knobs).stored_params
    except MethodNotApplicable:
        return None


def _feasible_methods(space: SearchSpace, sizer: Sizer, budget: int
                      ) -> tuple[SearchSpace, dict[str, str]]:
    """Drop methods that cannot fit the budget at all or cannot apply to the model, saying why."""
    keep, skipped, minimum = [], {}, {}
    for method in space.methods:
        sizes = [_stored_or_none(sizer, method, v) for v in _size_extremes(space, method)]
        if all(size is None for size in sizes):
            try:  # say why, in the method's own words
                sizer.measure(method, _size_extremes(space, method)[0])
            except MethodNotApplicable as exc:
                skipped[method] = str(exc)
            continue
        minimum[method] = smallest = min(size for size in sizes if size is not None)
        if smallest <= budget:
            keep.append(method)
        else:
            skipped[method] = (f"its smallest candidate stores {smallest:,} params, "
                               f"over the budget of {budget:,}")
    if not keep:
        mins = ", ".join(f"{m} {n:,}" for m, n in sorted(minimum.items(), key=lambda kv: kv[1]))
        other = "; ".join(f"{m}: {w}" for m, w in skipped.items() if m not in minimum)
        raise AutoPeftError(
            f"no method fits the budget of {budget:,} params; the least each method stores on "
            f"this model (params): {mins or 'none'}"
            + (f"; not applicable: {other}" if other else "")
            + (f"; accepted: a budget of at least {min(minimum.values()):,} params"
               if minimum else "")
        )
    return space.restrict(keep), skipped


def _enqueue_uncovered_methods(study, space: SearchSpace, sizer: Sizer, budget: int) -> None:
    """Each allowed method is tried once (at its defaults) before the sampler takes over."""
    covered = {t.params.get("method") for t in study.trials
               if t.user_attrs.get(records.ATTR_STATUS) != records.STATUS_INFEASIBLE}
    space = space.for_budget(sizer, budget)  # knobs fit to the budget are derived from it
    for method in space.methods:
        if method in covered:
            continue
        params = space.default_params(method)
        knobs = space.resolve(params)["knobs"]
        if not _fits(_stored_or_none(sizer, method, knobs), budget):
            fitting = [v for v in _size_extremes(space, method)
                       if _fits(_stored_or_none(sizer, method, {**knobs, **v}), budget)]
            params.update({param_name(method, k): v for k, v in fitting[0].items()
                           if param_name(method, k) in params})  # derived knobs stay derived
        study.enqueue_trial(params, skip_if_exists=True)

