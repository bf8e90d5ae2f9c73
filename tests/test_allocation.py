"""The per-layer / per-module-type picture of what a configuration changed."""

from __future__ import annotations

import pytest

from autopeft.backbones.models import load_model, resolve_model
from autopeft.methods import build_method
from autopeft.methods.allocation import (
    MODULE_TYPES,
    backbone_sizes,
    layer_of,
    module_type,
    summarize,
)
from autopeft.report.allocation import TYPE_ORDER
from autopeft.space.sizing import Sizer
from tests.helpers import ListSource


def _applied(tiny_bert, name, knobs):
    method = build_method(name, knobs)
    model = method.apply(load_model(resolve_model(str(tiny_bert)), num_labels=2))
    return method, model


@pytest.mark.parametrize(
    ("name", "layer", "kind"),
    [
        ("bert.encoder.layer.1.attention.self.query.weight", "1", "attn_q"),
        ("bert.encoder.layer.0.attention.output.dense.weight", "0", "attn_o"),
        ("bert.encoder.layer.0.output.dense.weight", "0", "ffn_out"),
        ("bert.encoder.layer.0.intermediate.dense.bias", "0", "bias"),
        ("bert.encoder.layer.0.output.LayerNorm.weight", "0", "layernorm"),
        ("bert.embeddings.word_embeddings.weight", "embeddings", "embeddings"),
        ("model.layers.3.mlp.down_proj.weight", "3", "ffn_out"),
    ],
)
def test_tensor_names_map_to_layers_and_module_types(name, layer, kind):
    assert (layer_of(name), module_type(name)) == (layer, kind)


def test_bitfit_changes_all_biases_and_nothing_else(tiny_bert):
    method, model = _applied(tiny_bert, "bitfit", {})
    picture = summarize(method.changed_entries(model), backbone_sizes(model))
    assert picture["by_type"]["bias"] == 1.0
    assert all(v == 0.0 for k, v in picture["by_type"].items() if k != "bias")


def test_lora_on_qv_changes_exactly_the_query_and_value_matrices(tiny_bert):
    method, model = _applied(tiny_bert, "lora", {"targets": "qv"})
    picture = summarize(method.changed_entries(model), backbone_sizes(model))["by_type"]
    assert picture["attn_q"] == picture["attn_v"] == 1.0
    assert picture["attn_k"] == picture["ffn_in"] == picture["embeddings"] == 0.0


def test_sparse_picture_adds_up_to_the_selected_count(tiny_bert):
    method, model = _applied(tiny_bert, "fish", {"density": 0.01, "fisher_samples": 4})
    from autopeft.backbones.models import load_tokenizer

    method.prepare(model, ListSource(load_tokenizer(resolve_model(str(tiny_bert)))))
    sizes = backbone_sizes(model)
    assert sum(sizes.values()) == Sizer(resolve_model(str(tiny_bert)), 2).backbone_params()
    by_layer = summarize(method.changed_entries(model), sizes)["by_layer"]
    totals = {}
    for name, size in sizes.items():
        totals[layer_of(name)] = totals.get(layer_of(name), 0) + size
    changed = sum(by_layer[layer] * totals[layer] for layer in by_layer)
    assert round(changed) == method.stored_params(model) == int(0.01 * 2_036_992)


def test_layer_by_type_grid_has_the_margins_as_its_totals(tiny_bert):
    method, model = _applied(tiny_bert, "lora", {"targets": "qv"})
    sizes = backbone_sizes(model)
    picture = summarize(method.changed_entries(model), sizes)
    grid = picture["by_layer_type"]

    layers = sorted(k for k in grid if k.isdigit())
    assert layers and all(grid[layer]["attn_q"] == grid[layer]["attn_v"] == 1.0
                          for layer in layers)
    assert all(grid[layer]["attn_k"] == grid[layer]["ffn_in"] == 0.0 for layer in layers)
    assert grid["embeddings"]["embeddings"] == 0.0
    # each margin is the size-weighted mean of its cells
    totals: dict[tuple[str, str], int] = {}
    for name, size in sizes.items():
        key = (layer_of(name), module_type(name))
        totals[key] = totals.get(key, 0) + size
    for layer, kinds in grid.items():
        size = sum(totals[layer, kind] for kind in kinds)
        mean = sum(kinds[kind] * totals[layer, kind] for kind in kinds) / size
        assert mean == pytest.approx(picture["by_layer"][layer])
    for kind, fraction in picture["by_type"].items():
        cells = [(grid[layer][kind], totals[layer, kind]) for layer in grid if kind in grid[layer]]
        mean = sum(f * s for f, s in cells) / sum(s for _, s in cells)
        assert mean == pytest.approx(fraction)


def test_report_heatmap_columns_cover_every_module_type():
    assert set(MODULE_TYPES) <= set(TYPE_ORDER)
