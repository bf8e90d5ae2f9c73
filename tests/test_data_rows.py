"""Invalid data rows are never lost silently: an error naming the file, the rows and their
lines, or, with --drop-invalid-rows, dropped, counted and stated in the report."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from autopeft import cli
from autopeft import study as records
from autopeft.errors import AutoPeftError
from autopeft.report import build_report
from autopeft.results.export import _train_config
from autopeft.results.retrain import read_train_config, write_train_config
from autopeft.search import searching
from autopeft.search.sweep import COMPARABILITY, SweepRequest, _study_requests
from autopeft.tasks import get_task, load_task_data
from autopeft.tasks.data import read_examples
from tests.helpers import fill_example, new_study

MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
MRPC_ACCEPTS = "mrpc accepts 0..1 or one of: not_equivalent, equivalent"
REMEDY = "fix them, or pass --drop-invalid-rows to train without them"


def _message(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def _mrpc_line(label: str, first: str = "The cat sat.", second: str = "A cat sat.") -> str:
    return "\t".join([label, "1", "2", first, second])


def _write_mrpc(folder: Path, train: list[str], dev: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    good = [_mrpc_line("1"), _mrpc_line("0", "Rain today.", "Sun today.")]
    for name, lines in (("train.tsv", train), ("dev.tsv", dev or good)):
        (folder / name).write_text("\n".join([MRPC_HEADER, *lines]) + "\n", encoding="utf-8")
    return folder


# --- GLUE TSV ------------------------------------------------------------------------------------


def test_tsv_unknown_labels_are_an_error_naming_values_lines_and_remedy(tmp_path):
    folder = _write_mrpc(tmp_path, [_mrpc_line("1"), _mrpc_line("x"), _mrpc_line("0"),
                                    _mrpc_line("yes?")])
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("mrpc"), folder)
    message = _message(excinfo)
    assert message == (
        f"{folder / 'train.tsv'} has 2 invalid rows (lines 3, 5): 2 with an unknown label "
        f"('x', 'yes?'); {MRPC_ACCEPTS}; {REMEDY}")


def test_tsv_missing_text_and_label_count_apart(tmp_path):
    folder = _write_mrpc(tmp_path, [_mrpc_line("1"), _mrpc_line("1", first=" "),
                                    "", _mrpc_line(""), _mrpc_line("0", second="")])
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("mrpc"), folder)
    message = _message(excinfo)
    # the blank line 4 is no row, but it is a line: the rows after it are on lines 5 and 6
    assert "has 3 invalid rows (lines 3, 5, 6)" in message
    assert "2 lacking a text (sentence1, sentence2), 1 lacking a label" in message
    assert "unknown label" not in message and REMEDY in message


def test_tsv_short_and_long_lines_do_not_parse(tmp_path):
    folder = _write_mrpc(tmp_path, [_mrpc_line("1"), "1\t1\t2\tonly one text",
                                    _mrpc_line("0") + "\tstray field", _mrpc_line("1")])
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("mrpc"), folder)
    message = _message(excinfo)
    assert "has 2 invalid rows (lines 3, 4): 2 that do not parse (not 5 tab-separated fields)" \
        in message
    assert MRPC_ACCEPTS in message and REMEDY in message


def test_tsv_many_bad_rows_show_the_first_few(tmp_path):
    folder = _write_mrpc(tmp_path, [_mrpc_line(str(label)) for label in range(2, 10)])
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("mrpc"), folder)
    message = _message(excinfo)
    assert "has 8 invalid rows (lines 2, 3, 4, 5, 6, ...)" in message
    assert "8 with an unknown label ('2', '3', '4', '5', '6', ...)" in message


def test_tsv_dev_file_is_checked_too(tmp_path):
    folder = _write_mrpc(tmp_path, [_mrpc_line("1")], dev=[_mrpc_line("1"), _mrpc_line("2")])
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("mrpc"), folder)
    assert f"{folder / 'dev.tsv'} has 1 invalid row (line 3): 1 with an unknown label ('2')" \
        in _message(excinfo)


def test_tsv_drop_invalid_rows_drops_and_counts(tmp_path, caplog):
    folder = _write_mrpc(
        tmp_path,
        [_mrpc_line("1"), _mrpc_line("x"), "1\t1\t2\tshort", _mrpc_line("1", first=""),
         _mrpc_line("0", "Kept.", "Kept too.")],
        dev=[_mrpc_line("1"), _mrpc_line("maybe")])
    with caplog.at_level(logging.WARNING, logger="autopeft.tasks.data"):
        data = load_task_data(get_task("mrpc"), folder, drop_invalid_rows=True)
    assert data.dropped == {"train": 3, "dev": 1}
    assert data.train.to_dict("records") == [
        {"sentence1": "The cat sat.", "sentence2": "A cat sat.", "label": 1},
        {"sentence1": "Kept.", "sentence2": "Kept too.", "label": 0},
    ]
    assert data.dev["label"].tolist() == [1]
    assert data.train.index.equals(pd.RangeIndex(2))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # one line per file with dropped rows
    assert warnings[0].startswith(f"{folder / 'train.tsv'}: dropped 3 invalid rows (lines 3, 4, "
                                  "5)")
    assert "(--drop-invalid-rows)" in warnings[0] and "\n" not in warnings[0]


def test_tsv_every_row_invalid_and_dropped_is_still_an_error(tmp_path):
    folder = _write_mrpc(tmp_path, [_mrpc_line("x"), _mrpc_line("y")])
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("mrpc"), folder, drop_invalid_rows=True)
    message = _message(excinfo)
    assert "has no usable rows: 2 invalid rows (lines 2, 3)" in message
    assert "all dropped (--drop-invalid-rows)" in message and MRPC_ACCEPTS in message


def test_tsv_without_header_cola(tmp_path):
    good = "gj04\t1\t\tThe book was read."
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / name).write_text(
            "\n".join([good, "gj04\t7\t*\tBad label.", "gj04\t0\tno sentence field", good])
            + "\n", encoding="utf-8")
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("cola"), tmp_path)
    message = _message(excinfo)
    assert "has 2 invalid rows (lines 2, 3)" in message
    assert "1 that does not parse (not 4 tab-separated fields), 1 with an unknown label ('7')" \
        in message
    data = load_task_data(get_task("cola"), tmp_path, drop_invalid_rows=True)
    assert data.dropped == {"train": 2, "dev": 2} and len(data.train) == 2


def test_real_mrpc_loads_with_nothing_dropped(mrpc_dir):
    for drop in (False, True):
        data = load_task_data(get_task("mrpc"), mrpc_dir, drop_invalid_rows=drop)
        assert (len(data.train), len(data.dev)) == (3668, 408)
        assert data.dropped == {"train": 0, "dev": 0}


# --- CSV -----------------------------------------------------------------------------------------


def _write_csv(folder: Path, train_text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.csv").write_text(train_text, encoding="utf-8")
    (folder / "dev.csv").write_text("sentence,label\nfine film,1\nbad film,0\n", encoding="utf-8")
    return folder


CSV_WITH_BAD_ROWS = (
    "sentence,label\n"  # 1
    "fine film,1\n"  # 2
    '"a review\nover two lines",0\n'  # 3-4: one record
    "\n"  # 5: blank, no row
    "what a film,maybe\n"  # 6
    ",1\n"  # 7: no text
    "a film without a label,\n"  # 8
    "one,too,many\n"  # 9: three fields
    '"another,\n\nlong one",nope\n'  # 10-12
    "great film,positive\n"  # 13
)


def test_csv_invalid_rows_name_their_lines_across_quoted_newlines(tmp_path):
    folder = _write_csv(tmp_path, CSV_WITH_BAD_ROWS)
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("sst2"), folder)
    message = _message(excinfo)
    assert message.startswith(f"{folder / 'train.csv'} has 5 invalid rows (lines 6, 7, 8, 9, "
                              "10): ")
    assert ("1 that does not parse (not 2 comma-separated fields), 1 lacking a text (sentence), "
            "1 lacking a label, 2 with an unknown label ('maybe', 'nope')") in message
    assert "sst2 accepts 0..1 or one of: negative, positive" in message and REMEDY in message


def test_csv_drop_invalid_rows(tmp_path):
    folder = _write_csv(tmp_path, CSV_WITH_BAD_ROWS)
    data = load_task_data(get_task("sst2"), folder, drop_invalid_rows=True)
    assert data.dropped == {"train": 5, "dev": 0}
    assert data.train.to_dict("records") == [
        {"sentence": "fine film", "label": 1},
        {"sentence": "a review\nover two lines", "label": 0},
        {"sentence": "great film", "label": 1},
    ]


# --- JSON Lines ----------------------------------------------------------------------------------


def test_jsonl_invalid_rows(tmp_path):
    lines = [
        json.dumps({"sentence": "fine", "label": 1}),  # 1
        json.dumps({"sentence": "odd", "label": "meh"}),  # 2
        "",  # 3: blank
        json.dumps({"sentence": "", "label": 0}),  # 4: no text
        "{not json",  # 5
        json.dumps({"sentence": "unlabelled"}),  # 6
        json.dumps(["a", "list"]),  # 7: not an object
        json.dumps({"sentence": "bad", "label": "negative"}),  # 8
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text(lines[0] + "\n", encoding="utf-8")
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("sst2"), tmp_path)
    message = _message(excinfo)
    assert message.startswith(f"{tmp_path / 'train.jsonl'} has 5 invalid rows (lines 2, 4, 5, "
                              "6, 7): ")
    assert ("2 that do not parse (not a JSON object), 1 lacking a text (sentence), 1 lacking a "
            "label, 1 with an unknown label ('meh')") in message
    data = load_task_data(get_task("sst2"), tmp_path, drop_invalid_rows=True)
    assert data.dropped == {"train": 5, "dev": 0}
    assert data.train.to_dict("records") == [{"sentence": "fine", "label": 1},
                                             {"sentence": "bad", "label": 0}]


# --- the Hub -------------------------------------------------------------------------------------


def test_hub_rows_are_checked_like_files(monkeypatch):
    import datasets
    import huggingface_hub
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda *a, **k: None)
    train = {"sentence": ["good", "bad", "ugly"], "label": [1, -1, 0], "idx": [0, 1, 2]}
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict(train),
                                   "validation": datasets.Dataset.from_dict(train)})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: splits)
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("sst2"), None)
    assert ("hub:nyu-mll/glue/sst2 (train split) has 1 invalid row (row 2): 1 with an unknown "
            "label ('-1')") in _message(excinfo)
    data = load_task_data(get_task("sst2"), None, drop_invalid_rows=True)
    assert data.dropped == {"train": 1, "dev": 1}
    assert data.train["label"].tolist() == [1, 0]


# --- predictions keep their behaviour ------------------------------------------------------------


def test_prediction_rows_keep_their_data_row_and_need_no_label(tmp_path):
    path = tmp_path / "rows.tsv"
    path.write_text("\n".join([MRPC_HEADER, _mrpc_line(""), _mrpc_line("", first=""),
                               _mrpc_line("x"), _mrpc_line("1")]) + "\n", encoding="utf-8")
    frame = read_examples(get_task("mrpc"), path, require_labels=False)
    assert frame.index.tolist() == [0, 2, 3]  # the row without a text dropped, as before
    assert np.isnan(frame["label"].iloc[0]) and np.isnan(frame["label"].iloc[1])
    assert frame["label"].iloc[2] == 1
    unlabelled = tmp_path / "rows.csv"
    unlabelled.write_text("sentence1,sentence2\na,b\n,c\nd,e\n", encoding="utf-8")
    assert read_examples(get_task("mrpc"), unlabelled, require_labels=False).index.tolist() == [
        0, 2]


# --- the search, its study and report, the CLI ---------------------------------------------------


def _mrpc_with_bad_rows(mrpc_dir: Path, folder: Path) -> Path:
    """Real MRPC with 3 invalid training rows and 1 invalid dev row appended."""
    folder.mkdir(parents=True)
    shutil.copy(mrpc_dir / "dev.tsv", folder / "dev.tsv")
    with (folder / "dev.tsv").open("a", encoding="utf-8") as handle:
        handle.write(_mrpc_line("maybe") + "\n")
    shutil.copy(mrpc_dir / "train.tsv", folder / "train.tsv")
    with (folder / "train.tsv").open("a", encoding="utf-8") as handle:
        handle.write("\n".join([_mrpc_line("x"), "1\t2\t3\tshort", _mrpc_line("0", first="")])
                     + "\n")
    return folder


def test_search_records_the_dropped_rows_and_the_report_states_them(tmp_path, tiny_bert,
                                                                    mrpc_dir):
    data_dir = _mrpc_with_bad_rows(mrpc_dir, tmp_path / "data")
    request = searching.SearchRequest(task="mrpc", budget="2%", model=str(tiny_bert),
                                      data_dir=str(data_dir), methods="bitfit",
                                      max_train_samples=32, epochs=1)
    with pytest.raises(AutoPeftError, match=r"train.tsv has 3 invalid rows \(lines 3670, 3671, "
                                            r"3672\)"):
        searching.check_request(request)
    request.drop_invalid_rows = True
    checked = searching.check_request(request)
    assert checked.inputs.task_data.dropped == {"train": 3, "dev": 1}
    assert checked.inputs_key[-1] is True  # other inputs than the same data without the flag
    setup = searching.study_setup_of(checked)
    assert setup.dropped_rows == {"train": 3, "dev": 1}
    store = records.make_storage(None, tmp_path / "studies" / "s")
    study = records.open_study("s", store, setup)
    assert records.study_setup(study).dropped_rows == {"train": 3, "dev": 1}
    out = build_report(study, tmp_path / "report")
    line = "3 invalid rows dropped from train, 1 from dev (--drop-invalid-rows)"
    assert line in (out / "summary.md").read_text(encoding="utf-8")
    assert line in (out / "index.html").read_text(encoding="utf-8")


def test_report_states_the_count_only_for_a_study_run_with_the_flag(tmp_path):
    dropped = build_report(fill_example(new_study(dropped_rows={"train": 1, "dev": 0})),
                           tmp_path / "dropped")
    summary = (dropped / "summary.md").read_text(encoding="utf-8")
    assert "\n1 invalid row dropped from train, 0 from dev (--drop-invalid-rows)\n" in summary
    plain = build_report(fill_example(new_study()), tmp_path / "plain")
    for name in ("summary.md", "index.html"):
        assert "invalid row" not in (plain / name).read_text(encoding="utf-8")


def test_exported_config_keeps_the_flag(tmp_path):
    for dropped, expected in (({"train": 2, "dev": 0}, True), (None, False)):
        study = new_study(dropped_rows=dropped, data_source=f"glue-tsv:{tmp_path}")
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, values=[0.7, 100.0],
            params={"method": "bitfit", "bitfit.learning_rate": 1e-3},
            distributions={"method": CategoricalDistribution(["bitfit"]),
                           "bitfit.learning_rate": FloatDistribution(1e-5, 1e-2, log=True)},
            user_attrs={records.ATTR_STATUS: records.STATUS_OK}))
        description = {"method": "bitfit", "model": "tiny", "knobs": {"learning_rate": 1e-3}}
        config, _ = _train_config(study, study.trials[0], description, None)
        assert config.drop_invalid_rows is expected
        write_train_config(config, tmp_path / "train_config.yaml")
        text = yaml.safe_load((tmp_path / "train_config.yaml").read_text())
        assert text["drop_invalid_rows"] is expected
        assert read_train_config(tmp_path / "train_config.yaml") == config
    (tmp_path / "bad.yaml").write_text("task: mrpc\nmethod: bitfit\ndrop_invalid_rows: maybe\n")
    with pytest.raises(AutoPeftError, match="'drop_invalid_rows' must be true or false"):
        read_train_config(tmp_path / "bad.yaml")


def test_sweep_passes_the_flag_to_its_studies_and_keeps_it_comparable():
    assert "drop_invalid_rows" in COMPARABILITY
    request = SweepRequest(tasks="mrpc", budgets="1%", drop_invalid_rows=True)
    grid = {"tasks": ["mrpc"], "budgets": ["1%"], "models": [request.models]}
    assert all(r.drop_invalid_rows for r in _study_requests(request, "s", grid))


def test_cli_search_with_a_bad_file_is_one_line_and_writes_no_study(tmp_path, tiny_bert,
                                                                    capsys, monkeypatch):
    data_dir = _write_mrpc(tmp_path / "data", [_mrpc_line("1"), _mrpc_line("x"),
                                               _mrpc_line("yes?")])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", [
        "autopeft", "search", "--task", "mrpc", "--budget", "2%", "--model", str(tiny_bert),
        "--data-dir", str(data_dir), "--methods", "bitfit", "--trials", "1", "--epochs", "1"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    stderr = capsys.readouterr().err
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert exited.value.code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "train.tsv has 2 invalid rows (lines 3, 4)" in lines[0]
    assert "('x', 'yes?')" in lines[0] and "--drop-invalid-rows" in lines[0]
    assert not (work / "studies").exists() and not (work / "reports").exists()
