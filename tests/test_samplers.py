"""Samplers by name: seeded searches repeat exactly; unknown or uninstalled ones fail in a line."""

from __future__ import annotations

import importlib.util
import json
import sys

import optuna
import pytest

from autopeft import study as records
from autopeft.engine.samplers import SAMPLERS, check_sampler, make_sampler
from autopeft.engine.searcher import BudgetedOptunaSearch
from autopeft.errors import AutoPeftError
from autopeft.models import resolve_model
from autopeft.sizing import Sizer
from autopeft.space import load_space

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
AVAILABLE = [name for name in SAMPLERS if name != "qnehvi" or HAS_BOTORCH]


@pytest.fixture(scope="module")
def sizer(tiny_bert):
    return Sizer(resolve_model(str(tiny_bert)), num_labels=2)


def _proposals(sampler_name: str, seed: int, sizer: Sizer, space_file) -> list[dict]:
    """Run a searcher with a fake, deterministic score so model-based samplers fit models."""
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage, directions=list(records.DIRECTIONS))
    budget = sizer.measure("lora", {"r": 4, "targets": "all"}).stored_params
    search = BudgetedOptunaSearch(load_space(space_file), sizer, budget, "s", storage,
                                  make_sampler(sampler_name, seed))
    search.set_search_properties(None, None, {})
    proposals = []
    for i in range(PROPOSALS):
        candidate = search.suggest(f"t{i}")
        knobs = candidate["knobs"]
        stored = sizer.measure("lora", knobs).stored_params
        score = 0.5 + 0.01 * knobs["r"] - abs(knobs["learning_rate"] - 3e-3)
        search.on_trial_complete(f"t{i}", {
            "score": score, "stored_params": stored, "final": True, "epoch": 1,
            "training_iteration": 1, "artifact": "a", "stored_bytes": 4 * stored,
            "allocation": json.dumps({"by_layer": {}, "by_type": {}}),
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
