"""benchmarks/search_quality.py compares like with like and says what its ratios include."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from benchmarks.search_quality import COMPARABLE, baseline_runs, ratio_summary, run_meta


def _args(**changed) -> argparse.Namespace:
    values = {k: None for k in COMPARABLE}
    values.update({"trials": 12, "epochs": 3, "budget": "5%", **changed})
    return argparse.Namespace(**values)


def test_a_zero_baseline_is_left_out_of_the_per_run_mean_not_divided_by():
    of_means, per_run, runs = ratio_summary([0.2, 0.3], [0.1, 0.0])
    assert of_means == pytest.approx(0.25 / 0.05) and per_run == pytest.approx(2.0)
    assert runs == 1
    assert all(math.isnan(x) for x in ratio_summary([0.1], [0.0])[:2])


def test_a_baseline_run_under_other_flags_is_refused(tmp_path):
    this = {"tpe": [({"hv": 0.1}, run_meta("mrpc", 0, _args()))]}
    same = tmp_path / "same.json"
    same.write_text(json.dumps({"random": [[{"hv": 0.05}, run_meta("mrpc", 0, _args())]]}))
    assert baseline_runs(this, same)[0][0] == {"hv": 0.05}
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"random": [[{"hv": 0.05},
                                             run_meta("mrpc", 0, _args(epochs=9))]]}))
    with pytest.raises(SystemExit, match=r"under other flags .*'epochs': \(9, 3\)"):
        baseline_runs(this, other)
    unrecorded = tmp_path / "old.json"
    unrecorded.write_text(json.dumps({"random": [[{"hv": 0.05}, {"task": "mrpc", "seed": 0}]]}))
    with pytest.raises(SystemExit, match="not recorded"):
        baseline_runs(this, unrecorded)
