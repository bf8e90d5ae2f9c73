"""The shared base of methods whose delta lives in the sparse-update engine."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

from torch import nn

from autopeft.methods.base import Method, freeze, unfreeze_head
from autopeft.methods.sparse import engine
from autopeft.methods.targets import is_head_param


class SparseDeltaMethod(Method):
    """Stores (index, value) pairs: counted, saved and loaded through the engine.

    Subclasses choose the entries (usually in `prepare`); before that, `planned` gives the exact
    count from shapes alone, which is what the budget check sees on a meta-device model.
    """

    family = "sparse"
    artifact_files = (engine.SPARSE,)

    @abstractmethod
    def planned(self, model: nn.Module) -> int:
        """Entries that will be stored, known before any data is seen."""

    def apply(self, model: nn.Module) -> nn.Module:
        freeze(model)
        unfreeze_head(model)
        return model

    def stored_params(self, model: nn.Module) -> int:
        """Selected entries once attached; before selection, the exact planned count."""
        return engine.stored_entries(model) if engine.deltas(model) else self.planned(model)

    def stored_bytes(self, model: nn.Module) -> int:
        return engine.stored_bytes(model)

    def changed_entries(self, model: nn.Module) -> dict[str, int]:
        return engine.changed_entries(model)

    def head_state(self, model: nn.Module) -> dict:
        return {k: v for k, v in self.delta_state(model).items() if is_head_param(k)}

    def save(self, model: nn.Module, directory: Path) -> None:
        engine.save_sparse(model, directory, extra=self.head_state(model))

    def load(self, model: nn.Module, directory: Path) -> nn.Module:
        """The backbone with the saved sparse delta and head attached (nothing else)."""
        freeze(model)
        unfreeze_head(model)
        dense = engine.load_sparse(model, directory)
        model.load_state_dict(dense, strict=False)
        return model
