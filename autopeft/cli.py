"""`autopeft` commands: parse, call `autopeft.api`, print. No logic a Python user would need."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from autopeft import api
from autopeft.errors import AutoPeftError, SearchInterrupted
from autopeft.inputs.options import check_folder, check_not_blank
from autopeft.report import fmt
from autopeft.results.portfolio_build import DEFAULT_SIZE, build_portfolio
from autopeft.space.space import FRACTION

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Search parameter-efficient fine-tuning configurations under a stored-parameter budget.",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
portfolio_app = typer.Typer(
    no_args_is_help=True,
    help="Portfolios: the first configurations a search tries (--portfolio FILE).")
app.add_typer(portfolio_app, name="portfolio")  # autopeft portfolio build

Budget = Annotated[str, typer.Option(help="cap on stored params: 0.5%, 0.005, 120k, 1.2M, 120000")]
Model = Annotated[str, typer.Option(help="AutoModelForSequenceClassification id or local path")]
# options `search` and `sweep` share
Methods = Annotated[str | None, typer.Option(help="comma-separated method names")]
SpaceFile = Annotated[str | None, typer.Option(help="search space YAML file")]
Concurrency = Annotated[int | None, typer.Option(
    help="trials running at once (default: as many as the GPUs hold at --gpus-per-trial, "
         "else 1 with every core; with --address, every 1-CPU slot of the cluster)")]
GpusPerTrial = Annotated[float | None, typer.Option(
    help="e.g. 0.25 packs four trials on a GPU; default: 1 if GPUs exist")]
Address = Annotated[str | None, typer.Option(help="Ray cluster address")]
Epochs = Annotated[int | None, typer.Option(
    help="training epochs per trial (default: about 600 optimizer steps, 1 to 10 epochs)")]
MaxTrainSamples = Annotated[int | None, typer.Option(help="subsample train")]
SelectionFraction = Annotated[float, typer.Option(help="train share held out")]
Sampler = Annotated[str, typer.Option(
    help="tpe, nsga2, gp (Gaussian process, logEHVI), random, or qnehvi (BoTorch; "
         "pip install 'autopeft\\[bo]')")]
Scheduler = Annotated[str, typer.Option(
    help="none, or mo-asha: stop trials early by multi-objective successive halving "
         "over epochs (score and stored params); stopped trials are PRUNED")]
ReductionFactor = Annotated[float, typer.Option(
    help="mo-asha's η: about 1/η of the trials at each rung go on (at least 2)")]
GraceEpochs = Annotated[int, typer.Option(
    help="mo-asha's first rung; rungs at grace·η^k epochs, below --epochs")]
FinalSeeds = Annotated[int, typer.Option(
    help="retrain each Pareto point on train+selection with K seeds for its dev numbers "
         "(0: evaluate the trial artifacts instead)")]
FinalTop = Annotated[int | None, typer.Option(
    help="retrain only the K Pareto points with the best selection scores (the others keep "
         "their selection scores, with no dev numbers); default: every point")]
FinalEpochs = Annotated[int | None, typer.Option(
    help="epochs of the final retraining (default: --epochs)")]
TimeBudget = Annotated[str | None, typer.Option(
    metavar="DURATION",
    help="stop proposing trials after this long (45m, 2h, 1h30m, 90s, 600 seconds; --trials "
         "stays a cap); running trials finish, but none runs past a quarter of the budget "
         "(at least a minute) beyond it; then the final runs")]
Portfolio = Annotated[str | None, typer.Option(
    help="YAML of first candidates tried before the sampler (default: the bundled "
         "search_spaces/portfolio.yaml), or none")]
Pooling = Annotated[str, typer.Option(
    help="how the head reads the tokens: auto (mean for sentence-transformers checkpoints "
         "pooled by mean, else the architecture's own), cls, or mean (models with a pooler)")]
FreezePooler = Annotated[bool, typer.Option(
    help="keep the pooler (BERT, DeBERTa-v2) as loaded instead of training it as head")]
DropInvalidRows = Annotated[bool, typer.Option(
    help="train without the data rows that cannot be used (no text, no label, a label the "
         "task does not have, a line that does not parse) instead of refusing the file; the "
         "rows dropped are counted in the report")]


@app.command()
def search(
    budget: Budget,
    task: Annotated[str | None, typer.Option(
        help="GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, ...) or a task file "
             "(my_task.yaml: your own data; see README, Custom tasks)")] = None,
    train: Annotated[str | None, typer.Option(
        help="your own training rows instead of --task: a .csv, .tsv, .jsonl or .parquet "
             "file (or a Hub dataset id), with --text-columns and --label-column")] = None,
    dev: Annotated[str | None, typer.Option(
        help="dev rows in --train's layout (default: 10% of --train carved out, "
             "stratified; dev is never trained or selected on)")] = None,
    text_columns: Annotated[str | None, typer.Option(
        help="one or two text columns of --train, by header name or 0-based position: "
             "title,body or 1")] = None,
    label_column: Annotated[str | None, typer.Option(
        help="the label column of --train, by header name or 0-based position")] = None,
    header: Annotated[bool | None, typer.Option(
        "--header/--no-header",
        help="whether the first line of a CSV/TSV --train names its columns (default: "
             "detected)")] = None,
    problem_type: Annotated[str | None, typer.Option(
        help="binary, multiclass or regression (default: inferred from --train's labels)")
    ] = None,
    metric: Annotated[str | None, typer.Option(
        help="primary metric of a --train task: accuracy, f1, macro_f1, mcc, pearson, "
             "spearman, accuracy_f1_mean, pearson_spearman_mean (default: accuracy, macro_f1, "
             "pearson_spearman_mean for binary, multiclass, regression)")] = None,
    task_name: Annotated[str | None, typer.Option(
        help="name of a --train task (default: from the file name)")] = None,
    model: Model = api.DEFAULT_MODEL,
    data_dir: Annotated[str | None, typer.Option(help="GLUE TSV or CSV/JSONL files")] = None,
    methods: Methods = None,
    space: SpaceFile = None,
    trials: Annotated[int, typer.Option(
        help="trained trials the study holds when done: the same command again finishes an "
             "interrupted search, a larger number extends a finished one")] = 12,
    concurrency: Concurrency = None,
    gpus_per_trial: GpusPerTrial = None,
    study: Annotated[str | None, typer.Option(help="name; same name resumes")] = None,
    storage: Annotated[str | None, typer.Option(help="journal file or RDB URL")] = None,
    address: Address = None,
    seed: int = 0,
    epochs: Epochs = None,
    max_train_samples: MaxTrainSamples = None,
    selection_fraction: SelectionFraction = 0.1,
    batch_size: int = 32,
    sampler: Sampler = "tpe",
    warm_start: Annotated[str | None, typer.Option(
        help="study (same --studies-dir/--storage; any task or model) whose Pareto "
             "configurations are tried first, adapted to this space and budget")] = None,
    scheduler: Scheduler = "none",
    reduction_factor: ReductionFactor = 3,
    grace_epochs: GraceEpochs = 1,
    studies_dir: str = "studies",
    reports_dir: str = "reports",
    trust_remote_code: bool = False,
    portfolio: Portfolio = None,
    pooling: Pooling = "auto",
    freeze_pooler: FreezePooler = False,
    final_seeds: FinalSeeds = 3,
    final_top: FinalTop = None,
    final_epochs: FinalEpochs = None,
    time_budget: TimeBudget = None,
    drop_invalid_rows: DropInvalidRows = False,
) -> None:
    """Find the Pareto front of score vs stored parameters for a task under a budget: a GLUE
    task, a task file, or your own file (--train)."""
    request = api.SearchRequest(**{k: v for k, v in locals().items()})
    result = api.search(request, console=err)
    _print_front(result)


@app.command()
def sweep(
    tasks: Annotated[str, typer.Option(
        help="comma-separated GLUE tasks and task files (mrpc,my_task.yaml); <task>:shuffled "
             "is a shuffled-label control")],
    budgets: Annotated[str, typer.Option(help="comma-separated budgets: 0.1%,0.5%,120k")],
    models: Annotated[str, typer.Option(help="comma-separated model ids or paths")] = (
        api.DEFAULT_MODEL),
    trials: Annotated[int, typer.Option(
        help="trials per study, trials shared from another budget included")] = 12,
    sweep_name: Annotated[str | None, typer.Option(
        "--sweep", help="name; the same name continues the sweep (default: from the grid)")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(
        help="GLUE root holding each task's folder (MRPC/, RTE/, ...)")] = None,
    methods: Methods = None,
    space: SpaceFile = None,
    concurrency: Concurrency = None,
    gpus_per_trial: GpusPerTrial = None,
    address: Address = None,
    seed: int = 0,
    epochs: Epochs = None,
    max_train_samples: MaxTrainSamples = None,
    selection_fraction: SelectionFraction = 0.1,
    batch_size: int = 32,
    sampler: Sampler = "tpe",
    scheduler: Scheduler = "none",
    reduction_factor: ReductionFactor = 3,
    grace_epochs: GraceEpochs = 1,
    reuse: Annotated[bool, typer.Option(
        help="count a trial for every budget of its task and model that it fits")] = True,
    studies_dir: str = "studies",
    reports_dir: str = "reports",
    trust_remote_code: bool = False,
    portfolio: Portfolio = None,
    pooling: Pooling = "auto",
    freeze_pooler: FreezePooler = False,
    final_seeds: FinalSeeds = 3,
    final_top: FinalTop = None,
    final_epochs: FinalEpochs = None,
    time_budget: TimeBudget = None,
    drop_invalid_rows: DropInvalidRows = False,
) -> None:
    """Search every (task, budget, model) of a grid on one Ray cluster; one combined report."""
    values = {k: v for k, v in locals().items() if k != "sweep_name"}
    result = api.sweep(api.SweepRequest(sweep=sweep_name, **values), console=err)
    table = Table("study", "trained", "shared in", "Pareto points", title=f"sweep {result.name}")
    for study in result.studies:
        table.add_row(study.study_name, str(result.launched.get(study.study_name, 0)),
                      str(result.shared.get(study.study_name, 0)), str(len(study.pareto)))
    out.print(table)
    out.print(f"combined report: {result.report_dir}/index.html · manifest: {result.manifest}")


@app.command()
def report(
    study: Annotated[list[str] | None, typer.Option(
        help="study name (a directory under --studies-dir); repeat it to compare studies")
    ] = None,
    sweep_name: Annotated[str | None, typer.Option(
        "--sweep", help="a sweep's name: every study's report and the combined one")] = None,
    storage: Annotated[str | None, typer.Option(help="journal file or RDB URL")] = None,
    studies_dir: str = "studies",
    reports_dir: str = "reports",
    out_dir: Annotated[str | None, typer.Option(
        "--out", help="where to write (default: reports/<study>/, reports/<sweep>/, or "
                      "reports/compare-<a>-vs-<b>/ for several studies)")] = None,
) -> None:
    """(Re)build reports/<study>/ from the stored study alone; several studies: a comparison."""
    check_not_blank({"--storage": storage, "--out": out_dir, "--studies-dir": studies_dir,
                     "--reports-dir": reports_dir})
    check_folder(reports_dir, "--reports-dir")
    check_folder(out_dir, "--out")
    if sweep_name and study:
        raise AutoPeftError("pass either --study (one or more) or --sweep, not both")
    if sweep_name:
        path = api.sweep_report(sweep_name, studies_dir, reports_dir, out_dir)
        out.print(f"sweep report written to {path}/ (open {path}/index.html)")
        return
    if not study:
        raise AutoPeftError("name what to report: --study NAME (repeatable) or --sweep NAME")
    path = api.report(study, storage, studies_dir, reports_dir, out_dir)
    kind = "comparison" if len(set(study)) > 1 else "report"
    out.print(f"{kind} written to {path}/ (open {path}/index.html)")


@app.command()
def budget(
    budget: Budget,
    model: Model = api.DEFAULT_MODEL,
    task: Annotated[str, typer.Option(
        help="sets the head size: a GLUE task or a task file")] = "mrpc",
    trust_remote_code: bool = False,
) -> None:
    """What fits a budget on a model: the cap in params, per method the largest setting."""
    info = api.budget_overview(model, budget, task, trust_remote_code)
    out.print(f"backbone params: {info['backbone_params']:,} · budget {info['budget']}")
    table = Table("method", "variant", "what fits", "stored params")
    for row in info["rows"]:
        table.add_row(row["method"], row["variant"], row["fit"], f"{row['stored_params']:,}")
    out.print(table)


@app.command()
def methods(space: Annotated[str | None, typer.Option(help="search space YAML")] = None) -> None:
    """Registered methods, their knobs, defaults and searched ranges."""
    check_not_blank({"--space": space})
    table = Table("method", "knob", "type", "default", "searched", "meaning")
    last = None
    for row in api.methods_overview(space):
        name = row["method"] if row["method"] != last else ""
        if name:
            table.add_section()
        table.add_row(name, row["knob"], row["type"], str(row["default"]), row["searched"],
                      row["help"])
        last = row["method"]
    out.print(table)


@app.command()
def export(
    destination: Annotated[str, typer.Argument(
        metavar="OUT", help="directory to create (must not exist yet)")],
    study: Annotated[str, typer.Option(help="study name (a directory under --studies-dir)")],
    trial: Annotated[int | None, typer.Option(help="trial number to export")] = None,
    best: Annotated[bool, typer.Option(
        "--best", help="the search's winner: the within-budget Pareto point with the best "
                       "selection score (dev never picks it)")] = False,
    search_artifact: Annotated[bool, typer.Option(
        "--search-artifact", help="export the trial's own search artifact even when the "
                                  "point was retrained on all of train")] = False,
    storage: Annotated[str | None, typer.Option(help="journal file or RDB URL")] = None,
    studies_dir: str = "studies",
) -> None:
    """Copy a trial's trained delta into OUT with a model card and a retraining config."""
    from autopeft.results.export import export_trial

    check_not_blank({"--storage": storage, "--studies-dir": studies_dir})
    done = export_trial(study, destination, trial, best, storage, studies_dir,
                        search_artifact)
    out.print(f"exported trial {done.trial} ({done.method}) from {done.source} to {done.path}/",
              highlight=False)


@app.command()
def predict(
    artifact: Annotated[str, typer.Argument(help="exported or trained artifact directory")],
    input_file: Annotated[str, typer.Option(
        "--input", help="rows in the task's layout: GLUE .tsv, .csv or .jsonl (a custom "
                        "task: its training file's columns, .parquet too); labels optional")],
    output: Annotated[str | None, typer.Option(help="CSV to write (default: stdout)")] = None,
    base_model: Annotated[str | None, typer.Option(
        help="backbone id or path replacing the one recorded in the artifact")] = None,
    batch_size: int = 64,
    trust_remote_code: bool = False,
) -> None:
    """Predict each row of a file: class and class probabilities, or a regression score."""
    from autopeft.artifacts.load import load
    from autopeft.results.predict import check_output, predict_file, write_predictions

    check_not_blank({"--base-model": base_model})
    check_output(output)  # before the model loads and every row is predicted
    loaded = load(artifact, base_model, trust_remote_code)
    result = predict_file(loaded, input_file, batch_size)
    write_predictions(result, output)
    if result.metrics is not None:
        err.print(f"{len(result.frame)} rows; labelled, so scored: "
                  f"{fmt.knobs(result.metrics)}", highlight=False)


@app.command()
def train(
    config: Annotated[str, typer.Option(
        help="YAML/JSON: task, model, data_dir, method, knobs, learning_rate, epochs, "
             "batch_size, seed, ... (autopeft export writes one)")],
    out_dir: Annotated[str | None, typer.Option(
        "--out", help="artifact directory to create (default: "
                      "trained/<task>-<method>-seed<seed>)")] = None,
) -> None:
    """Train one configuration through the search's training path and save its artifact."""
    from autopeft.inputs.names import inside, sanitise
    from autopeft.results.retrain import read_train_config, train_from_config
    from autopeft.tasks.resolve import task_label

    check_not_blank({"--out": out_dir})
    parsed = read_train_config(config)
    # the config's task and method are text from a file: made a name, so it stays in trained/
    target = out_dir or inside("trained", sanitise(
        f"{task_label(parsed.task)}-{parsed.method}-seed{parsed.seed}"))
    path = train_from_config(parsed, target, console=err)
    out.print(f"artifact written to {path}/", highlight=False)


def _print_front(result: api.SearchResult) -> None:
    table = Table("trial", "method", "stored params", "budget used", "selection", "dev",
                  title=f"Pareto front of {result.study_name}")
    for row in result.pareto.itertuples(index=False):
        table.add_row(str(row.trial), row.method, f"{row.stored_params:,}",
                      f"{row.budget_used:.1%}", f"{row.score:.4f}",
                      fmt.dev_score(row.dev_score, row.dev_score_std, row.dev_seeds))
    out.print(table)
    winner = result.winner()
    if winner is not None:
        chance = "" if result.dev_chance is None else (
            f" · a constant prediction scores {result.dev_chance:.4f} on dev")
        out.print(f"winner (best selection score): trial {winner.trial} {winner.method}, "
                  f"{winner.stored_params:,} stored params; dev "
                  f"{fmt.dev_score(winner.dev_score, winner.dev_score_std, winner.dev_seeds)}"
                  f"{chance}", highlight=False)
    out.print(f"{result.infeasible} candidates rejected before training (over the budget, or "
              "storing nothing beyond the head)")
    out.print(f"report: {result.report_dir}/summary.md · artifacts: {result.study_dir}/artifacts/")




@portfolio_app.command("build")
def build_portfolio_command(
    out_file: Annotated[str, typer.Option(
        "--out", help="YAML file to write (must not exist yet)")],
    study: Annotated[list[str] | None, typer.Option(
        help="a finished study to learn from (repeatable; studies of at least 2 tasks)")
    ] = None,
    sweep: Annotated[list[str] | None, typer.Option(
        help="a sweep whose studies to learn from (repeatable)")] = None,
    size: Annotated[int, typer.Option(help="entries of the portfolio (at most)")] = DEFAULT_SIZE,
    studies_dir: str = "studies",
    storage: Annotated[str | None, typer.Option(help="journal file or RDB URL")] = None,
) -> None:
    """Learn a portfolio from finished studies of several tasks (see README: Portfolio)."""
    check_not_blank({"--out": out_file, "--storage": storage, "--studies-dir": studies_dir})
    built = build_portfolio(out_file, study, sweep, size, studies_dir, storage)
    for note in built.notes:
        err.print(f"[yellow]{escape(note)}[/yellow]", highlight=False)
    provenance = built.document["provenance"]
    tasks = provenance["tasks"]
    table = Table("#", "method", "size", "learning rate", "coverage", *tasks,
                  title="scores between chance (0) and each task's best (1); * imputed")
    for number, entry in enumerate(built.document["entries"], start=1):
        size_text = (f"{entry[FRACTION]:.3g} of budget" if FRACTION in entry else "fixed")
        cells = [f"{entry['scores'][t]:.3f}{'*' if t in entry['imputed'] else ''}"
                 for t in tasks]
        table.add_row(str(number), entry["method"], size_text,
                      f"{entry.get('learning_rate', float('nan')):.2g}",
                      f"{entry['coverage']:.3f}", *cells)
    out.print(table)
    out.print(f"portfolio of {len(built.document['entries'])} entries learned from "
              f"{len(provenance['studies'])} studies of {len(tasks)} tasks written to "
              f"{built.path}; use it: autopeft search --portfolio {built.path} ...",
              highlight=False, markup=False)


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit status 2.

    An interrupted search says how to continue and exits 130, as a shell does on Ctrl+C.
    """
    try:
        app(standalone_mode=False)
    except AutoPeftError as exc:
        # one line, whatever the message holds; escaped so "[bo]" etc. print as written
        line = escape(" ".join(str(exc).split()))
        interrupted = isinstance(exc, SearchInterrupted)
        err.print(f"[red]{'interrupted' if interrupted else 'error'}:[/red] {line}",
                  highlight=False, soft_wrap=True, emoji=False)
        sys.exit(130 if interrupted else 2)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click usage errors (Typer >= 0.29 vendors its own click)
        if not isinstance(exc, _usage_error_types()):
            raise
        _show_usage_error(exc)
        sys.exit(2)


def _usage_error_types() -> tuple[type, ...]:
    """click's usage-error base class, and the one of the click copy Typer vendors."""
    import click

    types: list[type] = [click.exceptions.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
        types.append(VendoredClickException)
    except ImportError:
        pass
    return tuple(types)


def _show_usage_error(exc: Exception) -> None:
    """Two lines: the command's usage, then what was wrong and where the help is.

    click's own `show` takes four (usage, help hint, a blank line, the error); a no-argument
    call (`autopeft`, whose `no_args_is_help` raises a usage error) prints the help instead.
    """
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        out.print(ctx.get_help(), highlight=False, markup=False)
        return
    message = " ".join(exc.format_message().split())
    if ctx is not None:
        err.print(ctx.get_usage(), highlight=False, markup=False, emoji=False)
        message += f" (see '{ctx.command_path} --help')"
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True,
              emoji=False)


if __name__ == "__main__":
    main()
