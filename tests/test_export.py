"""Using a result: `autopeft export`, `autopeft.load`, `autopeft predict`, `autopeft train`.

One short real search (tiny BERT on MRPC, through the CLI, Ray and Optuna) feeds every test;
the search is given its backbone as a relative path, so loading from elsewhere is exercised.
"""

from __future__ import annotations

import filecmp
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

import autopeft
from autopeft import study as records
from autopeft.artifacts.store import load_artifact
from autopeft.errors import AutoPeftError
from autopeft.methods.lora import peft_quietly
from autopeft.report import fmt
from autopeft.results.export import export_trial
from autopeft.results.predict import predict_file
from autopeft.results.retrain import read_train_config, train_from_config
from autopeft.testing import keyword_task
from tests.helpers import SMALL_QV_SPACE, assert_one_line_error, run_cli

BUDGET_LINE = "2% = 40,739 stored params"  # of the tiny BERT's 2,036,992 backbone params


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_bert, mrpc_dir):
    """3 trained trials (bitfit and lora), the front retrained with 2 seeds each.

    On a task the tiny BERT learns: points at chance (all of them on real MRPC at this size)
    are not retrained. Seeded, a LoRA trial learns it and is the best point.
    """
    work = tmp_path_factory.mktemp("export")
    shutil.copytree(tiny_bert, work / "tinybert")
    (work / "space.yaml").write_text(SMALL_QV_SPACE)
    data = keyword_task(work / "keywords", mrpc_dir / "train.tsv", train_size=800, dev_size=100)
    result = run_cli("search", "--task", "mrpc", "--budget", "2%", "--model", "tinybert",
                     "--data-dir", str(data), "--space", "space.yaml", "--trials", "3",
                     "--max-train-samples", "800", "--epochs", "3", "--batch-size", "16",
                     "--sampler", "random", "--seed", "1", "--study", "tiny",
                     "--final-seeds", "2", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.fixture(scope="module")
def exported(searched):
    """`export --best` into best/ and `export --trial <a lora trial>` into lora/ (one not
    retrained, so its own search artifact is what is exported)."""
    trials = pd.read_csv(searched / "reports" / "tiny" / "trials.csv")
    retrained = set(records.final_runs(records.read_study("tiny", None, searched / "studies")))
    loras = trials[(trials.method == "lora") & (trials.state == "COMPLETE")
                   & ~trials.trial.isin(retrained)]
    assert len(loras), "seeded: a LoRA trial at chance, not retrained"
    lora = int(loras.trial.iloc[0])
    best = run_cli("export", "best", "--study", "tiny", "--best", cwd=searched)
    assert best.returncode == 0, best.stderr[-3000:]
    by_trial = run_cli("export", "lora", "--study", "tiny", "--trial", str(lora), cwd=searched)
    assert by_trial.returncode == 0, by_trial.stderr[-3000:]
    return {"best": searched / "best", "lora": searched / "lora", "lora_trial": lora,
            "best_stdout": best.stdout}


def _artifacts(work):
    return work / "studies" / "tiny" / "artifacts"


def _pareto(work) -> pd.DataFrame:
    return pd.read_csv(work / "reports" / "tiny" / "pareto.csv")


def _dev_rows(mrpc_dir, n=12) -> pd.DataFrame:
    from autopeft.tasks import get_task, load_task_data

    return load_task_data(get_task("mrpc"), mrpc_dir).dev.iloc[:n]


def _logits(model, tokenizer, rows: pd.DataFrame) -> torch.Tensor:
    batch = tokenizer(list(rows.sentence1), list(rows.sentence2), padding=True,
                      truncation=True, max_length=128, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


# --- export -------------------------------------------------------------------------------------
def test_export_best_is_the_top_selection_point_as_retrained_and_loads_to_its_logits(
        searched, exported, mrpc_dir, monkeypatch, tmp_path):
    pareto = _pareto(searched)
    learned = pareto[pareto.score > pareto.chance_score]  # the points retrained
    assert learned.dev_score.notna().all() and pareto.dev_score.isna().any()
    best = int(learned.sort_values(["score", "stored_params"], ascending=[False, True])
               .trial.iloc[0])
    assert f"exported trial {best} " in exported["best_stdout"]
    config = json.loads((exported["best"] / "autopeft_config.json").read_text())
    assert config["export"]["trial"] == best and config["export"]["study"] == "tiny"
    source = _artifacts(searched) / f"trial-{best:04d}-final-s0"  # retrained on all of train
    assert config["export"]["artifact"] == f"artifacts/{source.name}"
    # the search got a relative backbone path: the export records where it really is
    assert config["model"] == str((searched / "tinybert").resolve())
    shipped = {p.name for p in source.iterdir()}
    assert {p.name for p in exported["best"].iterdir()} == shipped | {"README.md",
                                                                      "train_config.yaml"}
    for name in shipped - {"autopeft_config.json", "README.md"}:  # the card replaces peft's
        assert filecmp.cmp(source / name, exported["best"] / name, shallow=False), name

    rows = _dev_rows(mrpc_dir)
    reference, _ = load_artifact(source, base_model=str(searched / "tinybert"))
    monkeypatch.chdir(tmp_path)  # somewhere else entirely
    loaded = autopeft.load(exported["best"])
    assert not loaded.model.training
    assert loaded.task.name == "mrpc" and loaded.description["method"] == config["method"]
    torch.testing.assert_close(_logits(loaded.model, loaded.tokenizer, rows),
                               _logits(reference, loaded.tokenizer, rows), rtol=0, atol=0)


def test_export_trial_keeps_peft_format_and_peft_alone_loads_it(searched, exported, mrpc_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    source = _artifacts(searched) / f"trial-{exported['lora_trial']:04d}"
    out = exported["lora"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert filecmp.cmp(source / name, out / name, shallow=False), name
    rows = _dev_rows(mrpc_dir)
    loaded = autopeft.load(out)
    reference, _ = load_artifact(source, base_model=str(searched / "tinybert"))
    expected = _logits(reference, loaded.tokenizer, rows)
    torch.testing.assert_close(_logits(loaded.model, loaded.tokenizer, rows), expected,
                               rtol=0, atol=0)
    # what the model card promises: plain transformers + peft read the same folder
    base = AutoModelForSequenceClassification.from_pretrained(searched / "tinybert",
                                                              num_labels=2)
    with peft_quietly():
        plain = PeftModel.from_pretrained(base, str(out))
    torch.testing.assert_close(_logits(plain, loaded.tokenizer, rows), expected, rtol=0, atol=0)


def test_base_model_overrides_the_recorded_backbone(searched, exported, mrpc_dir, tmp_path):
    copy = shutil.copytree(searched / "tinybert", tmp_path / "my-copy")
    moved = shutil.copytree(exported["best"], tmp_path / "moved")
    config = json.loads((moved / "autopeft_config.json").read_text())
    (moved / "autopeft_config.json").write_text(json.dumps({**config, "model": "./gone"}))
    with pytest.raises(AutoPeftError, match=r"'./gone'.*pass base_model="):
        autopeft.load(moved)
    rows = _dev_rows(mrpc_dir, 4)
    original = autopeft.load(exported["best"])
    relocated = autopeft.load(moved, base_model=str(copy))
    torch.testing.assert_close(_logits(relocated.model, relocated.tokenizer, rows),
                               _logits(original.model, original.tokenizer, rows), rtol=0, atol=0)
    with pytest.raises(AutoPeftError, match="not an autopeft artifact"):
        autopeft.load(tmp_path)


def test_model_card_says_what_was_searched_measured_and_how_to_use_it(searched, exported):
    pareto = _pareto(searched).set_index("trial")
    trials = pd.read_csv(searched / "reports" / "tiny" / "trials.csv").set_index("trial")
    for folder, number in (("best", int(pareto.dev_score.idxmax())),
                           ("lora", exported["lora_trial"])):
        card = (exported[folder] / "README.md").read_text()
        config = json.loads((exported[folder] / "autopeft_config.json").read_text())
        row = trials.loc[number]
        assert "| task | mrpc (metric: accuracy_f1_mean) |" in card
        assert str((searched / "tinybert").resolve()) in card
        assert BUDGET_LINE in card
        assert f"| method | `{row.method}`:" in card
        for knob, value in config["knobs"].items():
            assert f"| {knob} | {fmt.knob(value)} |" in card
        assert (f"| stored params | {int(row.stored_params):,} "
                f"({fmt.percent(row.budget_used)} of the budget)") in card
        assert f"| selection score | {row.score:.4f} " in card
        if number in pareto.index:
            point = pareto.loc[number]
            assert (f"| dev score | {point.dev_score:.4f} ± {point.dev_score_std:.4f} (std), "
                    "mean of 2 seed(s)") in card
        else:
            assert "| dev score | not measured" in card
        peft_format = (exported[folder] / "adapter_config.json").exists()
        assert ("peft's own format" in card) == peft_format
        assert ("autopeft's format" in card) == (not peft_format)
        assert f'autopeft.load("{folder}")' in card
        assert f"autopeft predict {folder} --input" in card
        assert f"autopeft train --config {folder}/train_config.yaml" in card
        # the search's batch size, known from the final runs even for a trial off the front
        assert "| training | 3 epoch(s), batch size 16, learning rate " in card
        assert "assumed" not in card
    assert "lora" in (exported["lora"] / "README.md").read_text().splitlines()[0]


def test_export_into_an_existing_directory_fails_and_leaves_it_alone(searched, exported):
    taken = searched / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    result = run_cli("export", "taken", "--study", "tiny", "--best", cwd=searched)
    assert_one_line_error(result, "'taken' already exists")
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert (taken / "keep.txt").read_text() == "mine"
    assert not list(searched.glob(".taken-*"))  # no staging left behind


def test_export_mistakes_are_one_line_and_write_nothing(searched, exported, tmp_path):
    result = run_cli("export", "x", "--study", "nope", "--best", cwd=searched)
    assert_one_line_error(result, "no study 'nope'", "studies under studies/: tiny")
    studies = searched / "studies"
    with pytest.raises(AutoPeftError, match=r"no trial 99 \(trials: 0\.\.2; with an artifact: "
                                            r"0, 1, 2\)"):
        export_trial("tiny", tmp_path / "x", trial=99, studies_dir=studies)
    for trial, best in ((0, True), (None, False)):
        with pytest.raises(AutoPeftError, match="exactly one of --trial N or --best"):
            export_trial("tiny", tmp_path / "x", trial=trial, best=best, studies_dir=studies)
    # a trial that was stopped early has no artifact (a copy of the study, left untouched)
    copy = shutil.copytree(studies, tmp_path / "studies")
    study = records.open_study("tiny", records.make_storage(None, copy / "tiny"), None)
    study.add_trial(create_trial(
        state=TrialState.PRUNED, params={"method": "lora"},
        distributions={"method": CategoricalDistribution(["bitfit", "lora"])},
        user_attrs={records.ATTR_STATUS: records.STATUS_PRUNED}))
    with pytest.raises(AutoPeftError, match="trial 3 is PRUNED and has no artifact; trials "
                                            "with an artifact: 0, 1, 2"):
        export_trial("tiny", tmp_path / "x", trial=3, studies_dir=copy)
    assert not (tmp_path / "x").exists()


def test_best_is_chosen_on_selection_even_when_dev_disagrees(searched, tmp_path):
    """Selection best ≠ dev best: the selection score decides, whatever dev says (dev only
    reports), the same rule as the search's winner line."""
    studies = tmp_path / "studies"
    setup = records.StudySetup(task="mrpc", model=str(searched / "tinybert"), budget_spec="50%",
                               budget_params=10**6, backbone_params=2 * 10**6,
                               primary_metric="accuracy_f1_mean", methods=["bitfit"])
    study = records.open_study("made", records.make_storage(None, studies / "made"), setup)
    source = _artifacts(searched) / "trial-0000"
    # (selection score, stored): 1 has the top selection score, 2 is dominated by 1
    for number, (score, stored) in enumerate([(0.60, 100), (0.70, 200), (0.65, 300)]):
        shutil.copytree(source, studies / "made" / "artifacts" / f"trial-{number:04d}")
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, values=[score, stored], params={"method": "bitfit"},
            distributions={"method": CategoricalDistribution(["bitfit"])},
            user_attrs={records.ATTR_STATUS: "ok", records.ATTR_STORED: stored,
                        records.ATTR_ARTIFACT: f"artifacts/trial-{number:04d}"}))
    unknown = export_trial("made", tmp_path / "early", trial=2, studies_dir=studies)
    assert unknown.trial == 2  # nothing retrained yet: the batch size is a stated assumption
    card = (tmp_path / "early" / "README.md").read_text()
    assert "batch size 32, " in card and "seed 2 (batch size assumed: the study predates" in card
    assert "# batch size assumed" in (tmp_path / "early" / "train_config.yaml").read_text()
    fidelity = {"epochs": 1, "batch_size": 16, "train_samples": 64}

    def run(dev):
        return {"seed": 1, "metrics": {"score": dev}, "seconds": 1.0, "finished_at": "now"}

    records.record_final_run(study, 0, 0, run(0.80), fidelity)
    done = export_trial("made", tmp_path / "a", best=True, studies_dir=studies)
    assert done.trial == 1  # trial 1 has no dev score yet: selection scores decide
    records.record_final_run(study, 1, 0, run(0.75), fidelity)
    done = export_trial("made", tmp_path / "b", best=True, studies_dir=studies)
    assert done.trial == 1  # trial 0 is better on dev, but dev never picks
    assert "| dev score | 0.7500, mean of 1 seed(s)" in (tmp_path / "b" / "README.md").read_text()


# --- predict ------------------------------------------------------------------------------------
def test_a_study_that_recorded_its_batch_size_needs_no_assumption(searched, tmp_path):
    studies = tmp_path / "studies"
    setup = records.StudySetup(task="mrpc", model=str(searched / "tinybert"), budget_spec="50%",
                               budget_params=10**6, backbone_params=2 * 10**6,
                               primary_metric="accuracy_f1_mean", methods=["bitfit"],
                               batch_size=8, max_length=96)
    study = records.open_study("recorded", records.make_storage(None, studies / "recorded"),
                               setup)
    shutil.copytree(_artifacts(searched) / "trial-0000",
                    studies / "recorded" / "artifacts" / "trial-0000")
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, values=[0.6, 100], params={"method": "bitfit"},
        distributions={"method": CategoricalDistribution(["bitfit"])},
        user_attrs={records.ATTR_STATUS: "ok", records.ATTR_STORED: 100,
                    records.ATTR_ARTIFACT: "artifacts/trial-0000"}))
    export_trial("recorded", tmp_path / "out", trial=0, studies_dir=studies)
    config = yaml.safe_load((tmp_path / "out" / "train_config.yaml").read_text())
    assert (config["batch_size"], config["max_length"]) == (8, 96)
    assert "assumed" not in (tmp_path / "out" / "README.md").read_text()
    # and a real search records its own
    tiny = records.open_study("tiny", records.make_storage(None, searched / "studies" / "tiny"),
                              None)
    assert (records.study_setup(tiny).batch_size, records.study_setup(tiny).max_length) == (16,
                                                                                           128)


def test_predict_writes_labels_and_class_probabilities(searched, exported, mrpc_dir):
    rows = (mrpc_dir / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()[:21]
    (searched / "dev20.tsv").write_text("\n".join(rows) + "\n")
    result = run_cli("predict", "best", "--input", "dev20.tsv", "--output", "preds.csv",
                     cwd=searched)
    assert result.returncode == 0, result.stderr[-3000:]
    preds = pd.read_csv(searched / "preds.csv")
    assert list(preds.columns) == ["index", "label", "label_name", "prob_not_equivalent",
                                   "prob_equivalent"]
    assert list(preds["index"]) == list(range(20))
    probs = preds[["prob_not_equivalent", "prob_equivalent"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert (preds.label == probs.argmax(axis=1)).all()
    assert (preds.label_name == preds.label.map({0: "not_equivalent", 1: "equivalent"})).all()
    loaded = autopeft.load(exported["best"])
    expected = torch.softmax(_logits(loaded.model, loaded.tokenizer, _dev_rows(mrpc_dir, 20))
                             .double(), dim=1).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)  # other batching, same numbers
    gold = pd.read_csv(searched / "dev20.tsv", sep="\t", quoting=3).Quality.to_numpy()
    accuracy = float((preds.label.to_numpy() == gold).mean())
    assert f"accuracy={accuracy:.4g}" in result.stderr  # labelled input is scored


def test_predict_without_labels_to_stdout_keeps_row_numbers(searched, exported):
    pd.DataFrame({"sentence1": ["A cat sat.", "No pair here", "Dogs bark."],
                  "sentence2": ["A cat was sitting.", "", "Dogs are barking."]}
                 ).to_csv(searched / "unlabelled.csv", index=False)
    result = run_cli("predict", "best", "--input", "unlabelled.csv", cwd=searched)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "index,label,label_name,prob_not_equivalent,prob_equivalent"
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "2"]  # the empty pair dropped
    assert "scored" not in result.stderr


def test_predict_reads_jsonl_and_rejects_bad_files_in_one_line(searched, exported, tmp_path):
    loaded = autopeft.load(exported["best"])
    path = tmp_path / "rows.jsonl"
    path.write_text('{"sentence1": "a b", "sentence2": "a b c", "label": 1}\n'
                    '{"sentence1": "x", "sentence2": "y", "label": "not_equivalent"}\n')
    result = predict_file(loaded, path)
    assert list(result.frame["index"]) == [0, 1]
    assert result.metrics is not None and 0 <= result.metrics["accuracy"] <= 1
    glue_test = tmp_path / "test.tsv"  # GLUE's test layout: no Quality column
    glue_test.write_text("Index\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                         "0\t1\t2\tThe cat sat.\tA cat sat.\n1\t3\t4\tRain today.\tSun.\n")
    result = predict_file(loaded, glue_test)
    assert list(result.frame["index"]) == [0, 1] and result.metrics is None
    (tmp_path / "rows.txt").write_text("hello")
    with pytest.raises(AutoPeftError, match=r"unsupported extension; accepted: \.tsv, \.csv"):
        predict_file(loaded, tmp_path / "rows.txt")
    (tmp_path / "one.csv").write_text("sentence1\nonly one side\n")
    with pytest.raises(AutoPeftError, match="no column 'sentence2'; mrpc needs columns"):
        predict_file(loaded, tmp_path / "one.csv")
    result = run_cli("predict", "best", "--input", "missing.tsv", cwd=searched)
    assert_one_line_error(result, "input file 'missing.tsv' does not exist")


def test_predict_regression_gives_one_value_per_row(tiny_bert, tmp_path):
    from transformers import AutoTokenizer

    from autopeft.artifacts.store import save_artifact
    from autopeft.backbones.models import load_model, resolve_model
    from autopeft.methods import build_method
    from autopeft.testing import build_tiny_model

    # a one-output head from the start: transformers refuses to swap a saved 2-label head
    backbone = build_tiny_model("bert", tmp_path / "bert-1", vocab_size=30522, num_labels=1)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(backbone)
    method = build_method("bitfit", {})
    model = method.apply(load_model(resolve_model(str(backbone)), num_labels=1, seed=2))
    save_artifact(tmp_path / "stsb", method, model, {"model": str(backbone), "task": "stsb",
                                                      "num_labels": 1})
    rows = pd.DataFrame({"sentence1": ["A man plays.", "Two dogs run.", "It rains."],
                         "sentence2": ["A man is playing.", "A cat sleeps.", "Rain falls."],
                         "label": [4.8, 0.4, 3.9]})
    rows.to_csv(tmp_path / "rows.csv", index=False)
    loaded = autopeft.load(tmp_path / "stsb")
    result = predict_file(loaded, tmp_path / "rows.csv")
    assert list(result.frame.columns) == ["index", "prediction"]
    expected = _logits(loaded.model, loaded.tokenizer, rows)[:, 0].numpy()
    np.testing.assert_allclose(result.frame.prediction, expected, atol=1e-5)
    assert set(result.metrics) >= {"pearson", "spearman", "score"}


# --- train --config -----------------------------------------------------------------------------
def test_train_config_reproduces_the_exported_final_run(searched, exported, mrpc_dir):
    config = yaml.safe_load((exported["best"] / "train_config.yaml").read_text())
    assert config["data_dir"] == str((searched / "keywords").resolve())
    assert config["max_train_samples"] == 800 and config["batch_size"] == 16
    result = run_cli("train", "--config", "best/train_config.yaml", "--out", "retrained",
                     cwd=searched)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "artifact written to retrained/" in result.stdout
    retrained = autopeft.load(searched / "retrained")
    best = autopeft.load(exported["best"])
    rows = _dev_rows(mrpc_dir)
    torch.testing.assert_close(_logits(retrained.model, retrained.tokenizer, rows),
                               _logits(best.model, best.tokenizer, rows), rtol=0, atol=0)
    trial = best.description["export"]["trial"]
    study = records.open_study("tiny", records.make_storage(None, searched / "studies" / "tiny"),
                               None)
    first_seed = records.final_seed_runs(records.final_runs(study)[trial])[0]
    assert retrained.description["dev_metrics"] == first_seed["metrics"]
    assert retrained.description["seed"] == first_seed["seed"] == config["seed"]
    assert read_train_config(searched / "retrained" / "train_config.yaml") == \
        read_train_config(exported["best"] / "train_config.yaml")


def test_train_a_hand_written_config_with_paths_beside_it(searched, mrpc_dir, tmp_path):
    folder = searched / "configs"
    folder.mkdir(exist_ok=True)
    (folder / "lora.yaml").write_text(
        f"task: mrpc\nmodel: ../tinybert\ndata_dir: {mrpc_dir}\nmethod: lora\n"
        "knobs: {r: 2, targets: qv}\nlearning_rate: 0.005\nepochs: 1\nbatch_size: 16\n"
        "seed: 3\nmax_train_samples: 32\n")
    config = read_train_config(folder / "lora.yaml")
    assert config.model == str((searched / "tinybert").resolve())
    out = train_from_config(config, tmp_path / "lora-artifact")
    loaded = autopeft.load(out)
    assert loaded.description["stored_params"] == 2 * 2 * 2 * (64 + 64)  # r·(in+out), q+v, 2 layers
    assert loaded.description["knobs"]["learning_rate"] == 0.005
    assert loaded.description["train_samples"] == 32
    assert 0 <= loaded.description["dev_metrics"]["score"] <= 1
    with pytest.raises(AutoPeftError, match="already exists; pass --out"):
        train_from_config(config, out)


@pytest.mark.parametrize(("text", "needles"), [
    ("task: mrpc\nmethod: lora\nepoch: 2\n", ["unknown key 'epoch'", "accepted: task, model"]),
    ("task: mrpc\n", ["'method' is required"]),
    ("task: mrpc\nmethod: lora\nepochs: two\n", ["'epochs' must be an integer (got 'two')"]),
    ("task: mrpc\nmethod: lora\nbatch_size: 0\n", ["'batch_size' must be at least 1"]),
    ("task: mrpc\nmethod: lora\nknobs: [r]\n", ["'knobs' must be a mapping"]),
    ("- task\n", ["expected a mapping with keys task, model"]),
    ("task: mrpc\nmethod: lora\nlearning_rate: 0.1\nknobs: {learning_rate: 0.2}\n",
     ["learning_rate is given twice"]),
])
def test_bad_train_configs_name_the_key_and_what_is_accepted(tmp_path, text, needles):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(AutoPeftError) as error:
        read_train_config(path)
    for needle in needles:
        assert needle in str(error.value)


def test_train_with_a_bad_knob_is_one_line_and_writes_nothing(searched, tmp_path):
    (tmp_path / "bad.yaml").write_text(
        f"task: mrpc\nmodel: {searched / 'tinybert'}\nmethod: lora\nknobs: {{r: 0}}\n")
    result = run_cli("train", "--config", "bad.yaml", "--out", "never", cwd=tmp_path)
    assert_one_line_error(result, "lora.r=0 must be >= 1")
    assert not (tmp_path / "never").exists()
