"""Where adapters go: module names resolved from roles, minus the blocks AdapterDrop skips."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autopeft.errors import MethodNotApplicable
from autopeft.methods.targets import layer_index, resolve_roles


@dataclass(frozen=True)
class Placement:
    """An adapter added to the output of the `target` role's module.

    `source` None: sequential, the adapter reads that output. Otherwise parallel: it reads the
    input of the `source` role's module in the same block (the block input).
    """

    target: str
    source: str | None = None


@dataclass(frozen=True)
class Site:
    """One resolved adapter: the module whose output it changes, and where its input comes from."""

    target: str
    source: str | None


def resolve_sites(model: nn.Module, placements: tuple[Placement, ...], drop_layers: int,
                  method: str) -> list[Site]:
    """Sites in every block from `drop_layers` up (AdapterDrop: none in the lowest n blocks)."""
    sites = []
    for placement in placements:
        sources = _first_per_block(model, placement.source) if placement.source else {}
        for target in resolve_roles(model, (placement.target,)):
            block = layer_index(target)
            if block is None:
                raise MethodNotApplicable(f"{method}: '{target}' is in no numbered block")
            if block < drop_layers:
                continue
            if placement.source and block not in sources:
                raise MethodNotApplicable(
                    f"{method}: block {block} has no '{placement.source}' module to read from")
            sites.append(Site(target, sources.get(block)))
    if not sites:
        raise MethodNotApplicable(
            f"{method}: drop_layers={drop_layers} leaves no block with an adapter")
    return sites


def _first_per_block(model: nn.Module, role: str) -> dict[int, str]:
    """Block → its first module of `role` (Llama's gate_proj and up_proj share one input)."""
    out: dict[int, str] = {}
    for name in resolve_roles(model, (role,)):
        block = layer_index(name)
        if block is not None:
            out.setdefault(block, name)
    return out
