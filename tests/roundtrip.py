"""Shared check: a trained model saved as an artifact loads back to identical logits."""

from __future__ import annotations

import torch

from autopeft.artifacts.store import load_artifact, save_artifact


def assert_artifact_roundtrip(tmp_path, model_dir, method, model, inputs):
    """Save `model` trained with `method`, load it onto a fresh backbone, compare exactly."""
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
    path = save_artifact(tmp_path / "artifact", method, model, {
        "model": str(model_dir), "task": "mrpc", "num_labels": 2})
    loaded, description = load_artifact(path)
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, expected, rtol=0, atol=0)
    assert description["method"] == method.name
    return loaded
