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
import shutil
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from autopeft import cli
from autopeft import study as records

STUDY = "kept"  # an autopeft study made for another model: resuming it is refused
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
def template(tmp_path_factory, tiny_bert) -> Path:
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
    (root / "reports" / STUDY).mkdir(parents=True)
    (root / "reports" / STUDY / "summary.md").write_text("# the report of a kept study\n")
    (root / "reports" / STUDY / "trials.csv").write_text("trial,state\n0,COMPLETE\n")
    _write_inputs(root)
    return root


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
                            ["label 'maybe' in data row 2", "accepts 0..1 or one of"]),
    "data-bad-labels-tsv": ({"data_dir": "data/labels_tsv"},
                            ["has no usable rows", "accepts 0..1 or one of"]),
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
