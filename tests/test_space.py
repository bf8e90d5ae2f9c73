"""Search spaces: YAML validation and define-by-run sampling."""

from __future__ import annotations

import optuna
import pytest

from autopeft import study as records
from autopeft.backbones.models import resolve_model
from autopeft.errors import AutoPeftError
from autopeft.methods import METHODS
from autopeft.space.sizing import Sizer
from autopeft.space.space import DEFAULT_SPACE, candidate_from_params, load_space


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_default_space_covers_every_registered_method():
    space = load_space()
    assert set(space.methods) == set(METHODS)
    assert all("learning_rate" in knobs for knobs in space.methods.values())


@pytest.fixture(scope="module")
def sizer(tiny_bert):
    return Sizer(resolve_model(str(tiny_bert)), num_labels=2)


def test_default_space_derives_each_methods_size_knob():
    space = load_space()
    assert {m: space.fit_knob(m) for m in space.methods if space.fit_knob(m)} == {
        "lora": "r", "dylora": "r_max", "increlora": "rank_budget", "krona": "decompose_factor",
        "adalora": "target_r", "fish": "density", "child_tuning_d": "density",
        "diff_pruning": "density", "u_bitfit": "density", "s_bitfit": "density",
        "threshold_mask": "max_masked", "adapter_houlsby": "bottleneck",
        "adapter_pfeiffer": "bottleneck", "adapter_parallel": "bottleneck", "spt": "density",
        "lst": "reduction", "attention_fusion": "fusion_dim", "prompt_tuning": "num_virtual_tokens",
        "prefix_tuning": "num_virtual_tokens", "p_tuning": "num_virtual_tokens"}
    assert set(space.fractions) == set(space.methods) - {"full", "bitfit"}


def test_sampling_gives_valid_candidates_for_each_method(sizer):
    space = load_space().for_budget(sizer, 10**9)  # everything fits: the ranges alone decide
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(300):  # 22 methods: every one gets drawn
        trial = study.ask()
        candidate = space(trial)
        records.record_derived(trial, space.derived(candidate))  # as the searcher does
        cls = METHODS[candidate["method"]]
        config = cls.config_class.from_dict(candidate["knobs"], candidate["method"])
        derived = trial.user_attrs.get(records.ATTR_DERIVED)
        assert candidate == candidate_from_params(trial.params, derived)
        if candidate["method"] == "lora":
            assert config.r == 64 and derived == {"lora.r": 64}  # the top of its range fits
            assert 0.05 <= trial.params["lora.budget_fraction"] <= 1.0
            assert 2e-4 <= config.learning_rate <= 1e-2
        seen.add(candidate["method"])
        study.tell(trial, 0.0)
    assert seen == set(METHODS)


def test_default_params_are_the_declared_defaults_inside_the_ranges(sizer):
    budget = 4 * sizer.measure("lora", {"r": 8}).stored_params
    space = load_space().for_budget(sizer, budget)
    params = space.default_params("lora")
    assert params["method"] == "lora" and "lora.r" not in params
    assert params["lora.targets"] == "qv"
    assert params["lora.learning_rate"] == pytest.approx(2e-3)
    assert params["lora.budget_fraction"] == pytest.approx(0.25)
    assert space.resolve(params)["knobs"]["r"] == 8  # the fraction derives the declared default
    assert load_space().default_params("lora")["lora.budget_fraction"] == 1.0  # unbound: all


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("methods: {lora: {r: {choices: [0, 4]}}}", "methods.lora.r: 0 is below the minimum"),
        ("methods: {lora: {rank: {choices: [4]}}}", "methods.lora.rank: unknown knob"),
        ("methods: {lora: {targets: {choices: [qkv]}}}", "'qkv' is not allowed"),
        ("methods: {lora: {r: {choices: [2.5]}}}", "2.5 is not an integer"),
        ("methods: {lora: {learning_rate: {low: 1, high: 0.1}}}", "low (1.0) must be below high"),
        ("methods: {lora: {learning_rate: {low: 0, high: 0.1, log: true}}}", "log scale needs low"),
        ("methods: {lora: {targets: {low: 1, high: 2}}}", "a str knob needs choices"),
        ("methods: {lora: {r: {choices: [4], step: 2}}}", "unknown key(s) ['step']"),
        ("methods: {lora: {r: {low: 1, high: 2.5}}}", "2.5 is not an integer"),
        ("methods: {lora: {lora_alpha: {fit_budget: true}}}",
         "lora_alpha: fit_budget needs a numeric knob that changes the stored size; lora's: r"),
        ("methods: {lora: {targets: {fit_budget: true, choices: [qv]}}}",
         "targets: fit_budget needs a numeric knob that changes the stored size; lora's: r"),
        ("methods: {lora: {r: {fit_budget: 1}}}", "fit_budget must be true or false"),
        ("methods: {lora: {r: {fit_budget: true, low: 1, high: 8, log: true}}}",
         "methods.lora.r: log has no meaning for a fit_budget knob"),
        ("methods: {increlora: {rank_budget: {fit_budget: true}, r_cap: {fit_budget: true}}}",
         "methods.increlora.r_cap: only one knob per method may fit the budget; rank_budget"),
        ("methods: {lora: {r: {fit_budget: true}, budget_fraction: {low: 0.5, high: 2}}}",
         "methods.lora.budget_fraction: fractions must lie in (0, 1], got [0.5, 2.0]"),
        ("methods: {lora: {budget_fraction: {low: 0.1, high: 1}}}",
         "budget_fraction: needs a knob with fit_budget: true; lora's candidates: r"),
        ("methods: {lora: {epochs: {choices: [0, 2]}}}",
         "methods.lora.epochs: 0 is below the minimum 1"),
        ("methods: {prefix_tuning: {encoder_hidden_size: {choices: [128], "
         "when: {prefix_projections: true}}}}",
         "when: 'prefix_projections' must be a sampled knob listed above encoder_hidden_size; "
         "allowed: none"),
        ("methods: {prefix_tuning: {prefix_projection: {choices: [false]}, encoder_hidden_size: "
         "{choices: [128], when: {prefix_projection: true}}}}",
         "when: prefix_projection=True is never sampled; choose from [False]"),
        ("methods: {lora: {r: {fit_budget: true}, lora_alpha: {choices: [8], when: {r: 4}}}}",
         "when: 'r' must be a sampled knob listed above lora_alpha; allowed: none"),
        ("methods: {lora: {r: {fit_budget: true, when: {targets: qv}}}}",
         "a fit_budget knob is always derived; drop 'when'"),
        ("methods: {lora: {targets: {choices: [qv]}, r: {choices: [4], when: [targets]}}}",
         "methods.lora.r: when must map knob names to a value or a list of values"),
        ("methods: {adapterz: {}}", "unknown method 'adapterz'"),
        ("lora: {}", "expected a mapping with a 'methods' key"),
        ("methods: [", "not valid YAML"),
    ],
)
def test_bad_space_files_name_the_file_key_and_allowed_values(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(AutoPeftError) as info:
        load_space(path)
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message
    if "unknown method" not in needle:
        assert str(path) in message


def test_missing_space_file(tmp_path):
    with pytest.raises(AutoPeftError, match="not found"):
        load_space(tmp_path / "nope.yaml")


def test_restrict_rejects_methods_absent_from_the_space(tmp_path):
    space = load_space(write(tmp_path, "methods: {bitfit: {}}"))
    with pytest.raises(AutoPeftError, match="lora"):
        space.restrict(["lora"])
    assert DEFAULT_SPACE.exists()
