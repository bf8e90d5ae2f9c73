"""End to end on the user's own data, through the CLI, Ray and Optuna on the tiny BERT:
`autopeft search --train` on CR (binary, headerless), STS-B (regression, columns 7, 8 and 9)
and a multi-class file this test writes (dev carved from train), then report, export, predict
and train on each result; and a sweep mixing MRPC with a task file.

Each search runs `python -m autopeft` in a subprocess (Ray and all); export, predict and train
run the same entry point in-process (`cli.main`), which saves a torch start-up per command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from autopeft import study as records
from autopeft.report.tables import SELECTION_PREFIX
from autopeft.tasks import chance_score, load_task_data, resolve_task, selection_cap
from autopeft.tasks import selection_split as carve
from tests.custom_tasks import TOPICS, text_dir, topic_rows, write_rows
from tests.helpers import run_cli, run_main

COMMON = ["--budget", "2%", "--trials", "1", "--batch-size", "16", "--sampler", "random",
          "--seed", "1", "--portfolio", "none"]
# LoRA on every projection at a high learning rate: the tiny BERT learns the topic keywords
TOPIC_SPACE = """
methods:
  lora:
    r: {choices: [8]}
    targets: {choices: [all]}
    learning_rate: {choices: [0.003]}
"""


@pytest.fixture(scope="module")
def text():
    return text_dir()


def _search(work, *args):
    result = run_cli("search", *args, *COMMON, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _study(work, name):
    return records.read_study(name, None, work / "studies")


def _use(work, study: str, rows_file: str, capsys, monkeypatch) -> dict[str, str]:
    """export --best, predict on `rows_file`, train --config: each must succeed; their stderr."""
    monkeypatch.chdir(work)
    said = {}
    for args in (["export", "best", "--study", study, "--best"],
                 ["predict", "best", "--input", rows_file, "--output", "preds.csv"],
                 ["train", "--config", "best/train_config.yaml", "--out", "retrained"]):
        code, said[args[0]] = run_main(args, capsys, monkeypatch)
        assert code == 0, (args, said[args[0]][-3000:])
    return said


@pytest.fixture(scope="module")
def cr(tmp_path_factory, tiny_bert, text):
    work = tmp_path_factory.mktemp("cr")
    result = _search(work, "--train", str(text / "CR/train.tsv"), "--dev",
                     str(text / "CR/dev.tsv"), "--text-columns", "1", "--label-column", "0",
                     "--model", str(tiny_bert), "--methods", "bitfit", "--max-train-samples",
                     "64", "--epochs", "1", "--final-seeds", "0", "--study", "cr",
                     "--drop-invalid-rows")  # CR's train.tsv has a row without a sentence
    rows = (text / "CR/dev.tsv").read_text(encoding="utf-8").splitlines()[:20]
    (work / "rows.tsv").write_text("\n".join(rows) + "\n")
    return work, result


def test_a_headerless_cr_file_is_searched_as_a_binary_task(cr, text):
    work, result = cr
    first = result.stderr.splitlines()[0]
    assert first.startswith("task CR: binary (inferred from label column 0; --problem-type "
                            "overrides): 2 classes '0', '1'; F1's positive class '1'; primary "
                            "metric accuracy (the binary default); no header line (detected)")
    setup = records.study_setup(_study(work, "cr"))
    assert (setup.task, setup.primary_metric) == ("CR", "accuracy")
    assert setup.task_spec["labels"] == ["0", "1"] and setup.task_spec["text_columns"] == [1]
    assert setup.data_source == f"tsv:{text / 'CR/train.tsv'}; dev: {text / 'CR/dev.tsv'}"
    assert setup.dropped_rows == {"train": 1, "dev": 0}  # line 1763, counted in the report
    trials = pd.read_csv(work / "reports" / "cr" / "trials.csv")
    [trial] = trials[trials.state == "COMPLETE"].itertuples()
    for metric in ("accuracy", "f1", "macro_f1"):
        assert 0 <= getattr(trial, f"{SELECTION_PREFIX}{metric}") <= 1
    assert -1 <= trial.selection_matthews_correlation <= 1
    assert trial.score == trial.selection_accuracy
    # the chance level is a constant prediction's accuracy on the selection split
    spec = resolve_task(setup.task_spec)
    train = load_task_data(spec, None, drop_invalid_rows=True).train
    _, selection = carve(train, spec, 0.1, 1, max_rows=selection_cap(64))
    assert trial.chance_score == pytest.approx(chance_score(spec, selection.label))
    assert trial.chance_score == pytest.approx(selection.label.value_counts(normalize=True).max())
    # --final-seeds 0: the trial's own artifact scored on dev
    pareto = pd.read_csv(work / "reports" / "cr" / "pareto.csv")
    assert 0 < pareto.dev_score.iloc[0] < 1 and "dev_macro_f1" in pareto
    index = (work / "reports" / "cr" / "index.html").read_text()
    assert "CR (own data, binary)" in index and "CR/dev.tsv" in index
    assert "1 invalid row dropped from train, 0 from dev (--drop-invalid-rows)" in index


def test_cr_export_predict_and_train(cr, capsys, monkeypatch):
    work, _ = cr
    used = _use(work, "cr", "rows.tsv", capsys, monkeypatch)
    card = (work / "best" / "README.md").read_text()
    assert "| labels | binary: 0 = 0, 1 = 1 |" in card
    assert "autopeft predict best --input rows.tsv" in card
    description = json.loads((work / "best" / "autopeft_config.json").read_text())
    assert description["task"] == "CR" and description["task_spec"]["problem_type"] == "binary"
    config = yaml.safe_load((work / "best" / "train_config.yaml").read_text())
    assert config["task"] == description["task_spec"] and "data_dir" not in config
    preds = pd.read_csv(work / "preds.csv")
    assert list(preds.columns) == ["index", "label", "label_name", "prob_0", "prob_1"]
    assert preds["index"].tolist() == list(range(20))
    assert (preds.label_name.astype(str) == preds.label.astype(str)).all()  # names are 0, 1
    gold = np.array([int(line.split("\t")[0]) for line in
                     (work / "rows.tsv").read_text().splitlines()])
    accuracy = float((preds.label.to_numpy() == gold).mean())
    retrained = json.loads((work / "retrained" / "autopeft_config.json").read_text())
    assert retrained["task_spec"] == description["task_spec"]
    assert retrained["train_samples"] == 64  # the search's --max-train-samples, all of train
    assert set(retrained["dev_metrics"]) == {"accuracy", "f1", "macro_f1",
                                             "matthews_correlation", "score"}
    assert "trained bitfit on 64 CR examples" in used["train"]
    assert f"accuracy={accuracy:.4g}" in used["predict"]  # labelled rows are scored


@pytest.fixture(scope="module")
def stsb(tmp_path_factory, tiny_bert, text):
    work = tmp_path_factory.mktemp("stsb")
    result = _search(work, "--train", str(text / "STS-B/train.tsv"), "--dev",
                     str(text / "STS-B/dev.tsv"), "--text-columns", "7,8", "--label-column",
                     "9", "--model", str(tiny_bert), "--methods", "bitfit",
                     "--max-train-samples", "64", "--epochs", "1", "--final-seeds", "0",
                     "--study", "stsb")
    rows = (text / "STS-B/dev.tsv").read_text(encoding="utf-8").splitlines()[:12]
    (work / "pairs.tsv").write_text("\n".join(rows) + "\n")
    return work, result


def test_stsb_is_searched_as_regression_and_its_result_predicts_scores(stsb, capsys,
                                                                      monkeypatch):
    work, result = stsb
    assert result.stderr.splitlines()[0].startswith(
        "task STS-B: regression (inferred: 4249 numeric labels in label column 9, 0 to 5, "
        "not all whole; --problem-type overrides); primary metric pearson_spearman_mean")
    setup = records.study_setup(_study(work, "stsb"))
    assert setup.task_spec["problem_type"] == "regression" and setup.task_spec["labels"] is None
    trials = pd.read_csv(work / "reports" / "stsb" / "trials.csv")
    [trial] = trials[trials.state == "COMPLETE"].itertuples()
    assert trial.score == pytest.approx((trial.selection_pearson + trial.selection_spearman) / 2)
    assert trial.chance_score == 0  # a constant has no correlation
    used = _use(work, "stsb", "pairs.tsv", capsys, monkeypatch)
    preds = pd.read_csv(work / "preds.csv")
    assert list(preds.columns) == ["index", "prediction"] and len(preds) == 12
    assert preds.prediction.notna().all() and preds.prediction.nunique() > 1
    assert "| labels | regression: one score per row |" in (work / "best" / "README.md"
                                                             ).read_text()
    retrained = json.loads((work / "retrained" / "autopeft_config.json").read_text())
    assert set(retrained["dev_metrics"]) == {"pearson", "spearman", "score"}
    assert retrained["num_labels"] == 1 and "STS-B examples" in used["train"]
    assert "pearson=" in used["predict"]  # labelled pairs are scored


@pytest.fixture(scope="module")
def topics(tmp_path_factory, tiny_bert):
    """A multi-class CSV with string labels and no dev file: dev is carved from train."""
    work = tmp_path_factory.mktemp("topics")
    write_rows(topic_rows(600), work / "topics.csv")
    write_rows([{k: v for k, v in r.items() if k != "topic"} for r in topic_rows(9, seed=11)],
               work / "new.csv")
    (work / "space.yaml").write_text(TOPIC_SPACE)
    result = _search(work, "--train", "topics.csv", "--text-columns", "title,body",
                     "--label-column", "topic", "--model", str(tiny_bert), "--space",
                     "space.yaml", "--epochs", "3", "--final-seeds", "1", "--study", "topics")
    return work, result


def test_a_multiclass_file_with_a_carved_dev_split_end_to_end(topics):
    work, result = topics
    lines = result.stderr.splitlines()
    assert lines[0].startswith("task topics: multiclass (inferred from label column 'topic'; "
                               "--problem-type overrides): 3 classes 'business', 'politics', "
                               "'weather'; primary metric macro_f1 (the multiclass default)")
    assert "dev carved from train (10%)" in lines[0]
    assert any("486 train, 54 selection (held out of train), 60 dev" in line for line in lines)
    study = _study(work, "topics")
    setup = records.study_setup(study)
    assert "dev: 10% of train carved out (stratified by label, seed 0)" in setup.data_source
    trials = pd.read_csv(work / "reports" / "topics" / "trials.csv")
    [trial] = trials[trials.state == "COMPLETE"].itertuples()
    assert trial.score == trial.selection_macro_f1 and trial.score > trial.chance_score
    # the point learned, so it was retrained on train + selection and scored on the carved dev
    [point] = records.final_runs(study).values()
    assert point["train_samples"] == 540 and point["seeds"] == 1
    assert "carved out" in (work / "reports" / "topics" / "index.html").read_text()


def test_label_names_reach_predict_and_the_model_card(topics, capsys, monkeypatch):
    work, _ = topics
    _use(work, "topics", "new.csv", capsys, monkeypatch)
    card = (work / "best" / "README.md").read_text()
    assert "| labels | multiclass: 0 = business, 1 = politics, 2 = weather |" in card
    preds = pd.read_csv(work / "preds.csv")
    names = sorted(TOPICS)
    assert list(preds.columns) == ["index", "label", "label_name",
                                   *(f"prob_{n}" for n in names)]
    assert (preds.label_name == preds.label.map(dict(enumerate(names)))).all()
    expected = [names.index(r["topic"]) for r in topic_rows(9, seed=11)]
    assert (preds.label.to_numpy() == expected).mean() > 0.5  # it learned the keywords
    retrained = json.loads((work / "retrained" / "autopeft_config.json").read_text())
    assert retrained["task_spec"]["labels"] == names and retrained["train_samples"] == 540


def test_a_sweep_mixes_a_glue_task_and_a_task_file(tmp_path, tiny_bert, mrpc_dir):
    """MRPC from the GLUE root beside a task file of JSON Lines (dev carved from train)."""
    write_rows(topic_rows(120), tmp_path / "data" / "news.jsonl")
    (tmp_path / "news.yaml").write_text("train: data/news.jsonl\ntext_columns: [title, body]\n"
                                        "label_column: topic\nmetric: accuracy\n")
    result = run_cli("sweep", "--tasks", "mrpc,news.yaml", "--budgets", "2%", "--models",
                     str(tiny_bert), "--trials", "1", "--data-dir", str(mrpc_dir.parent),
                     "--methods", "bitfit", "--max-train-samples", "64", "--epochs", "1",
                     "--final-seeds", "0", "--sweep", "mix", "--sampler", "random",
                     "--portfolio", "none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.splitlines()[0].startswith(
        "task news: multiclass (inferred from label column 'topic'; --problem-type overrides)")
    manifest = json.loads((tmp_path / "studies" / "mix.sweep" / "sweep.json").read_text())
    assert manifest["grid"]["tasks"] == ["mrpc", "news"]
    setups = {e["task"]: records.study_setup(_study(tmp_path, e["study"]))
              for e in manifest["studies"]}
    assert setups["mrpc"].task_spec is None and setups["mrpc"].data_source.startswith("glue-tsv")
    assert setups["news"].task_spec["train"] == str(tmp_path / "data" / "news.jsonl")
    assert (setups["news"].primary_metric, setups["mrpc"].primary_metric) == (
        "accuracy", "accuracy_f1_mean")
    for entry in manifest["studies"]:
        trials = pd.read_csv(tmp_path / "reports" / entry["study"] / "trials.csv")
        assert (trials.state == "COMPLETE").sum() == 1
    combined = (tmp_path / "reports" / "mix" / "index.html").read_text()
    assert "mrpc" in combined and "news" in combined
