"""Trained deltas on disk: the method's safetensors (or peft's layout) + `autopeft_config.json`.

A directory written here is enough to rebuild the fine-tuned model on top of the backbone.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from autopeft._version import __version__
from autopeft.backbones.head import head_settings_of
from autopeft.backbones.models import load_model, resolve_model
from autopeft.errors import AutoPeftError
from autopeft.methods import Method, build_method

CONFIG_FILE = "autopeft_config.json"


def save_artifact(directory: Path, method: Method, model: nn.Module, info: dict[str, Any]) -> Path:
    """Write atomically: a crash leaves either the old artifact or the new one, never half."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        method.save(model, staging)
        description = {
            "autopeft_version": __version__,
            "method": method.name,
            "knobs": dataclasses.asdict(method.config),
            "head": head_settings_of(model).describe(),
            **info,
        }
        (staging / CONFIG_FILE).write_text(json.dumps(description, indent=2, sort_keys=True))
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_description(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise AutoPeftError(f"'{directory}' is not an autopeft artifact (no {CONFIG_FILE})")
    return json.loads(path.read_text())


def load_artifact(directory: Path, trust_remote_code: bool = False,
                  base_model: str | None = None) -> tuple[nn.Module, dict]:
    """The fine-tuned model (backbone + delta) and its description.

    `base_model` replaces the backbone id/path recorded in the artifact (e.g. a local copy of
    it on another machine); it must be the same checkpoint for the delta to mean anything.
    """
    description = read_description(directory)
    source = resolve_model(base_model or description["model"],
                           trust_remote_code=trust_remote_code)
    method = build_method(description["method"], description["knobs"])
    pooling = description.get("head", {}).get("pooling", "cls")  # older artifacts: cls
    model = load_model(source, description["num_labels"], pooling=pooling)
    return method.load(model, Path(directory)), description
