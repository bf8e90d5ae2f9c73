"""Every command and option of the CLI, given invalid values, is refused the same way: exit
status 2, at most 3 lines on stderr (only the usage line before the error line), no traceback,
and no file or folder created in the working directory.

The table of cases is generated from the CLI's own parameter list (Typer's click commands), so
a new option shows up here: `test_every_option_of_every_command_is_classified` fails until
ACCEPTED says what it takes, and with that it gets its invalid values. Numbers get a
non-number and the first values outside their range; texts their BAD_TEXT values; flags,
which take no value, `--flag=yes`. Every other option of the command gets a valid value, so
the one bad value is what is refused, and the error line has to say so (NEEDLE: the flag, or
the message naming the bad value).

Each run goes through `cli.main` in-process, its error handling included, in a temporary
working directory holding a study (`s`), a train config and a file (`afile`) that bad paths
point into; `--studies-dir`/`--reports-dir` stay at their relative defaults, so anything a
refused run wrote would show up in the listing. The hypothesis tests at the end throw random
budgets, study names and numbers at the parsers, `options.check_options` and the CLI.
tests/test_cli.py runs the installed entry point once per command.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import typing
from pathlib import Path

import optuna
import pytest
import typer
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from autopeft import cli
from autopeft import study as records
from autopeft.errors import AutoPeftError
from autopeft.inputs import names
from autopeft.inputs.options import MAX_SEED, check_options
from autopeft.search.searching import SearchRequest
from autopeft.space.budget import Budget, parse_budget
from tests.helpers import assert_refused, listing, run_main


def _runnable(group) -> dict:
    """Every command that runs, by its path: a group's subcommands as "portfolio build"."""
    found = {}
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None)
        if subcommands:
            found.update({f"{name} {sub}": leaf for sub, leaf in subcommands.items()})
        else:
            found[name] = command
    return found


COMMANDS = _runnable(typer.main.get_command(cli.app))
HUGE = "9" * 400  # float() says inf for it
STUDY = "s"  # the study in the working directory (one finished trial, no artifact)

# What each option accepts, by `command.option` or, shared by every command, `option` (the
# parameter's name). Numbers in a form `_outside`/`_accepts` read: ">= N", "A..B", "(A, B)"
# (open) and, for GPU shares, ">= 0, a fraction <= 1 or whole"; every other entry is read by
# no code: texts get their invalid values from BAD_TEXT, flags are "flag".
ACCEPTED: dict[str, str] = {
    # numbers (search and sweep: autopeft.inputs.options.check_options)
    "trials": ">= 1",
    "concurrency": ">= 1",
    "epochs": ">= 1",
    "max_train_samples": ">= 1",
    "batch_size": ">= 1",
    "grace_epochs": ">= 1",
    "final_epochs": ">= 1",
    "final_seeds": ">= 0",
    "final_top": ">= 1",
    "seed": "0..2**31-1",
    "selection_fraction": "(0, 1)",
    "reduction_factor": ">= 2",
    "gpus_per_trial": ">= 0, a fraction <= 1 or whole",
    "export.trial": ">= 0",  # and a trial the study has
    # texts that name a choice, a thing that must exist, or a place to write
    "task": "a GLUE task (cola, sst2, mrpc, ...), <task>:shuffled, or a task file (.yaml)",
    "search.train": "a .csv, .tsv, .jsonl or .parquet file, or a Hub dataset id",
    "search.dev": "a file like --train (only with --train)",
    "search.text_columns": "one or two columns of --train, by name or 0-based position",
    "search.label_column": "a column of --train, by name or 0-based position",
    "search.problem_type": "binary, multiclass or regression (only with --train)",
    "search.metric": "a metric of the --train task's problem type",
    "search.task_name": "a name (only with --train)",
    "search.header": "flag",
    "budget": "0.5%, a fraction below 1, or a count (120k, 1.2M, 120000)",
    "model": "a model folder or a Hub id",
    "data_dir": "a folder with the task's train/dev files",
    "sweep.data_dir": "a GLUE root with a folder per task",
    "methods": "comma-separated registered method names",
    "space": "a search space YAML file",
    "study": "a name (letters, digits, '-', '_', '.')",
    "report.study": "names of stored studies",
    "export.study": "the name of a stored study",
    "storage": "a journal file or an RDB URL",
    "address": "auto, local, HOST:PORT or ray://HOST:PORT",
    "sampler": "tpe, nsga2, gp, random, qnehvi",
    "warm_start": "the name of a stored study",
    "scheduler": "none or mo-asha",
    "studies_dir": "a folder (created if missing)",
    "reports_dir": "a folder (created if missing)",
    "portfolio": "a portfolio YAML file, or none",
    "pooling": "auto, cls or mean",
    "time_budget": "a duration above 0: 600, 90s, 45m, 2h, 1h30m",
    "sweep.tasks": "comma-separated tasks",
    "sweep.budgets": "comma-separated budgets",
    "sweep.models": "comma-separated models",
    "sweep.sweep_name": "a name",
    "report.sweep_name": "the name of a stored sweep",
    "report.out_dir": "a folder (created if missing)",
    "export.destination": "a folder that does not exist yet",
    "predict.artifact": "an artifact folder (autopeft_config.json)",
    "predict.input_file": "a .tsv, .csv or .jsonl file of rows",
    "predict.output": "a CSV file to write",
    "predict.base_model": "the backbone the artifact was trained on",
    "train.config": "a YAML/JSON train config file",
    "train.out_dir": "a folder that does not exist yet",
    "portfolio build.out_file": "a YAML file to write (not there yet, in an existing folder)",
    "portfolio build.study": "names of stored studies",
    "portfolio build.sweep": "names of stored sweeps",
    "portfolio build.size": ">= 1",
    # flags: no value to get wrong (`--flag=yes` is a usage error)
    "trust_remote_code": "flag",
    "freeze_pooler": "flag",
    "drop_invalid_rows": "flag",
    "reuse": "flag",
    "export.best": "flag",
    "export.search_artifact": "flag",
}

NOT_NAME = "is not a usable name"
_BUDGETS = [("abc", "invalid budget 'abc'"), ("0", "budget '0' must be positive"),
            ("150%", "budget '150%' is over 100%"), ("-1", "invalid budget '-1'"),
            ("1.5", "is not a whole number of parameters"),
            ("0.0000001%", "less than one parameter of this model's")]
_MODELS = [("nobody/no-such-model", "cannot load model 'nobody/no-such-model'"),
           ("", "cannot load model ''")]
_FOLDERS = [("afile", "'afile' is a file"), ("afile/sub", "'afile/sub' is inside 'afile', a file")]
_NAMES = [("../x", f"'../x' {NOT_NAME}"), ("", f"'' {NOT_NAME}"), ("a/b", f"'a/b' {NOT_NAME}")]

# Invalid values of the text options, each with what its error line must contain.
BAD_TEXT: dict[str, list[tuple[str, str]]] = {
    "task": [("mrcp", "unknown task 'mrcp'"), ("", "unknown task ''"),
             ("missing.yaml", "task file 'missing.yaml' not found")],
    # with --task mrpc (the valid context) a --train file's options are refused as such; --train
    # itself replaces --task and --data-dir (DROPPED)
    "search.train": [("missing.csv", "--train file 'missing.csv' does not exist"),
                     ("afile", "--train 'afile': unrecognised file format 'no extension'"),
                     ("rows.xlsx", "unrecognised file format '.xlsx'"),
                     ("", "--train is empty")],
    "search.dev": [("dev.csv", "--dev describes a --train file"), ("", "--dev is empty")],
    "search.text_columns": [("1", "--text-columns describes a --train file"),
                            ("", "--text-columns is empty")],
    "search.label_column": [("0", "--label-column describes a --train file"),
                            ("", "--label-column is empty")],
    "search.problem_type": [("ordinal", "--problem-type describes a --train file"),
                            ("", "--problem-type is empty")],
    "search.metric": [("bleu", "--metric describes a --train file"), ("", "--metric is empty")],
    "search.task_name": [("a/b", "--task-name describes a --train file"),
                         ("", "--task-name is empty")],
    "budget": [*_BUDGETS, (HUGE, "budget")],
    "model": _MODELS,
    "data_dir": [("missing", "'missing' is not a directory"), ("afile", "'afile' is not a "
                 "directory"), ("", "--data-dir is empty")],
    "sweep.data_dir": [("missing", "'missing' is not a directory"), ("", "--data-dir is empty")],
    "methods": [("lora,adaptr", "unknown method 'adaptr'"), ("", "--methods is empty"),
                (",", "--methods ',' names no method")],
    "space": [("missing.yaml", "search space file 'missing.yaml' not found"),
              ("afile", "afile: expected a mapping"), ("", "--space is empty"),
              (".", "search space file '.' not found")],
    "study": [(name, f"--study {needle}") for name, needle in _NAMES],
    "report.study": [*[(name, f"--study {needle}") for name, needle in _NAMES],
                     ("nope", "no study 'nope' under studies/")],
    "export.study": [("../x", f"--study '../x' {NOT_NAME}"), ("nope", "no study 'nope'")],
    "portfolio build.study": [("../x", f"--study '../x' {NOT_NAME}"),
                              ("nope", "no study 'nope'")],
    "portfolio build.sweep": [("../x", f"'../x' {NOT_NAME}"), ("nope", "no sweep 'nope'")],
    "portfolio build.out_file": [("afile", "--out 'afile' exists"),
                                 ("afile/p.yaml", "afile"), ("", "--out is empty")],
    "storage": [("bogus://x", "cannot open storage 'bogus://x'"),
                (".", "'.' is not a readable Optuna journal"), ("", "--storage is empty")],
    "address": [("not an address", "--address 'not an address' is not a Ray cluster address"),
                ("head", "--address 'head' is not a Ray cluster address"),
                ("head:0", "--address 'head:0' is not a Ray cluster address"),
                ("head:65536", "--address 'head:65536' is not a Ray cluster address"),
                ("", "--address is empty")],
    "sampler": [("cmaes", "unknown sampler 'cmaes'"), ("", "unknown sampler ''")],
    "warm_start": [("nosuch", "--warm-start: no study 'nosuch'"),
                   ("../x", f"--warm-start '../x' {NOT_NAME}")],
    "scheduler": [("hyperband", "unknown scheduler 'hyperband'")],
    "studies_dir": [*[(v, f"--studies-dir {n}") for v, n in _FOLDERS],
                    ("", "--studies-dir is empty")],
    "reports_dir": [*[(v, f"--reports-dir {n}") for v, n in _FOLDERS],
                    ("", "--reports-dir is empty")],
    "portfolio": [("missing.yaml", "portfolio file 'missing.yaml' not found"),
                  ("afile", "afile: expected a mapping"), ("", "--portfolio is empty")],
    "pooling": [("max", "--pooling 'max' is not one of auto, cls, mean")],
    "time_budget": [("abc", "invalid --time-budget 'abc'"), ("0", "--time-budget '0' must be "
                    "more than 0 seconds"), ("-5m", "invalid --time-budget '-5m'"),
                    ("", "invalid --time-budget ''"), (HUGE, "is not a finite duration")],
    "sweep.tasks": [("mrcp", "unknown task 'mrcp'"), ("", "--tasks is empty"),
                    (",", "--tasks is empty")],
    "sweep.budgets": [("abc", "invalid budget 'abc'"), ("2%,0", "budget '0' must be positive"),
                      (",", "--budgets is empty"), (HUGE, "budget")],
    "sweep.models": [("nobody/no-such-model", "cannot load model 'nobody/no-such-model'"),
                     (",", "--models is empty")],
    "sweep.sweep_name": [(name, f"--sweep {needle}") for name, needle in _NAMES],
    "report.sweep_name": [("../x", f"--sweep '../x' {NOT_NAME}"),
                          ("nope", "no sweep 'nope' under studies/")],
    "report.storage": [("bogus://x", "cannot open storage 'bogus://x'"),
                       (".", "'.' is not a readable Optuna journal"), ("", "--storage is empty")],
    # refused for the right reason only by the message: study `s` is not under that folder
    "report.studies_dir": [("afile", "no study 's' under afile/"),
                           ("", "--studies-dir is empty")],
    "report.out_dir": [*[(v, f"--out {n}") for v, n in _FOLDERS], ("", "--out is empty")],
    "export.destination": [("afile", "'afile' already exists"),
                           ("", "OUT '.' names no new directory"),
                           ("afile/sub", "OUT 'afile/sub' is inside 'afile', a file")],
    "export.storage": [("bogus://x", "cannot open storage 'bogus://x'"),
                       ("", "--storage is empty")],
    # refused for the right reason only by the message, as for report
    "export.studies_dir": [("afile", "no study 's' (looked in afile/s/optuna.journal)"),
                           ("", "--studies-dir is empty")],
    "portfolio build.storage": [("bogus://x", "cannot open storage 'bogus://x'"),
                                ("", "--storage is empty")],
    # refused for the right reason only by the message, as for export
    "portfolio build.studies_dir": [("afile", "no study 's' (looked in afile/s/optuna.journal)"),
                                    ("", "--studies-dir is empty")],
    "predict.artifact": [("nope", "'nope' is not an autopeft artifact"),
                         ("afile", "'afile' is not an autopeft artifact"),
                         ("", "'.' is not an autopeft artifact")],
    "predict.input_file": [("missing.tsv", "input file 'missing.tsv' does not exist"),
                           ("afile", "'afile' has an unsupported extension"),
                           ("", "'.' has an unsupported extension")],
    "predict.output": [(".", "--output '.' is a directory"), ("", "--output '.' is a directory"),
                       ("afile/sub.csv", "--output's folder 'afile' is a file")],
    "predict.base_model": [*_MODELS[:1], ("", "--base-model is empty")],
    "train.config": [("missing.yaml", "config file 'missing.yaml' not found"),
                     ("afile", "afile: expected a mapping"), ("", "config file '.' not found")],
    "train.out_dir": [("afile", "'afile' already exists"), ("", "--out is empty"),
                      ("afile/sub", "--out 'afile/sub' is inside 'afile', a file")],
}

# What the error line says where it cannot name the flag (the study decides what is wrong).
NEEDLE = {("export", "trial", "-1"): "study 's' has no trial -1"}

# Options dropped from the command's valid context for a case: `report --study s --sweep x`
# is refused for passing both, not for the sweep's name.
DROPPED = {("report", "sweep_name"): ["study"], ("search", "train"): ["task", "data_dir"]}



# --- the valid context of each command --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Inputs:
    model: Path  # tiny random BERT
    mrpc: Path  # MRPC's train.tsv/dev.tsv
    artifact: Path  # a bitfit artifact trained on 16 rows
    rows: Path  # a few MRPC dev rows, labelled


def valid_options(command: str, inputs: Inputs) -> dict[str, str]:
    """Values for the options of `command` that make a small valid run (or one that the study
    `s`, which has no artifact, stops): the bad value of a case replaces one of them."""
    tiny, mrpc = str(inputs.model), str(inputs.mrpc)
    run = {"methods": "bitfit", "trials": "1", "epochs": "1", "max_train_samples": "16",
           "final_seeds": "0"}
    return {
        "search": {"task": "mrpc", "budget": "2%", "model": tiny, "data_dir": mrpc, **run},
        "sweep": {"tasks": "mrpc", "budgets": "2%", "models": tiny,
                  "data_dir": str(inputs.mrpc.parent), **run},
        "report": {"study": STUDY},
        "budget": {"budget": "2%", "model": tiny, "task": "mrpc"},
        "methods": {},
        "export": {"destination": "out", "study": STUDY, "trial": "0"},
        "predict": {"artifact": str(inputs.artifact), "input_file": str(inputs.rows)},
        "train": {"config": "config.yaml"},
        # study `s` is of one task: a valid run stops there, after every option was checked
        "portfolio build": {"out_file": "p.yaml", "study": STUDY},
    }[command]


def argv_for(command: str, values: dict[str, str]) -> list[str]:
    """`command ARGUMENTS --option=VALUE ...` ("=" so that values like -1 stay values)."""
    arguments, options = [], []
    for param in COMMANDS[command].params:
        if param.name in values:
            if param.param_type_name == "argument":
                arguments.append(values[param.name])
            else:
                options.append(f"{param.opts[0]}={values[param.name]}")
    return [*command.split(), *arguments, *options]


# --- the table, from the CLI's parameters --------------------------------------------------------
def kind_of(param) -> str:
    """"flag", "int", "float" or "text", from click's type (Typer that uses click's own) or the
    annotation Typer (>= 0.29, its own vendored click) keeps."""
    if getattr(param, "is_flag", False):
        return "flag"
    click_type = getattr(param, "type", None)
    if click_type is not None:
        name = getattr(click_type, "name", "")
        return {"integer": "int", "float": "float", "boolean": "flag"}.get(
            name.split()[0] if name else "", "text")
    annotation = param.type_descriptor.annotation
    if typing.get_origin(annotation) in (list, tuple):
        annotation = typing.get_args(annotation)[0]
    return {int: "int", float: "float", bool: "flag"}.get(annotation, "text")


def accepted(command: str, name: str) -> str | None:
    return ACCEPTED.get(f"{command}.{name}", ACCEPTED.get(name))


def bad_texts(command: str, name: str) -> list[tuple[str, str]] | None:
    return BAD_TEXT.get(f"{command}.{name}", BAD_TEXT.get(name))


def _number(text: str) -> float:
    return float(eval(text, {"__builtins__": {}}, {}))  # our own constants: "2**31-1", "0"


def _bounds(spec: str) -> tuple[float, float, bool]:
    """(low, high, open) of a range spec's first part."""
    first = spec.split(",")[0].strip() if not spec.startswith("(") else spec
    if first.startswith(">="):
        return _number(first[2:]), math.inf, False
    if first.startswith("("):
        low, high = first.strip("()").split(",")
        return _number(low), _number(high), True
    low, high = first.split("..")
    return _number(low), _number(high), False


def _accepts(spec: str, value: float) -> bool:
    """Whether a number is in the range `spec` declares."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    low, high, is_open = _bounds(spec)
    inside = low < value < high if is_open else low <= value <= high
    if "fraction <= 1 or whole" in spec:
        inside = inside and (value <= 1 or value == int(value))
    return inside


def _outside(spec: str, kind: str) -> list[str]:
    """The first values outside the range `spec`, as the command line spells them."""
    low, high, is_open = _bounds(spec)
    if kind == "int":
        values = [int(low) - 1] + ([int(high) + 1] if math.isfinite(high) else [])
        return [str(v) for v in values]
    values = [low, high] if is_open else [math.nextafter(low, -math.inf)]
    if math.isfinite(high) and not is_open:
        values.append(math.nextafter(high, math.inf))
    if "fraction <= 1 or whole" in spec:
        values += [math.nextafter(1.0, math.inf), 2.5]
    return [repr(float(v)) for v in values] + ["nan", "inf", "-inf"]


def invalid_values(command: str, param) -> list[tuple[str, str]]:
    """(value, what the error line must contain) for each invalid value of the option."""
    kind, spec, flag = kind_of(param), accepted(command, param.name), param.opts[0]
    if kind == "flag":
        return [("yes", f"Option '{flag}' does not take a value")]
    if kind in ("int", "float"):
        typed = ["abc", "1.5"] if kind == "int" else ["abc"]
        return [(value, NEEDLE.get((command, param.name, value), flag))
                for value in [*typed, *_outside(spec, kind)]]
    return bad_texts(command, param.name) or []


def _short(value: str) -> str:
    return repr(value if len(value) <= 16 else f"{value[:6]}...({len(value)} chars)")


def table() -> list:
    cases = []
    for command, group in COMMANDS.items():
        for param in group.params:
            if accepted(command, param.name) is None:
                continue  # test_every_option_of_every_command_is_classified fails for it
            for value, needle in invalid_values(command, param):
                cases.append(pytest.param(
                    command, param.name, value, needle,
                    id=f"{command}-{param.opts[0].lstrip('-')}={_short(value)}"))
    return cases


TABLE = table()


def test_every_option_of_every_command_is_classified():
    """A new option fails here until ACCEPTED (and, for a text, BAD_TEXT) says what it takes."""
    unclassified, mismatched, without_values = [], [], []
    for command, group in COMMANDS.items():
        for param in group.params:
            where, spec = f"{command}.{param.name}", accepted(command, param.name)
            kind = kind_of(param)
            if spec is None:
                unclassified.append(f"{where} ({kind})")
            elif (spec == "flag") != (kind == "flag"):
                mismatched.append(f"{where}: {kind}, classified {spec!r}")
            elif kind in ("int", "float"):
                _outside(spec, kind)  # a range the table can read
            elif kind == "text" and not bad_texts(command, param.name):
                without_values.append(where)
    assert not unclassified, f"options ACCEPTED does not classify: {unclassified}"
    assert not mismatched, mismatched
    assert not without_values, f"text options without BAD_TEXT values: {without_values}"


def test_every_entry_of_the_tables_is_an_option():
    """No stale entry: each key names an option of some command (or of the one it says)."""
    options = {(command, p.name) for command, group in COMMANDS.items() for p in group.params}
    for key in [*ACCEPTED, *BAD_TEXT]:
        command, _, name = key.rpartition(".")
        assert (any(name == n for _, n in options) if not command
                else (command, name) in options), key


def test_every_command_has_cases():
    assert {case.values[0] for case in TABLE} == set(COMMANDS)


# --- the working directory ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_bert, mrpc_dir) -> Inputs:
    from autopeft.results.retrain import TrainConfig, train_from_config

    root = tmp_path_factory.mktemp("input-table")
    artifact = train_from_config(TrainConfig(
        task="mrpc", method="bitfit", model=str(tiny_bert), data_dir=str(mrpc_dir),
        max_train_samples=16, epochs=1), root / "artifact")
    rows = root / "rows.tsv"
    rows.write_text("".join((mrpc_dir / "dev.tsv").read_text(encoding="utf-8-sig")
                            .splitlines(keepends=True)[:6]), encoding="utf-8")
    return Inputs(tiny_bert, mrpc_dir, artifact, rows)


@pytest.fixture(scope="module")
def template(tmp_path_factory, inputs) -> Path:
    """What each case's working directory starts with: study `s`, a valid train config, a file."""
    root = tmp_path_factory.mktemp("input-table-work")
    (root / "afile").write_text("not a folder, nor YAML, nor an artifact\n")
    (root / "config.yaml").write_text(
        f"task: mrpc\nmethod: bitfit\nmodel: {inputs.model}\ndata_dir: {inputs.mrpc}\n"
        "epochs: 1\nmax_train_samples: 16\n")
    journal = root / "studies" / STUDY / "optuna.journal"
    journal.parent.mkdir(parents=True)
    setup = records.StudySetup(
        task="mrpc", model=str(inputs.model), budget_spec="2%", budget_params=40_739,
        backbone_params=2_036_992, primary_metric="accuracy_f1", methods=["bitfit"])
    study = records.open_study(STUDY, JournalStorage(JournalFileBackend(str(journal))), setup)
    study.add_trial(optuna.trial.create_trial(
        params={"method": "bitfit"}, values=[0.7, 1280.0],
        distributions={"method": optuna.distributions.CategoricalDistribution(["bitfit"])},
        user_attrs={records.ATTR_STATUS: records.STATUS_OK}))
    return root


@pytest.fixture
def work(template, tmp_path, monkeypatch) -> Path:
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- the table's cases ----------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "option", "value", "needle"), TABLE)
def test_an_invalid_value_is_refused_in_a_line_and_writes_nothing(
        work, inputs, capsys, monkeypatch, command, option, value, needle):
    values = valid_options(command, inputs)
    for name in DROPPED.get((command, option), []):
        values.pop(name)
    values[option] = value
    before = listing(work)
    code, stderr = run_main(argv_for(command, values), capsys, monkeypatch)
    assert_refused(code, stderr, needle)
    assert listing(work) == before


def test_the_valid_contexts_run(work, inputs, capsys, monkeypatch):
    """The contexts are valid: the cheap commands succeed, the others stop where expected."""
    for command in ("report", "budget", "methods", "predict"):
        code, stderr = run_main(argv_for(command, valid_options(command, inputs)), capsys,
                                monkeypatch)
        assert code == 0, (command, stderr)
    code, stderr = run_main(argv_for("export", valid_options("export", inputs)), capsys,
                            monkeypatch)
    assert_refused(code, stderr, "trial 0 is COMPLETE and has no artifact")


def test_the_error_line_quotes_the_value_as_typed(work, inputs, capsys, monkeypatch):
    values = {**valid_options("search", inputs), "time_budget": ":smile:"}
    code, stderr = run_main(argv_for("search", values), capsys, monkeypatch)
    assert_refused(code, stderr, "invalid --time-budget ':smile:'")


# --- property-based cases -----------------------------------------------------------------------
SMALL = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])
# Budget-like texts, up to 300 digits (400 are a case of their own).
BUDGET_LIKE = st.from_regex(r"\s?-?\d{0,300}(\.\d{0,6})?\s?[%kKmMbB]?\s?", fullmatch=True)


@SMALL
@given(st.one_of(st.text(max_size=30), BUDGET_LIKE))
@example("1.2M")
@example("0.5%")
@example(".5")
@example("1e3")
@example("5%%")
def test_a_budget_text_parses_or_is_refused_in_one_message(text):
    try:
        budget = parse_budget(text)
    except AutoPeftError as exc:
        assert "budget" in str(exc)
        return
    assert isinstance(budget, Budget)
    assert (budget.count is None) != (budget.fraction is None)
    if budget.count is not None:
        assert isinstance(budget.count, int) and budget.count >= 1
    else:
        assert 0 < budget.fraction <= 1
    try:
        assert budget.params(2_036_992) >= 1
    except AutoPeftError as exc:
        assert "less than one parameter" in str(exc)


def test_a_budget_of_400_digits_is_refused():
    with pytest.raises(AutoPeftError):
        parse_budget(HUGE)


def _refused_budget(text: str) -> bool:
    try:
        parse_budget(text)
    except AutoPeftError:
        return True
    return False


@SMALL
@given(st.one_of(st.text(max_size=30), BUDGET_LIKE).filter(_refused_budget))
def test_a_refused_budget_is_one_line_through_the_cli(work, inputs, capsys, monkeypatch, text):
    before = listing(work)
    values = {**valid_options("search", inputs), "budget": text}
    code, stderr = run_main(argv_for("search", values), capsys, monkeypatch)
    assert_refused(code, stderr, "budget", max_lines=1)
    assert listing(work) == before


def _is_name(name: str) -> bool:
    try:
        names.check_name(name, "--study")
    except AutoPeftError:
        return False
    return True


@SMALL
@given(st.one_of(st.text(max_size=40), st.from_regex(r"[A-Za-z0-9._/-]{1,12}", fullmatch=True),
                 st.sampled_from(["..", ".", "a..b", "../studies", "/tmp/x", "a" * 201,
                                  "-x", "x\n", "ok-name_1.2"])))
def test_a_study_name_is_used_inside_studies_or_refused_in_one_line(
        work, inputs, capsys, monkeypatch, name):
    """`--seed=-1` stops an accepted name's run right after the name check."""
    before = listing(work)
    values = {**valid_options("search", inputs), "study": name, "seed": "-1"}
    code, stderr = run_main(argv_for("search", values), capsys, monkeypatch)
    line = assert_refused(code, stderr, "error: ", max_lines=1)
    event("a name" if _is_name(name) else "not a name")
    if _is_name(name):
        assert "--seed must be" in line, line
        folder = names.inside("studies", name).resolve()
        assert folder.parent == (work / "studies").resolve()
    else:
        assert line.startswith("error: --study "), line
    assert listing(work) == before


NUMBER_OPTIONS = ["seed", "trials", "selection_fraction", "gpus_per_trial", "time_budget"]


def _request(**values) -> SearchRequest:
    return SearchRequest(task="mrpc", budget="2%", **values)


def _checked(request: SearchRequest | None = None, **values) -> AutoPeftError | None:
    """check_options' verdict: None, or the AutoPeftError (anything else is a failure)."""
    try:
        check_options(request or _request(**values))
    except AutoPeftError as exc:
        return exc
    return None


@SMALL
@given(seed=st.integers(-2**70, 2**70) | st.sampled_from([0, MAX_SEED, MAX_SEED + 1, -1]),
       trials=st.integers(-10, 2**70),
       fraction=st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0]),
       gpus=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-3, 10**6))
def test_check_options_accepts_exactly_the_declared_ranges(seed, trials, fraction, gpus):
    for name, value in (("seed", seed), ("trials", trials), ("selection_fraction", fraction)):
        refused = _checked(**{name: value})
        assert (refused is None) == _accepts(ACCEPTED[name], value), (name, value, refused)
        if refused is not None:
            assert f"--{name.replace('_', '-')}" in str(refused)
    # with a cluster address the share is not held against this machine's GPUs
    refused = _checked(gpus_per_trial=gpus, address="head:6379")
    assert (refused is None) == _accepts(ACCEPTED["gpus_per_trial"], gpus), (gpus, refused)


DURATION = st.sampled_from(["1", "90", "0.5", "2h", "45m", "30s", "1h30m", "10m5s", "600",
                            "1.5h", " 2H ", "0s", "0h0m", "-1", "1h-5m"])


@SMALL
@given(st.one_of(st.text(max_size=20), DURATION,
                 st.from_regex(r"\d{1,4}(\.\d{1,3})?[hms]?", fullmatch=True)))
def test_a_time_budget_is_accepted_or_refused_by_the_option_checks(text):
    from autopeft.inputs.durations import parse_time_budget

    refused = _checked(time_budget=text)
    if refused is None:
        assert 0 < parse_time_budget(text) < math.inf
    else:
        assert "--time-budget" in str(refused)


def _parsed(argv: list[str]) -> dict | None:
    """The values Typer parses from `argv`, or None when it refuses them (a usage error)."""
    try:
        return COMMANDS[argv[0]].make_context(argv[0], argv[1:]).params
    except cli._usage_error_types():
        return None


NUMBER_TEXT = st.one_of(st.integers(-2**64, 2**64).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.text(max_size=12), st.from_regex(r"[+-]?\d{1,3}([._]\d{1,3})?[hms]?",
                                                            fullmatch=True))


@SMALL
@given(option=st.sampled_from(NUMBER_OPTIONS), text=NUMBER_TEXT)
def test_a_number_option_through_the_cli_is_refused_as_check_options_says(
        work, inputs, capsys, monkeypatch, option, text):
    """Typer's parse, then check_options, decide; an accepted value runs on to the unknown
    task `mrcp`, checked right after the options (so nothing is trained)."""
    before = listing(work)
    values = {**valid_options("search", inputs), option: text, "task": "mrcp"}
    argv = argv_for("search", values)
    flag = f"--{option.replace('_', '-')}"
    code, stderr = run_main(argv, capsys, monkeypatch)
    parsed = _parsed(argv)
    if parsed is None:
        event("refused by Typer")
        assert_refused(code, stderr, f"'{flag}'", max_lines=2)
    else:
        fields = {k: v for k, v in parsed.items() if k in SearchRequest.__dataclass_fields__}
        refused = _checked(SearchRequest(**{**fields, "task": "mrpc"}))
        line = assert_refused(code, stderr, "error: ", max_lines=1)
        event(f"{'accepted' if refused is None else 'refused'} by check_options")
        if refused is None:
            assert "unknown task 'mrcp'" in line, line
        else:
            assert flag in line and flag in str(refused), line
    assert listing(work) == before


def test_the_property_strategies_reach_both_outcomes():
    """The number strategy reaches Typer's refusal, check_options' refusal and acceptance."""
    assert _parsed(["search", "--task=mrpc", "--budget=2%", "--seed=abc"]) is None
    assert _parsed(["search", "--task=mrpc", "--budget=2%", "--seed=-1"])["seed"] == -1
    assert _checked(seed=-1) is not None and _checked(seed=5) is None
