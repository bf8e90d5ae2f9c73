"""Search spaces: YAML validation and define-by-run sampling."""

from __future__ import annotations

import optuna
import pytest

from autopeft.errors import AutoPeftError
from autopeft.methods import METHODS
from autopeft.space import DEFAULT_SPACE, candidate_from_params, load_space


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_default_space_covers_every_registered_method():
    space = load_space()
    assert set(space.methods) == set(METHODS)
    assert all("learning_rate" in knobs for knobs in space.methods.values())


def test_sampling_gives_valid_candidates_for_each_method():
    space = load_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(300):  # 22 methods: every one gets drawn
        trial = study.ask()
        candidate = space(trial)
        cls = METHODS[candidate["method"]]
        config = cls.config_class.from_dict(candidate["knobs"], candidate["method"])
        assert candidate == candidate_from_params(trial.params)
        if candidate["method"] == "lora":
            assert config.r in (1, 2, 4, 8, 16, 32)
            assert 2e-4 <= config.learning_rate <= 1e-2
        seen.add(candidate["method"])
        study.tell(trial, 0.0)
    assert seen == set(METHODS)


def test_default_params_are_the_declared_defaults_inside_the_ranges():
    params = load_space().default_params("lora")
    assert params["method"] == "lora"
    assert params["lora.r"] == 8 and params["lora.targets"] == "qv"
    assert params["lora.learning_rate"] == pytest.approx(2e-3)


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
