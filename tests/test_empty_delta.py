"""A trial whose method stores nothing beyond the head is a trained head, never a COMPLETE result.

Known from shapes (a size that rounds to 0 entries): rejected before training, like an
over-budget candidate. Known only from the data or the training (an S-BitFit that keeps no bias
vector, a Threshold-Mask that flips no mask): the trial fails with the reason.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from autopeft import study as records
from autopeft.backbones.models import load_tokenizer, resolve_model
from autopeft.engine import trainable
from autopeft.engine.searcher import BudgetedOptunaSearch
from autopeft.errors import EmptyDelta
from autopeft.search.seeding import enqueue_uncovered_methods
from autopeft.space.fitting import feasible_methods
from autopeft.space.sizing import Sizer
from autopeft.space.space import load_space
from autopeft.tasks import get_task, load_task_data, selection_split, subsample
from autopeft.train.data import SearchData, tokenize_frame
from autopeft.train.trial import ARTIFACTS_SUBDIR, TrialContext, run_trial

EMPTY = "stores nothing beyond the head"
# max_masked 0.0 rounds to 0 masked entries; 0.01 to a few hundred on the tiny BERT
THRESHOLD_SPACE = "methods: {threshold_mask: {max_masked: {choices: [0.0, 0.01]}}}"
# scores start 1e3 above the threshold: no step of training can push one below it
NO_FLIP = {"max_masked": 0.01, "score_init": 1000.0, "learning_rate": 1e-4}


@pytest.fixture(scope="module")
def sizer(tiny_bert) -> Sizer:
    return Sizer(resolve_model(str(tiny_bert)), num_labels=2)


@pytest.fixture(scope="module")
def data(tiny_bert, mrpc_dir) -> SearchData:
    task = get_task("mrpc")
    task_data = load_task_data(task, mrpc_dir)
    tokenizer = load_tokenizer(resolve_model(str(tiny_bert)))
    train, selection = selection_split(task_data.train, task, 0.1, 0)

    def tokenized(frame):
        return tokenize_frame(frame, task.text_columns, tokenizer, 64)

    return SearchData(tokenizer, tokenized(subsample(train, 32, 0)),
                      tokenized(subsample(selection, 16, 0)))


def _searcher(space_file, sizer: Sizer, budget: int = 10**6) -> BudgetedOptunaSearch:
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage, directions=list(records.DIRECTIONS))
    search = BudgetedOptunaSearch(load_space(space_file).for_budget(sizer, budget),
                                  optuna.load_study(study_name="s", storage=storage),
                                  optuna.samplers.RandomSampler(seed=0), max_rejections=20)
    search.set_search_properties(None, None, {})
    return search


def _context(tiny_bert, tmp_path) -> TrialContext:
    return TrialContext(model=resolve_model(str(tiny_bert)), task="mrpc", budget_params=10**6,
                        epochs=1, batch_size=16, seed=0, study_dir=str(tmp_path))


def test_a_proposal_measured_at_zero_stored_is_rejected_before_training(sizer, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(THRESHOLD_SPACE)
    assert sizer.measure("threshold_mask", {"max_masked": 0.0}).stored_params == 0
    search = _searcher(path, sizer)
    configs = [search.suggest(f"t{i}") for i in range(6)]
    assert all(c["knobs"]["max_masked"] == 0.01 for c in configs)  # only these reach Ray
    rejected = [t for t in search.study.get_trials()
                if t.params.get("threshold_mask.max_masked") == 0.0]
    assert rejected and search.infeasible == len(rejected)  # seeded: 0.0 was proposed
    for trial in rejected:
        assert trial.state == TrialState.FAIL
        assert trial.user_attrs[records.ATTR_STATUS] == records.STATUS_INFEASIBLE
        assert trial.user_attrs[records.ATTR_STORED] == 0
        assert EMPTY in trial.user_attrs[records.ATTR_ERROR]
    assert {c["trial_number"] for c in configs}.isdisjoint({t.number for t in rejected})


def test_a_space_of_only_empty_candidates_ends_the_search_untrained(sizer, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("methods: {threshold_mask: {max_masked: {choices: [0.0]}}}")
    search = _searcher(path, sizer)
    assert search.suggest("t0") == "FINISHED" and search.exhausted
    assert {t.state for t in search.study.get_trials()} == {TrialState.FAIL}
    # and a search drops such a method up front, saying why
    path.write_text("methods: {threshold_mask: {max_masked: {choices: [0.0]}}, "
                    "lora: {r: {choices: [2]}}}")
    space, skipped = feasible_methods(load_space(path), sizer, 10**6)
    assert list(space.methods) == ["lora"]
    assert EMPTY in skipped["threshold_mask"]


def test_a_coverage_trial_at_defaults_is_never_empty(sizer, tmp_path):
    # the default max_masked (0.005) clips to the first of two equally near choices: 0.0
    path = tmp_path / "space.yaml"
    path.write_text(THRESHOLD_SPACE)
    space = load_space(path)
    assert space.default_params("threshold_mask")["threshold_mask.max_masked"] == 0.0
    study = optuna.create_study(directions=list(records.DIRECTIONS))
    enqueue_uncovered_methods(study, space, sizer, 10**6)
    trial = study.ask()
    candidate = space.for_budget(sizer, 10**6)(trial)
    assert sizer.measure(candidate["method"], candidate["knobs"]).stored_params > 0


def _run(candidate, data, context) -> list[dict]:
    """The trial as the Ray trainable runs it: a crash becomes its last report, with a reason."""
    reports: list[dict] = []
    runtime = type("Runtime", (), {"get_node_id": lambda self: "node"})()
    patch = pytest.MonkeyPatch()
    patch.setattr(trainable.ray, "get_runtime_context", lambda: runtime)
    patch.setattr(trainable.tune, "report", reports.append)
    try:
        trainable.train_candidate(candidate, data, context)
    finally:
        patch.undo()
    return reports


def _told(search: BudgetedOptunaSearch, reports: list[dict]) -> optuna.trial.FrozenTrial:
    for result in reports[:-1]:
        search.on_trial_result("t0", result)
    search.on_trial_complete("t0", reports[-1])
    return search.study.get_trials()[-1]


def test_a_threshold_mask_that_flips_nothing_fails_with_the_reason(
        sizer, data, tiny_bert, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("methods: {threshold_mask: {max_masked: {choices: [0.01]}, "
                    "score_init: {choices: [1000.0]}, learning_rate: {choices: [1.0e-4]}}}")
    search = _searcher(path, sizer)
    config = search.suggest("t0")
    assert config["knobs"] == NO_FLIP
    context = _context(tiny_bert, tmp_path)
    with pytest.raises(EmptyDelta, match=f"{EMPTY}.*after training"):
        run_trial(config, data, context, lambda _: None)
    assert not (tmp_path / ARTIFACTS_SUBDIR).exists()  # no artifact of an empty delta

    trial = _told(search, _run(config, data, context))
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[records.ATTR_STATUS] == records.STATUS_ERROR
    assert EMPTY in trial.user_attrs[records.ATTR_ERROR]
    assert "EmptyDelta" in trial.user_attrs[records.ATTR_ERROR]
    assert not search.study.get_trials(states=(TrialState.COMPLETE,))


def test_an_s_bitfit_that_keeps_no_vector_fails_before_training(data, tiny_bert, tmp_path):
    # k = 25 bias entries measure as 25 stored, but every bias vector of the tiny BERT has 64+
    knobs = {"density": 0.02, "warmup_steps": 2}
    assert Sizer(resolve_model(str(tiny_bert)), 2).measure("s_bitfit", knobs).stored_params > 0
    reports: list[dict] = []
    with pytest.raises(EmptyDelta, match=f"{EMPTY}.*before training"):
        run_trial({"method": "s_bitfit", "knobs": knobs, "trial_number": 0}, data,
                  _context(tiny_bert, tmp_path), reports.append)
    assert not reports  # not one epoch trained


def test_a_delta_that_stores_something_still_completes(sizer, data, tiny_bert, tmp_path):
    """The check itself: the same Threshold-Mask, free to flip, is a COMPLETE result."""
    path = tmp_path / "space.yaml"
    path.write_text("methods: {threshold_mask: {max_masked: {choices: [0.01]}, "
                    "score_init: {choices: [0.0101]}, learning_rate: {choices: [0.05]}}}")
    search = _searcher(path, sizer)
    config = search.suggest("t0")
    trial = _told(search, _run(config, data, _context(tiny_bert, tmp_path)))
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get(records.ATTR_ERROR)
    assert trial.values[1] > 0
