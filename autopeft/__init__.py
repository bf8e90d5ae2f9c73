"""AutoPEFT: search PEFT configurations under a hard budget of stored parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopeft._version import __version__

if TYPE_CHECKING:
    from autopeft.artifacts.load import LoadedModel, load

__all__ = ["LoadedModel", "__version__", "load"]


def __getattr__(name: str):
    """`autopeft.load` / `autopeft.LoadedModel` on first use, so `import autopeft` (and the
    torch-free `autopeft.report`) does not pull in torch and transformers."""
    if name in ("load", "LoadedModel"):
        from autopeft.artifacts import load as loading

        return getattr(loading, name)
    raise AttributeError(f"module 'autopeft' has no attribute {name!r}")
