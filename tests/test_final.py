"""Final numbers: Pareto points retrained on all of train with K seeds, each scored on dev.

The study is built in-process from real (tiny) trials, without Ray, so calls can be counted.
"""

from __future__ import annotations

import dataclasses
import statistics

import optuna
import pandas as pd
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from autopeft import api
from autopeft import study as records
from autopeft.backbones.models import load_tokenizer, resolve_model
from autopeft.errors import AutoPeftError
from autopeft.report import build_report
from autopeft.tasks import get_task, load_task_data, selection_split, subsample
from autopeft.train import final
from autopeft.train.data import SearchData, tokenize_frame
from autopeft.train.final import FinalSettings, evaluate_front_on_dev, final_seed, retrain_front
from autopeft.train.trial import TrialContext, run_trial

SEED = 5
CANDIDATES = [
    {"method": "bitfit", "bitfit.learning_rate": 5e-3},
    {"method": "dylora", "dylora.r_max": 4, "dylora.targets": "qv"},
]
DISTRIBUTIONS = {
    "method": CategoricalDistribution(["bitfit", "dylora"]),
    "bitfit.learning_rate": FloatDistribution(1e-4, 1e-2, log=True),
    "dylora.r_max": CategoricalDistribution([4]),
    "dylora.targets": CategoricalDistribution(["qv"]),
}


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_bert, mrpc_dir):
    """Two trained trials (as the engine would record them), the data and the context."""
    work = tmp_path_factory.mktemp("final")
    task = get_task("mrpc")
    task_data = load_task_data(task, mrpc_dir)
    source = resolve_model(str(tiny_bert))
    tokenizer = load_tokenizer(source)
    train, selection = selection_split(task_data.train, task, 0.1, SEED)
    train = subsample(train, 48, SEED)

    def tokenized(frame):
        return tokenize_frame(frame, task.text_columns, tokenizer, 64)

    data = SearchData(tokenizer, tokenized(train), tokenized(subsample(selection, 32, SEED)))
    context = TrialContext(model=source, task="mrpc", budget_params=10**6, epochs=1,
                           batch_size=16, seed=SEED, study_dir=str(work))
    trials = []
    for number, params in enumerate(CANDIDATES):
        method = params["method"]
        knobs = {k.split(".", 1)[1]: v for k, v in params.items() if "." in k}
        reports: list[dict] = []
        run_trial({"method": method, "knobs": knobs, "trial_number": number}, data, context,
                  reports.append)
        last = reports[-1]
        metrics = {k.removeprefix("selection_"): v for k, v in last.items()
                   if k.startswith("selection_")}
        trials.append((params, None, last["stored_params"], metrics, last["artifact"]))
    full_train = tokenized(subsample(task_data.train, 64, SEED))
    dev = tokenized(task_data.dev.iloc[:96])
    return {"work": work, "trials": trials, "context": context, "tokenizer": tokenizer,
            "train": full_train, "dev": dev, "task": task}


def _study(searched, name: str, chance: float | None = None) -> optuna.Study:
    """A journal-backed study holding the two trials; reopening it is what a resume does.

    With `chance`, each trial records it as the engine does (`beats_chance` constraint).
    """
    setup = records.StudySetup(task="mrpc", model="tiny", budget_spec="50%", budget_params=10**6,
                               backbone_params=2 * 10**6, primary_metric="accuracy_f1_mean",
                               methods=["bitfit", "dylora"], seed=SEED)
    study = records.open_study(name, _storage(searched, name), setup)
    cheapest = min(t[2] for t in searched["trials"])
    for params, _, stored, metrics, artifact in searched["trials"]:
        value = 0.55 if stored == cheapest else 0.60  # dearer scores higher: both on the front
        trial = create_trial(
            state=TrialState.COMPLETE, values=[value, float(stored)], params=params,
            distributions={k: DISTRIBUTIONS[k] for k in params},
            user_attrs={records.ATTR_METHOD: params["method"], records.ATTR_STATUS: "ok",
                        records.ATTR_STORED: stored, records.ATTR_METRICS: metrics,
                        records.ATTR_ARTIFACT: artifact},
        )
        records.record_chance(trial, value, chance)
        study.add_trial(trial)
    assert sorted(t.number for t in records.feasible_front(study)) == [0, 1]
    return study


def _storage(searched, name):
    return records.make_storage(None, searched["work"] / name)


def _reopen(searched, name: str) -> optuna.Study:
    return records.open_study(name, _storage(searched, name), None)


def _retrain(searched, study, seeds: int, directory=None) -> int:
    context = dataclasses.replace(searched["context"],
                                  study_dir=str(directory or searched["work"]))
    return retrain_front(study, searched["train"], searched["dev"], searched["tokenizer"],
                         context, FinalSettings(seeds=seeds))


@pytest.fixture()
def calls(monkeypatch):
    """Every final training run: its seed, pinned rank and trained weights."""
    seen: list[dict] = []
    real = final.fit_candidate

    def counting(*args, **kwargs):
        trained = real(*args, **kwargs)
        weights = {n: p.detach().clone() for n, p in trained.model.named_parameters()
                   if p.requires_grad}
        seen.append({"method": args[0]["method"], "seed": args[5], "rank": kwargs.get("rank"),
                     "eval_rank": getattr(trained.method, "eval_rank", None),
                     "weights": weights})
        return trained

    monkeypatch.setattr(final, "fit_candidate", counting)
    return seen


def test_each_point_is_retrained_with_k_distinct_seeds(searched, calls, monkeypatch, tmp_path):
    study = _study(searched, "k-seeds")
    counting = final.fit_candidate

    def crashing(*args, **kwargs):  # the run is killed while training the 4th seed
        if len(calls) == 3:
            raise KeyboardInterrupt
        return counting(*args, **kwargs)

    monkeypatch.setattr(final, "fit_candidate", crashing)
    with pytest.raises(KeyboardInterrupt):
        _retrain(searched, study, seeds=2, directory=tmp_path)
    points = records.final_runs(_reopen(searched, "k-seeds"))
    assert sorted(p["seeds"] for p in points.values()) == [1, 2]  # finished seeds are kept
    monkeypatch.setattr(final, "fit_candidate", counting)
    assert _retrain(searched, _reopen(searched, "k-seeds"), seeds=2, directory=tmp_path) == 1
    assert len(calls) == 4

    points = records.final_runs(_reopen(searched, "k-seeds"))
    assert sorted(points) == [0, 1]
    for number, point in points.items():
        runs = records.final_seed_runs(point)
        assert len(runs) == 2 and point["seeds"] == 2
        assert [r["seed"] for r in runs] == [final_seed(SEED, number, k) for k in range(2)]
        assert runs[0]["seed"] != runs[1]["seed"]
        scores = [r["metrics"]["score"] for r in runs]
        assert all(0 <= s <= 1 for s in scores)
        assert point["score_mean"] == pytest.approx(statistics.fmean(scores))
        assert point["score_std"] == pytest.approx(statistics.stdev(scores))
        assert (point["epochs"], point["batch_size"], point["train_samples"]) == (1, 16, 64)
        assert (tmp_path / runs[0]["artifact"] / "autopeft_config.json").exists()
        assert "artifact" not in runs[1]  # only seed 0's delta is kept
    for method in ("bitfit", "dylora"):  # different seeds, different models
        first, second = (c["weights"] for c in calls if c["method"] == method)
        assert first.keys() == second.keys()
        assert any(not torch.equal(first[n], second[n]) for n in first)
    # DyLoRA keeps the rank its trial chose on the selection split (dev never chooses it)
    rank = searched["trials"][1][3]["dylora_rank"]
    assert [c["eval_rank"] for c in calls if c["method"] == "dylora"] == [rank, rank]

    # resuming redoes nothing (the finished runs, timestamps included, stay as they were)
    assert _retrain(searched, _reopen(searched, "k-seeds"), seeds=2, directory=tmp_path) == 0
    assert records.final_runs(_reopen(searched, "k-seeds")) == points
    # other final settings (here: more epochs) are a different measurement: all redone
    study = _reopen(searched, "k-seeds")
    fidelity = {"epochs": 2, "batch_size": 16, "train_samples": 64}
    assert records.finished_final_run(study, 0, 0, fidelity) is None
    assert records.finished_final_run(study, 0, 0, {**fidelity, "epochs": 1}) is not None

    # the report shows mean ± std (K) from the study alone
    report = build_report(_reopen(searched, "k-seeds"), tmp_path / "report")
    pareto = pd.read_csv(report / "pareto.csv")
    assert list(pareto["dev_seeds"]) == [2, 2]
    for row in pareto.itertuples():
        point = points[row.trial]
        assert row.dev_score == pytest.approx(point["score_mean"])
        assert row.dev_score_std == pytest.approx(point["score_std"])
        assert len(row.dev_seed_scores.split(";")) == 2
    summary = (report / "summary.md").read_text()
    assert "± " in summary and "(K=2)" in summary and "retrained from scratch" in summary
    assert len(calls) == 4  # resuming and building the report trained nothing


def test_zero_seeds_evaluates_the_trial_artifacts(searched, calls, tmp_path):
    study = _study(searched, "artifacts")
    scores = evaluate_front_on_dev(study, searched["work"], searched["dev"],
                                   searched["tokenizer"], searched["task"])
    assert sorted(scores) == [0, 1] and not calls
    study = _reopen(searched, "artifacts")
    assert records.final_runs(study) == {}
    report = build_report(study, tmp_path)
    pareto = pd.read_csv(report / "pareto.csv")
    assert list(pareto["dev_seeds"]) == [0, 0]
    assert pareto["dev_score_std"].isna().all()
    assert list(pareto["dev_score"]) == pytest.approx([scores[n]["score"] for n in (0, 1)])
    summary = (report / "summary.md").read_text()
    assert "± " not in summary and "search trial's own artifact" in summary


def test_zero_seeds_skips_a_trial_whose_artifact_is_gone(searched, calls, tmp_path):
    """A journal carried elsewhere with one trial's artifact only: that trial is scored, the
    other keeps no dev score, and the search does not stop."""
    import shutil

    kept = searched["trials"][1][4]
    shutil.copytree(searched["work"] / kept, tmp_path / kept)
    study = _study(searched, "artifact-gone")
    scores = evaluate_front_on_dev(study, tmp_path, searched["dev"],
                                   searched["tokenizer"], searched["task"])
    assert sorted(scores) == [1] and not calls
    assert sorted(records.dev_scores(_reopen(searched, "artifact-gone"))) == [1]


def test_final_seeds_are_distinct_and_reproducible():
    seeds = {final_seed(0, n, k) for n in range(20) for k in range(5)}
    assert len(seeds) == 100
    assert final_seed(3, 7, 1) == final_seed(3, 7, 1) != final_seed(4, 7, 1)


@pytest.mark.parametrize(("seeds", "epochs", "message"), [
    (-1, None, "--final-seeds must be 0 (no retraining) or more (got -1)"),
    (3, 0, "--final-epochs must be at least 1 (got 0)"),
    (0, -2, "--final-epochs must be at least 1 (got -2)"),
])
def test_final_flags_are_validated(seeds, epochs, message):
    # an AutoPeftError is what `autopeft search` prints as a one-line error (see test_cli)
    request = api.SearchRequest(task="mrpc", budget="1%", final_seeds=seeds, final_epochs=epochs)
    with pytest.raises(AutoPeftError) as caught:
        api.search(request)
    assert str(caught.value) == message


def test_final_runs_train_like_their_trial(searched):
    """A method's own epochs / batch size (space block) carry over; --final-epochs wins."""
    trial = create_trial(
        state=TrialState.COMPLETE, values=[0.5, 100.0],
        params={"method": "bitfit", "bitfit.learning_rate": 1e-3, "bitfit.epochs": 2,
                "bitfit.batch_size": 8},
        distributions={"method": DISTRIBUTIONS["method"],
                       "bitfit.learning_rate": DISTRIBUTIONS["bitfit.learning_rate"],
                       "bitfit.epochs": CategoricalDistribution([2]),
                       "bitfit.batch_size": CategoricalDistribution([8])},
    )
    context = searched["context"]
    point = final._point(trial, context, FinalSettings(seeds=1), 64)
    assert point.candidate == {"method": "bitfit", "knobs": {"learning_rate": 1e-3}}
    assert (point.context.epochs, point.context.batch_size) == (2, 8)
    assert point.fidelity == {"epochs": 2, "batch_size": 8, "train_samples": 64}
    point = final._point(trial, context, FinalSettings(seeds=1, epochs=3), 64)
    assert (point.context.epochs, point.context.batch_size) == (3, 8)


def test_final_runs_on_ray_match_the_in_process_ones(searched, tmp_path):
    """Two studies' runs go to Ray together, side by side; same seeds, same numbers."""
    from rich.console import Console

    from autopeft.engine.final_runs import on_ray
    from autopeft.engine.runner import EngineSettings
    from autopeft.train.final import plan_front, run_plans

    here = _study(searched, "final-here")
    assert _retrain(searched, here, seeds=2, directory=tmp_path / "here") == 4
    quiet = Console(quiet=True)
    plans = []
    for k in range(2):
        context = dataclasses.replace(searched["context"], study_dir=str(tmp_path / f"ray{k}"))
        plans.append(plan_front(_study(searched, f"final-ray{k}"), searched["train"],
                                searched["dev"], searched["tokenizer"], context,
                                FinalSettings(seeds=2), quiet))
    assert run_plans(plans, quiet, on_ray(EngineSettings(trials=1, concurrency=1))) == 8
    expected = {n: [(r["seed"], r["metrics"]) for r in records.final_seed_runs(p)]
                for n, p in records.final_runs(_reopen(searched, "final-here")).items()}
    for k in range(2):
        runs = {n: [(r["seed"], r["metrics"]) for r in records.final_seed_runs(p)]
                for n, p in records.final_runs(_reopen(searched, f"final-ray{k}")).items()}
        assert runs == expected
        for number in runs:  # seed 0's delta is saved by the Ray worker, in its study directory
            assert (tmp_path / f"ray{k}" / "artifacts" / f"trial-{number:04d}-final-s0").is_dir()


def test_a_point_at_chance_is_not_retrained_and_the_report_says_so(searched, calls, tmp_path):
    """Chance 0.55: the cheapest point (0.55) learned nothing, the dearer one (0.60) did."""
    from rich.console import Console

    study = _study(searched, "at-chance", chance=0.55)
    cheap, dear = records.feasible_front(study)  # both stay on the front
    console = Console(record=True, width=300)
    context = dataclasses.replace(searched["context"], study_dir=str(tmp_path))
    assert retrain_front(study, searched["train"], searched["dev"], searched["tokenizer"],
                         context, FinalSettings(seeds=2), console) == 2
    assert [c["method"] for c in calls] == [dear.params["method"]] * 2
    assert sorted(records.final_runs(_reopen(searched, "at-chance"))) == [dear.number]
    said = console.export_text()
    assert (f"trial {cheap.number} {cheap.params['method']} not retrained: its selection score "
            "0.5500 is at or below chance (0.5500") in said
    assert "1 Pareto point(s) × 2 seed(s)" in said

    report = build_report(_reopen(searched, "at-chance"), tmp_path / "report")
    pareto = pd.read_csv(report / "pareto.csv").set_index("trial")
    assert pareto.loc[cheap.number, "dev_note"] == "at chance: not retrained"
    assert pd.isna(pareto.loc[cheap.number, "dev_score"])
    assert pd.isna(pareto.loc[dear.number, "dev_note"])
    assert pareto.loc[dear.number, "dev_seeds"] == 2
    summary = (report / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith(f"| #{cheap.number} "))
    assert "| at chance: not retrained |" in row
    assert "1 Pareto point scored at or below chance" in summary

    # --final-seeds 0 trains nothing: a point at chance is still evaluated as trained
    study = _study(searched, "at-chance-as-trained", chance=0.55)
    scores = evaluate_front_on_dev(study, searched["work"], searched["dev"],
                                   searched["tokenizer"], searched["task"])
    assert sorted(scores) == sorted([cheap.number, dear.number])
    report = build_report(_reopen(searched, "at-chance-as-trained"), tmp_path / "as-trained")
    assert "at chance: not retrained" not in (report / "summary.md").read_text()
    assert len(calls) == 2


def test_final_top_retrains_only_the_best_by_selection_and_the_report_says_why(
        searched, calls, tmp_path):
    """--final-top 1: the dearer point (0.60 on selection) is retrained, the cheaper (0.55) not;
    the report shows why it has no dev numbers, and the winner is the retrained point."""
    from rich.console import Console

    from autopeft.report.tables import best_point

    study = _study(searched, "final-top")
    cheap, dear = records.feasible_front(study)
    console = Console(record=True, width=300)
    context = dataclasses.replace(searched["context"], study_dir=str(tmp_path))
    assert retrain_front(study, searched["train"], searched["dev"], searched["tokenizer"],
                         context, FinalSettings(seeds=2, top=1), console) == 2
    assert [c["method"] for c in calls] == [dear.params["method"]] * 2
    assert sorted(records.final_runs(_reopen(searched, "final-top"))) == [dear.number]
    said = console.export_text()
    assert (f"trial(s) {cheap.number} not retrained: --final-top 1 retrains only the best 1 by "
            "selection score") in said
    assert "1 Pareto point(s) × 2 seed(s)" in said

    report = build_report(_reopen(searched, "final-top"), tmp_path / "report")
    pareto = pd.read_csv(report / "pareto.csv").set_index("trial")
    assert pareto.loc[cheap.number, "dev_note"].startswith("not retrained: --final-top 1")
    assert pd.isna(pareto.loc[cheap.number, "dev_score"])
    assert pareto.loc[dear.number, "dev_seeds"] == 2
    assert int(best_point(pd.read_csv(report / "pareto.csv"))["trial"]) == dear.number

    # a later run without the cap retrains the point left out, and its note goes
    assert retrain_front(_reopen(searched, "final-top"), searched["train"], searched["dev"],
                         searched["tokenizer"], context, FinalSettings(seeds=2),
                         Console(quiet=True)) == 2
    report = build_report(_reopen(searched, "final-top"), tmp_path / "again")
    pareto = pd.read_csv(report / "pareto.csv").set_index("trial")
    assert pd.isna(pareto.loc[cheap.number, "dev_note"])
    assert pareto.loc[cheap.number, "dev_seeds"] == 2
