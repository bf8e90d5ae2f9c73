"""AutoPEFT: search PEFT configurations under a hard budget of stored parameters."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from autopeft.loading import LoadedModel, load

__all__ = ["LoadedModel", "__version__", "load"]


def __getattr__(name: str):
    """`autopeft.load` / `autopeft.LoadedModel` on first use, so `import autopeft` (and the
    torch-free `autopeft.report`) does not pull in torch and transformers."""
    if name in ("load", "LoadedModel"):
        from autopeft import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'autopeft' has no attribute {name!r}")
