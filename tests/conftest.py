"""Shared fixtures: tiny random models built from configs, the real MRPC files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autopeft.testing import build_tiny_bert

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
MRPC_DIR = REPO.parent / "shared" / "data" / "glue" / "MRPC"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def mrpc_dir() -> Path:
    assert (MRPC_DIR / "train.tsv").exists(), f"MRPC files missing at {MRPC_DIR}"
    return MRPC_DIR


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Architecture name → directory of a tiny random checkpoint (built once, on first use)."""
    from autopeft.testing import build_tiny_model

    built: dict[str, Path] = {}

    def get(architecture: str) -> Path:
        if architecture not in built:
            built[architecture] = build_tiny_model(
                architecture, tmp_path_factory.mktemp(f"tiny-{architecture}"))
        return built[architecture]

    return get
