"""Search progress lines: where they go survives Ray's pickling of the callback."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
from rich.console import Console

from autopeft.engine.progress import SearchProgress

TRIAL = SimpleNamespace(trial_id="t0", config={"trial_number": 3, "method": "lora",
                                               "knobs": {"r": 8}})


@pytest.mark.parametrize("quiet", [True, False])
def test_ray_copy_of_the_progress_callback_keeps_the_callers_quiet(quiet, capsys):
    """`api.search(console=Console(quiet=True))` (a benchmark, a notebook) prints no trial
    lines, though Ray runs a pickled copy whose console is rebuilt."""
    copy = pickle.loads(pickle.dumps(SearchProgress(4, 1, Console(stderr=True, quiet=quiet))))
    copy.on_trial_start(0, [], TRIAL)
    printed = capsys.readouterr().err
    assert copy.console.quiet is quiet
    assert ("▶ trial 3: lora (r=8)" in printed) is not quiet, printed
