"""Custom tasks from the user's own files, without training: formats, columns, headers, problem
types, metrics and chance levels, the carved dev split, task files and their records, and every
bad input refused in one line by the CLI with nothing written."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from autopeft import study as records
from autopeft.errors import AutoPeftError
from autopeft.search import searching
from autopeft.search.searching import SearchRequest
from autopeft.tasks import (
    chance_score,
    chance_scores,
    compute_metrics,
    get_task,
    load_task_data,
    record_of,
    resolve_task,
    selection_split,
)
from autopeft.tasks.custom import build_task, read_task_file, task_from_flags, task_record
from autopeft.tasks.data import read_examples
from tests.custom_tasks import TOPICS, text_dir, topic_rows, write_rows
from tests.helpers import assert_refused, listing, run_main

TOPIC_NAMES = tuple(sorted(TOPICS))  # the classes, as inferred: sorted


@pytest.fixture(scope="module")
def text() -> Path:
    return text_dir()


def _message(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def _rows(frame) -> set[tuple]:
    return set(map(tuple, frame.to_numpy().tolist()))


def _labels_by_text(data) -> dict[str, int]:
    rows = pd.concat([data.train, data.dev])
    return dict(zip(rows.sentence, rows.label, strict=True))


def _complete(problem_type: str, labels: list | None = None, metric: str | None = None):
    """A spec from a complete mapping: nothing is read, so the file need not exist."""
    return build_task({"train": "rows.csv", "header": True, "text_columns": ["text"],
                       "label_column": "label", "problem_type": problem_type,
                       "labels": labels, "metric": metric})[0]


# --- the shared data sets ---------------------------------------------------------------------


def test_cr_and_mpqa_are_binary_headerless_label_then_text(text):
    cr, note = task_from_flags(str(text / "CR/train.tsv"), str(text / "CR/dev.tsv"), "1", "0")
    assert (cr.name, cr.problem_type, cr.label_names, cr.primary_metric) == (
        "CR", "binary", ("0", "1"), "accuracy")
    assert cr.metrics == ("accuracy", "f1", "macro_f1", "matthews_correlation")
    assert cr.source.header is False and cr.text_columns == ("sentence",)
    assert note.startswith("task CR: binary (inferred from label column 0; --problem-type "
                           "overrides): 2 classes '0', '1'; F1's positive class '1'; primary "
                           "metric accuracy (the binary default); no header line (detected); "
                           "dev dev.tsv")
    # CR's train.tsv has one row without a sentence: refused, or dropped and counted on request
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(cr, None)
    assert _message(excinfo).startswith(
        f"{text / 'CR/train.tsv'} has 1 invalid row (line 1763): 1 lacking a text (column 1); "
        "CR accepts one of: 0, 1; fix them, or pass --drop-invalid-rows")
    data = load_task_data(cr, None, drop_invalid_rows=True)
    assert (len(data.train), len(data.dev), data.dropped) == (3015, 755, {"train": 1, "dev": 0})
    assert list(data.train.columns) == ["sentence", "label"]
    assert data.train.label.value_counts().to_dict() == {1: 1938, 0: 1077}
    assert data.source == f"tsv:{text / 'CR/train.tsv'}; dev: {text / 'CR/dev.tsv'}"
    mpqa, _ = task_from_flags(str(text / "MPQA/train.tsv"), str(text / "MPQA/dev.tsv"), "1", "0")
    data = load_task_data(mpqa, None)
    assert (mpqa.name, mpqa.problem_type, len(data.train), len(data.dev)) == (
        "MPQA", "binary", 8482, 2121)


def test_stsb_is_a_regression_pair_task_in_columns_7_8_and_9(text):
    stsb, note = task_from_flags(str(text / "STS-B/train.tsv"), str(text / "STS-B/dev.tsv"),
                                 "7,8", "9")
    assert (stsb.problem_type, stsb.num_labels, stsb.label_names) == ("regression", 1, ())
    assert stsb.primary_metric == "pearson_spearman_mean"
    assert stsb.metrics == ("pearson", "spearman")
    assert "regression (inferred: 4249 numeric labels in label column 9, 0 to 5" in note
    data = load_task_data(stsb, None)
    assert (len(data.train), len(data.dev)) == (4249, 1500)
    first = data.train.iloc[0].to_dict()
    assert first == {"sentence1": "A plane is taking off.",
                     "sentence2": "An air plane is taking off.", "label": 5.0}
    assert data.train.label.between(0, 5).all() and data.train.label.dtype == float


# --- formats, columns, headers ----------------------------------------------------------------


def test_every_format_reads_the_same_rows(tmp_path):
    rows = topic_rows(30)
    files = {
        "csv": (write_rows(rows, tmp_path / "t.csv"), "title,body", "topic"),
        "tsv, no header, by position": (write_rows(rows, tmp_path / "t.tsv", header=False),
                                        "0,1", "2"),
        "jsonl": (write_rows(rows, tmp_path / "t.jsonl"), "title,body", "topic"),
        "jsonl by position": (tmp_path / "t.jsonl", "0,1", "2"),
        "parquet": (write_rows(rows, tmp_path / "t.parquet"), "title,body", "topic"),
    }
    expected = {(r["title"], r["body"], TOPIC_NAMES.index(r["topic"])) for r in rows}
    for kind, (path, texts, label) in files.items():
        spec, _ = task_from_flags(str(path), None, texts, label)
        assert (spec.problem_type, spec.label_names, spec.primary_metric) == (
            "multiclass", TOPIC_NAMES, "macro_f1"), kind
        assert spec.text_columns == ("sentence1", "sentence2")
        data = load_task_data(spec, None)
        assert _rows(data.train) | _rows(data.dev) == expected, kind


def test_a_header_is_detected_and_can_be_set(tmp_path):
    numbered = tmp_path / "numbered.tsv"
    numbered.write_text("label\ttext\n" + "".join(f"{i % 2}\trow {i}\n" for i in range(20)))
    spec, note = task_from_flags(str(numbered), None, "1", "0")
    assert spec.source.header is True and "a header line (detected)" in note
    named = tmp_path / "named.tsv"
    named.write_text("sentiment\ttext\n" + "".join(f"{['neg', 'pos'][i % 2]}\trow {i}\n"
                                                   for i in range(20)))
    assert task_from_flags(str(named), None, "1", "0")[0].label_names == ("neg", "pos")
    bare = tmp_path / "bare.tsv"
    bare.write_text("".join(f"{['neg', 'pos'][i % 2]}\trow {i}\n" for i in range(20)))
    spec, note = task_from_flags(str(bare), None, "1", "0")
    assert spec.source.header is False and "no header line (detected)" in note
    assert len(load_task_data(spec, None).train) + len(load_task_data(spec, None).dev) == 20
    # --header on the bare file: its first line is taken for names, one row fewer
    forced, note = task_from_flags(str(bare), None, "1", "0", header=True)
    data = load_task_data(forced, None)
    assert len(data.train) + len(data.dev) == 19 and "a header line (given)" in note
    # --no-header on the numbered file: its header line is a row, and "label" is no number
    with pytest.raises(AutoPeftError) as excinfo:
        task_from_flags(str(numbered), None, "1", "0", header=False)
    assert "holds numbers and text (20 numeric, 1 not: 'label')" in _message(excinfo)


def test_integer_and_string_labels_become_named_classes(tmp_path):
    stars = [{"text": f"review {i}", "stars": 1 + i % 5} for i in range(40)]
    spec, note = task_from_flags(str(write_rows(stars, tmp_path / "s.jsonl")), None, "text",
                                 "stars")
    assert (spec.problem_type, spec.label_names) == ("multiclass", ("1", "2", "3", "4", "5"))
    assert "5 classes '1', '2', '3', '4', '5'" in note
    by_text = _labels_by_text(load_task_data(spec, None))
    assert by_text["review 2"] == 2 and by_text["review 4"] == 4  # stars 3 and 5
    # written as floats (1.0) they are the same classes
    floats = [{**r, "stars": float(r["stars"])} for r in stars]
    again, _ = task_from_flags(str(write_rows(floats, tmp_path / "f.parquet")), None, "text",
                               "stars")
    assert again.label_names == spec.label_names
    # or a regression target when asked
    scored, note = task_from_flags(str(tmp_path / "s.jsonl"), None, "text", "stars",
                                   problem_type="regression")
    assert scored.is_regression and "regression (given)" in note
    assert set(load_task_data(scored, None).train.label) == {1.0, 2.0, 3.0, 4.0, 5.0}
    # many whole numbers: a score, not classes
    ages = [{"text": f"person {i}", "age": 18 + i} for i in range(40)]
    spec, note = task_from_flags(str(write_rows(ages, tmp_path / "a.csv")), None, "text", "age")
    assert spec.is_regression and "many values" in note


def test_a_task_file_may_order_the_classes(tmp_path):
    rows = [{"text": f"t {i}", "label": ["neg", "pos"][i % 2]} for i in range(20)]
    write_rows(rows, tmp_path / "data" / "rows.csv")
    (tmp_path / "t.yaml").write_text(yaml.safe_dump({
        "name": "ordered", "train": "data/rows.csv", "text_columns": "text",
        "label_column": "label", "labels": ["pos", "neg"]}))
    spec, note = read_task_file(tmp_path / "t.yaml")
    assert (spec.name, spec.label_names, spec.problem_type) == ("ordered", ("pos", "neg"),
                                                                "binary")
    assert "binary (given), classes 'pos', 'neg'" in note
    assert _labels_by_text(load_task_data(spec, None))["t 1"] == 0


# --- metrics and chance levels ----------------------------------------------------------------


def test_binary_metrics_and_the_primary_by_choice():
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0, 1, 1])
    preds = np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 1])
    expected = {"accuracy": accuracy_score(labels, preds), "f1": f1_score(labels, preds),
                "macro_f1": f1_score(labels, preds, average="macro"),
                "matthews_correlation": matthews_corrcoef(labels, preds)}
    result = compute_metrics(_complete("binary", [0, 1]), preds, labels)
    assert result == pytest.approx({**expected, "score": expected["accuracy"]})
    for metric, score in (("f1", expected["f1"]), ("mcc", expected["matthews_correlation"]),
                          ("macro_f1", expected["macro_f1"]),
                          ("accuracy_f1_mean", (expected["accuracy"] + expected["f1"]) / 2)):
        spec = _complete("binary", [0, 1], metric)
        assert compute_metrics(spec, preds, labels)["score"] == pytest.approx(score), metric
    assert _complete("binary", [0, 1], "mcc").primary_metric == "matthews_correlation"


def test_multiclass_metrics_from_logits():
    labels = np.array([0, 1, 2, 2, 1, 0, 2])
    preds = np.array([0, 2, 2, 2, 1, 1, 0])
    result = compute_metrics(_complete("multiclass", ["a", "b", "c"]), np.eye(3)[preds] * 2,
                             labels)
    macro = f1_score(labels, preds, average="macro")
    assert result == pytest.approx({"accuracy": accuracy_score(labels, preds), "macro_f1": macro,
                                    "matthews_correlation": matthews_corrcoef(labels, preds),
                                    "score": macro})


def test_regression_metrics():
    labels = np.array([0.0, 1.5, 2.0, 3.5, 5.0, 4.0])
    preds = np.array([0.5, 1.0, 2.5, 3.0, 4.0, 4.5])
    pearson, spearman = pearsonr(preds, labels)[0], spearmanr(preds, labels)[0]
    result = compute_metrics(_complete("regression"), preds[:, None], labels)
    assert result == pytest.approx({"pearson": pearson, "spearman": spearman,
                                    "score": (pearson + spearman) / 2})
    assert compute_metrics(_complete("regression", metric="spearman"), preds, labels)[
        "score"] == pytest.approx(spearman)


@pytest.mark.parametrize(("problem_type", "metric", "choices"), [
    ("multiclass", "f1", "accuracy, macro_f1, matthews_correlation (mcc)"),
    ("binary", "pearson", "accuracy, f1, macro_f1, matthews_correlation (mcc), accuracy_f1_mean"),
    ("regression", "accuracy", "pearson, spearman, pearson_spearman_mean"),
])
def test_a_metric_the_problem_type_lacks_is_refused(problem_type, metric, choices):
    with pytest.raises(AutoPeftError) as excinfo:
        _complete(problem_type, ["a", "b"] if problem_type == "binary" else
                  (["a", "b", "c"] if problem_type == "multiclass" else None), metric)
    assert _message(excinfo) == (f"--metric '{metric}' is not a metric of a {problem_type} "
                                 f"task; choose one of: {choices}")


def test_the_chance_level_of_every_metric():
    """What the best constant prediction scores, metric by metric (each maximised over the
    classes on its own)."""
    binary = chance_scores(_complete("binary", [0, 1]), np.array([1, 1, 1, 0]))
    # always 1: accuracy 0.75, F1 6/7, macro-F1 (6/7 + 0) / 2; always 0: macro-F1 (0.4 + 0) / 2
    assert binary == pytest.approx({"accuracy": 0.75, "f1": 6 / 7, "macro_f1": 3 / 7,
                                    "matthews_correlation": 0.0, "score": 0.75})
    assert chance_score(_complete("binary", [0, 1], "f1"), np.array([1, 1, 1, 0])) == \
        pytest.approx(6 / 7)
    multi = chance_scores(_complete("multiclass", ["a", "b", "c"]),
                          np.array([0, 0, 0, 1, 2, 2]))
    # always 0: accuracy 1/2, macro-F1 (2/3 + 0 + 0) / 3
    assert multi == pytest.approx({"accuracy": 0.5, "macro_f1": 2 / 9,
                                   "matthews_correlation": 0.0, "score": 2 / 9})
    regression = chance_scores(_complete("regression"), np.array([0.5, 3.0, 4.0]))
    assert regression == {"pearson": 0.0, "spearman": 0.0, "score": 0.0}
    # GLUE tasks keep theirs: MRPC's accuracy/F1 mean
    assert chance_scores(get_task("mrpc"), np.array([1, 1, 1, 0]))["score"] == pytest.approx(
        (0.75 + 6 / 7) / 2)


# --- the carved dev split ---------------------------------------------------------------------


def test_a_carved_dev_split_never_overlaps_train_or_selection(tmp_path, tiny_bert):
    path = write_rows(topic_rows(300), tmp_path / "topics.csv")
    spec, note = task_from_flags(str(path), None, "title,body", "topic")
    assert "dev carved from train (10%)" in note
    data = load_task_data(spec, None)
    train, dev = _rows(data.train), _rows(data.dev)
    assert (len(data.train), len(data.dev)) == (270, 30)
    assert not train & dev and len(train | dev) == 300  # every row once, in one split
    assert data.dev.label.value_counts().to_dict() == {0: 10, 1: 10, 2: 10}  # stratified
    assert _rows(load_task_data(spec, None).dev) == dev  # seeded: every command carves these
    assert "dev: 10% of train carved out (stratified by label, seed 0), never trained or " \
           "selected on" in data.source
    other, _ = build_task({**task_record(spec), "dev_seed": 1})
    assert _rows(load_task_data(other, None).dev) != dev
    # the search's selection split is carved from what remains, as the search carves it
    rest, selection = selection_split(data.train, spec, 0.1, seed=1)
    assert not _rows(selection) & dev and not _rows(selection) & _rows(rest)
    assert _rows(rest) | _rows(selection) == train
    request = SearchRequest(budget="2%", model=str(tiny_bert), train=str(path),
                            text_columns="title,body", label_column="topic", methods="bitfit",
                            epochs=1, seed=1)
    checked = searching.check_request(request)
    assert (checked.inputs.train_rows, checked.inputs.selection_rows) == (len(rest),
                                                                          len(selection))
    assert checked.inputs.search_data.selection.labels.tolist() == selection.label.tolist()
    setup = searching.study_setup_of(checked)
    assert setup.task_spec == task_record(spec) and "carved out" in setup.data_source


def test_drop_invalid_rows_drops_empty_texts_and_counts_them(tmp_path, caplog):
    rows = topic_rows(60)
    rows[2]["body"], rows[5]["title"], rows[9]["title"] = "", "   ", " \t "
    path = write_rows(rows, tmp_path / "t.jsonl")
    spec, _ = task_from_flags(str(path), None, "title,body", "topic")
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(spec, None)
    assert _message(excinfo) == (
        f"{path} has 3 invalid rows (lines 3, 6, 10): 3 lacking a text (title, body); "
        f"{spec.name} accepts one of: business, politics, weather; fix them, or pass "
        "--drop-invalid-rows to train without them")
    with caplog.at_level(logging.WARNING):
        data = load_task_data(spec, None, drop_invalid_rows=True)
    assert data.dropped == {"train": 3, "dev": 0} and len(data.train) + len(data.dev) == 57
    assert any("dropped 3 invalid rows" in r.getMessage() for r in caplog.records)


# --- task files, records, the resolver ----------------------------------------------------------


def test_a_task_file_equals_the_flags_and_its_record_needs_no_data(tmp_path):
    path = write_rows(topic_rows(60), tmp_path / "data" / "topics.csv")
    (tmp_path / "topics.yaml").write_text(
        "name: topics\ntrain: data/topics.csv\ntext_columns: [title, body]\n"
        "label_column: topic\n")
    spec, _ = read_task_file(tmp_path / "topics.yaml")
    assert spec == task_from_flags(str(path), None, "title,body", "topic", name="topics")[0]
    assert resolve_task(str(tmp_path / "topics.yaml")) == spec
    record = record_of(spec)
    assert record == json.loads(json.dumps(record))  # plain JSON: what studies store
    assert record["train"] == str(path) and record["header"] is True
    assert record["labels"] == list(TOPIC_NAMES) and record["metric"] == "macro_f1"
    path.unlink()  # a worker, or another machine loading an export, has no data
    assert resolve_task(record) == spec
    assert record_of(get_task("mrpc")) == "mrpc" and resolve_task("MRPC") is get_task("mrpc")


def test_a_resumed_study_must_have_the_same_custom_task(tmp_path):
    spec = _complete("multiclass", ["a", "b", "c"])
    setup = records.StudySetup(task=spec.name, model="m", budget_spec="1%", budget_params=10,
                               backbone_params=1000, primary_metric=spec.primary_metric,
                               methods=["bitfit"], task_spec=task_record(spec))
    storage = records.make_storage(None, tmp_path / "s")
    records.open_study("s", storage, setup)
    records.open_study("s", storage, setup)  # the same task: it continues
    other = task_record(_complete("multiclass", ["a", "b", "c"], "accuracy"))
    with pytest.raises(AutoPeftError) as excinfo:
        records.open_study("s", storage, records.StudySetup(
            **{**setup.__dict__, "task_spec": other}))
    assert "study 's' was made with task_spec.metric='macro_f1', not 'accuracy'" in \
        _message(excinfo)


def test_prediction_rows_need_the_texts_only(tmp_path):
    spec, _ = task_from_flags(str(write_rows(topic_rows(30), tmp_path / "t.csv")), None,
                              "title,body", "topic")
    unlabelled = write_rows([{"title": "a", "body": "merger b"}, {"title": "", "body": "x"},
                             {"title": "c", "body": "storm d"}], tmp_path / "p.csv")
    frame = read_examples(spec, unlabelled, require_labels=False)
    assert frame.index.tolist() == [0, 2] and frame.label.isna().all()
    wrong = write_rows([{"title": "a", "body": "b", "topic": "sports"}], tmp_path / "w.csv")
    with pytest.raises(AutoPeftError) as excinfo:
        read_examples(spec, wrong, require_labels=False)
    assert "label 'sports' at line 2 is not usable" in _message(excinfo)


def test_the_search_says_what_it_inferred_first(tmp_path, tiny_bert):
    path = write_rows(topic_rows(120), tmp_path / "topics.csv")
    request = SearchRequest(budget="2%", model=str(tiny_bert), train=str(path),
                            text_columns="title,body", label_column="topic", methods="bitfit",
                            epochs=1, studies_dir=str(tmp_path / "studies"), portfolio="none")
    out = io.StringIO()
    prepared = searching.prepare_study(request, Console(file=out, width=400))
    first = out.getvalue().splitlines()[0]
    assert first.startswith("task topics: multiclass (inferred from label column 'topic'; "
                            "--problem-type overrides): 3 classes 'business', 'politics', "
                            "'weather'; primary metric macro_f1 (the multiclass default); a "
                            "header line (detected); dev carved from train (10%)")
    assert prepared.context.task == task_record(prepared.task)  # what the workers rebuild


# --- bad input: one line, exit 2, nothing written ---------------------------------------------

def _bad_files(root: Path) -> None:
    rows = topic_rows(60)
    write_rows(rows, root / "topics.csv")
    write_rows(rows, root / "topics.jsonl")
    write_rows([{**r, "topic": "business"} for r in rows], root / "one.csv")
    write_rows([{**r, "topic": ["1", "2", "pos"][i % 3]} for i, r in enumerate(rows)],
               root / "mixed.csv")
    write_rows([{**r, "topic": "high" if i == 4 else str(i % 5 / 2)} for i, r in enumerate(rows)],
               root / "scores.csv")
    blank = [dict(r) for r in rows]
    blank[2]["body"], blank[5]["title"] = "", "   "
    write_rows(blank, root / "blank.csv")
    write_rows(topic_rows(20), root / "few.csv")
    (root / "rows.xlsx").write_bytes(b"PK\x03\x04 not really")
    (root / "cr.tsv").write_text("".join(f"{i % 2}\tsentence {i}\n" for i in range(40)))
    (root / "colour.yaml").write_text("train: topics.csv\ntext_columns: [title]\n"
                                      "label_column: topic\ncolour: red\n")
    (root / "nofile.yaml").write_text("train: nope.csv\ntext_columns: [title]\n"
                                      "label_column: topic\n")


BAD = {
    "column-by-name": (["--train", "topics.csv", "--text-columns", "title,text",
                        "--label-column", "topic"],
                       "has no column 'text'; columns found: 'title', 'body', 'topic'"),
    "column-by-position": (["--train", "cr.tsv", "--text-columns", "3", "--label-column", "0"],
                           "has no column 3; columns found: 2 unnamed (no header line): 0..1"),
    "one-class": (["--train", "one.csv", "--text-columns", "body", "--label-column", "topic"],
                  "the label column 'topic' holds one class only ('business')"),
    "mixed-labels": (["--train", "mixed.csv", "--text-columns", "body", "--label-column",
                      "topic"], "holds numbers and text (40 numeric, 20 not: 'pos')"),
    "regression-text-target": (["--train", "scores.csv", "--text-columns", "body",
                                "--label-column", "topic", "--problem-type", "regression"],
                               "1 with a target that is not a number ('high')"),
    "empty-texts": (["--train", "blank.csv", "--text-columns", "title,body", "--label-column",
                     "topic"], "has 2 invalid rows (lines 4, 7): 2 lacking a text (title, body)"),
    "unrecognised-format": (["--train", "rows.xlsx", "--text-columns", "0", "--label-column",
                             "1"], "--train 'rows.xlsx': unrecognised file format '.xlsx'"),
    "too-few-rows": (["--train", "few.csv", "--text-columns", "body", "--label-column", "topic"],
                     "the selection split (held out of train) holds too few rows of some labels"),
    "binary-of-three": (["--train", "topics.csv", "--text-columns", "body", "--label-column",
                         "topic", "--problem-type", "binary"],
                        "binary classification needs 2 classes; the label column 'topic' has 3"),
    "unknown-problem-type": (["--train", "topics.csv", "--text-columns", "body",
                              "--label-column", "topic", "--problem-type", "ordinal"],
                             "--problem-type 'ordinal' is not one of: binary, multiclass"),
    "metric-of-another-type": (["--train", "topics.csv", "--text-columns", "body",
                                "--label-column", "topic", "--metric", "pearson"],
                               "--metric 'pearson' is not a metric of a multiclass task"),
    "three-text-columns": (["--train", "topics.csv", "--text-columns", "title,body,topic",
                            "--label-column", "topic"],
                           "--text-columns must name one or two different columns"),
    "no-label-column": (["--train", "topics.csv", "--text-columns", "body"],
                        "--label-column is required"),
    "header-on-jsonl": (["--train", "topics.jsonl", "--text-columns", "body", "--label-column",
                         "topic", "--header"], "--header applies to .csv and .tsv files only"),
    "names-without-header": (["--train", "topics.csv", "--text-columns", "body",
                              "--label-column", "topic", "--no-header"],
                             "columns named need a header line"),
    "task-and-train": (["--task", "mrpc", "--train", "topics.csv"], "pass either --task"),
    "stray-flag": (["--task", "mrpc", "--label-column", "0"],
                   "--label-column describes a --train file"),
    "no-task": ([], "name the task: --task"),
    "task-file-unknown-key": (["--task", "colour.yaml"], "colour.yaml: unknown key 'colour'"),
    "task-file-missing-data": (["--task", "nofile.yaml"],
                               "nofile.yaml: 'train' file 'nope.csv' does not exist"),
    "hub-offline": (["--train", "someone/reviews", "--text-columns", "text", "--label-column",
                     "label"], "could not fetch split 'train' of dataset 'someone/reviews' from "
                               "the Hugging Face Hub (offline?): pass its rows as files instead"),
}


@pytest.mark.parametrize(("extra", "needle"), list(BAD.values()), ids=list(BAD))
def test_bad_custom_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_bert, capsys,
                                                                monkeypatch, extra, needle):
    _bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    argv = ["search", "--budget", "2%", "--model", str(tiny_bert), "--methods", "bitfit",
            "--trials", "1", "--epochs", "1", "--max-train-samples", "64", "--final-seeds", "0",
            *extra]
    code, stderr = run_main(argv, capsys, monkeypatch)
    assert_refused(code, stderr, needle, max_lines=1)
    assert listing(tmp_path) == before  # no studies/, no reports/, inputs untouched
