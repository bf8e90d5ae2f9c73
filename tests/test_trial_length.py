"""What a trial costs by default: epochs by optimizer steps, a bounded selection split."""

from __future__ import annotations

import pytest

from autopeft.search.searching import SearchRequest, check_request
from autopeft.tasks.split import SELECTION_MAX_ROWS, SELECTION_MIN_ROWS, selection_cap
from autopeft.testing import keyword_task
from autopeft.train.length import MAX_EPOCHS, TARGET_STEPS, default_epochs


@pytest.mark.parametrize(("rows", "batch", "epochs"), [
    (3301, 32, 6),      # MRPC's train split: 104 steps an epoch
    (2400, 16, 4),      # 150 steps an epoch
    (60_000, 32, 1),    # SST-2-sized: one epoch is 1,875 steps
    (100, 32, MAX_EPOCHS),  # tiny data: capped
])
def test_default_epochs_give_about_the_target_steps(rows, batch, epochs):
    assert default_epochs(rows, batch) == epochs
    steps = epochs * -(-rows // batch)
    assert steps >= TARGET_STEPS or epochs == MAX_EPOCHS


@pytest.mark.parametrize(("train_rows", "cap"), [
    (500, SELECTION_MIN_ROWS), (3000, 1500), (9000, 4500), (60_000, SELECTION_MAX_ROWS)])
def test_selection_cap_is_half_the_training_rows_within_bounds(train_rows, cap):
    assert selection_cap(train_rows) == cap


def test_a_search_on_a_large_file_with_few_training_rows_evaluates_a_bounded_split(
        tmp_path, tiny_bert, mrpc_dir):
    """Before: 10% of a 30k-row file (3,000 rows) evaluated after every epoch of 1,000."""
    data = keyword_task(tmp_path / "big", mrpc_dir / "train.tsv", train_size=30_000,
                        dev_size=50)
    request = SearchRequest(task="mrpc", budget="2%", model=str(tiny_bert),
                            data_dir=str(data), methods="lora", max_train_samples=1000)
    checked = check_request(request)
    assert checked.inputs.train_rows == 1000
    assert checked.inputs.selection_rows == SELECTION_MIN_ROWS  # not 3,000
    assert checked.request.epochs == default_epochs(1000, 32) == 10  # 32 steps an epoch
    small = check_request(SearchRequest(task="mrpc", budget="2%", model=str(tiny_bert),
                                        data_dir=str(mrpc_dir), methods="lora"))
    assert small.inputs.selection_rows == 367  # 10% of MRPC is under the cap: unchanged
    assert small.request.epochs == 6
