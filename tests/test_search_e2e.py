"""End-to-end: the CLI runs a real (tiny) search through Ray and Optuna, resumes, reports."""

from __future__ import annotations

import pandas as pd
import pytest
from optuna.trial import TrialState

from autopeft import study as records
from autopeft.report.plots import CHANCE_LABEL
from autopeft.report.tables import chance_level
from autopeft.tasks import chance_score, get_task, load_task_data, selection_split
from autopeft.testing import keyword_task
from tests.helpers import run_cli

BUDGET = "2%"  # of the tiny BERT's 2,036,992 backbone params = 40,739
SPACE = """
methods:
  bitfit:
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
  lora:
    r: {choices: [2, 64]}          # r=64 on every projection stores 114,688 > budget
    targets: {choices: [all]}
    learning_rate: {low: 1.0e-3, high: 1.0e-2, log: true}
"""


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_bert, mrpc_dir):
    """On a task the tiny BERT learns (real MRPC leaves every trial at chance, and points at
    chance are not retrained): seeded, one LoRA trial learns it, the BitFit ones do not."""
    work = tmp_path_factory.mktemp("search")
    (work / "space.yaml").write_text(SPACE)
    data = keyword_task(work / "keywords", mrpc_dir / "train.tsv", train_size=800, dev_size=100)
    args = ["search", "--task", "mrpc", "--budget", BUDGET, "--model", str(tiny_bert),
            "--data-dir", str(data), "--space", "space.yaml", "--trials", "4",
            "--max-train-samples", "800", "--epochs", "3", "--sampler", "random", "--seed", "1",
            "--study", "tiny", "--concurrency", "2", "--final-seeds", "2",
            "--portfolio", "none"]  # each method at its defaults first (tests/test_portfolio.py)
    result = run_cli(*args, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, args, result


def _open(work):
    return records.open_study("tiny", records.make_storage(None, work / "studies" / "tiny"), None)


def load(work, name="trials.csv"):
    return pd.read_csv(work / "reports" / "tiny" / name)


def learned(front: pd.DataFrame) -> pd.DataFrame:
    """The points that beat chance: the ones the final runs retrain."""
    return front[front.score > front.chance_score]


def test_search_writes_report_and_artifacts(first_run):
    work, _, result = first_run
    report = work / "reports" / "tiny"
    for name in ("trials.csv", "pareto.csv", "summary.md", "pareto.html", "pareto.png"):
        assert (report / name).stat().st_size > 0, name
    trials = load(work)
    complete = trials[trials.state == "COMPLETE"]
    assert len(complete) == 4
    assert set(complete.method) == {"bitfit", "lora"}  # each method covered first
    assert set(trials.method[:2]) == {"bitfit", "lora"}  # coverage trials come first
    assert (complete.score.between(0, 1)).all()
    assert (complete.train_seconds > 0).all() and (complete.stored_params > 0).all()
    # in-trial timings are counted once: they fit inside the trial's own wall time
    assert (complete.train_seconds + complete.eval_seconds <= complete.trial_seconds).all()
    for number in complete.trial:
        artifact = work / "studies" / "tiny" / "artifacts" / f"trial-{number:04d}"
        assert (artifact / "autopeft_config.json").exists()
    assert "Pareto front of tiny" in result.stdout
    # the answer, judged on dev beside what always answering one label scores there
    dev = load_task_data(get_task("mrpc"), work / "keywords").dev
    chance = chance_score(get_task("mrpc"), dev.label.to_numpy())
    assert "winner (best selection score): trial" in result.stdout
    assert f"a constant prediction scores {chance:.4f} on dev" in result.stdout
    assert "trainable params:" in result.stderr  # peft-style line per trial


def test_each_trial_is_marked_by_whether_it_beat_chance(first_run):
    """The chance level is what a constant prediction scores on the selection split; a trial
    at or below it carries a violated Optuna constraint, so samplers do not chase it."""
    work, _, _ = first_run
    task = get_task("mrpc")
    _, selection = selection_split(load_task_data(task, work / "keywords").train, task, 0.1, 1)
    chance = chance_score(task, selection.label.to_numpy())
    assert 0.5 < chance < 1  # half positive: always answering 1 scores (0.5 + 2/3) / 2
    complete = _open(work).get_trials(states=(TrialState.COMPLETE,))
    marks = set()
    for trial in complete:
        assert trial.user_attrs[records.ATTR_CHANCE] == pytest.approx(chance)
        violated = trial.constraints[records.CONSTRAINT_BEATS_CHANCE] > 0
        assert violated == (trial.values[0] <= chance), (trial.values[0], chance)
        marks.add(violated)
    assert marks == {True, False}  # seeded: trials on both sides of chance
    listed = load(work).set_index("trial")
    assert listed.chance_score[[t.number for t in complete]].tolist() == pytest.approx(
        [chance] * len(complete))
    # the plot draws it as a line: points on it learned nothing
    assert chance_level(load(work)) == pytest.approx(chance)
    assert CHANCE_LABEL in (work / "reports" / "tiny" / "pareto.html").read_text()
    # and the hypervolume panel takes it as its reference point
    assert "reference point (1 − chance, 1)" in (work / "reports" / "tiny" / "index.html"
                                                  ).read_text()


def test_over_budget_candidates_are_recorded_and_never_trained(first_run):
    work, _, result = first_run
    trials = load(work)
    budget = 40_739
    infeasible = trials[trials.state == "INFEASIBLE"]
    assert len(infeasible) >= 1, "seeded random sampler proposes r=64 at least once"
    assert (infeasible.stored_params == 114_688).all()
    assert infeasible.score.isna().all() and infeasible.train_seconds.isna().all()
    for number in infeasible.trial:
        assert not (work / "studies" / "tiny" / "artifacts" / f"trial-{number:04d}").exists()
    assert (trials[trials.state == "COMPLETE"].stored_params <= budget).all()
    assert f"{len(infeasible)} candidates rejected before training" in result.stdout


def test_pareto_front_is_non_dominated_within_budget_with_dev_scores(first_run):
    work, _, _ = first_run
    trials, front = load(work), load(work, "pareto.csv")
    complete = trials[(trials.state == "COMPLETE") & (trials.stored_params <= 40_739)]
    assert len(front) >= 1
    for row in front.itertuples():
        dominated = complete[(complete.score >= row.score)
                             & (complete.stored_params <= row.stored_params)
                             & ((complete.score > row.score)
                                | (complete.stored_params < row.stored_params))]
        assert dominated.empty, f"trial {row.trial} is dominated"
    best = complete.score.max()
    assert best in set(front.score)
    assert learned(front).dev_score.between(0, 1).all()
    at_chance = front.drop(learned(front).index)
    assert at_chance.dev_score.isna().all()
    assert (at_chance.dev_note == "at chance: not retrained").all()


def test_front_points_are_retrained_with_k_seeds(first_run):
    """Every point that beat chance; a point at chance learned nothing and is not retrained."""
    work, _, result = first_run
    front = load(work, "pareto.csv")
    retrained, at_chance = learned(front), front.drop(learned(front).index)
    assert len(retrained) >= 1 and len(at_chance) >= 1  # seeded: both kinds on the front
    points = records.final_runs(_open(work))
    assert sorted(points) == sorted(retrained.trial)
    assert (retrained.dev_seeds == 2).all() and (at_chance.dev_seeds == 0).all()
    for row in retrained.itertuples():
        runs = records.final_seed_runs(points[row.trial])
        scores = [r["metrics"]["score"] for r in runs]
        assert len(scores) == 2 and runs[0]["seed"] != runs[1]["seed"]
        assert row.dev_score == pytest.approx(sum(scores) / 2)
        assert row.dev_score_std == pytest.approx(abs(scores[0] - scores[1]) / 2**0.5)
        assert points[row.trial]["train_samples"] == 800  # the cap, taken from train+selection
    assert result.stderr.count("✔ final trial") == 2 * len(retrained)  # one line per seed
    for row in at_chance.itertuples():  # one line per point skipped, saying why
        assert (f"trial {row.trial} {row.method} not retrained: its selection score "
                f"{row.score:.4f} is at or below chance") in result.stderr
    summary = (work / "reports" / "tiny" / "summary.md").read_text()
    assert "± " in summary and "at chance: not retrained" in summary


def test_resume_adds_trials_without_losing_or_duplicating(first_run):
    work, args, _ = first_run
    before = load(work)
    retrained = records.final_runs(_open(work))
    resumed = [*args]
    resumed[resumed.index("--trials") + 1] = "6"  # the target: 2 more than the first run's 4
    result = run_cli(*resumed, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    after = load(work)
    # finished seeds are not retrained: only points new to the front are
    points = records.final_runs(_open(work))
    front = set(learned(load(work, "pareto.csv")).trial)
    assert set(points) >= front
    for number in front & set(retrained):
        assert points[number] == retrained[number]  # same runs, seeds and timestamps
    assert result.stderr.count("✔ final trial") == 2 * len(front - set(retrained))
    assert after.trial.is_unique
    assert (after.state == "COMPLETE").sum() == (before.state == "COMPLETE").sum() + 2
    kept = after.set_index("trial").loc[before.trial, ["state", "score", "stored_params"]]
    pd.testing.assert_frame_equal(kept, before.set_index("trial")[kept.columns])
    # each method was covered by the first run: no extra coverage trials were queued
    assert (after.state == "WAITING").sum() == 0


def test_report_rebuilds_from_the_study_alone(first_run):
    work, _, _ = first_run
    report = work / "reports" / "tiny"
    original = (report / "trials.csv").read_text()
    pareto = (report / "pareto.csv").read_text()
    for path in report.iterdir():
        path.unlink()
    result = run_cli("report", "--study", "tiny", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (report / "trials.csv").read_text() == original
    assert (report / "pareto.csv").read_text() == pareto  # recorded seeds, nothing retrained
    assert "± " in (report / "summary.md").read_text()
    assert (report / "pareto.png").exists()


def test_resuming_with_another_budget_is_refused(first_run):
    work, args, _ = first_run
    other = [*args]
    other[other.index("--budget") + 1] = "3%"
    result = run_cli(*other, cwd=work)
    assert result.returncode == 2
    assert "study 'tiny' was made with budget_params=40739" in result.stderr
    study = records.open_study("tiny", records.make_storage(None, work / "studies" / "tiny"), None)
    assert records.study_setup(study).budget_params == 40_739
