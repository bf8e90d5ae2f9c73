"""Shared fixtures: tiny random models built from configs, the real MRPC files."""

from __future__ import annotations

import os
import shutil
import tempfile
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


@pytest.fixture
def two_nodes(monkeypatch):
    """A head and a worker node (1 CPU, no GPU each) on this machine, in a private Ray temp dir.

    `ray.cluster_utils.Cluster` starts each node's processes from this test and kills exactly
    those (by pid) when a node is removed; `ray stop` would kill every Ray process of this
    user on the machine, other searches' included. The private temp dir keeps the cluster's
    address file away from other searches, which would otherwise join this cluster. A lost
    node is noticed within about 1.5 s (Ray's default is tens of seconds).
    """
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a limit
    monkeypatch.setenv("RAY_TMPDIR", temp)
    fast_failure_detection = {"health_check_initial_delay_ms": 0,
                              "health_check_period_ms": 500,
                              "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": False,
        "_system_config": fast_failure_detection})
    try:
        worker = cluster.add_node(num_cpus=1, num_gpus=0)
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
