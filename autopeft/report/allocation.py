"""Where a configuration changed the backbone, as a layer × module-type grid for the heatmaps.

Reads the trial's ``allocation`` record (written by ``autopeft.methods.allocation.summarize``)
without importing it, since that module needs torch. Studies recorded before the 2-D
breakdown have only the margins (``by_layer``, ``by_type``); they still get a grid, with the
inner cells left empty and a note saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd

from autopeft.study import ATTR_ALLOCATION

# Column order of the heatmaps: attention, feed-forward, then the small tensors. Types not
# listed (a newer recorder) follow alphabetically; tests keep this in step with the recorder.
TYPE_ORDER = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_o", "ffn_in", "ffn_out",
              "layernorm", "bias", "embeddings", "other")
ALL_LAYERS = "all layers"
ALL_TYPES = "all types"
MARGINS_ONLY_NOTE = ("recorded before the per-layer × module-type breakdown: only the totals "
                     "per layer and per module type are known")


@dataclass(frozen=True)
class AllocationGrid:
    """Fractions of backbone entries changed: `cells` (layer × type) and its two margins."""

    trial: int
    method: str
    cells: pd.DataFrame  # NaN: no such module in that layer, or not recorded (old study)
    by_layer: pd.Series
    by_type: pd.Series
    detailed: bool  # False: an older record with the margins only

    def with_margins(self) -> pd.DataFrame:
        """The grid plus an `all types` column and an `all layers` row, as the heatmap shows."""
        grid = self.cells.copy()
        grid[ALL_TYPES] = self.by_layer.reindex(grid.index)
        margin = self.by_type.reindex(grid.columns).rename(ALL_LAYERS)
        return pd.concat([grid, margin.to_frame().T])


def allocation_grid(trial: int, method: str, record: Any) -> AllocationGrid | None:
    """The grid of one trial's `allocation` record; None when the trial has none."""
    if not isinstance(record, dict):
        return None
    by_layer = _floats(record.get("by_layer"))
    by_type = _floats(record.get("by_type"))
    nested = record.get("by_layer_type")
    detailed = isinstance(nested, dict) and bool(nested)
    cells = {str(layer): _floats(kinds) for layer, kinds in (nested or {}).items()}
    layers = _layer_order({*by_layer, *cells})
    kinds = _type_order({*by_type, *(k for row in cells.values() for k in row)})
    if not layers or not kinds:
        return None
    frame = pd.DataFrame(
        [[cells.get(layer, {}).get(kind, float("nan")) for kind in kinds] for layer in layers],
        index=layers, columns=kinds, dtype="float64",
    )
    return AllocationGrid(
        trial=trial,
        method=method,
        cells=frame,
        by_layer=pd.Series(by_layer, dtype="float64").reindex(layers),
        by_type=pd.Series(by_type, dtype="float64").reindex(kinds),
        detailed=detailed,
    )


def front_allocations(study: optuna.Study, pareto: pd.DataFrame) -> list[AllocationGrid]:
    """The grids of the Pareto points, cheapest first; points without a record are left out."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    grids = []
    for number, method in zip(pareto["trial"], pareto["method"], strict=True):
        record = trials[int(number)].user_attrs.get(ATTR_ALLOCATION)
        grid = allocation_grid(int(number), str(method), record)
        if grid is not None:
            grids.append(grid)
    return grids


def _floats(values: Any) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {str(k): float(v) for k, v in values.items() if isinstance(v, (int, float))}


def _layer_order(layers: set[str]) -> list[str]:
    """embeddings, 0, 1, ..., L-1, other: the order a forward pass visits them."""
    numbered = sorted((layer for layer in layers if layer.isdigit()), key=int)
    rest = sorted(layers - {*numbered, "embeddings", "other"})
    return [*(["embeddings"] if "embeddings" in layers else []), *numbered, *rest,
            *(["other"] if "other" in layers else [])]


def _type_order(kinds: set[str]) -> list[str]:
    return [*(k for k in TYPE_ORDER if k in kinds), *sorted(kinds - set(TYPE_ORDER))]
