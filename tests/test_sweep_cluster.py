"""A sweep on a two-node Ray cluster: every study reaches its target, trials use both nodes.

The real `autopeft sweep` runs in a subprocess with `--address`, against a head and a worker
node (1 CPU each) started here on this machine with `ray.cluster_utils.Cluster`, in a private
Ray temp dir (see `two_nodes` in conftest.py for why neither `ray stop` nor the default
temp dir is used). Two tasks (MRPC and its shuffled-label control) x two budgets on the tiny
BERT and a 1,000-pair slice of MRPC, with cheap methods only: trials long enough that two run
at once, one per node, as a user's would; nothing holds a trial back to make that happen.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from autopeft import study as records
from autopeft.report.sweep_report import WINNERS_CSV
from autopeft.search.sweep import read_manifest
from tests.helpers import SMALL_SPACE_FILE

SWEEP_TIMEOUT_S = 300
TRIALS = 2  # per study


@pytest.mark.slow
def test_sweep_runs_every_study_on_both_nodes_of_a_cluster(two_nodes, tmp_path, tiny_bert,
                                                           mrpc_dir):
    cluster, worker = two_nodes
    space = tmp_path / "space.yaml"
    space.write_text(SMALL_SPACE_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    name = "nodes"
    args = ["sweep", "--tasks", "mrpc,mrpc:shuffled", "--budgets", "0.5%,2%",
            "--models", str(tiny_bert), "--trials", str(TRIALS), "--sweep", name,
            "--data-dir", str(mrpc_dir.parent), "--space", str(space),
            # no --concurrency: with --address it is every trial slot of the cluster (2)
            "--address", cluster.address, "--gpus-per-trial", "0",
            "--max-train-samples", "1000", "--batch-size", "16", "--epochs", "2",
            "--final-seeds", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    try:
        done = subprocess.run([sys.executable, "-m", "autopeft", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"sweep timed out:\n{(exc.stderr or b'')[-3000:]!r}") from None
    assert done.returncode == 0, done.stderr[-3000:]

    entries = read_manifest(name, str(tmp_path / "studies"))["studies"]
    assert len(entries) == 4
    nodes = set()
    for entry in entries:
        study = records.read_study(entry["study"], None, tmp_path / "studies")
        assert records.counted_trials(study) >= TRIALS, entry["study"]
        nodes |= {t.user_attrs[records.ATTR_WORKER]["node"] for t in study.trials
                  if records.ATTR_WORKER in t.user_attrs}
    assert nodes == {cluster.head_node.node_id, worker.node_id}, done.stderr[-3000:]

    report = tmp_path / "reports" / name
    assert (report / "index.html").is_file()
    winners = pd.read_csv(report / WINNERS_CSV)
    assert len(winners) == 4
