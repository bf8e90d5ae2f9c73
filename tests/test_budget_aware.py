"""Budget-aware parametrisation: knobs fit to the budget make every default-space candidate fit."""

from __future__ import annotations

import math

import optuna
import pytest

from autopeft import study as records
from autopeft.api import methods_overview
from autopeft.backbones.models import resolve_model
from autopeft.methods.registry import METHOD_FAMILIES
from autopeft.search.seeding import enqueue_uncovered_methods
from autopeft.space.budget import parse_budget
from autopeft.space.fitting import feasible_methods
from autopeft.space.sizing import Sizer
from autopeft.space.space import FRACTION, candidate_from_params, load_space

BUDGETS = ["0.01%", "0.1%", "0.5%", "1%", "5%"]


@pytest.fixture(scope="module")
def sizers(tiny_bert, tiny_models):
    return {"bert": Sizer(resolve_model(str(tiny_bert)), num_labels=2),
            "llama": Sizer(resolve_model(str(tiny_models("llama"))), num_labels=2),
            "gpt2": Sizer(resolve_model(str(tiny_models("gpt2"))), num_labels=2),
            "minilm": Sizer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"),
                            num_labels=2)}


def bound_default_space(sizer: Sizer, spec: str):
    budget = parse_budget(spec).params(sizer.backbone_params())
    space, _ = feasible_methods(load_space(), sizer, budget)
    return space.for_budget(sizer, budget), budget


def sample(space, n: int, seed: int = 0) -> list[tuple[optuna.trial.FrozenTrial, dict]]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        candidate = space(trial)
        records.record_derived(trial, space.derived(candidate))  # as the searcher does
        study.tell(trial, 0.0)
        out.append((study.trials[-1], candidate))
    return out


@pytest.mark.parametrize("spec", BUDGETS)
@pytest.mark.parametrize("arch", ["bert", "llama", "gpt2", "minilm"])  # what the README claims
def test_every_default_space_candidate_fits(sizers, arch, spec):
    sizer = sizers[arch]
    space, budget = bound_default_space(sizer, spec)
    drawn = set()
    for trial, candidate in sample(space, 100):
        stored = sizer.measure(candidate["method"], candidate["knobs"]).stored_params
        assert stored <= budget, (candidate, stored, budget)
        assert candidate == candidate_from_params(trial.params,
                                                  trial.user_attrs.get(records.ATTR_DERIVED))
        drawn.add(candidate["method"])
    assert len(drawn) >= min(5, len(space.methods))


def _target(trial, method: str, budget: int) -> float:
    return max(1.0, trial.params[f"{method}.{FRACTION}"] * budget)


def test_derived_knobs_store_the_most_within_the_sampled_fraction(sizers):
    sizer = sizers["bert"]
    space, budget = bound_default_space(sizer, "5%")
    space = space.restrict(["lora", "fish", "lst"])
    checked = set()
    for trial, candidate in sample(space, 90, seed=1):
        method, knobs = candidate["method"], candidate["knobs"]
        target = _target(trial, method, budget)

        def stored(**change):
            return sizer.measure(method, {**knobs, **change}).stored_params  # noqa: B023

        if method == "lora":  # largest rank within fraction x budget (or the range's top, 64)
            r = knobs["r"]
            assert trial.user_attrs[records.ATTR_DERIVED] == {"lora.r": r}
            assert stored() <= target or r == 1
            assert r == 64 or stored(r=r + 1) > target
        elif method == "fish":  # the density keeping exactly floor(target) entries
            assert stored() == min(math.floor(target), stored(density=0.1))
        else:  # LST's reduction shrinks the size: the smallest that fits (range 2..128)
            red = knobs["reduction"]
            assert stored() <= target or red == 128
            assert red == 2 or stored(reduction=red - 1) > target
        checked.add(method)
    assert checked == {"lora", "fish", "lst"}


def test_other_size_knobs_keep_only_choices_that_can_fit(sizers):
    sizer = sizers["bert"]
    budget = 700  # rank-1 LoRA on q,v stores 512, on q,k,v,o 1,024
    space = load_space().restrict(["lora", "adapter_parallel"]).for_budget(sizer, budget)
    assert space.allowed["lora"]["targets"] == ("qv",)
    # a 1-wide parallel adapter on both blocks of both layers stores 772; on both blocks of one
    # layer or one block of each, 386: the largest grid that fits drops "both", keeps layers 0-1
    assert space.allowed["adapter_parallel"] == {"blocks": ("attn", "ffn"), "drop_layers": (0, 1)}
    for _, candidate in sample(space, 30):
        assert sizer.measure(candidate["method"], candidate["knobs"]).stored_params <= budget


def test_same_seed_same_derived_candidates(sizers):
    space, _ = bound_default_space(sizers["llama"], "1%")
    first = [c for _, c in sample(space, 40, seed=7)]
    second = [c for _, c in sample(space, 40, seed=7)]
    assert first == second
    assert first != [c for _, c in sample(space, 40, seed=8)]


def test_coverage_trials_are_feasible_and_at_defaults_where_they_fit(sizers):
    sizer = sizers["bert"]
    space, budget = bound_default_space(sizer, "1%")
    study = optuna.create_study(directions=list(records.DIRECTIONS))
    enqueue_uncovered_methods(study, space, sizer, budget)
    seen = {}
    for _ in space.methods:
        trial = study.ask()
        candidate = space(trial)
        assert sizer.measure(candidate["method"], candidate["knobs"]).stored_params <= budget
        seen[candidate["method"]] = candidate["knobs"]
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert set(seen) == set(space.methods)
    assert seen["lora"]["r"] == 8 and seen["lora"]["targets"] == "qv"  # the declared defaults


def test_a_default_search_shorter_than_the_method_list_tries_every_family(sizers):
    sizer = sizers["bert"]
    space, budget = bound_default_space(sizer, "0.5%")
    families = {METHOD_FAMILIES[m] for m in space.methods}
    assert len(space.methods) > 12 > len(families)  # the default search's 12 trials
    study = optuna.create_study(directions=list(records.DIRECTIONS))
    enqueue_uncovered_methods(study, space, sizer, budget)
    first = []
    for _ in range(12):
        trial = study.ask()
        first.append(space(trial)["method"])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert {METHOD_FAMILIES[m] for m in first[:len(families)]} == families
    assert len(set(first)) == 12
    assert first[:3] == ["bitfit", "lora", "fish"]  # each family's first in the file's order


def test_unbound_space_says_to_bind():
    study = optuna.create_study()
    with pytest.raises(Exception, match="for_budget"):
        load_space().restrict(["lora"])(study.ask())


def test_the_searcher_reports_no_infeasible_candidate(sizers):
    from autopeft.engine.searcher import BudgetedOptunaSearch

    sizer = sizers["bert"]
    space, budget = bound_default_space(sizer, "0.5%")
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage, directions=list(records.DIRECTIONS))
    bound = load_space().restrict(list(space.methods)).for_budget(sizer, budget)
    search = BudgetedOptunaSearch(bound,
                                  optuna.load_study(study_name="s", storage=storage),
                                  optuna.samplers.RandomSampler(seed=0))
    search.set_search_properties(None, None, {})
    configs = [search.suggest(f"t{i}") for i in range(40)]
    assert search.infeasible == 0
    derived = [t.user_attrs[records.ATTR_DERIVED] for t in search.study.get_trials()
               if records.ATTR_DERIVED in t.user_attrs]
    assert derived and all(c["knobs"] for c in configs)


def test_conditional_knob_only_when_its_condition_holds(sizers):
    space, _ = bound_default_space(sizers["llama"], "5%")
    prefix = [c for _, c in sample(space.restrict(["prefix_tuning"]), 30)]
    assert {c["knobs"]["prefix_projection"] for c in prefix} == {False, True}
    for candidate in prefix:
        has = "encoder_hidden_size" in candidate["knobs"]
        assert has == candidate["knobs"]["prefix_projection"]


def test_training_knobs_reach_the_trial(sizers, tiny_bert, tmp_path, monkeypatch):
    from autopeft.train import trial as trial_module
    from autopeft.train.loop import LoopSettings

    path = tmp_path / "space.yaml"
    path.write_text("methods: {bitfit: {epochs: {choices: [3]}, batch_size: {low: 4, high: 8}}}")
    space = load_space(path).for_budget(sizers["bert"], 10**6)
    (trial, candidate), = sample(space, 1)
    assert candidate["training"]["epochs"] == 3 and 4 <= candidate["training"]["batch_size"] <= 8
    assert candidate == candidate_from_params(trial.params)

    seen = {}

    def fake_fit(*args, **kwargs):  # the training loop: see its settings, train nothing
        settings = next(a for a in (*args, *kwargs.values()) if isinstance(a, LoopSettings))
        seen.update(epochs=settings.epochs, batch_size=settings.batch_size)
        raise RuntimeError("stop")

    monkeypatch.setattr(trial_module, "fit", fake_fit)
    context = trial_module.TrialContext(
        model=resolve_model(str(tiny_bert)), task="mrpc", budget_params=10**6, epochs=1,
        batch_size=32, seed=0, study_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="stop"):
        trial_module.run_trial({**candidate, "trial_number": 0}, _Data(), context, print)
    assert seen == candidate["training"]


class _Data:
    train = selection = tokenizer = None


def test_methods_overview_describes_derived_knobs():
    rows = {(r["method"], r["knob"]): r for r in methods_overview()}
    assert rows[("lora", "r")]["searched"] == "fit to budget × budget_fraction, within [1, 64]"
    assert rows[("lora", FRACTION)]["searched"] == "[0.05, 1] log"
    assert rows[("krona", "decompose_factor")]["searched"].startswith("fit to budget")
    assert rows[("prefix_tuning", "encoder_hidden_size")]["searched"].endswith(
        "when prefix_projection=True")
