"""`autopeft portfolio build`: finished studies of several tasks become a portfolio file.

What worked on the last tasks is the best first guess for the next one, so a search can start
from a portfolio learned from finished studies (`--portfolio FILE`) instead of the hand-written
default. The studies are read only; their candidates and normalised scores come from
`portfolio_scores`, the order from `portfolio_greedy`, and the file is what `load_portfolio`
reads, plus provenance: the tasks, models, budgets and studies it was learned from, and per
entry its score on each task and which of those scores are imputed.

Every input is checked before anything is written, and an existing file is never replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from autopeft import study as records
from autopeft.errors import AutoPeftError
from autopeft.inputs import names
from autopeft.inputs.options import check_positive
from autopeft.results.portfolio_greedy import Pick, greedy_choice
from autopeft.results.portfolio_scores import ScoreTable, StudyRecord, score_table, study_record
from autopeft.search.portfolio import TOP_LEVEL_KNOBS, parse_portfolio
from autopeft.search.sweep import read_manifest
from autopeft.space.space import FRACTION
from autopeft.tasks.specs import CONTROLS

DEFAULT_SIZE = 8
RULE = ("greedy: entry k most raises the mean over tasks of the best normalised score among "
        "entries 1..k (scores between each study's chance level and its best trial; ties to "
        "the cheaper, then the earlier); once nothing raises it, a new round starts")
HEADER = ("# A portfolio learned across tasks by `autopeft portfolio build` (see provenance).\n"
          "# Use it with `autopeft search --portfolio THIS_FILE`; budget_fraction is an entry's "
          "size as a share\n# of the search's budget.\n")


@dataclass
class BuiltPortfolio:
    """The file written, what it holds, and what the command should say about it."""

    path: Path
    document: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def build_portfolio(out: str | Path, studies: list[str] | None = None,
                    sweeps: list[str] | None = None, size: int = DEFAULT_SIZE,
                    studies_dir: str | Path = "studies", storage: str | None = None
                    ) -> BuiltPortfolio:
    """Learn a portfolio of at most `size` entries from the named studies and sweeps' studies
    and write it to `out`; one `AutoPeftError` line for bad input, nothing written then."""
    check_positive(size=size)
    target = _checked_out(out)
    chosen, notes = _study_records(_study_names(studies or [], sweeps or [], studies_dir),
                                   storage, studies_dir)
    tasks = list(dict.fromkeys(s.task for s in chosen))
    if len(tasks) < 2:
        raise AutoPeftError(
            f"a portfolio across tasks needs studies of at least 2 tasks; the {len(chosen)} "
            f"stud{'y is' if len(chosen) == 1 else 'ies are'} all of '{tasks[0]}': add "
            "studies of other tasks (or use --warm-start STUDY to reuse one task's front)")
    table = score_table(chosen)
    picks = greedy_choice(table.scores, size, table.weights, table.cost)
    if not picks:
        raise AutoPeftError("no trial of these studies scores above chance on any task: "
                            "there is nothing to learn a portfolio from")
    if len(picks) < size:
        notes.append(f"{len(picks)} entries, not {size}: the other candidates "
                     f"({len(table.candidates) - len(picks)}) score at chance everywhere"
                     if len(table.candidates) > len(picks) else
                     f"{len(picks)} entries, not {size}: the studies hold only "
                     f"{len(table.candidates)} distinct configurations")
    document = portfolio_document(table, picks, size)
    parse_portfolio(document, target)  # what `load_portfolio` will read back, checked first
    try:
        with target.open("x", encoding="utf-8") as handle:
            handle.write(HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True,
                                                 width=100))
    except FileExistsError:
        raise AutoPeftError(f"--out '{out}' was created meanwhile; it is left as it is") from None
    return BuiltPortfolio(target, document, notes)


def portfolio_document(table: ScoreTable, picks: list[Pick], size: int,
                       built_at: datetime | None = None) -> dict[str, Any]:
    """The portfolio file's content: provenance, then the entries in the chosen order."""
    studies = table.studies
    provenance = {
        "tasks": table.tasks,
        "models": list(dict.fromkeys(s.model for s in studies)),
        "budgets": list(dict.fromkeys(s.budget for s in studies)),
        "studies": [_study_provenance(s) for s in studies],
        "built_at": (built_at or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "size": size,
        "candidates": len(table.candidates),
        "rule": RULE,
    }
    entries = [_entry(table, pick, number, len(studies))
               for number, pick in enumerate(picks, start=1)]
    return {"provenance": provenance, "entries": entries}


def _entry(table: ScoreTable, pick: Pick, number: int, studies: int) -> dict[str, Any]:
    row = int(pick.label)
    candidate = table.candidates[row]
    knobs = dict(candidate.knobs)
    entry: dict[str, Any] = {"method": candidate.method,
                             "knobs": {k: v for k, v in knobs.items() if k not in TOP_LEVEL_KNOBS}}
    if candidate.budget_fraction is not None:
        entry[FRACTION] = candidate.budget_fraction
    entry.update({k: knobs[k] for k in TOP_LEVEL_KNOBS if k in knobs})
    trained_in = table.sources[row]
    more = f" and {len(trained_in) - 1} more" if len(trained_in) > 1 else ""
    entry["source"] = (f"learned from {studies} studies of {len(table.tasks)} tasks: entry "
                       f"{number} (round {pick.round}), best-of-first-{number} coverage "
                       f"{pick.coverage:.3f}; trained in {trained_in[0]}{more}")
    entry["scores"] = {task: round(score, 4) for task, score in table.task_scores(row).items()}
    entry["imputed"] = table.imputed_tasks(row)
    entry["coverage"] = round(pick.coverage, 4)
    entry["trained_in"] = trained_in
    return entry


def _study_provenance(study: StudyRecord) -> dict[str, Any]:
    return {"study": study.name, "task": study.task, "model": study.model,
            "budget": study.budget, "budget_params": study.budget_params,
            "trials": len(study.trials), "chance": round(study.chance, 4),
            "chance_from": "chance_score" if study.chance_recorded else "worst trial",
            "best": round(study.best, 4)}


def _checked_out(out: str | Path) -> Path:
    target = Path(out).expanduser()
    if target.exists() or target.is_symlink():
        raise AutoPeftError(f"--out '{out}' exists; a portfolio file is never overwritten: "
                            "pass a new file name")
    if not target.parent.is_dir():
        raise AutoPeftError(f"--out '{out}': its folder '{target.parent}' does not exist; "
                            "create it first")
    return target


def _study_names(studies: list[str], sweeps: list[str], studies_dir: str | Path) -> list[str]:
    """The named studies and every sweep's studies, each once, in the order given."""
    if not studies and not sweeps:
        raise AutoPeftError("name the finished studies to learn from: --study NAME "
                            "(repeatable, of at least 2 tasks) or --sweep NAME")
    chosen = [names.check_name(name, "--study") for name in studies]
    for sweep in sweeps:
        chosen += [entry["study"] for entry in read_manifest(sweep, str(studies_dir))["studies"]]
    return list(dict.fromkeys(chosen))


def _study_records(study_names: list[str], storage: str | None, studies_dir: str | Path
                   ) -> tuple[list[StudyRecord], list[str]]:
    """Each study read and summarised; control tasks (every candidate at chance by design)
    left out, with a note."""
    kept, notes = [], []
    for name in study_names:
        study = records.read_study(name, storage, Path(studies_dir))
        task = records.study_setup(study).task
        if task.partition(":")[2] in CONTROLS:
            notes.append(f"left out {name}: '{task}' is a control task, with nothing to learn")
            continue
        kept.append(study_record(study))
    if not kept:
        raise AutoPeftError("every study named is of a control task: nothing to learn from")
    return kept, notes
