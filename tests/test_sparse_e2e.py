"""A search over the sparse family (plus LoRA and BitFit) runs end to end through the CLI."""

from __future__ import annotations

import pandas as pd

from autopeft import study as records
from tests.helpers import run_cli

ENGINE = ["diff_pruning", "fish", "child_tuning_d", "u_bitfit"]  # (value, index) pairs
METHODS = [*ENGINE, "s_bitfit", "threshold_mask", "lora", "bitfit"]


def test_sparse_family_search(tmp_path, tiny_bert, mrpc_dir):
    result = run_cli(
        "search", "--task", "mrpc", "--budget", "0.5%", "--model", str(tiny_bert),
        "--data-dir", str(mrpc_dir), "--methods", ",".join(METHODS), "--trials", str(len(METHODS)),
        "--max-train-samples", "96", "--study", "sparse",
        # each method at its defaults (no portfolio), long enough for Threshold-Mask to flip
        "--portfolio", "none", "--epochs", "10", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "reports" / "sparse" / "trials.csv")
    complete = trials[trials.state == "COMPLETE"]
    assert sorted(complete.method) == sorted(METHODS)  # each method's coverage trial ran
    budget = int(0.005 * 2_036_992)
    assert (complete.stored_params <= budget).all()
    by_method = complete.set_index("method")
    for name in ENGINE:  # fp32 value + int64 index per stored entry
        assert by_method.stored_bytes[name] == by_method.stored_params[name] * 12, name
    assert by_method.stored_bytes["threshold_mask"] == by_method.stored_params["threshold_mask"] * 8
    assert by_method.stored_bytes["s_bitfit"] == by_method.stored_params["s_bitfit"] * 4

    study = records.open_study("sparse", records.make_storage(None, tmp_path / "studies" /
                                                               "sparse"), None)
    for trial in study.get_trials():
        if trial.user_attrs.get(records.ATTR_STATUS) != records.STATUS_OK:
            continue
        picture = trial.user_attrs[records.ATTR_ALLOCATION]
        assert set(picture) == {"by_layer", "by_type", "by_layer_type"}
        assert all(0.0 <= v <= 1.0 for v in picture["by_layer"].values())
