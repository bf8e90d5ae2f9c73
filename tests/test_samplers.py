"""Samplers by name: seeded searches repeat exactly; unknown or uninstalled ones fail in a line."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable

import optuna
import pytest

from autopeft import study as records
from autopeft.backbones.models import resolve_model
from autopeft.engine.samplers import NSGA2_POPULATION, SAMPLERS, check_sampler, make_sampler
from autopeft.engine.searcher import BudgetedOptunaSearch
from autopeft.errors import AutoPeftError
from autopeft.space.sizing import Sizer
from autopeft.space.space import load_space

SPACE = """
methods:
  lora:
    r: {choices: [1, 2, 4, 8]}
    lora_alpha: {choices: [8, 16]}
    targets: {choices: [qv, all]}
    learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
"""
PROPOSALS = 12  # two past the model-based samplers' 10 startup trials
HAS_BOTORCH = all(importlib.util.find_spec(m) for m in ("botorch", "optuna_integration"))
# qnehvi: about a minute of BoTorch fitting on 2 cores (slow), or a skip saying what it needs
AVAILABLE = [name if name != "qnehvi" else pytest.param(name, marks=pytest.mark.slow)
             if HAS_BOTORCH else pytest.param(
    name, marks=pytest.mark.skip(reason="qnehvi needs botorch and optuna-integration "
                                        "(pip install -e .[bo])")) for name in SAMPLERS]


@pytest.fixture(scope="module")
def sizer(tiny_bert):
    return Sizer(resolve_model(str(tiny_bert)), num_labels=2)


def _fake_score(knobs: dict) -> float:
    return 0.5 + 0.01 * knobs["r"] - abs(knobs["learning_rate"] - 3e-3)


def _proposals(sampler_name: str, seed: int, sizer: Sizer, space_file,
               score: Callable[[dict], float] = _fake_score, chance: float | None = None,
               count: int = PROPOSALS) -> list[dict]:
    """Run a searcher with a fake, deterministic score so model-based samplers fit models."""
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage, directions=list(records.DIRECTIONS))
    budget = sizer.measure("lora", {"r": 4, "targets": "all"}).stored_params
    search = BudgetedOptunaSearch(load_space(space_file).for_budget(sizer, budget),
                                  optuna.load_study(study_name="s", storage=storage),
                                  make_sampler(sampler_name, seed))
    search.set_search_properties(None, None, {})
    proposals = []
    for i in range(count):
        candidate = search.suggest(f"t{i}")
        knobs = candidate["knobs"]
        stored = sizer.measure("lora", knobs).stored_params
        search.on_trial_complete(f"t{i}", {
            "score": score(knobs), "stored_params": stored, "final": True, "epoch": 1,
            "training_iteration": 1, "artifact": "a", "stored_bytes": 4 * stored,
            "allocation": json.dumps({"by_layer": {}, "by_type": {}}),
            **({} if chance is None else {"chance_score": chance}),
        })
        proposals.append(candidate)
    # rejected (over-budget) proposals are part of the sequence too
    proposals.extend(t.params for t in search.study.get_trials()
                     if t.user_attrs.get(records.ATTR_STATUS) == records.STATUS_INFEASIBLE)
    return proposals


@pytest.mark.parametrize("name", AVAILABLE)
def test_seeded_sampler_repeats_exactly(name, sizer, tmp_path, monkeypatch):
    if name == "qnehvi":  # same algorithm, a smaller acquisition optimisation: a minute less
        import optuna_integration.botorch.botorch as bo

        optimize = bo.optimize_acqf

        def quick(**kwargs):
            return optimize(**{**kwargs, "num_restarts": 2, "raw_samples": 32,
                               "options": {**kwargs["options"], "maxiter": 20}})

        monkeypatch.setattr(bo, "optimize_acqf", quick)
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)
    first = _proposals(name, 7, sizer, space_file)
    assert _proposals(name, 7, sizer, space_file) == first
    assert len({json.dumps(p, sort_keys=True) for p in first}) > 1  # it does explore


def test_tpe_stops_chasing_cheap_trials_that_learned_nothing(sizer, tmp_path):
    """r=1 is the cheapest candidate, hence Pareto-optimal by size alone, but it scores chance
    (a constant prediction): once told so, TPE proposes fewer such trials after its start-up."""
    space_file = tmp_path / "space.yaml"
    space_file.write_text(SPACE)

    def score(knobs: dict) -> float:
        learned = 0.02 * knobs["r"] - 10 * abs(knobs["learning_rate"] - 3e-3)
        return 0.6 + max(0.0, learned) if knobs["r"] > 1 else 0.6

    def at_chance(chance: float | None) -> int:
        return sum(score(c["knobs"]) <= 0.6
                   for seed in (0, 1, 2)
                   # the 19 after TPE's 5 start-up trials (rejected ones are listed after them)
                   for c in _proposals("tpe", seed, sizer, space_file, score, chance, 24)[5:24])

    told, untold = at_chance(0.6), at_chance(None)
    assert told < untold * 0.75, (told, untold)


def test_gp_resumes_a_study_whose_older_trials_lack_the_chance_constraint():
    """Optuna's GPSampler raises on trials with and without constraints; ours draws at random."""
    study = optuna.create_study(directions=list(records.DIRECTIONS), sampler=make_sampler("gp", 0))
    x = optuna.distributions.FloatDistribution(0, 1)
    for i in range(12):
        trial = optuna.trial.create_trial(params={"x": i / 12}, distributions={"x": x},
                                          values=[i / 12, 100 - i])
        if i >= 6:  # recorded by this version
            records.record_chance(trial, i / 12, 0.5)
        study.add_trial(trial)
    assert 0 <= study.ask({"x": x}).params["x"] <= 1
    # Optuna 5.0: "... number of constraints ..."; 5.1: "The constraint names must be the same ..."
    with pytest.raises(ValueError, match="number of constraints|constraint names must be the same"):
        study.sampler = optuna.samplers.GPSampler(seed=0)
        study.ask({"x": x})


def test_nsga2_breeds_within_a_short_search():
    """With Optuna's default population (50) every trial of a 24-trial search would be a
    random draw of generation 0: the population must be small enough to breed twice."""
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=make_sampler("nsga2", 0))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)),
                   n_trials=24)
    generations = [t.system_attrs["NSGAIISampler:generation"] for t in study.trials]
    assert generations == sorted(generations)
    assert max(generations) >= 2
    assert generations.count(0) == NSGA2_POPULATION >= 4  # enough parents for crossover


def test_unknown_sampler_lists_the_choices():
    with pytest.raises(AutoPeftError, match=r"unknown sampler 'cmaes'; choose: tpe, nsga2, gp, "
                                            r"random, qnehvi$"):
        check_sampler("cmaes")


@pytest.mark.parametrize("missing", ["botorch", "optuna_integration"])
def test_qnehvi_without_botorch_names_the_extra(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` fail
    with pytest.raises(AutoPeftError) as info:
        check_sampler("qnehvi")
    message = str(info.value)
    assert "\n" not in message
    assert "sampler 'qnehvi' needs botorch and optuna-integration" in message
    assert "pip install 'autopeft[bo]'" in message
    with pytest.raises(AutoPeftError, match="autopeft\\[bo\\]"):
        make_sampler("qnehvi", 0)
