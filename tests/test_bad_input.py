"""Bad input to `autopeft search` is refused whole: one line on stderr naming the problem and
what is accepted, exit status 2, no traceback, and nothing written or changed.

Each case runs the real entry point (`autopeft.cli.main`) in-process, which is what the
`autopeft` script calls (tests/test_cli.py runs it as a subprocess), inside a working
directory that already holds a study, its report and the bad input files. Afterwards every file
there must be byte-for-byte what it was: a refused run creates no study or report and leaves a
damaged or foreign study file exactly as it found it.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from rich.console import Console

from autopeft import cli
from autopeft import study as records
from autopeft.search import searching
from autopeft.search.searching import SearchRequest

STUDY = "kept"  # an autopeft study made for another model: resuming it is refused
SAME = "same"  # made for this model and data, over methods bitfit and lora
FOREIGN = "foreign"  # an Optuna study that autopeft did not make
MRPC_TSV_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"


def _journal(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _dead_owner() -> dict:
    """The owner of a trial whose search was killed: this host, a pid that cannot exist."""
    return {**records.process_owner(), "pid": 2**22 + 1, "started": "0"}


def _add_trials(study: optuna.Study) -> None:
    """A finished trial, and one left RUNNING by a killed search (marking it failed writes)."""
    study.add_trial(optuna.trial.create_trial(
        params={"method": "bitfit"}, values=[0.7, 1280.0],
        distributions={"method": optuna.distributions.CategoricalDistribution(["bitfit"])},
        user_attrs={records.ATTR_STATUS: records.STATUS_OK}))
    stale = study.ask()
    stale.set_user_attr(records.ATTR_OWNER, _dead_owner())
    assert stale.number == 1 and study.trials[1].state == TrialState.RUNNING


def _write_inputs(root: Path) -> None:
    """Bad data dirs, bad space files and damaged or foreign study files under `root`."""
    files = {
        "data/empty/.keep": "",
        "data/columns/train.csv": "sentence1,sentence2,lbl\na,b,1\n",
        "data/columns_tsv/train.tsv": "Quality\t#1 String\tB\n1\ta\tb\n",
        "data/labels/train.csv": "sentence1,sentence2,label\na,b,1\nc,d,maybe\n",
        "data/labels_tsv/train.tsv": MRPC_TSV_HEADER + "x\t1\t2\ta\tb\nyes?\t3\t4\tc\td\n",
        "space/syntax.yaml": "methods:\n  lora: {r: [1, 2}\n",
        "space/knob.yaml": "methods:\n  lora:\n    rank: {choices: [1, 2]}\n",
        "space/key.yaml": "methods:\n  lora:\n    r: {choices: [2], colour: red}\n",
        "space/method.yaml": "methods:\n  lorra: {}\n",
        "space/narrower.yaml": "methods:\n  bitfit: {}\n  lora:\n    r: {choices: [2, 4]}\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for name in ("columns", "labels"):
        shutil.copy(root / f"data/{name}/train.csv", root / f"data/{name}/dev.csv")
    for name in ("columns_tsv", "labels_tsv"):
        shutil.copy(root / f"data/{name}/train.tsv", root / f"data/{name}/dev.tsv")
    latin1 = {"data/latin1_tsv/train.tsv": MRPC_TSV_HEADER.encode() + b"1\t1\t2\tcaf\xe9\tb\n",
              "data/latin1_jsonl/train.jsonl":
                  b'{"sentence1": "caf\xe9", "sentence2": "b", "label": 1}\n'}
    for name, raw in latin1.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
        dev = path.with_stem("dev")
        dev.write_bytes(raw)

    good = (root / "studies" / STUDY / "optuna.journal").read_bytes()
    damaged = {
        "garbage": good.replace(b"\n", b"\n\x00\xff\x13garbage\n", 1),
        "cut": good + b'{"op_code": 5, "worker_id": "x", "trial_id": 1, "sta',
        "other_tool": b'{"event": "run", "step": 1}\n{"event": "run", "step": 2}\n',
        "sqlite": b"SQLite format 3\x00" + bytes(range(256)) * 4,
    }
    for name, raw in damaged.items():
        path = root / "studies" / name / "optuna.journal"
        path.parent.mkdir(parents=True)
        path.write_bytes(raw)


@pytest.fixture(scope="module")
def template(tmp_path_factory, tiny_bert, mrpc_dir) -> Path:
    """A working directory with a study and report in place, and the bad inputs."""
    root = tmp_path_factory.mktemp("bad-input")
    setup = records.StudySetup(
        task="mrpc", model="some-org/other-model", budget_spec="2%", budget_params=40_739,
        backbone_params=2_036_992, primary_metric="accuracy_f1", methods=["bitfit"])
    store = _journal(root / "studies" / STUDY / "optuna.journal")
    _add_trials(records.open_study(STUDY, store, setup))
    foreign = optuna.create_study(study_name=FOREIGN, storage=_journal(
        root / "studies" / FOREIGN / "optuna.journal"), directions=["maximize"])
    foreign.set_user_attr("made_by", "someone else")
    foreign.ask()
    _same_setup_study(root, tiny_bert, mrpc_dir)
    for name, kept in (("config_only", ["config.json"]),
                       ("no_tokenizer", ["config.json", "model.safetensors"])):
        (root / "models" / name).mkdir(parents=True)
        for file in kept:
            shutil.copy(tiny_bert / file, root / "models" / name / file)
    (root / "reports" / STUDY).mkdir(parents=True)
    (root / "reports" / STUDY / "summary.md").write_text("# the report of a kept study\n")
    (root / "reports" / STUDY / "trials.csv").write_text("trial,state\n0,COMPLETE\n")
    _write_inputs(root)
    return root


def _same_setup_study(root: Path, tiny_bert: Path, mrpc_dir: Path) -> None:
    """Study SAME, made for what `_search_args` asks but over bitfit and lora (and a trial)."""
    request = SearchRequest(task="mrpc", budget="2%", model=str(tiny_bert), data_dir=str(mrpc_dir),
                            methods="bitfit,lora", max_train_samples=16, epochs=1)
    checked = searching.check_request(request)
    store = _journal(root / "studies" / SAME / "optuna.journal")
    study = records.open_study(SAME, store, searching.study_setup_of(checked))
    study.add_trial(optuna.trial.create_trial(
        params={"method": "bitfit"}, values=[0.7, 1280.0],
        distributions={"method": optuna.distributions.CategoricalDistribution(
            ["bitfit", "lora"])},
        user_attrs={records.ATTR_STATUS: records.STATUS_OK}))


@pytest.fixture
def work(template, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "work"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    return root


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def _search_args(tiny_bert: Path, mrpc_dir: Path, **options: str) -> list[str]:
    """A small, valid search (`--study new`), with `options` (dashes as underscores) replaced."""
    values = {"task": "mrpc", "budget": "2%", "model": str(tiny_bert), "data_dir": str(mrpc_dir),
              "methods": "bitfit", "study": "new", "trials": "1", "epochs": "1",
              "max_train_samples": "16", "final_seeds": "0", **options}
    return ["search", *[item for key, value in values.items()
                        for item in (f"--{key.replace('_', '-')}", value)]]


def _run(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["autopeft", *argv])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return exited.value.code, capsys.readouterr().err


ACCEPTED_BUDGETS = "accepted: a percentage (0.5%)"
NOT_A_JOURNAL = "is not a readable Optuna journal"
LEFT_AS_IS = "it was left as it is"
ACCEPTED_TIME = "accepted: seconds (600) or hours/minutes/seconds such as 90s, 45m, 2h, 1h30m"

CASES = {
    # budgets
    "budget-double-percent": ({"budget": "0.5%%"}, ["invalid budget '0.5%%'", ACCEPTED_BUDGETS]),
    "budget-negative": ({"budget": "-1"}, ["invalid budget '-1'", ACCEPTED_BUDGETS]),
    "budget-zero": ({"budget": "0"}, ["budget '0' must be positive", ACCEPTED_BUDGETS]),
    "budget-over-100%": ({"budget": "150%"}, ["budget '150%' is over 100%", ACCEPTED_BUDGETS]),
    "budget-text": ({"budget": "abc"}, ["invalid budget 'abc'", ACCEPTED_BUDGETS]),
    "budget-under-one-param": ({"budget": "0.00001%"},
                               ["less than one parameter of this model's 2,036,992",
                                ACCEPTED_BUDGETS]),
    "budget-below-every-minimum": (
        {"budget": "50", "methods": "lora,bitfit,adapter_pfeiffer,prompt_tuning"},
        ["no method fits the budget of 50 params", "prompt_tuning 64, adapter_pfeiffer 386, "
         "lora 512, bitfit 1,216", "accepted: a budget of at least 64 params"]),
    # names
    "unknown-task": ({"task": "mrcp"}, ["unknown task 'mrcp'", "choose one of: cola"]),
    "unknown-model": ({"model": "nobody/no-such-model"},
                      ["cannot load model 'nobody/no-such-model'", "pass a local directory"]),
    "unknown-method": ({"methods": "lora,adaptr"},
                       ["unknown method 'adaptr'", "registered: adalora"]),
    "unknown-sampler": ({"sampler": "cmaes"},
                        ["unknown sampler 'cmaes'", "choose: tpe, nsga2, gp, random"]),
    # time budgets
    "time-budget-text": ({"time_budget": "abc"}, ["invalid --time-budget 'abc'", ACCEPTED_TIME]),
    "time-budget-zero": ({"time_budget": "0"}, ["must be more than 0 seconds", ACCEPTED_TIME]),
    "time-budget-negative": ({"time_budget": "-5m"},
                             ["invalid --time-budget '-5m'", ACCEPTED_TIME]),
    # data
    "data-dir-missing": ({"data_dir": "data/missing"},
                         ["'data/missing' is not a directory", "train.tsv + dev.tsv"]),
    "data-dir-empty": ({"data_dir": "data/empty"},
                       ["no usable mrpc data in 'data/empty'", "train.csv + dev.csv"]),
    "data-wrong-columns-csv": ({"data_dir": "data/columns"},
                               ["has no column 'label'", "needs columns: sentence1, sentence2"]),
    "data-wrong-columns-tsv": ({"data_dir": "data/columns_tsv"},
                               ["has no column '#2 String'", "layout needs: '#1 String'"]),
    "data-bad-labels-csv": ({"data_dir": "data/labels"},
                            ["has 1 invalid row (line 3)", "unknown label ('maybe')",
                             "accepts 0..1 or one of", "--drop-invalid-rows"]),
    "data-bad-labels-tsv": ({"data_dir": "data/labels_tsv"},
                            ["has 2 invalid rows (lines 2, 3)", "'x', 'yes?'",
                             "accepts 0..1 or one of", "--drop-invalid-rows"]),
    "data-not-utf8-tsv": ({"data_dir": "data/latin1_tsv"},
                          ["is not a readable GLUE TSV file", "accepted: UTF-8"]),
    "data-not-utf8-jsonl": ({"data_dir": "data/latin1_jsonl"},
                            ["is not a readable JSON Lines file", "accepted: UTF-8"]),
    # search space files
    "space-syntax": ({"space": "space/syntax.yaml"}, ["not valid YAML at line 2", "default.yaml"]),
    "space-unknown-knob": ({"space": "space/knob.yaml"},
                           ["methods.lora.rank: unknown knob", "lora has: child_f_p"]),
    "space-unknown-key": ({"space": "space/key.yaml"},
                          ["unknown key(s) ['colour']", "allowed: choices, low, high"]),
    "space-unknown-method": ({"space": "space/method.yaml"},
                             ["unknown method 'lorra'", "registered: adalora"]),
    # numbers out of range (checked before the model or the data is read)
    "seed-negative": ({"seed": "-3"}, ["--seed must be a whole number from 0 to 2147483647",
                                       "(got -3)"]),
    "seed-too-large": ({"seed": str(2**40)}, ["--seed must be a whole number from 0"]),
    "selection-fraction-one": ({"selection_fraction": "1"},
                               ["--selection-fraction must be strictly between 0 and 1"]),
    "selection-fraction-nan": ({"selection_fraction": "nan"},
                               ["--selection-fraction must be strictly between 0 and 1"]),
    "batch-size-zero": ({"batch_size": "0"}, ["--batch-size must be at least 1 (got 0)"]),
    "epochs-zero": ({"epochs": "0"}, ["--epochs must be at least 1 (got 0)"]),
    "concurrency-zero": ({"concurrency": "0"}, ["--concurrency must be at least 1"]),
    "max-train-samples-zero": ({"max_train_samples": "0"},
                               ["--max-train-samples must be at least 1"]),
    "final-seeds-negative": ({"final_seeds": "-1"}, ["--final-seeds must be 0 (no retraining)"]),
    "final-epochs-zero": ({"final_epochs": "0"}, ["--final-epochs must be at least 1"]),
    "final-top-zero": ({"final_top": "0"}, ["--final-top must be at least 1"]),
    "reduction-factor-one": ({"reduction_factor": "1"},
                             ["--reduction-factor must be at least 2 (got 1)"]),
    "grace-epochs-zero": ({"grace_epochs": "0"}, ["--grace-epochs must be at least 1"]),
    "gpus-negative": ({"gpus_per_trial": "-1"}, ["--gpus-per-trial must be 0 or more"]),
    "gpus-unschedulable": ({"gpus_per_trial": "1.5"},
                           ["--gpus-per-trial 1.5 is not schedulable", "a whole number"]),
    "gpus-more-than-present": ({"gpus_per_trial": "64"},
                               ["--gpus-per-trial 64 but this machine has", "--address"]),
    # too little data to mean anything
    "one-training-row": ({"max_train_samples": "1"},
                         ["trials would train on 1 row(s); at least 16 are needed"]),
    "selection-split-too-small": ({"selection_fraction": "0.001"},
                                  ["the selection split (held out of train) holds too few",
                                   "each needs at least 3"]),
    # models that cannot be trained
    "model-without-weights": ({"model": "models/config_only"},
                              ["model folder 'models/config_only' has no weights",
                               "model.safetensors"]),
    "model-without-tokenizer": ({"model": "models/no_tokenizer"},
                                ["model folder 'models/no_tokenizer' has no usable tokenizer"]),
    # a study continued with another method set or space
    "study-narrower-methods": ({"study": SAME, "methods": "bitfit"},
                               ["study 'same' searches bitfit, lora; this run leaves out lora",
                                "--warm-start same"]),
    "study-wider-methods": ({"study": SAME, "methods": "bitfit,lora,fish"},
                            ["study 'same' searches bitfit, lora; this run adds fish",
                             "start a new --study"]),
    "study-other-space": ({"study": SAME, "methods": "bitfit,lora", "space": "space/narrower.yaml"},
                          ["study 'same' was searched over another space (",
                           "bitfit.learning_rate [0.0005, 0.03] log → -", "more)"]),
    # study files
    "study-garbage-bytes": ({"study": "garbage"}, [NOT_A_JOURNAL, "line 2 is not JSON",
                                                   LEFT_AS_IS]),
    "study-cut-last-line": ({"study": "cut"}, [NOT_A_JOURNAL, "last line is incomplete",
                                              LEFT_AS_IS]),
    "study-other-tools-jsonl": ({"study": "other_tool"},
                                [NOT_A_JOURNAL, "line 1 is not an Optuna journal record"]),
    "study-binary-file": ({"study": "sqlite"}, [NOT_A_JOURNAL, "line 1 is not JSON"]),
    "study-foreign-optuna": ({"study": FOREIGN},
                             ["study 'foreign' was not created by autopeft", "another --study"]),
    "study-other-setup": ({"study": STUDY},
                          ["study 'kept' was made with model='some-org/other-model'",
                           "pass --study with a new name"]),
}


@pytest.mark.parametrize(("options", "needles"), list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(work, tiny_bert, mrpc_dir, capsys,
                                                         monkeypatch, options, needles):
    before = _snapshot(work)
    code, stderr = _run(_search_args(tiny_bert, mrpc_dir, **options), capsys, monkeypatch)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert _snapshot(work) == before  # studies/, reports/ and the inputs untouched


def test_the_same_methods_in_another_order_continue_the_study(work, tiny_bert, mrpc_dir):
    """Only the set of methods matters: the study's order is kept, the study opens as it is."""
    request = SearchRequest(task="mrpc", budget="2%", model=str(tiny_bert),
                            data_dir=str(mrpc_dir), methods="lora,bitfit", study=SAME,
                            max_train_samples=16, epochs=1)
    prepared = searching.prepare_study(request, Console(file=io.StringIO()))
    assert list(prepared.space.methods) == ["bitfit", "lora"]
    assert [t.params for t in prepared.study.trials][:1] == [{"method": "bitfit"}]
