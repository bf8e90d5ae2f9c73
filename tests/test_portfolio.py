"""The portfolio: known-good first candidates, all feasible, enqueued first and once.

The shipped default is learned and rebuilt (README), so the enqueueing tests read the fixed
hand-set file kept beside it (`HANDSET`); the shipped file is checked for what any default
must hold."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autopeft.backbones.models import resolve_model
from autopeft.search.portfolio import enqueue_portfolio, load_portfolio, portfolio_params
from autopeft.search.seeding import enqueue_uncovered_methods
from autopeft.search.warm_start import adapt_candidate
from autopeft.space.fitting import feasible_methods
from autopeft.space.sizing import Sizer
from autopeft.space.space import load_space

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
HANDSET = Path(__file__).parents[1] / "search_spaces" / "portfolio_handset.yaml"


def test_every_entry_names_its_source_and_valid_knobs():
    entries = load_portfolio()
    assert len(entries) >= 8
    assert all(len(entry.source) > 20 for entry in entries)
    assert all("learning_rate" in entry.knobs for entry in entries)


@pytest.mark.parametrize("budget", [0.001, 0.005, 0.01])
@pytest.mark.parametrize("model", ["tiny", "minilm"])
def test_every_entry_is_feasible_on_tiny_bert_and_minilm(tiny_bert, model, budget):
    source = resolve_model(str(tiny_bert) if model == "tiny" else MINILM)
    sizer = Sizer(source, 2)
    cap = int(sizer.backbone_params() * budget)
    space, skipped = feasible_methods(load_space(None), sizer, cap)
    space = space.for_budget(sizer, cap)
    for number, entry in enumerate(load_portfolio(), start=1):
        assert entry.method in space.methods, (entry.method, skipped.get(entry.method))
        params, note = adapt_candidate(entry.candidate, f"entry {number}", space, sizer, cap)
        assert params is not None, note
        knobs = space.resolve(params)["knobs"]
        stored = sizer.measure(entry.method, knobs).stored_params
        assert 0 < stored <= cap, (entry.method, knobs, stored, cap)
        assert knobs["learning_rate"] == entry.knobs["learning_rate"]


def test_at_half_a_percent_of_minilm_the_first_entry_is_lora_r8_on_q_and_v():
    sizer = Sizer(resolve_model(MINILM), 2)
    cap = int(sizer.backbone_params() * 0.005)
    space, _ = feasible_methods(load_space(None), sizer, cap)
    params = portfolio_params(space, sizer, cap, load_portfolio(HANDSET))
    first = space.for_budget(sizer, cap).resolve(params[0])
    assert first["method"] == "lora"
    assert {k: first["knobs"][k] for k in ("r", "targets", "learning_rate")} == {
        "r": 8, "targets": "qv", "learning_rate": 2e-3}


def test_entries_come_first_then_uncovered_defaults_and_a_resume_adds_none(tiny_bert):
    sizer = Sizer(resolve_model(str(tiny_bert)), 2)
    cap = int(sizer.backbone_params() * 0.005)
    space, _ = feasible_methods(load_space(None).restrict(["lora", "bitfit", "krona"]), sizer,
                                cap)
    study = optuna.create_study(directions=["maximize", "minimize"])
    handset = load_portfolio(HANDSET)
    added = enqueue_portfolio(study, space, sizer, cap, entries=handset)
    enqueue_uncovered_methods(study, space, sizer, cap)
    queued = [t.system_attrs["fixed_params"] for t in study.trials]
    assert added == 2  # the two LoRA entries; bitfit and krona have none
    assert [p["method"] for p in queued] == ["lora", "lora", "bitfit", "krona"]  # then defaults
    assert queued[0]["lora.learning_rate"] == 2e-3
    assert enqueue_portfolio(study, space, sizer, cap, entries=handset) == 0
    assert len(study.trials) == 4
    assert enqueue_portfolio(study, space, sizer, cap, skip={"lora", "bitfit"},
                             entries=handset) == 0


def test_a_search_tries_the_portfolio_first_and_none_turns_it_off(tmp_path, tiny_bert, mrpc_dir):
    from autopeft import study as records
    from autopeft.space.space import candidate_from_params
    from autopeft.testing import keyword_task
    from tests.helpers import run_cli

    data = keyword_task(tmp_path / "keywords", mrpc_dir / "train.tsv", train_size=200,
                        dev_size=50)
    common = ["search", "--task", "mrpc", "--budget", "2%", "--model", str(tiny_bert),
              "--data-dir", str(data), "--methods", "lora,bitfit", "--trials", "2",
              "--epochs", "1", "--final-seeds", "0"]
    firsts = {}
    for name, extra in (("with", ["--portfolio", str(HANDSET)]),
                        ("without", ["--portfolio", "none"])):
        result = run_cli(*common, "--study", name, *extra, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert ("portfolio: 2 known-good configuration(s) first" in result.stderr) == (
            name == "with")
        study = records.read_study(name, None, tmp_path / "studies")
        firsts[name] = [candidate_from_params(t.params, t.user_attrs.get(records.ATTR_DERIVED))
                        for t in sorted(study.trials, key=lambda t: t.number)[:2]]
    first, second = firsts["with"]
    assert {k: first["knobs"][k] for k in ("r", "targets", "learning_rate")} == {
        "r": 8, "targets": "qv", "learning_rate": 2e-3}
    assert second["method"] == "lora" and second["knobs"]["targets"] == "all"  # entry 3
    # without it, each method once at its defaults, families taking turns in the space's
    # order (bitfit's family first), whatever order --methods names them in
    assert [c["method"] for c in firsts["without"]] == ["bitfit", "lora"]


def test_the_shipped_default_is_learned_from_the_four_shared_tasks_on_minilm():
    """README: the default is `autopeft portfolio build` of the transfer benchmark's studies
    (MRPC, CR, MPQA, STS-B with the bundled MiniLM), provenance and per-task scores kept."""
    import yaml

    from autopeft.search.portfolio import PORTFOLIO_FILE

    document = yaml.safe_load(PORTFOLIO_FILE.read_text(encoding="utf-8"))
    provenance = document["provenance"]
    tasks = {"mrpc", "cr", "mpqa", "stsb"}
    assert set(provenance["tasks"]) == tasks
    assert provenance["models"] == [MINILM]
    assert {study["task"] for study in provenance["studies"]} == tasks
    assert all(study["best"] > study["chance"] for study in provenance["studies"])
    for entry in document["entries"]:
        assert set(entry["scores"]) == tasks
        assert entry["trained_in"]  # each entry was trained, not imputed everywhere
    assert len(load_portfolio()) == provenance["size"] == len(document["entries"])
