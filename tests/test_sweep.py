"""Sweeps: a grid of studies run together, trials shared between budgets, resumed, reported.

The end-to-end tests run the real `autopeft sweep` on the tiny BERT: MRPC and its shuffled-label
control at two budgets (4 studies), with Ray on loopback. The main sweep's MRPC is a keyword task
the tiny BERT learns (`autopeft.testing.keyword_task`): points at chance are not retrained, and
real MRPC leaves every point at chance at this size.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from autopeft import study as records
from autopeft.engine.multiplex import SweepMember, SweepSearcher
from autopeft.search.reuse import ATTR_REUSED
from autopeft.tasks import chance_score, get_task, load_task_data, selection_split
from autopeft.tasks.data import shuffled_labels
from autopeft.testing import keyword_task
from tests.helpers import Search, assert_one_line_error, run_cli

SPACE = """
methods:
  bitfit:
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
  lora:
    r: {choices: [2, 64]}          # r=64 on every projection: over both budgets
    targets: {choices: [all]}
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
"""
BUDGETS = {"0.5%": 10_184, "2%": 40_739}  # of the tiny BERT's 2,036,992 backbone params
TASKS = ["mrpc", "mrpc:shuffled"]
TRIALS = 3


def _args(tiny_bert: Path, glue_root: Path, trials: int = TRIALS, name: str = "demo",
          final_seeds: int = 0) -> list[str]:
    return ["sweep", "--tasks", ",".join(TASKS), "--budgets", ",".join(BUDGETS),
            "--models", str(tiny_bert), "--trials", str(trials), "--data-dir", str(glue_root),
            "--space", "space.yaml", "--max-train-samples", "160", "--sampler", "random",
            "--final-seeds", str(final_seeds), "--sweep", name, "--concurrency", "2",
            "--epochs", "1"]


def _swept_args(tiny_bert: Path, glue_root: Path) -> list[str]:
    """The `swept` fixture's sweep: enough data and epochs for a LoRA point to beat chance."""
    args = _args(tiny_bert, glue_root, final_seeds=1)
    args[args.index("--max-train-samples") + 1] = "800"
    args[args.index("--epochs") + 1] = "3"
    return args


def _studies(work: Path, name: str = "demo") -> dict[str, object]:
    manifest = json.loads((work / "studies" / f"{name}.sweep" / "sweep.json").read_text())
    return {e["study"]: (e, records.read_study(e["study"], None, work / "studies"))
            for e in manifest["studies"]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_bert, mrpc_dir):
    work = tmp_path_factory.mktemp("sweep")
    (work / "space.yaml").write_text(SPACE)
    keyword_task(work / "glue" / "MRPC", mrpc_dir / "train.tsv", train_size=800, dev_size=100)
    result = run_cli(*_swept_args(tiny_bert, work / "glue"), cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, result


# --- the grid, its studies and the manifest ---------------------------------------------------
def test_one_study_per_task_and_budget_each_to_its_target(swept):
    work, result = swept
    studies = _studies(work)
    cells = {(e["task"], e["budget"]) for e, _ in studies.values()}
    assert cells == {(t, b) for t in TASKS for b in BUDGETS}
    for entry, study in studies.values():
        setup = records.study_setup(study)
        assert (setup.task, setup.budget_spec) == (entry["task"], entry["budget"])
        assert setup.budget_params == BUDGETS[entry["budget"]]
        assert records.counted_trials(study) >= TRIALS
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert all(t.user_attrs[records.ATTR_STORED] <= setup.budget_params for t in complete)
    assert "sweep demo" in result.stdout and "combined report" in result.stdout


def test_trials_of_different_studies_interleave(swept):
    """One experiment: while a study's trial trains, another study's trial does too."""
    work, _ = swept
    spans = sorted((t.datetime_start, t.datetime_complete, name)
                   for name, (_, study) in _studies(work).items()
                   for t in study.get_trials(states=(TrialState.COMPLETE,))
                   if ATTR_REUSED not in t.user_attrs)
    overlaps = {(a[2], b[2]) for a, b in zip(spans, spans[1:], strict=False)
                if b[0] < a[1] and a[2] != b[2]}
    assert overlaps, spans


# --- budget reuse -----------------------------------------------------------------------------
def test_trials_fitting_a_sibling_budget_count_there_too(swept):
    work, _ = swept
    studies = _studies(work)
    shared = 0
    for name, (entry, study) in studies.items():
        for trial in study.get_trials(states=(TrialState.COMPLETE,)):
            mark = trial.user_attrs.get(ATTR_REUSED)
            if mark is None:
                continue
            shared += 1
            source_entry, source = studies[mark["study"]]
            assert (source_entry["task"], source_entry["model"]) == (entry["task"], entry["model"])
            original = source.trials[mark["trial"]]
            assert original.state == TrialState.COMPLETE and ATTR_REUSED not in original.user_attrs
            assert trial.values == original.values
            # whether it beat chance travels with it, for the target's sampler
            assert trial.constraints == original.constraints and trial.constraints
            assert trial.datetime_start == original.datetime_start  # when it trained
            assert trial.params[records.ATTR_METHOD] == original.params[records.ATTR_METHOD]
            stored = trial.user_attrs[records.ATTR_STORED]
            assert trial.user_attrs[records.ATTR_BUDGET_USED] == stored / BUDGETS[entry["budget"]]
            # the artifact stays where it was trained, reachable from this study's directory
            artifact = work / "studies" / name / trial.user_attrs[records.ATTR_ARTIFACT]
            assert (artifact / "autopeft_config.json").exists()
        listed = pd.read_csv(work / "reports" / name / "trials.csv").set_index("trial")
        for trial in study.get_trials(states=(TrialState.COMPLETE,)):
            mark, listed_as = trial.user_attrs.get(ATTR_REUSED), listed.reused_from[trial.number]
            if mark:
                assert listed_as == f"{mark['study']}#{mark['trial']}"
            else:
                assert pd.isna(listed_as)
    assert shared > 0


def test_the_larger_budget_gets_the_smaller_ones_first_trials(swept):
    """Each method is tried at its defaults once per (task, model), in the smaller budget, and
    shared: the sweep trains fewer trials than its studies count."""
    work, _ = swept
    studies = _studies(work)
    for task in TASKS:
        [large] = [s for e, s in studies.values() if e["task"] == task and e["budget"] == "2%"]
        from_small = {t.params["method"] for t in large.get_trials(states=(TrialState.COMPLETE,))
                      if ATTR_REUSED in t.user_attrs}
        assert from_small == {"bitfit", "lora"}
    trained = sum(1 for _, s in studies.values() for t in s.trials
                  if t.state.is_finished() and ATTR_REUSED not in t.user_attrs
                  and t.user_attrs.get(records.ATTR_STATUS) != records.STATUS_INFEASIBLE)
    assert trained < len(studies) * TRIALS


def test_a_shared_point_is_retrained_once(swept):
    """A point on two budgets' fronts gets its final runs in one study; the other copies them."""
    work, _ = swept
    studies = _studies(work)
    pairs = 0
    for name, (_, study) in studies.items():
        finals = records.final_runs(study)
        for trial in study.get_trials(states=(TrialState.COMPLETE,)):
            mark = trial.user_attrs.get(ATTR_REUSED)
            twin = mark and records.final_runs(studies[mark["study"]][1]).get(mark["trial"])
            if not twin or trial.number not in finals:
                continue
            pairs += 1
            runs = records.final_seed_runs(finals[trial.number])
            # retrained here, its seed would come from this trial's own number
            assert [r["seed"] for r in runs] == [r["seed"] for r in records.final_seed_runs(twin)]
            assert [r["metrics"] for r in runs] == [r["metrics"] for r in
                                                    records.final_seed_runs(twin)]
            if "artifact" in runs[0]:
                assert (work / "studies" / name / runs[0]["artifact"]).is_dir()
    assert pairs > 0


# --- the shuffled-label control ---------------------------------------------------------------
def test_shuffled_labels_keep_counts_and_break_the_link(mrpc_dir):
    task = get_task("mrpc:shuffled")
    assert task.name == "mrpc:shuffled" and task.base_name == "mrpc"
    true = load_task_data(get_task("mrpc"), mrpc_dir).train
    control = load_task_data(task, mrpc_dir)
    assert "shuffled" in control.source
    assert sorted(control.train.label) == sorted(true.label)
    assert (control.train.drop(columns="label").equals(true.drop(columns="label")))
    changed = float((control.train.label != true.label).mean())
    p = float(true.label.mean())
    assert abs(changed - 2 * p * (1 - p)) < 0.05  # what an independent permutation changes
    assert control.dev.equals(load_task_data(get_task("mrpc"), mrpc_dir).dev)  # dev stays true
    again = shuffled_labels(true)
    assert again.label.equals(control.train.label)  # seeded: every trial sees the same data


def test_the_control_scores_at_chance(swept):
    """Nothing can be learnt from shuffled labels: no candidate beats a constant guess."""
    work, _ = swept
    task = get_task("mrpc:shuffled")
    data = load_task_data(task, work / "glue" / "MRPC")
    _, selection = selection_split(data.train, task, 0.1, 0)
    labels = selection.label.to_numpy()
    constant = chance_score(task, labels)
    slack = 3 * np.sqrt(0.25 / len(labels))  # three standard errors of a coin-flip accuracy
    for entry, study in _studies(work).values():
        if entry["task"] != "mrpc:shuffled":
            continue
        best = max(t.values[0] for t in study.get_trials(states=(TrialState.COMPLETE,)))
        assert best <= constant + slack, (best, constant)


def test_on_dev_the_true_labels_beat_chance_and_the_control_does_not(swept):
    """Dev labels are true for both: what the true-label studies learnt shows there, and the
    control, trained on shuffled labels, stays at a constant guess (its points at chance on
    selection are not retrained; any that is must score at chance on dev)."""
    work, _ = swept
    dev = load_task_data(get_task("mrpc"), work / "glue" / "MRPC").dev.label.to_numpy()
    constant = chance_score(get_task("mrpc"), dev)
    slack = 3 * np.sqrt(0.25 / len(dev))
    best = {"mrpc": [], "mrpc:shuffled": []}
    for entry, study in _studies(work).values():
        best[entry["task"]] += [p["score_mean"] for p in records.final_runs(study).values()]
    assert best["mrpc"] and max(best["mrpc"]) > constant + slack, (best, constant)
    assert all(score <= constant + slack for score in best["mrpc:shuffled"]), (best, constant)


# --- the combined report --------------------------------------------------------------------
def test_combined_report_lists_every_study_and_links_its_report(swept):
    work, _ = swept
    report = work / "reports" / "demo"
    winners = pd.read_csv(report / "winners.csv")
    assert set(winners.study) == set(_studies(work))
    html = (report / "index.html").read_text()
    for name in _studies(work):
        assert f"../{name}/index.html" in html
        assert (work / "reports" / name / "index.html").exists()
    for task in TASKS:
        assert (report / f"score_vs_budget-{task.replace(':', '-')}.png").stat().st_size > 0
    rebuilt = run_cli("report", "--sweep", "demo", "--out", "again", cwd=work)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert pd.read_csv(work / "again" / "winners.csv").equals(winners)


# --- resuming -----------------------------------------------------------------------------------
def test_an_interrupted_sweep_resumes_every_study(tmp_path, tiny_bert, mrpc_dir):
    (tmp_path / "space.yaml").write_text(SPACE)
    args = _args(tiny_bert, mrpc_dir.parent, trials=4, name="resume")
    first = Search(args, tmp_path, "first")

    def trained_one() -> bool:
        return "✔ trial" in first.stderr

    first.wait_until(trained_one)
    first.proc.send_signal(signal.SIGINT)
    assert first.wait() == 130, first.stderr[-3000:]
    assert "run the same command again" in first.stderr.strip().splitlines()[-1]
    before = {name: {t.number: t.values for t in study.get_trials(
        states=(TrialState.COMPLETE,))} for name, (_, study) in _studies(tmp_path,
                                                                         "resume").items()}
    assert any(before.values())

    second = Search(args, tmp_path, "second")
    assert second.wait() == 0, second.stderr[-3000:]
    for name, (_, study) in _studies(tmp_path, "resume").items():
        assert records.counted_trials(study) >= 4
        assert not study.get_trials(states=(TrialState.RUNNING,))
        after = {t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))}
        assert before[name].items() <= after.items()  # nothing lost or changed
        marks = [json.dumps(t.user_attrs[ATTR_REUSED]) for t in study.trials
                 if ATTR_REUSED in t.user_attrs]
        assert len(marks) == len(set(marks))  # nothing shared twice
    assert (tmp_path / "reports" / "resume" / "index.html").exists()


# --- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "needles"), [
    ({"--tasks": "mrpc,nope"}, ["unknown task 'nope'"]),
    ({"--tasks": "mrpc:reversed"}, ["unknown control 'reversed'", "mrpc:shuffled"]),
    ({"--budgets": ","}, ["--budgets is empty"]),
    ({"--budgets": "0.5%,abc"}, ["abc"]),
    ({"--sweep": "a/b"}, ["--sweep 'a/b'"]),
    ({"--budgets": "2%,0.0001%"}, ["mrpc at 0.0001% on ", "no method fits the budget"]),
])
def test_bad_sweep_input_is_one_line_and_writes_nothing(tmp_path, tiny_bert, mrpc_dir, change,
                                                        needles):
    (tmp_path / "space.yaml").write_text(SPACE)
    args = _args(tiny_bert, mrpc_dir.parent)
    for flag, value in change.items():
        args[args.index(flag) + 1] = value
    assert_one_line_error(run_cli(*args, cwd=tmp_path), *needles)
    assert not (tmp_path / "studies").exists()


@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--budgets", "1%", "sweep 'demo' exists with another grid"),
    ("--max-train-samples", "320", "other training settings (--max-train-samples 800 → 320)"),
])
def test_another_grid_or_training_under_an_existing_name_is_refused(swept, tiny_bert, mrpc_dir,
                                                                   flag, value, needle):
    work, _ = swept
    manifest = work / "studies" / "demo.sweep" / "sweep.json"
    before = manifest.read_text()
    args = _swept_args(tiny_bert, work / "glue")
    args[args.index(flag) + 1] = value
    assert_one_line_error(run_cli(*args, cwd=work), needle)
    assert manifest.read_text() == before


def test_another_method_set_is_refused_before_any_study_is_touched(swept, tiny_bert):
    """Every study's setup is checked before the manifest is written or a study opened."""
    work, _ = swept
    (work / "bitfit_only.yaml").write_text(SPACE.split("  lora:")[0])
    files = sorted((work / "studies").rglob("*"))
    before = {p: p.read_bytes() for p in files if p.is_file()}
    args = _swept_args(tiny_bert, work / "glue")
    args[args.index("--space") + 1] = "bitfit_only.yaml"
    assert_one_line_error(run_cli(*args, cwd=work), "searches bitfit, lora; this run leaves out "
                          "lora", "--warm-start")
    assert sorted((work / "studies").rglob("*")) == files
    assert {p: p.read_bytes() for p in files if p.is_file()} == before


def test_report_needs_a_study_or_a_sweep(tmp_path):
    assert_one_line_error(run_cli("report", cwd=tmp_path), "--study NAME", "--sweep NAME")
    assert_one_line_error(run_cli("report", "--sweep", "nope", cwd=tmp_path), "no sweep 'nope'")


# --- the searcher that interleaves studies (no Ray run) -----------------------------------------
class _FakeSearcher:
    def __init__(self, name: str, supply: int):
        self.name, self.supply, self.told = name, supply, []
        self.infeasible = 0
        self._ot_trials: dict[str, SimpleNamespace] = {}

    def suggest(self, trial_id: str):
        if self.supply == 0:
            return Searcher.FINISHED
        self.supply -= 1
        self._ot_trials[trial_id] = SimpleNamespace(_trial_id=trial_id)
        return {"method": "bitfit", "trial_number": len(self.told)}

    def live_trial(self, trial_id: str):
        return self._ot_trials.get(trial_id)

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append(trial_id)
        self._ot_trials.pop(trial_id)


def _member(name: str, remaining: int, supply: int = 99, enqueued: int = 0) -> SweepMember:
    storage = SimpleNamespace(get_trial=lambda trial_id: trial_id)
    waiting = ["enqueued"] * enqueued

    def get_trials(deepcopy=False, states=()):
        return waiting[:1] if TrialState.WAITING in states else []

    study = SimpleNamespace(_storage=storage, get_trials=get_trials)
    member = SweepMember(name=name, study=study, space=None, context=None, data_key="k",
                         remaining=remaining)
    member.searcher = _FakeSearcher(name, supply)
    return member


def test_free_slots_go_to_the_study_with_most_work_left():
    a, b, c = _member("a", 3), _member("b", 1), _member("c", 2, supply=1)
    searcher = SweepSearcher([a, b, c])
    picked = [searcher.suggest(str(i))["study"] for i in range(5)]
    # a (3 left), then a/c tie at 2 → by name c, ...; c's space runs dry after one
    assert picked == ["a", "c", "a", "b", "a"]
    assert searcher.suggest("5") == Searcher.FINISHED
    # c's space ran dry: its last trial is not asked for again and does not block the end
    assert (a.remaining, b.remaining, c.remaining) == (0, 0, 1) and c.exhausted


def test_enqueued_first_candidates_go_before_the_most_work_left():
    busy, covered = _member("busy", 5), _member("covered", 2, enqueued=1)
    searcher = SweepSearcher([busy, covered])
    assert searcher.suggest("t1")["study"] == "covered"


def test_a_shared_trial_lowers_the_target_of_the_studies_it_counts_for():
    small, large = _member("small", 2), _member("large", 2)
    searcher = SweepSearcher([small, large], share=lambda member, trial: (
        ["large"] if member.name == "small" else []))
    first = searcher.suggest("t1")
    assert first["study"] == "small"  # tie: by name, "small" > "large"
    searcher.on_trial_complete("t1", {"final": True})
    assert small.searcher.told == ["t1"] and large.remaining == 1
    assert [searcher.suggest(t)["study"] for t in ("t2", "t3")] == ["small", "large"]
    assert searcher.suggest("t4") == Searcher.FINISHED


# --- joining a cluster --------------------------------------------------------------------------
def test_a_cluster_refusing_the_driver_for_its_token_says_how_to_join(monkeypatch):
    """`ray start` turns on token authentication by itself when ~/.ray/auth_token exists."""
    import ray

    from autopeft.engine import cluster
    from autopeft.errors import AutoPeftError

    class AuthenticationError(Exception):
        pass

    def refused(**kwargs):
        try:
            raise AuthenticationError("InvalidAuthToken")
        except AuthenticationError as exc:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from exc

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refused)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(AutoPeftError) as caught:
        cluster.connect("10.0.0.1:6379")
    message = str(caught.value)
    assert message.startswith("cannot connect to the Ray cluster at '10.0.0.1:6379': Failed")
    assert "set RAY_AUTH_MODE=token" in message and "\n" not in message
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # already set: the hint would not help
    with pytest.raises(AutoPeftError) as caught:
        cluster.connect("10.0.0.1:6379")
    assert "RAY_AUTH_MODE" not in str(caught.value)


@pytest.mark.parametrize(("settings", "cluster", "expected"), [
    ({}, {"CPU": 16}, (16, 0, 1)),  # local, no GPU: one trial with every core
    ({"concurrency": 4}, {"CPU": 16}, (4, 0, 4)),
    ({}, {"CPU": 16, "GPU": 2}, (8, 1, 2)),  # one trial per GPU
    ({"gpus_per_trial": 0.25}, {"CPU": 16, "GPU": 1}, (4, 0.25, 4)),  # four packed on a GPU
    ({"address": "head:6379"}, {"CPU": 6}, (1, 0, 6)),  # a cluster: every 1-CPU slot
    ({"address": "head:6379", "gpus_per_trial": 0.5}, {"CPU": 64, "GPU": 4}, (1, 0.5, 8)),
    ({"address": "head:6379", "concurrency": 3}, {"CPU": 64}, (1, 0, 3)),
])
def test_trials_are_sized_to_the_cluster(settings, cluster, expected):
    from autopeft.engine.runner import EngineSettings, size_trials

    assert size_trials(EngineSettings(trials=1, **{"concurrency": None, **settings}),
                       cluster) == expected


def test_asking_for_more_gpus_than_the_cluster_has_is_refused():
    from autopeft.engine.runner import EngineSettings, size_trials
    from autopeft.errors import AutoPeftError

    with pytest.raises(AutoPeftError, match="--gpus-per-trial 0.25 but the Ray cluster has 0"):
        size_trials(EngineSettings(trials=1, gpus_per_trial=0.25), {"CPU": 2})
