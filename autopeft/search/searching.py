"""One study's life around its trials: check the inputs and open the study, then, once the
trials ran, the honest final numbers and the report.

`api.search` runs one study's trials on Ray; `sweep.run_sweep` prepares many studies the same
way and runs their trials together. Tokenised data, tokenizers and sizers are kept in a
`SharedInputs` so studies of the same (task, model) prepare them once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from rich.console import Console
from rich.markup import escape

from autopeft import study as records
from autopeft.backbones.head import HeadSettings, resolve_head
from autopeft.backbones.models import (
    build_meta_model,
    check_trainable,
    load_tokenizer,
    resolve_model,
)
from autopeft.inputs import names
from autopeft.inputs.durations import parse_time_budget
from autopeft.inputs.options import check_options
from autopeft.methods import parse_method_list
from autopeft.report import build_report, pareto_frame
from autopeft.report.tables import AT_CHANCE_NOTE, DEV_NOTE, best_point
from autopeft.search.portfolio import enqueue_portfolio, load_portfolio
from autopeft.search.seeding import enqueue_uncovered_methods
from autopeft.search.warm_start import load_front, warm_start
from autopeft.space.budget import parse_budget
from autopeft.space.fitting import feasible_methods
from autopeft.space.sizing import Sizer
from autopeft.space.space import SearchSpace, load_space
from autopeft.tasks import (
    TaskData,
    TaskSpec,
    chance_score,
    check_split_sizes,
    custom_record,
    load_task_data,
    record_of,
    selection_cap,
    selection_split,
    subsample,
    task_of_request,
)
from autopeft.tasks.rows import held_warnings
from autopeft.train.length import default_epochs

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(kw_only=True)
class RunSettings:
    """How trials are proposed, trained and judged: what `search` and `sweep` share."""

    data_dir: str | None = None
    methods: str | None = None
    space: str | None = None
    concurrency: int | None = None  # None: 1 locally, every trial slot of a cluster
    gpus_per_trial: float | None = None
    address: str | None = None
    seed: int = 0
    epochs: int | None = None  # None: about 600 optimizer steps (`train.length`)
    max_train_samples: int | None = None
    selection_fraction: float = 0.1
    batch_size: int = 32
    max_length: int = 128
    sampler: str = "tpe"
    scheduler: str = "none"  # "mo-asha": stop trials early by multi-objective halving
    reduction_factor: float = 3  # mo-asha's η: about 1/η of a rung's trials go on
    grace_epochs: int = 1  # mo-asha's first rung (epochs)
    studies_dir: str = "studies"
    reports_dir: str = "reports"
    trust_remote_code: bool = False
    portfolio: str | None = None  # first candidates: None the bundled file, "none", or a path
    pooling: str = "auto"  # head.POOLINGS: auto (mean for sentence-transformers models), cls, mean
    freeze_pooler: bool = False  # keep the pooler as loaded instead of training it as head
    final_seeds: int = 3  # retrain each Pareto point with K seeds on train+selection; 0: no
    final_top: int | None = None  # retrain only the K best Pareto points by selection score
    final_epochs: int | None = None  # None: the search's epochs
    time_budget: str | None = None  # "45m", "2h", "1h30m", "600": no trial starts after it
    drop_invalid_rows: bool = False  # train without invalid data rows (counted in the report)


@dataclass(kw_only=True)
class SearchRequest(RunSettings):
    """Everything `autopeft search` accepts; defaults are the CLI's.

    The task is `task` (a GLUE name, a task file, or a task mapping as in a task file), or
    `train` with the fields after it describing that file (`tasks.custom`).
    """

    budget: str
    task: str | dict | None = None
    model: str = DEFAULT_MODEL
    trials: int = 12
    study: str | None = None
    storage: str | None = None
    warm_start: str | None = None  # a study whose Pareto configurations are tried first
    train: str | None = None  # a custom task's training rows: a file, or a Hub dataset id
    dev: str | None = None  # its dev rows (default: carved from train)
    text_columns: str | None = None  # "title,body" or "1": one or two, by name or position
    label_column: str | None = None
    header: bool | None = None  # CSV/TSV: whether the first line names the columns (detected)
    problem_type: str | None = None  # binary, multiclass or regression (inferred)
    metric: str | None = None  # the primary metric (default per problem type)
    task_name: str | None = None  # default: from the file name


@dataclass
class SearchResult:
    study_name: str
    study_dir: Path
    report_dir: Path
    pareto: pd.DataFrame
    infeasible: int
    wall_seconds: float
    skipped_methods: dict[str, str] = field(default_factory=dict)
    dev_chance: float | None = None  # what always answering one label scores on dev

    def winner(self) -> pd.Series | None:
        """The answer (`report.best_point`, as `export --best`); None when no point learned
        anything (every one at chance)."""
        best = best_point(self.pareto)
        return None if best is None or best.get(DEV_NOTE) == AT_CHANCE_NOTE else best


@dataclass
class TaskInputs:
    """A (task, model)'s data, tokenised once: what every study of that pair trains on."""

    task_data: TaskData
    tokenizer: Any
    search_data: Any  # train.data.SearchData: train and selection, tokenised
    train_rows: int
    selection_rows: int
    warnings: list[str] = field(default_factory=list)  # rows dropped, said once accepted


@dataclass
class SharedInputs:
    """Inputs prepared once and shared by every study that needs them (a sweep's studies)."""

    sizers: dict[tuple, Sizer] = field(default_factory=dict)
    tasks: dict[tuple, TaskInputs] = field(default_factory=dict)


@dataclass
class PreparedStudy:
    """A study opened with every input checked, ready for its trials to run."""

    request: SearchRequest
    task: TaskSpec
    name: str
    study: optuna.Study
    study_dir: Path
    space: SearchSpace  # bound to the budget: it holds the sizer and the budget in params
    inputs: TaskInputs
    inputs_key: tuple
    context: Any  # train.trial.TrialContext
    skipped: dict[str, str]

    @property
    def budget_params(self) -> int:
        return self.space.budget


@dataclass
class CheckedRequest:
    """A request whose every input was checked and loaded; nothing written yet."""

    request: SearchRequest
    task: TaskSpec
    budget: Any  # budget.Budget
    backbone_params: int
    space: SearchSpace  # bound to the budget: it holds the sizer and the budget in params
    source: Any  # models.ModelSource
    skipped: dict[str, str]
    inputs: TaskInputs
    inputs_key: tuple
    warm_front: list | None
    head: HeadSettings = field(default_factory=HeadSettings)
    portfolio: list = field(default_factory=list)  # portfolio.Entry, tried first
    task_note: str = ""  # a custom task: what was given and what inferred, said first

    @property
    def budget_params(self) -> int:
        return self.space.budget

    @property
    def study_name(self) -> str:
        return names.check_name(self.request.study or records.default_study_name(
            self.task.name, self.request.model, self.request.budget), "--study")


def check_request(request: SearchRequest, shared: SharedInputs | None = None) -> CheckedRequest:
    """Check every input and load (or reuse from `shared`) the data; writes and prints nothing
    (a refused run is its error line alone)."""
    from autopeft.engine.samplers import check_sampler
    from autopeft.engine.scheduler import check_scheduler

    shared = shared if shared is not None else SharedInputs()
    for flag, name in (("--study", request.study), ("--warm-start", request.warm_start)):
        if name is not None:  # a name, never a path: refused before anything is loaded
            names.check_name(name, flag)
    check_options(request)  # --trials too
    task, task_note = task_of_request(request)
    budget = parse_budget(request.budget)
    check_sampler(request.sampler)
    warm_front = (load_front(request.warm_start, request.storage, request.studies_dir)
                  if request.warm_start else None)
    if request.epochs is not None:
        check_scheduler(request.scheduler, request.reduction_factor, request.grace_epochs,
                        request.epochs)
    space = load_space(request.space)
    portfolio = load_portfolio(request.portfolio)
    if request.methods:
        space = space.restrict(parse_method_list(request.methods))
    source = resolve_model(request.model, request.trust_remote_code)
    sizer_key = (request.model, request.trust_remote_code, task.num_labels)
    if sizer_key not in shared.sizers:  # once per model, however many cells a sweep has
        check_trainable(source)
        shared.sizers[sizer_key] = Sizer(source, task.num_labels)
    sizer = shared.sizers[sizer_key]
    head = resolve_head(request.pooling, request.freeze_pooler, source.location,
                        build_meta_model(source, task.num_labels))
    backbone = sizer.backbone_params()
    budget_params = budget.params(backbone)
    space, skipped = feasible_methods(space, sizer, budget_params)
    space = space.for_budget(sizer, budget_params)
    record = record_of(task)  # a custom task by its whole mapping: two may share a name
    inputs_key = (record if isinstance(record, str) else repr(record), request.model,
                  request.data_dir, request.max_train_samples, request.seed,
                  request.selection_fraction, request.max_length, request.drop_invalid_rows)
    if inputs_key not in shared.tasks:
        shared.tasks[inputs_key] = _task_inputs(task, request, source)
    if request.epochs is None:  # what the data needs (train.length), now that its size is known
        epochs = default_epochs(shared.tasks[inputs_key].train_rows, request.batch_size)
        check_scheduler(request.scheduler, request.reduction_factor, request.grace_epochs, epochs)
        request = dataclasses.replace(request, epochs=epochs)
    return CheckedRequest(request, task, budget, backbone, space, source, skipped,
                          shared.tasks[inputs_key], inputs_key, warm_front, head, portfolio,
                          task_note)


def study_setup_of(checked: CheckedRequest) -> records.StudySetup:
    """What the study of a checked request is made for (a resumed study must match it)."""
    request, inputs = checked.request, checked.inputs
    return records.StudySetup(
        task=checked.task.name,
        model=request.model,
        budget_spec=checked.budget.spec,
        budget_params=checked.budget_params,
        backbone_params=checked.backbone_params,
        primary_metric=checked.task.primary_metric,
        methods=list(checked.space.methods),
        seed=request.seed,
        selection_fraction=request.selection_fraction,
        epochs=request.epochs,
        max_train_samples=request.max_train_samples,
        data_source=inputs.task_data.source,
        batch_size=request.batch_size,
        max_length=request.max_length,
        head=checked.head.describe(),
        space=checked.space.signature(),
        dropped_rows=dict(inputs.task_data.dropped) if request.drop_invalid_rows else None,
        task_spec=custom_record(checked.task),
    )


def check_resumable(checked: CheckedRequest) -> None:
    """Refuse, writing nothing, a request whose existing study was made for something else."""
    request = checked.request
    records.check_resumable(checked.study_name, request.storage,
                            names.inside(request.studies_dir, checked.study_name),
                            study_setup_of(checked))


def open_checked(checked: CheckedRequest, console: Console,
                 skip_coverage: set[str] | None = None) -> PreparedStudy:
    """Open (or resume) the study of a checked request and enqueue its first candidates.

    Each method is tried once at its defaults first, except those in `skip_coverage` (a sweep's
    smaller budget tries them and shares the trial).
    """
    from autopeft.train.trial import TrialContext

    request, task, inputs = checked.request, checked.task, checked.inputs
    # Opened before anything is printed, so a damaged or mismatched study is one line too.
    name = checked.study_name
    study_dir = names.inside(request.studies_dir, name)
    storage = records.make_storage(request.storage, study_dir)
    study = records.open_study(name, storage, study_setup_of(checked))

    if checked.task_note:  # the first line: what the task is, what was inferred
        console.print(checked.task_note, highlight=False, markup=False)
    for warning in inputs.warnings:  # held while the data loaded: the run is accepted now
        console.print(f"[yellow]{escape(warning)}[/yellow]", highlight=False)
    console.print(f"budget {checked.budget.describe(checked.backbone_params)}")
    head = checked.head
    console.print(f"head (trained by every method, not charged): classifier"
                  f"{' + pooler' if head.train_pooler else ' (pooler frozen)'}, "
                  f"{head.pooling} pooling")
    for method, why in checked.skipped.items():
        console.print(f"[yellow]skipping {method}: {why}[/yellow]")
    console.print(f"data {inputs.task_data.source}: {inputs.train_rows} train, "
                  f"{inputs.selection_rows} selection (held out of train), "
                  f"{len(inputs.task_data.dev)} dev (final numbers only)")
    if checked.warm_front is not None:
        console.print(warm_start(study, request.warm_start, checked.warm_front, checked.space,
                                 checked.space.sizer, checked.budget_params).describe())
    known = enqueue_portfolio(study, checked.space, checked.space.sizer, checked.budget_params,
                              skip=skip_coverage or set(), entries=checked.portfolio)
    if known:
        where = request.portfolio or "search_spaces/portfolio.yaml"
        console.print(f"portfolio: {known} known-good configuration(s) first ({where}), "
                      "then the sampler", highlight=False)
    enqueue_uncovered_methods(study, checked.space, checked.space.sizer, checked.budget_params,
                              skip=skip_coverage or set())
    context = TrialContext(
        model=checked.source,
        task=record_of(task),
        budget_params=checked.budget_params,
        epochs=request.epochs,
        batch_size=request.batch_size,
        seed=request.seed,
        study_dir=str(study_dir.resolve()),
        head=checked.head,
    )
    return PreparedStudy(request, task, name, study, study_dir, checked.space, inputs,
                         checked.inputs_key, context,
                         checked.skipped)


def prepare_study(request: SearchRequest, console: Console,
                  shared: SharedInputs | None = None) -> PreparedStudy:
    """Check every input, then open (or resume) the study; a refused run writes nothing."""
    return open_checked(check_request(request, shared), console)


def finish_study(prepared: PreparedStudy, console: Console, infeasible: int = 0,
                 wall_seconds: float = 0.0, settings: Any = None) -> SearchResult:
    """Final numbers for the Pareto points (retrained with K seeds, or as trained), the report."""
    final_numbers(prepared, console, settings)
    return report_study(prepared, infeasible, wall_seconds)


def final_numbers(prepared: PreparedStudy, console: Console, settings: Any = None) -> None:
    """Dev numbers for the Pareto points: retrained with K seeds, or the trials' own artifacts.

    With the engine's `settings` the final runs are Ray tasks on the search's cluster, side by
    side; without, they run one after another in this process.
    """
    if prepared.request.final_seeds:
        run_final_plans([plan_final(prepared, console, settings)], console, settings)
    else:
        evaluate_as_trained(prepared)


def plan_final(prepared: PreparedStudy, console: Console, settings: Any = None,
               skip: frozenset[int] = frozenset()) -> Any:
    """The study's final runs still to do (`train.final.FinalPlan`), its front but `skip`."""
    from autopeft.train.final import FinalSettings, plan_front

    request, inputs = prepared.request, prepared.inputs
    full_train = subsample(inputs.task_data.train, request.max_train_samples, request.seed)
    final = FinalSettings(seeds=request.final_seeds, epochs=request.final_epochs,
                          top=request.final_top)
    where = ("as Ray tasks beside each other" if settings is not None
             else "one at a time in this process")
    return plan_front(prepared.study, _tokenized(prepared, full_train),
                      _tokenized(prepared, inputs.task_data.dev), inputs.tokenizer,
                      prepared.context, final, console, where, skip)


def run_final_plans(plans: list[Any], console: Console, settings: Any = None) -> int:
    """Do the planned final runs: on the Ray cluster with the engine's `settings`, else here."""
    from autopeft.train.final import in_process, run_plans

    execute = in_process
    if settings is not None:
        from autopeft.engine.final_runs import on_ray

        execute = on_ray(settings)
    return run_plans(plans, console, execute)


def evaluate_as_trained(prepared: PreparedStudy) -> None:
    """`--final-seeds 0`: each Pareto point's trial artifact (trained without the selection
    split) scored on dev."""
    from autopeft.train.final import evaluate_front_on_dev

    evaluate_front_on_dev(prepared.study, prepared.study_dir,
                          _tokenized(prepared, prepared.inputs.task_data.dev),
                          prepared.inputs.tokenizer, prepared.task,
                          prepared.request.trust_remote_code)


def _tokenized(prepared: PreparedStudy, frame: pd.DataFrame) -> Any:
    from autopeft.train.data import tokenize_frame

    return tokenize_frame(frame, prepared.task.text_columns, prepared.inputs.tokenizer,
                          prepared.request.max_length)


def report_study(prepared: PreparedStudy, infeasible: int = 0,
                 wall_seconds: float = 0.0) -> SearchResult:
    """Build the study's report from its storage; the search's result."""
    report_dir = build_report(prepared.study,
                              names.inside(prepared.request.reports_dir, prepared.name))
    return SearchResult(
        study_name=prepared.name,
        study_dir=prepared.study_dir,
        report_dir=report_dir,
        pareto=pareto_frame(prepared.study),
        infeasible=infeasible,
        wall_seconds=wall_seconds,
        skipped_methods=prepared.skipped,
        dev_chance=chance_score(prepared.task, prepared.inputs.task_data.dev["label"]),
    )


def _task_inputs(task: TaskSpec, request: SearchRequest, source: Any) -> TaskInputs:
    from autopeft.train.data import SearchData, tokenize_frame

    with held_warnings() as warnings:
        task_data = load_task_data(task, request.data_dir, request.drop_invalid_rows)
    rows = len(task_data.train)
    trained_on = min(rows - int(rows * request.selection_fraction),
                     request.max_train_samples or rows)
    train, selection = selection_split(task_data.train, task, request.selection_fraction,
                                       request.seed, max_rows=selection_cap(trained_on))
    train = subsample(train, request.max_train_samples, request.seed)
    check_split_sizes(task, train, selection)
    tokenizer = load_tokenizer(source)
    data = SearchData(
        tokenizer=tokenizer,
        train=tokenize_frame(train, task.text_columns, tokenizer, request.max_length),
        selection=tokenize_frame(selection, task.text_columns, tokenizer, request.max_length),
    )
    return TaskInputs(task_data, tokenizer, data, len(train), len(selection), warnings)


def engine_settings(run: RunSettings, trials: int) -> Any:
    """The engine's settings (`engine.runner.EngineSettings`) for `trials` trials of `run`."""
    from autopeft.engine.runner import EngineSettings

    return EngineSettings(
        trials=trials, concurrency=run.concurrency, gpus_per_trial=run.gpus_per_trial,
        address=run.address, seed=run.seed, sampler=run.sampler, scheduler=run.scheduler,
        reduction_factor=run.reduction_factor, grace_epochs=run.grace_epochs,
        time_budget_s=parse_time_budget(run.time_budget))
