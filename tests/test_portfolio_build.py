"""A portfolio learned across tasks: the greedy choice, the score table, the file, its use.

Studies are synthetic (Optuna trials made with `create_trial`, in memory or in a journal where
`autopeft portfolio build` looks for them), so nothing trains except the one search at the end.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from autopeft import study as records
from autopeft.backbones.models import resolve_model
from autopeft.errors import AutoPeftError
from autopeft.results.portfolio_build import build_portfolio
from autopeft.results.portfolio_greedy import greedy_choice
from autopeft.results.portfolio_scores import score_table, study_record
from autopeft.search.portfolio import enqueue_portfolio, load_portfolio, parse_portfolio
from autopeft.search.sweep import manifest_path
from autopeft.space.fitting import feasible_methods
from autopeft.space.sizing import Sizer
from autopeft.space.space import candidate_from_params, load_space
from tests.helpers import assert_refused, listing, run_main

BUDGET = 10_000


@dataclass
class T:
    """One synthetic trial: its method's sampled knobs, outcome, and derived knobs."""

    method: str
    knobs: dict[str, Any]
    score: float
    stored: int
    derived: dict[str, Any] = field(default_factory=dict)
    state: TrialState = TrialState.COMPLETE
    attrs: dict[str, Any] = field(default_factory=dict)  # more user attrs

    @property
    def params(self) -> dict[str, Any]:
        return {"method": self.method, **{f"{self.method}.{k}": v for k, v in self.knobs.items()}}


def lora(lr: float, targets: str = "qv", score: float = 0.7, stored: int = 4_000,
         r: int = 8) -> T:
    """A LoRA trial of the default space: r derived from the sampled budget fraction."""
    return T("lora", {"budget_fraction": stored / BUDGET, "targets": targets,
                      "learning_rate": lr}, score, stored, {"lora.r": r})


def bitfit(lr: float = 5e-3, score: float = 0.6, stored: int = 1_000) -> T:
    return T("bitfit", {"learning_rate": lr}, score, stored)


def make_study(name: str, task: str, trials: list[T], chance: float | None = 0.5,
               studies_dir: Path | None = None, budget: int = BUDGET) -> optuna.Study:
    """A study as a search records it: in memory, or in `<studies_dir>/<name>/` when given."""
    setup = records.StudySetup(task=task, model="tiny-bert", budget_spec="1%",
                               budget_params=budget, backbone_params=budget * 100,
                               primary_metric="accuracy",
                               methods=sorted({t.method for t in trials}))
    if studies_dir is None:
        study = optuna.create_study(study_name=name, directions=list(records.DIRECTIONS))
        study.set_user_attr(records.SETUP_KEY, asdict(setup))
    else:
        study = records.open_study(name, records.make_storage(None, studies_dir / name), setup)
    distributions = _distributions(trials)
    for trial in trials:
        attrs = {records.ATTR_STATUS: "ok", records.ATTR_STORED: trial.stored,
                 records.ATTR_DERIVED: trial.derived, **trial.attrs}
        if chance is not None:
            attrs[records.ATTR_CHANCE] = chance
        complete = trial.state == TrialState.COMPLETE
        study.add_trial(create_trial(
            state=trial.state, values=[trial.score, trial.stored] if complete else None,
            params=trial.params, distributions={k: distributions[k] for k in trial.params},
            user_attrs=attrs))
    return study


def _distributions(trials: list[T]) -> dict[str, Any]:
    """One distribution per param for the whole study (Optuna wants them to agree)."""
    seen: dict[str, list] = {}
    for trial in trials:
        for name, value in trial.params.items():
            seen.setdefault(name, []).append(value)
    out = {}
    for name, values in seen.items():
        if all(isinstance(v, float) for v in values):
            out[name] = FloatDistribution(0.0, 1.0)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[name] = IntDistribution(0, 10_000)
        else:
            out[name] = CategoricalDistribution(list(dict.fromkeys(values)))
    return out


# --- the greedy choice ------------------------------------------------------------------------
TABLE = pd.DataFrame({"t1": [0.9, 1.0, 0.0, 0.95, 0.0], "t2": [0.9, 0.0, 1.0, 0.6, 0.0]},
                     index=["A", "B", "C", "D", "zero"])


def test_greedy_maximises_the_best_of_the_first_k_not_the_mean_score():
    picks = greedy_choice(TABLE, 3)
    assert [p.label for p in picks] == ["A", "B", "C"]  # B, C tie at k=2: the earlier row
    assert [p.coverage for p in picks] == pytest.approx([0.9, 0.95, 1.0])
    by_mean = list(TABLE.mean(axis=1).sort_values(ascending=False, kind="stable").index[:3])
    assert by_mean == ["A", "D", "B"]  # D, second by mean score, adds less than B or C


def test_greedy_ties_go_to_the_cheaper_and_weights_move_the_choice():
    cost = pd.Series({"A": 0.5, "B": 0.9, "C": 0.1, "D": 0.5, "zero": 0.0})
    assert [p.label for p in greedy_choice(TABLE, 2, cost=cost)] == ["A", "C"]
    # t1 weighing 9× as much: D (0.95 on t1) first, then B adds the last 0.05 there
    picks = greedy_choice(TABLE, 2, weights=pd.Series({"t1": 9.0, "t2": 1.0}))
    assert [p.label for p in picks] == ["D", "B"]
    assert picks[-1].coverage == pytest.approx(0.9 * 1.0 + 0.1 * 0.6)


def test_once_every_task_has_its_best_a_new_round_starts_and_zeros_are_never_chosen():
    picks = greedy_choice(TABLE, 10)
    assert [(p.label, p.round) for p in picks] == [("A", 1), ("B", 1), ("C", 1), ("D", 2)]
    assert picks[-1].coverage == pytest.approx((0.95 + 0.6) / 2)  # D alone in round 2


# --- the score table --------------------------------------------------------------------------
def test_cells_are_normalised_between_chance_and_the_best_trial_and_clipped():
    study = make_study("s", "mrpc", [lora(1e-3, score=0.75), lora(2e-3, score=0.6),
                                     lora(3e-3, score=0.5), lora(4e-3, score=0.3)])
    table = score_table([study_record(study)])
    assert table.scores["s"].tolist() == pytest.approx([1.0, 0.4, 0.0, 0.0])
    unknown = study_record(make_study("u", "cr", [lora(1e-3, score=0.8), bitfit(score=0.6)],
                                      chance=None))
    assert (unknown.chance, unknown.chance_recorded) == (0.6, False)  # the worst trial
    flat = make_study("f", "cr", [lora(1e-3, score=0.5), bitfit(score=0.4)], chance=0.5)
    assert score_table([study_record(flat)]).scores["f"].tolist() == [0.0, 0.0]  # learned nothing


def test_duplicates_are_one_candidate_whatever_space_or_sampled_fraction_found_them():
    first = make_study("a", "mrpc", [
        lora(1e-3, score=0.7),
        T("lora", {"budget_fraction": 0.43, "targets": "qv", "learning_rate": 1e-3}, 0.8,
          4_000, {"lora.r": 8}),  # another sampled fraction, the same r and size
        lora(1e-3, score=0.9, stored=2_000, r=4),  # another size: another candidate
    ])
    # a space without fit_budget: r sampled, and the default dropout given explicitly
    second = make_study("b", "cr", [
        T("lora", {"r": 8, "targets": "qv", "learning_rate": 1e-3, "lora_dropout": 0.05},
          0.75, 4_000),
        bitfit(score=0.5)])
    table = score_table([study_record(first), study_record(second)])
    assert len(table.candidates) == 3  # LoRA at 0.4 of the budget, LoRA at 0.2, BitFit
    same = table.candidates[0]
    assert (same.method, same.budget_fraction) == ("lora", 0.4)
    assert "r" not in dict(same.knobs) and dict(same.knobs)["learning_rate"] == 1e-3
    assert table.sources[0] == ["a#0", "a#1", "b#0"]
    assert table.scores.loc[0, "a"] == pytest.approx((0.75 - 0.5) / (0.9 - 0.5))  # mean of two
    assert table.cost[0] == pytest.approx(0.4)


def test_a_trial_that_stores_less_after_training_keeps_the_size_it_trained_at():
    # DyLoRA trained at r_max 8 (80% of the budget measured before training) stores only the
    # rank it chose (20%): the entry must bring back r_max 8, not a DyLoRA of r_max 2
    dylora = T("dylora", {"budget_fraction": 0.8, "targets": "qv", "learning_rate": 2e-3},
               0.8, 2_000, {"dylora.r_max": 8}, attrs={records.ATTR_BUDGET_USED: 0.8})
    table = score_table([study_record(make_study("a", "mrpc", [dylora, bitfit()]))])
    assert table.candidates[0].budget_fraction == 0.8
    assert table.cost[0] == pytest.approx(0.2)  # what it stores is still what it costs


def test_a_missing_cell_is_the_nearest_same_method_cell_shrunk_by_its_distance():
    source = make_study("a", "mrpc", [lora(1e-3), lora(1e-2), lora(1e-2, targets="all"),
                                      bitfit()])
    target = make_study("b", "cr", [lora(1e-3, score=0.8),
                                    T("adapter_houlsby", {"learning_rate": 1e-3}, 0.6, 3_000,
                                      {"adapter_houlsby.bottleneck": 8})])
    table = score_table([study_record(source), study_record(target)])
    cells = table.scores["b"].tolist()
    # rows: lora 1e-3 qv, lora 1e-2 qv, lora 1e-2 all, bitfit, adapter. Varying lora knobs:
    # learning rate (log spread 1e-3..1e-2) and targets; size and the rest are equal
    assert cells[0] == 1.0 and not table.imputed.loc[0, "b"]
    assert cells[1] == pytest.approx(0.5)  # d = (1 + 0) / 2 from the trained LoRA
    assert cells[2] == 0.0  # d = (1 + 1) / 2: nothing of that evidence is left
    assert cells[3] == 0.0  # no BitFit trial in b: chance
    assert cells[4] == pytest.approx(1 / 3)
    assert table.imputed["b"].tolist() == [False, True, True, True, False]
    assert table.imputed["a"].tolist() == [False, False, False, False, True]
    assert table.scores.loc[4, "a"] == 0.0  # no adapter in a
    assert table.imputed_tasks(1) == ["cr"] and table.imputed_tasks(0) == []


# --- the file ---------------------------------------------------------------------------------
def _three_tasks(studies: Path) -> None:
    """mrpc favours LoRA at lr 1e-3, mpqa LoRA at 1e-2, cr BitFit; plus a control task."""
    make_study("s-mrpc", "mrpc", [lora(1e-3, score=0.9), lora(1e-2, score=0.6),
                                  bitfit(score=0.6)], studies_dir=studies)
    make_study("s-cr", "cr", [lora(1e-3, score=0.6), bitfit(score=0.8)], studies_dir=studies)
    make_study("s-mpqa", "mpqa", [lora(1e-3, score=0.6), lora(1e-2, score=0.85),
                                  bitfit(score=0.55)], studies_dir=studies)
    make_study("s-ctl", "mrpc:shuffled", [lora(1e-3, score=0.5)], studies_dir=studies)


def test_a_built_portfolio_records_its_provenance_and_round_trips(tmp_path):
    studies = tmp_path / "studies"
    _three_tasks(studies)
    path = manifest_path("grid", str(studies))
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"studies": [{"study": "s-cr"}, {"study": "s-mpqa"}]}))
    built = build_portfolio(tmp_path / "learned.yaml", ["s-mrpc", "s-ctl", "s-cr"], ["grid"],
                            size=3, studies_dir=studies)
    assert built.notes[0].startswith("left out s-ctl: 'mrpc:shuffled' is a control task")
    document = yaml.safe_load(built.path.read_text())
    provenance = document["provenance"]
    assert provenance["tasks"] == ["mrpc", "cr", "mpqa"]
    assert (provenance["models"], provenance["budgets"], provenance["size"]) == (
        ["tiny-bert"], ["1%"], 3)
    assert [s["study"] for s in provenance["studies"]] == ["s-mrpc", "s-cr", "s-mpqa"]
    assert provenance["studies"][0] == {
        "study": "s-mrpc", "task": "mrpc", "model": "tiny-bert", "budget": "1%",
        "budget_params": BUDGET, "trials": 3, "chance": 0.5, "chance_from": "chance_score",
        "best": 0.9}
    assert provenance["built_at"].endswith("+00:00")
    entries = document["entries"]
    # cells (mrpc, cr, mpqa): lora 1e-3 (1, .33, .29), lora 1e-2 (.25, 0, 1), bitfit (.25, 1,
    # .14): the best mean first, then lora 1e-2 adds .71 to mpqa, bitfit .67 to cr
    assert [(e["method"], e["learning_rate"]) for e in entries] == [
        ("lora", 1e-3), ("lora", 1e-2), ("bitfit", 5e-3)]
    first = entries[0]
    assert first["budget_fraction"] == 0.4 and "r" not in first["knobs"]
    assert first["scores"] == {"mrpc": 1.0, "cr": pytest.approx(0.3333, abs=1e-4),
                               "mpqa": pytest.approx(0.2857, abs=1e-4)}
    assert first["imputed"] == [] and first["trained_in"] == ["s-mrpc#0", "s-cr#0", "s-mpqa#0"]
    assert entries[1]["imputed"] == ["cr"]  # no LoRA at 1e-2 in s-cr: its nearest, shrunk
    assert "budget_fraction" not in entries[2] and entries[2]["scores"]["cr"] == 1.0
    assert entries[-1]["coverage"] == 1.0 and "coverage 1.000" in entries[-1]["source"]
    loaded = load_portfolio(built.path)
    assert [(e.method, e.budget_fraction) for e in loaded] == [
        ("lora", 0.4), ("lora", 0.4), ("bitfit", None)]
    assert loaded[0].knobs["learning_rate"] == 1e-3 and loaded[0].knobs["targets"] == "qv"
    assert loaded[0].candidate["size_knob"] == "r"


@pytest.mark.parametrize(("entry", "needle"), [
    ({"method": "lora", "budget_fraction": 0.0}, "must be a share of the budget in (0, 1]"),
    ({"method": "lora", "budget_fraction": 1.5}, "must be a share of the budget in (0, 1]"),
    ({"method": "lora", "budget_fraction": "half"}, "must be a share of the budget"),
    ({"method": "bitfit", "budget_fraction": 0.5}, "needs a size knob, and bitfit has none"),
    ({"method": "lora", "budget_fraction": 0.5, "knobs": {"r": 4}}, "either budget_fraction "
                                                                    "or r, not both"),
])
def test_a_bad_budget_fraction_is_refused_by_entry(entry, needle):
    with pytest.raises(AutoPeftError, match="entry 1") as caught:
        parse_portfolio({"entries": [{**entry, "source": "test"}]}, "p.yaml")
    assert needle in str(caught.value)


# --- a search with it -------------------------------------------------------------------------
CUSTOM_SPACE = """
methods:
  lora:
    r: {choices: [1, 2, 4, 8, 16, 32]}
    targets: {choices: [qv, all]}
    learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
  bitfit:
    learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
"""


@pytest.mark.parametrize("space_file", ["default", "custom"])
def test_a_search_enqueues_the_learned_entries_first_sized_to_its_budget(tmp_path, tiny_bert,
                                                                          space_file):
    studies = tmp_path / "studies"
    _three_tasks(studies)
    built = build_portfolio(tmp_path / "p.yaml", ["s-mrpc", "s-cr", "s-mpqa"], size=3,
                            studies_dir=studies)
    entries = load_portfolio(built.path)
    if space_file == "custom":
        (tmp_path / "space.yaml").write_text(CUSTOM_SPACE)
    sizer = Sizer(resolve_model(str(tiny_bert)), 2)
    cap = int(sizer.backbone_params() * 0.02)
    space, _ = feasible_methods(
        load_space(None if space_file == "default" else tmp_path / "space.yaml")
        .restrict(["lora", "bitfit"]), sizer, cap)
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert enqueue_portfolio(study, space, sizer, cap, entries=entries) == 3
    bound = space.for_budget(sizer, cap)
    queued = [bound.resolve(t.system_attrs["fixed_params"]) for t in study.trials]
    assert [(c["method"], c["knobs"]["learning_rate"]) for c in queued] == [
        ("lora", 1e-3), ("lora", 1e-2), ("bitfit", 5e-3)]
    target = 0.4 * cap
    rank = queued[0]["knobs"]["r"]
    stored = sizer.measure("lora", queued[0]["knobs"]).stored_params
    ranks = (1, 2, 4, 8, 16, 32) if space_file == "custom" else range(1, 65)
    larger = [r for r in ranks if r > rank]
    assert stored <= target  # within 0.4 × this budget, and the largest rank that is
    assert not larger or sizer.measure("lora", {**queued[0]["knobs"], "r": larger[0]}
                                       ).stored_params > target
    if space_file == "default":
        fixed = study.trials[0].system_attrs["fixed_params"]
        assert fixed["lora.budget_fraction"] == 0.4  # the space samples the share itself


def test_a_search_tries_a_built_portfolio_first(tmp_path, tiny_bert, mrpc_dir):
    """The one end-to-end run: `search --portfolio` with a learned file, one trial."""
    from autopeft.testing import keyword_task
    from tests.helpers import run_cli

    studies = tmp_path / "learned"
    _three_tasks(studies)
    result = run_cli("portfolio", "build", "--study", "s-mrpc", "--study", "s-cr", "--study",
                     "s-mpqa", "--studies-dir", str(studies), "--out", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "portfolio of 3 entries learned from 3 studies of 3 tasks" in result.stdout
    data = keyword_task(tmp_path / "keywords", mrpc_dir / "train.tsv", train_size=120,
                        dev_size=40)
    result = run_cli("search", "--task", "mrpc", "--budget", "2%", "--model", str(tiny_bert),
                     "--data-dir", str(data), "--methods", "lora,bitfit", "--trials", "1",
                     "--epochs", "1", "--final-seeds", "0", "--study", "with",
                     "--portfolio", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "portfolio: 3 known-good configuration(s) first (p.yaml)" in result.stderr
    study = records.read_study("with", None, tmp_path / "studies")
    trials = sorted(study.trials, key=lambda t: t.number)
    first = candidate_from_params(trials[0].params, trials[0].user_attrs.get(
        records.ATTR_DERIVED))
    assert (first["method"], first["knobs"]["learning_rate"]) == ("lora", 1e-3)
    assert trials[0].values[1] <= 0.4 * records.study_setup(study).budget_params
    queued = [t.system_attrs.get("fixed_params", t.params)["method"] for t in trials[:3]]
    assert queued == ["lora", "lora", "bitfit"]  # the portfolio's order


# --- bad input --------------------------------------------------------------------------------
@pytest.fixture
def refusals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    studies = tmp_path / "studies"
    _three_tasks(studies)
    make_study("s-rte", "rte", [bitfit(score=0.9, stored=BUDGET + 1),
                                T("bitfit", {"learning_rate": 1e-3}, math.nan, 10,
                                  state=TrialState.FAIL)], studies_dir=studies)
    make_study("s-mrpc-2", "mrpc", [bitfit(score=0.8)], studies_dir=studies)
    (tmp_path / "taken.yaml").write_text("entries: []\n")
    return tmp_path


@pytest.mark.parametrize(("args", "needle"), [
    ([], "name the finished studies to learn from: --study NAME"),
    (["--study", "nope", "--study", "s-cr"], "no study 'nope'"),
    (["--sweep", "nope"], "no sweep 'nope'"),
    (["--study", "s-rte", "--study", "s-cr"], "study 's-rte' has no COMPLETE trial within"),
    (["--study", "s-mrpc", "--study", "s-cr", "--size", "0"], "--size must be at least 1"),
    (["--study", "s-mrpc", "--study", "s-cr", "--out", "taken.yaml"], "exists; a portfolio "
                                                                      "file is never overwritten"),
    (["--study", "s-mrpc", "--study", "s-cr", "--out", "no/such/p.yaml"], "does not exist"),
    (["--study", "s-mrpc", "--study", "s-mrpc-2"], "needs studies of at least 2 tasks; the 2 "
                                                   "studies are all of 'mrpc'"),
    (["--study", "s-ctl", "--study", "s-mrpc"], "needs studies of at least 2 tasks"),
])
def test_bad_input_is_one_line_and_writes_nothing(refusals, capsys, monkeypatch, args, needle):
    if "--out" not in args:
        args = [*args, "--out", "p.yaml"]
    before = listing(refusals)
    taken = (refusals / "taken.yaml").read_text()
    code, stderr = run_main(["portfolio", "build", *args], capsys, monkeypatch)
    assert_refused(code, stderr, needle, max_lines=1)
    assert listing(refusals) == before
    assert (refusals / "taken.yaml").read_text() == taken
