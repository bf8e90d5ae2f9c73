"""The allocation heatmaps show exactly the fractions the trials recorded."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from autopeft.report import build_report, pareto_frame
from autopeft.report.allocation import (
    ALL_LAYERS,
    ALL_TYPES,
    allocation_grid,
    front_allocations,
)
from autopeft.report.heatmaps import allocation_figure
from tests.helpers import LORA_ALLOCATION, OLD_BITFIT_ALLOCATION, fill_example, new_study


def test_grid_cells_are_the_recorded_fractions():
    grid = allocation_grid(7, "lora", LORA_ALLOCATION)

    assert grid.detailed
    assert list(grid.cells.index) == ["embeddings", "0", "1", "other"]  # forward-pass order
    assert list(grid.cells.columns) == ["attn_q", "attn_v", "ffn_in", "bias", "embeddings",
                                        "other"]
    for layer, kinds in LORA_ALLOCATION["by_layer_type"].items():
        for kind in grid.cells.columns:
            value = grid.cells.loc[layer, kind]
            if kind in kinds:
                assert value == kinds[kind], (layer, kind)
            else:
                assert math.isnan(value), (layer, kind)  # no such module in that layer

    table = grid.with_margins()
    assert table.loc["0", ALL_TYPES] == 0.25 and table.loc["1", ALL_TYPES] == 0.125
    assert table.loc[ALL_LAYERS, "attn_v"] == 0.5
    assert math.isnan(table.loc[ALL_LAYERS, ALL_TYPES])


def test_layers_sort_numerically():
    record = {"by_layer_type": {str(n): {"attn_q": n / 20} for n in (10, 2, 0, 1)}}
    grid = allocation_grid(0, "lora", record)
    assert list(grid.cells.index) == ["0", "1", "2", "10"]
    assert grid.cells.loc["10", "attn_q"] == 0.5


def test_an_older_record_keeps_its_margins():
    grid = allocation_grid(1, "bitfit", OLD_BITFIT_ALLOCATION)

    assert not grid.detailed
    assert grid.cells.isna().all().all()
    table = grid.with_margins()
    assert table.loc[ALL_LAYERS, "bias"] == 1.0
    assert table.loc["embeddings", ALL_TYPES] == 0.001


@pytest.mark.parametrize("record", [None, "oops", {}, {"by_layer": {}, "by_type": {}}])
def test_no_record_no_grid(record):
    assert allocation_grid(0, "lora", record) is None


def test_heatmap_draws_the_grid_with_its_margins():
    grid = allocation_grid(7, "lora", LORA_ALLOCATION)
    heatmap = allocation_figure(grid).data[0]

    np.testing.assert_array_equal(np.asarray(heatmap.z, dtype=float),
                                  grid.with_margins().to_numpy(dtype=float))
    assert list(heatmap.x) == [*grid.cells.columns, ALL_TYPES]
    assert list(heatmap.y) == ["embeddings", "layer 0", "layer 1", "other", ALL_LAYERS]
    assert heatmap.text[1][0] == "100%" and heatmap.text[0][0] == ""


def test_front_points_get_their_own_heatmap(tmp_path: Path):
    study = fill_example(new_study())
    grids = front_allocations(study, pareto_frame(study))

    assert [(g.trial, g.method, g.detailed) for g in grids] == [
        (1, "bitfit", False), (7, "lora", True), (0, "lora", True)]  # cheapest first
    html = (build_report(study, tmp_path) / "index.html").read_text(encoding="utf-8")
    assert html.index('id="allocation-trial-0001"') < html.index('id="allocation-trial-0007"')
