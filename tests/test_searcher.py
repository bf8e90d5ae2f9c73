"""The budget-aware searcher: infeasible proposals never reach Ray; outcomes told honestly."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.trial import TrialState

from autopeft import study as records
from autopeft.backbones.models import resolve_model
from autopeft.engine.searcher import BudgetedOptunaSearch
from autopeft.space.sizing import Sizer
from autopeft.space.space import load_space


@pytest.fixture
def searcher(tiny_bert, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("methods: {lora: {r: {choices: [1, 32]}, targets: {choices: [all]}}}")
    sizer = Sizer(resolve_model(str(tiny_bert)), num_labels=2)
    budget = sizer.measure("lora", {"r": 1, "targets": "all"}).stored_params * 4
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage, directions=list(records.DIRECTIONS))
    search = BudgetedOptunaSearch(load_space(path).for_budget(sizer, budget),
                                  optuna.load_study(study_name="s", storage=storage),
                                  optuna.samplers.RandomSampler(seed=0))
    search.set_search_properties(None, None, {})
    return search, budget


def test_every_suggestion_fits_and_rejections_are_recorded_infeasible(searcher):
    search, budget = searcher
    configs = [search.suggest(f"t{i}") for i in range(6)]
    assert all(c["knobs"]["r"] == 1 for c in configs)
    trials = search.study.get_trials()
    infeasible = [t for t in trials if t.user_attrs.get(records.ATTR_STATUS) == "infeasible"]
    assert search.infeasible == len(infeasible) > 0  # seeded: r=32 was proposed and rejected
    for trial in infeasible:
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs[records.ATTR_STORED] > budget
        assert trial.params["lora.r"] == 32
    assert {c["trial_number"] for c in configs}.isdisjoint({t.number for t in infeasible})


def _final(score, final=True, epoch=1, **extra):
    return {"score": score, "stored_params": 896, "epoch": epoch, "final": final,
            "artifact": "artifacts/trial-x", "stored_bytes": 3584,
            "allocation": json.dumps({"by_layer": {"0": 0.5}, "by_type": {"bias": 1.0}}),
            "training_iteration": epoch,
            "train_seconds": 2.0, "eval_seconds": 0.5, "selection_accuracy": 0.7, **extra}


def test_trial_outcomes_map_to_optuna_states(searcher):
    search, _ = searcher
    for i in range(4):
        search.suggest(f"t{i}")
    search.on_trial_result("t0", _final(0.5, final=False))
    search.on_trial_result("t0", _final(0.8, epoch=2))
    # Ray repeats the last result, as a fresh dict, when the trial completes
    search.on_trial_complete("t0", _final(0.8, epoch=2))
    search.on_trial_complete("t1", _final(math.nan))
    search.on_trial_result("t2", _final(0.6, final=False))
    search.on_trial_complete("t2", _final(0.6, final=False))  # stopped by a scheduler
    search.on_trial_complete("t3", {"error": "ValueError: boom", "final": False}, error=True)

    by_status = {}
    for trial in search.study.get_trials():
        by_status.setdefault(trial.user_attrs.get(records.ATTR_STATUS), []).append(trial)
    (ok,) = by_status["ok"]
    assert ok.state == TrialState.COMPLETE and ok.values == [0.8, 896.0]
    assert ok.user_attrs[records.ATTR_ARTIFACT] == "artifacts/trial-x"
    assert ok.user_attrs[records.ATTR_STORED_BYTES] == 3584
    assert ok.user_attrs[records.ATTR_ALLOCATION]["by_type"] == {"bias": 1.0}
    assert ok.user_attrs[records.ATTR_TRAIN_SECONDS] == 4.0  # summed over both reports
    assert ok.user_attrs[records.ATTR_METRICS]["accuracy"] == 0.7
    assert ok.user_attrs[records.ATTR_CURVE] == [{"epoch": 1, "score": 0.5},
                                                 {"epoch": 2, "score": 0.8}]
    (pruned,) = by_status["pruned"]
    assert pruned.state == TrialState.PRUNED and pruned.values is None
    errors = sorted(by_status["error"], key=lambda t: t.number)
    assert [t.state for t in errors] == [TrialState.FAIL, TrialState.FAIL]
    assert "non-finite" in errors[0].user_attrs[records.ATTR_ERROR]
    assert errors[1].user_attrs[records.ATTR_ERROR] == "ValueError: boom"
    assert [t.number for t in search.study.best_trials] == [ok.number]


def test_a_candidate_that_cannot_apply_is_rejected_not_fatal(tiny_bert, tmp_path):
    # the tiny BERT has 2 blocks: dropping adapters from both leaves nothing to train
    path = tmp_path / "space.yaml"
    path.write_text("methods: {adapter_houlsby: {bottleneck: {choices: [4]}, "
                    "drop_layers: {choices: [0, 2]}}}")
    sizer = Sizer(resolve_model(str(tiny_bert)), num_labels=2)
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage, directions=list(records.DIRECTIONS))
    search = BudgetedOptunaSearch(load_space(path).for_budget(sizer, 10**6),
                                  optuna.load_study(study_name="s", storage=storage),
                                  optuna.samplers.RandomSampler(seed=0))
    search.set_search_properties(None, None, {})
    configs = [search.suggest(f"t{i}") for i in range(4)]
    assert all(c["knobs"]["drop_layers"] == 0 for c in configs)
    rejected = [t for t in search.study.get_trials()
                if t.user_attrs.get(records.ATTR_STATUS) == records.STATUS_INFEASIBLE]
    assert search.infeasible == len(rejected) > 0
    assert all(t.params["adapter_houlsby.drop_layers"] == 2 and t.state == TrialState.FAIL
               and "layer" in t.user_attrs[records.ATTR_ERROR] for t in rejected)


def test_an_interrupted_candidate_runs_again_first_and_at_most_twice(searcher):
    """A stopped search queues its unfinished candidates again; the next `suggest` takes such a
    retry before a candidate queued earlier, and a candidate is retried twice at most."""
    search, _ = searcher
    first = search.suggest("t0")["trial_number"]
    params = search.study.trials[first].params
    search.study.enqueue_trial(params, user_attrs={"queued": "earlier"})
    assert search.fail_unfinished("interrupted: stopped") == [first]

    def retry_of(number: int) -> dict | None:
        return search.study.trials[number].user_attrs.get(records.ATTR_RETRY_OF)

    proposed = search.suggest("t1")
    again = proposed["trial_number"]
    assert retry_of(again) == {"trial": first, "attempt": 1}
    assert proposed["seed_trial"] == first != again  # trains as the cut-off trial would have
    assert search.study.trials[again].params == params
    proposed = search.suggest("t2")
    queued = proposed["trial_number"]
    assert proposed["seed_trial"] == queued
    assert search.study.trials[queued].user_attrs.get("queued") == "earlier"

    search.fail_unfinished("interrupted: stopped")
    third = search.suggest("t3")["trial_number"]
    assert retry_of(third) == {"trial": first, "attempt": 2}
    assert retry_of(search.suggest("t4")["trial_number"]) == {"trial": queued, "attempt": 1}
    search.fail_unfinished("interrupted: stopped")
    waiting = search.study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[records.ATTR_RETRY_OF] for t in waiting] == [
        {"trial": queued, "attempt": 2}]  # the first candidate's third retry is not queued


def test_a_retry_trains_with_the_seed_of_the_trial_it_repeats(tiny_bert, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from autopeft.train import trial as trial_module

    seeds = []

    def fake_fit(*args, seed, **kwargs):  # the training: see its seed, train nothing
        seeds.append(seed)
        raise RuntimeError("stop")

    monkeypatch.setattr(trial_module, "fit_candidate", fake_fit)
    context = trial_module.TrialContext(
        model=resolve_model(str(tiny_bert)), task="mrpc", budget_params=10**6, epochs=1,
        batch_size=32, seed=7, study_dir=str(tmp_path))
    data = SimpleNamespace(train=None, selection=None, tokenizer=None)
    for numbers in ({"trial_number": 5}, {"trial_number": 9, "seed_trial": 5},
                    {"trial_number": 9}):
        with pytest.raises(RuntimeError, match="stop"):
            trial_module.run_trial({"method": "bitfit", "knobs": {}, **numbers}, data, context,
                                   print)
    assert seeds == [12, 12, 16]
