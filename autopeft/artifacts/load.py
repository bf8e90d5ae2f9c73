"""`autopeft.load`: an artifact directory as a ready model, with the tokenizer and task it needs.

Any directory with an `autopeft_config.json` works: an `autopeft export` output, an
`autopeft train` output, or a study's `artifacts/trial-NNNN`. Rebuilding is
`artifacts.load_artifact`'s job; this adds what a user needs around it (eval mode, tokenizer,
task, and an error that says how to point at the backbone when it is not where it was).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from autopeft.artifacts.store import CONFIG_FILE, load_artifact, read_description
from autopeft.backbones.models import ModelSource, load_tokenizer, resolve_model
from autopeft.errors import AutoPeftError
from autopeft.tasks import TaskSpec, stored_task


@dataclass
class LoadedModel:
    """A fine-tuned model ready for inference (eval mode, CPU) and what it takes to feed it."""

    model: nn.Module
    tokenizer: Any  # the backbone's tokenizer (left padding for decoder-only models)
    task: TaskSpec  # text columns, label names, regression or not
    description: dict[str, Any]  # the artifact's autopeft_config.json
    path: Path


def load(path: str | Path, base_model: str | None = None,
         trust_remote_code: bool = False) -> LoadedModel:
    """Load an artifact onto its backbone: `loaded.model(**loaded.tokenizer(...)).logits`.

    `base_model` overrides the backbone id or path recorded in the artifact (e.g. a local copy
    of it); it has to be the same checkpoint the delta was trained on.
    """
    path = Path(path).expanduser()
    if not (path / CONFIG_FILE).is_file():
        raise AutoPeftError(f"'{path}' is not an autopeft artifact (no {CONFIG_FILE}); pass a "
                            "directory written by autopeft export or autopeft train")
    description = read_description(path)
    source = _backbone(description, base_model, trust_remote_code)
    try:
        model, description = load_artifact(path, trust_remote_code, base_model=source.location)
    except RuntimeError as exc:  # shape mismatches: mostly another backbone than trained on
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutoPeftError(f"cannot rebuild '{path}' on backbone '{source.name}' ({first}); "
                            f"it was trained on '{description['model']}'") from None
    model.eval()
    return LoadedModel(model=model, tokenizer=load_tokenizer(source),
                       task=stored_task(description["task"], description.get("task_spec")),
                       description=description, path=path)


def _backbone(description: dict[str, Any], base_model: str | None,
              trust_remote_code: bool) -> ModelSource:
    name = base_model or description["model"]
    try:
        return resolve_model(name, trust_remote_code=trust_remote_code)
    except AutoPeftError as exc:
        if base_model:
            raise
        raise AutoPeftError(f"{exc} (the artifact was trained on '{name}': pass base_model= in "
                            "Python or --base-model on the command line with a copy of it)"
                            ) from None
