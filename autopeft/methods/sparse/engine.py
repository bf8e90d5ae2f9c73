"""The sparse-update engine: train k chosen entries of frozen tensors, store (index, value) pairs.

Each selected tensor W gets a parametrization W ↦ W + scatter(values at fixed flat indices).
Only `values` (k numbers) is a trainable tensor, so gradients and optimizer state are O(k); the
original W is never updated, so masked-out weights stay bit-identical to the backbone (weight
decay included). Written by hand: peft has no fixed-index sparse delta, and torch's sparse
tensors do not support training a fixed pattern through `nn.Linear`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from autopeft.methods.targets import is_head_param

SPARSE_FILE = "sparse_delta.safetensors"
INDICES, VALUES = "indices", "values"


class SparseDelta(nn.Module):
    """Parametrization adding trainable `values` at fixed flat `indices` of a frozen tensor."""

    def __init__(self, indices: torch.Tensor):
        super().__init__()
        self.register_buffer(INDICES, indices.to(torch.long).sort().values)
        self.values = nn.Parameter(torch.zeros(len(indices), device=indices.device))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        flat = original.flatten().index_add(0, self.indices, self.values.to(original.dtype))
        return flat.view_as(original)


def backbone_tensors(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every non-head parameter, each shared tensor once: the candidates for sparse updates."""
    seen, out = set(), {}
    for name, param in model.named_parameters():
        if not is_head_param(name) and id(param) not in seen:
            seen.add(id(param))
            out[name] = param
    return out


def attach(model: nn.Module, selection: dict[str, torch.Tensor]) -> None:
    """Freeze `model`'s selected tensors and give each a SparseDelta at its selected indices."""
    for name, indices in selection.items():
        if len(indices) == 0:
            continue
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        getattr(module, attr).requires_grad_(False)
        parametrize.register_parametrization(module, attr, SparseDelta(indices), unsafe=True)


def parametrizations_of(model: nn.Module, kind: type[nn.Module]) -> dict[str, nn.Module]:
    """Attached parametrizations of one kind, by the name of the tensor they change."""
    out = {}
    for module_name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for attr, plist in module.parametrizations.items():
            for p in plist:
                if isinstance(p, kind):
                    out[f"{module_name}.{attr}" if module_name else attr] = p
    return out


def deltas(model: nn.Module) -> dict[str, SparseDelta]:
    """Attached sparse deltas by the name of the tensor they change."""
    return parametrizations_of(model, SparseDelta)


def stored_entries(model: nn.Module) -> int:
    return sum(len(d.indices) for d in deltas(model).values())


def stored_bytes(model: nn.Module) -> int:
    """Bytes of the stored delta: values plus int64 indices."""
    return sum(d.values.numel() * d.values.element_size() + d.indices.numel() * 8
               for d in deltas(model).values())


def save_sparse(model: nn.Module, directory: Path, extra: dict[str, torch.Tensor]) -> None:
    """Indices and values per tensor (plus `extra`, e.g. the head) as one safetensors file."""
    state = {**{k: v.detach().cpu().contiguous() for k, v in extra.items()}}
    for name, delta in deltas(model).items():
        state[f"{name}.{INDICES}"] = delta.indices.cpu()
        state[f"{name}.{VALUES}"] = delta.values.detach().cpu().contiguous()
    save_file(state, str(directory / SPARSE_FILE))


def load_sparse(model: nn.Module, directory: Path) -> dict[str, torch.Tensor]:
    """Attach the saved deltas to `model`; return the remaining (dense) tensors of the file."""
    state = load_file(str(directory / SPARSE_FILE))
    suffix = f".{INDICES}"
    names = [k[: -len(suffix)] for k in state if k.endswith(suffix)]
    attach(model, {n: state[f"{n}{suffix}"] for n in names})
    attached = deltas(model)
    with torch.no_grad():
        for name in names:
            attached[name].values.copy_(state[f"{name}.{VALUES}"])
    used = {f"{n}.{part}" for n in names for part in (INDICES, VALUES)}
    return {k: v for k, v in state.items() if k not in used}


def changed_entries(model: nn.Module) -> dict[str, int]:
    """Tensor → selected entries, for every attached delta."""
    return {name: len(delta.indices) for name, delta in deltas(model).items()}
