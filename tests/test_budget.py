"""Budget parsing and exact stored-parameter counts on live models."""

from __future__ import annotations

import pytest
from torch import nn

from autopeft.backbones.models import build_meta_model, load_model, resolve_model
from autopeft.errors import AutoPeftError
from autopeft.methods import build_method
from autopeft.methods.counting import count_params
from autopeft.methods.targets import ROLE_SETS, resolve_roles
from autopeft.space.budget import parse_budget
from autopeft.space.fitting import fitting_bound
from autopeft.space.sizing import Sizer

TINY_HEAD = (64 * 64 + 64) + (64 * 2 + 2)  # the tiny BERT's pooler + classifier


@pytest.mark.parametrize(
    ("spec", "backbone", "expected"),
    [
        ("0.5%", 22_713_216, 113_566),
        ("0.005", 22_713_216, 113_566),
        ("120k", 1, 120_000),
        ("1.2M", 1, 1_200_000),
        ("120000", 1, 120_000),
        ("100%", 5_000, 5_000),
        (" 2.5K ", 1, 2_500),
    ],
)
def test_budget_specs(spec, backbone, expected):
    assert parse_budget(spec).params(backbone) == expected


@pytest.mark.parametrize(
    "spec", ["", "abc", "-1", "0", "0%", "150%", "1.5", "12q", "5%%", "1.2345k"]
)
def test_bad_budget_is_one_line_naming_the_input(spec):
    with pytest.raises(AutoPeftError) as info:
        parse_budget(spec)
    message = str(info.value)
    assert f"'{spec}'" in message and "\n" not in message
    assert "0.5%" in message or "positive" in message or "100%" in message


def _live(tiny_bert, method, knobs):
    source = resolve_model(str(tiny_bert))
    method = build_method(method, knobs)
    model = method.apply(load_model(source, num_labels=2))
    return model, method


@pytest.mark.parametrize(("r", "targets"), [(1, "qv"), (4, "attn"), (8, "all")])
def test_lora_count_is_rank_times_in_plus_out_per_adapted_matrix(tiny_bert, r, targets):
    source = resolve_model(str(tiny_bert))
    plain = load_model(source, num_labels=2)
    names = resolve_roles(plain, ROLE_SETS[targets])
    modules = dict(plain.named_modules())
    expected = sum(r * (modules[n].in_features + modules[n].out_features) for n in names)
    assert len(names) == 2 * len(ROLE_SETS[targets])  # two layers in the tiny model

    model, method = _live(tiny_bert, "lora", {"r": r, "targets": targets})
    assert method.stored_params(model) == expected
    assert method.head_params(model) == TINY_HEAD  # pooler + classifier, charged apart


def test_bitfit_count_is_the_sum_of_bias_sizes(tiny_bert):
    plain = load_model(resolve_model(str(tiny_bert)), num_labels=2)
    biases = sum(p.numel() for n, p in plain.named_parameters()
                 if n.endswith(".bias") and not n.startswith("classifier") and ".pooler." not in n)
    model, method = _live(tiny_bert, "bitfit", {})
    assert method.stored_params(model) == biases
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.endswith(".bias") or n.startswith("classifier") or ".pooler." in n
               for n in trainable)
    assert {"classifier.weight", "bert.pooler.dense.weight"} <= trainable  # the head trains


def test_full_counts_the_whole_backbone(tiny_bert):
    model, method = _live(tiny_bert, "full", {})
    assert method.stored_params(model) == count_params(model) - TINY_HEAD


@pytest.mark.parametrize(("name", "knobs"), [("lora", {"r": 4, "targets": "all"}), ("bitfit", {}),
                                             ("full", {})])
def test_meta_device_count_equals_live_count(tiny_bert, name, knobs):
    """The budget check before training uses shapes only; it must agree with the live model."""
    model, method = _live(tiny_bert, name, knobs)
    sizer = Sizer(resolve_model(str(tiny_bert)), num_labels=2)
    footprint = sizer.measure(name, knobs)
    assert footprint.stored_params == method.stored_params(model)
    assert footprint.head_params == method.head_params(model)
    meta = build_meta_model(resolve_model(str(tiny_bert)), 2)
    assert all(p.is_meta for p in meta.parameters())


def test_max_fitting_lora_rank_is_the_largest_within_budget(tiny_bert):
    sizer = Sizer(resolve_model(str(tiny_bert)), num_labels=2)
    per_rank = sizer.measure("lora", {"r": 1, "targets": "qv"}).stored_params  # 2 layers × 2 × 128
    assert per_rank == 2 * 2 * (64 + 64)
    budget = 10 * per_rank + per_rank // 2
    assert fitting_bound(sizer, "lora", "r", budget, targets="qv") == ("max", 10)
    assert fitting_bound(sizer, "lora", "r", per_rank - 1, targets="qv") == ("max", None)


def test_a_knob_whose_size_shrinks_as_it_grows_reports_its_smallest_fitting_value(tiny_bert):
    sizer = Sizer(resolve_model(str(tiny_bert)), num_labels=2)
    sizes = {r: sizer.measure("lst", {"reduction": r}).stored_params for r in (2, 4, 8)}
    assert sizes[2] > sizes[4] > sizes[8]
    assert fitting_bound(sizer, "lst", "reduction", sizes[4]) == ("min", 4)
    assert fitting_bound(sizer, "lst", "reduction", sizes[4] - 1)[1] in range(5, 9)


def test_count_params_counts_tied_weights_once():
    shared = nn.Linear(3, 3, bias=False)
    model = nn.Sequential(shared, shared)
    assert count_params(model) == 9
