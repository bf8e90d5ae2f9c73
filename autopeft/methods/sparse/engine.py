"""The sparse-update engine: train k chosen entries of frozen tensors, store (index, value) pairs.

Only `values` (k numbers) is a trainable tensor, so gradients and optimizer state are O(k); the
original W is never updated, so masked-out weights stay bit-identical to the backbone (weight
decay included). A delta reaches the model in one of two ways, with the same stored form:

* an `nn.Linear` weight whose selected entries fit in a small block (rows R × columns C, under a
  third of W — Fisher-selected entries cluster on a few input features) adds
  x[..., C] · B^T to the output rows R, B being the dense |R|×|C| block holding the values. Its
  forward, input-gradient and block-gradient products then cost less than the dense weight
  gradient a parametrization forces backward to form (that gradient made FISH as slow as full
  fine-tuning). Gathering single entries instead was tried and was slower.
* anything else (embeddings, LayerNorm, biases, scattered Linear selections): a parametrization
  W ↦ W + scatter(values at fixed flat indices).

Written by hand: peft has no fixed-index sparse delta, and torch's sparse tensors do not
support training a fixed pattern through `nn.Linear`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import parametrize

from autopeft.methods.base import ArtifactFile
from autopeft.methods.targets import is_head_param

SPARSE_FILE = "sparse_delta.safetensors"
SPARSE = ArtifactFile(SPARSE_FILE, "sparse delta: per changed backbone tensor `<name>.indices` "
                                   "(flat int64) and `<name>.values`, plus dense tensors (head)")
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


class SparseLinearDelta(SparseDelta):
    """The delta of an `nn.Linear` weight, applied to the layer's output through its block."""

    def __init__(self, indices: torch.Tensor, in_features: int):
        super().__init__(indices)
        rows, row_slot = (self.indices // in_features).unique(return_inverse=True)
        cols, col_slot = (self.indices % in_features).unique(return_inverse=True)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.register_buffer("block_positions", row_slot * len(cols) + col_slot,
                             persistent=False)

    def block(self) -> torch.Tensor:
        """The |R|×|C| dense block: zeros except the values at their (row, column) slots."""
        flat = self.values.new_zeros(len(self.rows) * len(self.cols))
        return flat.index_add(0, self.block_positions, self.values).view(len(self.rows), -1)

    def contribution(self, inputs: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        part = inputs.index_select(-1, self.cols) @ self.block().to(inputs.dtype).T
        return output.index_add(-1, self.rows, part.to(output.dtype))


LINEAR_DELTA = "sparse_delta"  # submodule name of a SparseLinearDelta on its nn.Linear


def _add_linear_delta(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return getattr(module, LINEAR_DELTA).contribution(inputs[0], output)


def _block_is_small(module: nn.Module, attr: str, indices: torch.Tensor) -> bool:
    """True when `indices` of an nn.Linear weight are cheaper applied on the output."""
    # Exactly nn.Linear (a parametrized bias wraps the class): subclasses such as attention's
    # out_proj may be used without calling forward, where a hook would never run.
    if parametrize.type_before_parametrizations(module) is not nn.Linear or attr != "weight":
        return False
    rows = (indices // module.in_features).unique().numel()
    cols = (indices % module.in_features).unique().numel()
    return 3 * rows * cols < module.weight.numel()


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
        if _block_is_small(module, attr, indices):
            module.add_module(LINEAR_DELTA, SparseLinearDelta(indices, module.in_features))
            module.register_forward_hook(_add_linear_delta)
        else:
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
    """Attached sparse deltas (both ways) by the name of the tensor they change."""
    out = parametrizations_of(model, SparseDelta)
    for module_name, module in model.named_modules():
        if isinstance(module, SparseLinearDelta):
            out[f"{module_name.rpartition('.')[0]}.weight"] = module
    return out


def original(model: nn.Module, name: str) -> torch.Tensor:
    """The backbone tensor as loaded (training never changes it)."""
    module_name, _, attr = name.rpartition(".")
    module = model.get_submodule(module_name)
    if parametrize.is_parametrized(module, attr):
        return getattr(module.parametrizations, attr).original
    return getattr(module, attr)


def effective(model: nn.Module, name: str) -> torch.Tensor:
    """The tensor the model computes with: the original plus its sparse delta, if any."""
    base = original(model, name).detach()
    delta = deltas(model).get(name)
    if delta is None:
        return base
    flat = base.flatten().index_add(0, delta.indices, delta.values.detach().to(base.dtype))
    return flat.view_as(base)


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
