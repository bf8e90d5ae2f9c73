"""GLUE task specs, loaders, metrics and splits, checked offline on real and synthetic files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autopeft.errors import AutoPeftError
from autopeft.tasks import (
    TASKS,
    chance_score,
    compute_metrics,
    get_task,
    load_task_data,
    selection_split,
    subsample,
)

GLUE = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def _one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# --- specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "primary", "num_labels", "regression", "columns"),
    [
        ("cola", "matthews_correlation", 2, False, ("sentence",)),
        ("sst2", "accuracy", 2, False, ("sentence",)),
        ("mrpc", "accuracy_f1_mean", 2, False, ("sentence1", "sentence2")),
        ("stsb", "pearson_spearman_mean", 1, True, ("sentence1", "sentence2")),
        ("qqp", "accuracy_f1_mean", 2, False, ("question1", "question2")),
        ("mnli", "accuracy", 3, False, ("premise", "hypothesis")),
        ("qnli", "accuracy", 2, False, ("question", "sentence")),
        ("rte", "accuracy", 2, False, ("sentence1", "sentence2")),
        ("wnli", "accuracy", 2, False, ("sentence1", "sentence2")),
    ],
)
def test_every_glue_task_has_a_spec(name, primary, num_labels, regression, columns):
    spec = get_task(name)
    assert spec.name == name
    assert spec.primary_metric == primary
    assert spec.num_labels == num_labels
    assert spec.is_regression is regression
    assert spec.text_columns == columns
    assert spec.hub_path == ("nyu-mll/glue", name)
    assert len(spec.tsv.text_fields) == len(spec.text_columns)
    assert regression or len(spec.label_names) == num_labels


def test_task_table_and_lookup():
    assert tuple(TASKS) == GLUE
    assert get_task(" MRPC ") is TASKS["mrpc"]
    assert get_task("SST-2") is TASKS["sst2"]
    assert TASKS["mnli"].eval_split == "validation_matched"
    assert TASKS["mnli"].tsv.dev_file == "dev_matched.tsv"
    assert TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert TASKS["mrpc"].metrics == ("accuracy", "f1")
    assert TASKS["stsb"].metrics == ("pearson", "spearman")
    assert TASKS["cola"].tsv.has_header is False


def test_unknown_task_names_it_and_lists_choices():
    with pytest.raises(AutoPeftError) as excinfo:
        get_task("squad")
    message = _one_line_error(excinfo)
    assert "'squad'" in message
    assert "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli" in message


# --- real MRPC -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mrpc(mrpc_dir):
    return load_task_data(get_task("mrpc"), mrpc_dir)


def test_real_mrpc_loads(mrpc, mrpc_dir):
    assert (len(mrpc.train), len(mrpc.dev)) == (3668, 408)
    for frame in (mrpc.train, mrpc.dev):
        assert list(frame.columns) == ["sentence1", "sentence2", "label"]
        assert not any("\ufeff" in c for c in frame.columns)
        assert set(frame["label"].unique()) == {0, 1}
        assert frame["label"].dtype == np.int64
        assert frame.index.equals(pd.RangeIndex(len(frame)))
    assert int(mrpc.dev["label"].sum()) == 279
    assert mrpc.source == f"glue-tsv:{mrpc_dir.resolve()}"


def test_real_mrpc_keeps_bare_quotes(mrpc):
    first = mrpc.dev.iloc[0]
    assert first["sentence2"] == (
        '"The foodservice pie business does not fit our long-term growth strategy.'
    )
    quoted = 'His wife said he was "100 percent behind George Bush" and looked forward to'
    assert mrpc.dev["sentence2"].str.startswith(quoted).sum() == 1


def test_glue_root_finds_the_task_folder(mrpc_dir):
    data = load_task_data(get_task("mrpc"), mrpc_dir.parent)
    assert len(data.dev) == 408


# --- synthetic GLUE TSVs for every task ----------------------------------------------------

# task -> (header or None, row(texts, label) -> fields, label strings as written, expected ints)
_TSV = {
    "cola": (None, lambda t, y: ["gj04", y, "*" if y == "0" else "", t[0]]),
    "sst2": (["sentence", "label"], lambda t, y: [t[0], y]),
    "mrpc": (
        ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        lambda t, y: [y, "11", "12", t[0], t[1]],
    ),
    "stsb": (
        [
            "index",
            "genre",
            "filename",
            "year",
            "old_index",
            "source1",
            "source2",
            "sentence1",
            "sentence2",
            "score",
        ],
        lambda t, y: ["0", "main-captions", "MSRvid", "2012", "1", "none", "none", t[0], t[1], y],
    ),
    "qqp": (
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        lambda t, y: ["7", "1", "2", t[0], t[1], y],
    ),
    "mnli": (
        [
            "index",
            "promptID",
            "pairID",
            "genre",
            "sentence1_binary_parse",
            "sentence2_binary_parse",
            "sentence1_parse",
            "sentence2_parse",
            "sentence1",
            "sentence2",
            "label1",
            "gold_label",
        ],
        lambda t, y: ["0", "1", "1e", "fiction", "( a )", "( b )", "(A)", "(B)", t[0], t[1], y, y],
    ),
    "qnli": (["index", "question", "sentence", "label"], lambda t, y: ["0", t[0], t[1], y]),
    "rte": (["index", "sentence1", "sentence2", "label"], lambda t, y: ["0", t[0], t[1], y]),
    "wnli": (["index", "sentence1", "sentence2", "label"], lambda t, y: ["0", t[0], t[1], y]),
}

_LABELS = {
    "mnli": (["entailment", "neutral", "contradiction"], [0, 1, 2]),
    "qnli": (["entailment", "not_entailment"], [0, 1]),
    "rte": (["not_entailment", "entailment"], [1, 0]),
    "stsb": (["4.25", "0.0"], [4.25, 0.0]),
}


def _write_tsv(path: Path, task: str, rows: list[tuple[list[str], str]]) -> None:
    header, make_row = _TSV[task]
    lines = [] if header is None else ["\t".join(header)]
    lines += ["\t".join(make_row(texts, label)) for texts, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _rows(task: str, split: str) -> tuple[list[tuple[list[str], str]], list]:
    written, expected = _LABELS.get(task, (["0", "1"], [0, 1]))
    n_texts = len(TASKS[task].text_columns)
    rows = []
    for i, label in enumerate(written):
        texts = [f'{split} {task} row {i} text {j} with a "quote"' for j in range(n_texts)]
        rows.append((texts, label))
    return rows, expected


@pytest.mark.parametrize("name", GLUE)
def test_each_task_loads_its_glue_tsv_layout(tmp_path, name):
    spec = get_task(name)
    for split, filename in (("train", spec.tsv.train_file), ("dev", spec.tsv.dev_file)):
        rows, _ = _rows(name, split)
        _write_tsv(tmp_path / filename, name, rows)
    data = load_task_data(spec, tmp_path)
    assert data.source.startswith("glue-tsv:")
    for split, frame in (("train", data.train), ("dev", data.dev)):
        rows, expected = _rows(name, split)
        assert list(frame.columns) == [*spec.text_columns, "label"]
        assert frame["label"].tolist() == expected
        assert frame["label"].dtype == (np.float64 if spec.is_regression else np.int64)
        for column, text in zip(spec.text_columns, rows[0][0], strict=True):
            assert frame[column].iloc[0] == text


def test_malformed_tsv_rows_are_refused_or_dropped_on_request(tmp_path):
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    lines = [
        header,
        "1\t1\t2\tHow old?\tWhat age?\t1",
        "2\t3\t4\tA question with a\tstray tab\tin it\t0",  # too many fields
        "3\t5\t6\tbroken across",  # too few fields: no label
        "4\t7\t8\t\tEmpty first question\t0",  # missing text
        "5\t9\t10\tnull\tNA\t0",  # literal words, not missing values
    ]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("qqp"), tmp_path)
    assert "3 invalid rows (lines 3, 4, 5)" in _one_line_error(excinfo)
    data = load_task_data(get_task("qqp"), tmp_path, drop_invalid_rows=True)
    assert data.dropped == {"train": 3, "dev": 0}
    train = data.train
    assert train.to_dict("records") == [
        {"question1": "How old?", "question2": "What age?", "label": 1},
        {"question1": "null", "question2": "NA", "label": 0},
    ]


def test_bom_header_is_read(tmp_path):
    content = "\ufeffsentence\tlabel\nfine film\t1\n"
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / name).write_text(content, encoding="utf-8")
    data = load_task_data(get_task("sst2"), tmp_path)
    assert list(data.train.columns) == ["sentence", "label"]
    assert data.train["sentence"].tolist() == ["fine film"]


# --- CSV and JSON Lines --------------------------------------------------------------------


def test_csv_layout_with_string_labels(tmp_path):
    frame = pd.DataFrame(
        {
            "premise": ["A man sleeps.", 'He said "no", twice.', "It rains."],
            "hypothesis": ["Someone rests.", "He agreed.", "It is wet."],
            "label": ["entailment", "contradiction", "1"],
        }
    )
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_csv(tmp_path / "validation.csv", index=False)
    data = load_task_data(get_task("mnli"), tmp_path)
    assert data.source == f"csv:{tmp_path.resolve()}"
    assert data.train["label"].tolist() == [0, 2, 1]
    assert data.dev["premise"].tolist() == frame["premise"].tolist()


def test_jsonl_layout(tmp_path):
    records = [
        {"sentence1": "A cat.", "sentence2": "A feline.", "label": 4.5, "idx": 0},
        {"sentence1": "A dog.", "sentence2": "A car.", "label": "0.25", "idx": 1},
    ]
    text = "\n".join(json.dumps(r) for r in records) + "\n"
    (tmp_path / "train.jsonl").write_text(text, encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text(text, encoding="utf-8")
    data = load_task_data(get_task("stsb"), tmp_path)
    assert data.source.startswith("jsonl:")
    assert list(data.train.columns) == ["sentence1", "sentence2", "label"]
    assert data.train["label"].tolist() == [4.5, 0.25]


def test_jsonl_class_names_map_to_ids(tmp_path):
    records = [{"sentence": "great", "label": "positive"}, {"sentence": "bad", "label": 0}]
    text = "\n".join(json.dumps(r) for r in records)
    (tmp_path / "train.jsonl").write_text(text, encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text(text, encoding="utf-8")
    assert load_task_data(get_task("sst2"), tmp_path).dev["label"].tolist() == [1, 0]


# --- loader errors -------------------------------------------------------------------------


def test_directory_without_usable_files(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n", encoding="utf-8")  # no dev file
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("sst2"), tmp_path)
    message = _one_line_error(excinfo)
    assert str(tmp_path) in message
    assert "train.tsv + dev.tsv" in message and "train.csv" in message and ".jsonl" in message


def test_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("rte"), missing)
    assert str(missing) in _one_line_error(excinfo)


def test_missing_csv_column(tmp_path):
    frame = pd.DataFrame({"sentence1": ["a"], "label": [1]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_csv(tmp_path / "dev.csv", index=False)
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("rte"), tmp_path)
    message = _one_line_error(excinfo)
    assert "train.csv" in message and "'sentence2'" in message


def test_missing_tsv_column(tmp_path):
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / name).write_text("Quality\t#1 String\n1\tonly one\n", encoding="utf-8")
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("mrpc"), tmp_path)
    message = _one_line_error(excinfo)
    assert "train.tsv" in message and "'#2 String'" in message


def test_unknown_label_in_user_file(tmp_path):
    frame = pd.DataFrame({"sentence": ["a", "b"], "label": ["positive", "maybe"]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_csv(tmp_path / "dev.csv", index=False)
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("sst2"), tmp_path)
    message = _one_line_error(excinfo)
    assert "'maybe'" in message and "negative, positive" in message


def test_offline_hub_fails_fast_in_one_line(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(AutoPeftError) as excinfo:
        load_task_data(get_task("mrpc"), None)
    message = _one_line_error(excinfo)
    assert "'mrpc'" in message and "--data-dir" in message and "dev.tsv" in message


# --- metrics -------------------------------------------------------------------------------


def _logits(classes: list[int], num_labels: int = 2) -> np.ndarray:
    return np.eye(num_labels)[classes] * 3.0 - 1.0


def test_mrpc_accuracy_f1_mean():
    labels = np.array([1, 1, 1, 0, 0, 1])
    preds = [1, 0, 1, 0, 1, 1]  # tp=3, fp=1, fn=1, tn=1
    result = compute_metrics(get_task("mrpc"), _logits(preds), labels)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["f1"] == pytest.approx(0.75)  # 2*3 / (2*3 + 1 + 1)
    assert result["score"] == pytest.approx((4 / 6 + 0.75) / 2)
    assert set(result) == {"accuracy", "f1", "score"}


def test_cola_matthews():
    labels = np.array([1, 1, 1, 0, 0, 1])
    preds = [1, 0, 1, 0, 1, 1]  # tp=3, tn=1, fp=1, fn=1
    expected = (3 * 1 - 1 * 1) / np.sqrt(4 * 4 * 2 * 2)
    result = compute_metrics(get_task("cola"), _logits(preds), labels)
    assert result["matthews_correlation"] == pytest.approx(expected)
    assert result["score"] == pytest.approx(0.25)
    assert set(result) == {"matthews_correlation", "score"}


def test_stsb_pearson_spearman_mean():
    labels = np.array([0.0, 1.0, 2.0, 3.0])
    preds = np.array([[0.0], [1.0], [2.0], [4.0]])
    # centred: (-1.75, -0.75, 0.25, 2.25) . (-1.5, -0.5, 0.5, 1.5) = 6.5; squares 8.75 and 5
    pearson = 6.5 / np.sqrt(8.75 * 5)
    result = compute_metrics(get_task("stsb"), preds, labels)
    assert result["pearson"] == pytest.approx(pearson)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["score"] == pytest.approx((pearson + 1.0) / 2)
    assert compute_metrics(get_task("stsb"), preds[:, 0], labels)["score"] == result["score"]


def test_mnli_accuracy_from_three_way_logits():
    labels = np.array([0, 1, 2, 2])
    result = compute_metrics(get_task("mnli"), _logits([0, 1, 2, 0], 3), labels)
    assert result == {"accuracy": 0.75, "score": 0.75}


def test_degenerate_predictions_give_zero_not_nan():
    labels = np.array([0.5, 1.0, 2.0])
    stsb = compute_metrics(get_task("stsb"), np.full(3, 2.5), labels)
    assert stsb == {"pearson": 0.0, "spearman": 0.0, "score": 0.0}
    cola = compute_metrics(get_task("cola"), _logits([1, 1, 1]), np.array([0, 1, 1]))
    assert cola["matthews_correlation"] == 0.0
    mrpc = compute_metrics(get_task("mrpc"), _logits([0, 0]), np.array([1, 0]))
    assert mrpc["f1"] == 0.0 and mrpc["score"] == pytest.approx(0.25)


def test_chance_score_is_the_best_a_constant_prediction_gets():
    labels = np.array([1, 1, 1, 0])
    # MRPC: always 1 gives accuracy 0.75 and F1 6/7; always 0 gives 0.25 and F1 0
    assert chance_score(get_task("mrpc"), labels) == pytest.approx((0.75 + 6 / 7) / 2)
    assert chance_score(get_task("sst2"), np.array([0, 0, 1])) == pytest.approx(2 / 3)
    assert chance_score(get_task("mnli"), np.array([2, 2, 1, 0, 2])) == pytest.approx(0.6)
    assert chance_score(get_task("cola"), labels) == 0.0  # a constant has no correlation
    assert chance_score(get_task("stsb"), np.array([0.5, 3.0, 4.0])) == 0.0


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(AutoPeftError) as excinfo:
        compute_metrics(get_task("sst2"), _logits([0, 1]), np.array([0, 1, 1]))
    assert "sst2" in _one_line_error(excinfo)


# --- splits --------------------------------------------------------------------------------


def _labelled(n_pos: int, n_neg: int) -> pd.DataFrame:
    labels = [1] * n_pos + [0] * n_neg
    rng = np.random.default_rng(7)
    rng.shuffle(labels)
    return pd.DataFrame({"sentence": [f"row {i}" for i in range(len(labels))], "label": labels})


def test_selection_split_is_stratified_disjoint_and_sized():
    df = _labelled(700, 300)
    train, selection = selection_split(df, get_task("sst2"), fraction=0.2, seed=3)
    assert (len(train), len(selection)) == (800, 200)
    assert abs(int(selection["label"].sum()) - 140) <= 1
    assert abs(int(train["label"].sum()) - 560) <= 1
    assert set(train["sentence"]).isdisjoint(selection["sentence"])
    assert set(train["sentence"]) | set(selection["sentence"]) == set(df["sentence"])
    for part in (train, selection):
        assert part.index.equals(pd.RangeIndex(len(part)))


def test_selection_split_is_seeded():
    df = _labelled(70, 30)
    task = get_task("sst2")
    first = selection_split(df, task, fraction=0.1, seed=0)[1]
    again = selection_split(df, task, fraction=0.1, seed=0)[1]
    other = selection_split(df, task, fraction=0.1, seed=1)[1]
    pd.testing.assert_frame_equal(first, again)
    assert set(first["sentence"]) != set(other["sentence"])


def test_selection_split_on_real_mrpc(mrpc):
    train, selection = selection_split(mrpc.train, get_task("mrpc"))
    assert (len(train), len(selection)) == (3301, 367)
    expected = mrpc.train["label"].mean() * len(selection)
    assert abs(int(selection["label"].sum()) - expected) <= 1


def test_selection_split_stratifies_regression_scores():
    scores = np.linspace(0.0, 5.0, 200)
    df = pd.DataFrame({"sentence1": [f"a{i}" for i in range(200)], "sentence2": "b"})
    df["label"] = scores
    train, selection = selection_split(df, get_task("stsb"), fraction=0.1, seed=5)
    assert len(selection) == 20
    # one row from each of the 10 quantile bins, twice over
    bins = np.digitize(selection["label"], np.quantile(scores, np.linspace(0, 1, 11))[1:-1])
    assert np.bincount(bins, minlength=10).tolist() == [2] * 10


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True, "0.1"])
def test_selection_fraction_must_be_inside_zero_one(fraction):
    with pytest.raises(AutoPeftError) as excinfo:
        selection_split(_labelled(5, 5), get_task("sst2"), fraction=fraction)
    assert repr(fraction) in _one_line_error(excinfo)


def test_subsample():
    df = _labelled(600, 400)
    assert subsample(df, None, seed=0) is df
    assert subsample(df, 5000, seed=0) is df
    small = subsample(df, 100, seed=0)
    assert len(small) == 100 and small["label"].sum() == 60
    pd.testing.assert_frame_equal(small, subsample(df, 100, seed=0))
    assert set(small["sentence"]) != set(subsample(df, 100, seed=1)["sentence"])
    assert small.index.equals(pd.RangeIndex(100))
    with pytest.raises(AutoPeftError) as excinfo:
        subsample(df, 0, seed=0)
    assert "0" in _one_line_error(excinfo)


def test_hub_rows_become_canonical_frames(monkeypatch):
    """The Hub path, with the network calls replaced by an in-memory GLUE-shaped dataset."""
    import datasets
    import huggingface_hub
    import huggingface_hub.constants

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda *a, **k: None)
    rows = {"premise": ["p0", "p1"], "hypothesis": ["h0", "h1"], "label": [2, 0], "idx": [0, 1]}
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(rows),
            "validation_matched": datasets.Dataset.from_dict(rows),
        }
    )
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a) or splits)
    data = load_task_data(get_task("mnli"), None)
    assert calls == [("nyu-mll/glue", "mnli")]
    assert data.source == "hub:nyu-mll/glue/mnli"
    assert list(data.dev.columns) == ["premise", "hypothesis", "label"]
    assert data.dev["label"].tolist() == [2, 0]
