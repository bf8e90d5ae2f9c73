"""`autopeft export`: one trial's trained delta as a self-describing folder that loads anywhere.

The folder holds the artifact's files unchanged (peft's layout for peft-backed methods, the
project's safetensors + `autopeft_config.json` otherwise), a model card (`README.md`) with what
was searched and measured, and `train_config.yaml` for `autopeft train --config`. It is staged
beside the target and renamed into place, so it either appears whole or not at all.

Which weights: a Pareto point the search retrained on all of train (`--final-seeds K`) is
exported as its seed-0 final run (`artifacts/trial-NNNN-final-s0`, the one `train_config.yaml`
reproduces); any other trial as its search artifact (`artifacts/trial-NNNN`, trained without the
selection split). `search_artifact=True` forces the latter.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from autopeft import study as records
from autopeft._version import __version__
from autopeft.artifacts.store import CONFIG_FILE, read_description
from autopeft.errors import AutoPeftError
from autopeft.inputs import names
from autopeft.inputs.options import check_folder
from autopeft.methods import METHODS, Method, get_method_class
from autopeft.methods.peft_backed import PeftBackedMethod
from autopeft.report import fmt, pareto_frame
from autopeft.report.tables import DEV_SCORE, DEV_SEEDS, DEV_STD, best_point, trial_state
from autopeft.results.retrain import TrainConfig, write_train_config
from autopeft.space.space import candidate_from_params
from autopeft.tasks import TaskSpec, stored_task
from autopeft.train.final import final_seed

CARD_FILE = "README.md"
TRAIN_CONFIG_FILE = "train_config.yaml"
EXPORT_KEY = "export"  # provenance added to the copied autopeft_config.json
_DEFAULT_BATCH_SIZE = 32  # the CLI default, for studies made before they recorded theirs
_ASSUMED_BATCH = ("batch size assumed: the study predates recorded batch sizes and has no "
                  "retrained point; edit train_config.yaml if the search used another")

# What each file the store and export add is, for the card; the method's own files are
# described by its class (`Method.artifact_files`), others belong to a method's own `load`.
FILE_NOTES = {
    CONFIG_FILE: "method, knobs, backbone, task, counts and metrics (JSON); read first by "
                 "`autopeft.load`",
    CARD_FILE: "this card",
    TRAIN_CONFIG_FILE: "the configuration, for `autopeft train --config`",
}


# peft-format methods that plain peft cannot load by itself (with transformers 5), and why.
PEFT_NEEDS_AUTOPEFT = {
    name: cls.plain_peft_caveat for name, cls in METHODS.items()
    if issubclass(cls, PeftBackedMethod) and cls.plain_peft_caveat
}


def _file_notes(method: type[Method]) -> dict[str, str]:
    """What each file of an artifact of `method` holds, for the card."""
    return {**{f.name: f.holds for f in method.artifact_files}, **FILE_NOTES}


@dataclass
class Exported:
    path: Path
    trial: int
    method: str
    source: Path  # the artifact directory that was copied


def export_trial(study: str, out: str | Path, trial: int | None = None, best: bool = False,
                 storage: str | None = None, studies_dir: str | Path = "studies",
                 search_artifact: bool = False) -> Exported:
    """Write trial `trial` of `study` (or the best within-budget Pareto point) to `out`.

    `out` must not exist yet: nothing is overwritten, and on any error nothing is written.
    """
    if (trial is None) == (not best):
        raise AutoPeftError("pass exactly one of --trial N or --best")
    study_dir = names.inside(studies_dir, names.check_name(study, "--study"))
    out = Path(out).expanduser()
    if out.name in ("", ".", ".."):  # the staging folder goes beside OUT, in its parent
        raise AutoPeftError(f"OUT '{out}' names no new directory; pass a path ending in one, "
                            "e.g. exported/best")
    if out.exists():
        raise AutoPeftError(f"'{out}' already exists; export writes a new directory, pass a "
                            "path that does not exist yet")
    check_folder(out, "OUT")  # `afile/x` under a file: refused before the study is read
    loaded = _open(study, storage, Path(studies_dir))
    chosen = _best_trial(loaded) if best else _trial(loaded, trial)
    source, final_point = _artifact(loaded, chosen, study_dir, search_artifact)
    description = read_description(source)
    description["model"] = _portable_model(description["model"])
    config, note = _train_config(loaded, chosen, description, final_point)
    card = render_card(loaded, chosen, description, config, source, out.name, note)
    description[EXPORT_KEY] = {"study": study, "trial": chosen.number,
                               "artifact": str(source.relative_to(study_dir)),
                               "autopeft_version": __version__}

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name[:100]}-", dir=out.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        (staging / CONFIG_FILE).write_text(json.dumps(description, indent=2, sort_keys=True))
        write_train_config(config, staging / TRAIN_CONFIG_FILE,
                           f"Retrain with: autopeft train --config {TRAIN_CONFIG_FILE} --out DIR"
                           + (f"\n{note}" if note else ""))
        (staging / CARD_FILE).write_text(card)
        _shareable(staging)
        if out.exists():  # appeared meanwhile: never replace someone's directory
            raise AutoPeftError(f"'{out}' already exists; nothing was written")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Exported(path=out, trial=chosen.number, method=description["method"], source=source)


# --- choosing the trial and its artifact ------------------------------------------------------
def _open(name: str, storage: str | None, studies_dir: Path) -> optuna.Study:
    """The study, read only; an unknown name lists the studies that exist."""
    try:
        return records.read_study(name, storage, studies_dir)
    except AutoPeftError as exc:
        known = sorted(p.parent.name for p in studies_dir.glob("*/optuna.journal"))
        raise AutoPeftError(f"{exc}; studies under {studies_dir}/: {', '.join(known) or 'none'}"
                            ) from None


def _with_artifact(study: optuna.Study) -> list[int]:
    return [t.number for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(records.ATTR_ARTIFACT)]


def _trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    exportable = ", ".join(map(str, _with_artifact(study))) or "none"
    if number not in trials:
        span = f"0..{max(trials)}" if trials else "none"
        raise AutoPeftError(f"study '{study.study_name}' has no trial {number} (trials: {span}; "
                            f"with an artifact: {exportable})")
    chosen = trials[number]
    if not chosen.user_attrs.get(records.ATTR_ARTIFACT):
        raise AutoPeftError(f"trial {number} is {trial_state(chosen)} and has no artifact; "
                            f"trials with an artifact: {exportable}")
    return chosen


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The study's answer (`report.tables.best_point`: best selection score, never dev)."""
    best = best_point(pareto_frame(study))
    if best is None:
        raise AutoPeftError(f"study '{study.study_name}' has no complete trial within its budget "
                            "yet; run autopeft search first")
    return _trial(study, int(best["trial"]))


def _artifact(study: optuna.Study, trial: optuna.trial.FrozenTrial, study_dir: Path,
              search_artifact: bool) -> tuple[Path, dict[str, Any] | None]:
    """The directory to copy, and the final-run point when it is the seed-0 final run."""
    point = records.final_runs(study).get(trial.number)
    runs = records.final_seed_runs(point) if point else []
    final = runs[0].get("artifact") if runs else None
    if final and not search_artifact and (study_dir / final / CONFIG_FILE).is_file():
        return study_dir / final, point
    path = study_dir / trial.user_attrs[records.ATTR_ARTIFACT]
    if not (path / CONFIG_FILE).is_file():
        raise AutoPeftError(f"trial {trial.number}'s artifact is missing: no {path / CONFIG_FILE}"
                            f" (pass --studies-dir with the folder the search wrote)")
    return path, None


def _shareable(directory: Path) -> None:
    """mkdtemp's folder (and safetensors' files) are private; an export is meant to be shared,
    so it gets the modes the user's umask gives any new file."""
    umask = os.umask(0)
    os.umask(umask)
    for path in (directory, *directory.rglob("*")):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _portable_model(model: str) -> str:
    """A relative local backbone path made absolute, so the export loads from any directory."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


# --- the retraining config --------------------------------------------------------------------
def _train_config(study: optuna.Study, trial: optuna.trial.FrozenTrial,
                  description: dict[str, Any], final_point: dict[str, Any] | None
                  ) -> tuple[TrainConfig, str]:
    """What `autopeft train --config` needs to train this configuration again.

    For a final run it is that run exactly (seed, epochs, batch size, data), so retraining
    reproduces the exported weights; for a search artifact, the trial's knobs and seed on all
    of train.
    """
    setup = records.study_setup(study)
    candidate = candidate_from_params(trial.params, trial.user_attrs.get(records.ATTR_DERIVED))
    knobs = dict(description["knobs"])
    learning_rate = knobs.pop("learning_rate", None)
    training = candidate.get("training", {})
    if final_point is not None:
        epochs, batch_size = final_point["epochs"], final_point["batch_size"]
        seed = final_seed(setup.seed, trial.number, 0)
    else:
        epochs = training.get("epochs", setup.epochs)
        batch_size = (training.get("batch_size") or setup.batch_size
                      or _search_batch_size(study))
        seed = setup.seed + trial.number
    kind, _, where = setup.data_source.partition(":")
    head = description.get("head", {"pooling": "cls", "train_pooler": False})  # older: frozen
    rank = (description.get("selection_metrics") or trial.user_attrs.get(records.ATTR_METRICS)
            or {}).get(f"{description['method']}_rank")
    config = TrainConfig(  # a custom task as its mapping, which names its own files
        task=setup.task_spec or setup.task, method=description["method"],
        model=description["model"],
        data_dir=where if kind != "hub" and where and not setup.task_spec else None, knobs=knobs,
        learning_rate=learning_rate, epochs=int(epochs),
        batch_size=int(batch_size or _DEFAULT_BATCH_SIZE),
        seed=int(seed), data_seed=setup.seed, max_train_samples=setup.max_train_samples,
        rank=None if rank is None else int(rank),
        pooling=head["pooling"], freeze_pooler=not head["train_pooler"],
        drop_invalid_rows=setup.dropped_rows is not None,  # the search's --drop-invalid-rows
        **({"max_length": setup.max_length} if setup.max_length else {}),
    )
    return config, ("" if batch_size else _ASSUMED_BATCH)


def _search_batch_size(study: optuna.Study) -> int | None:
    """The search's batch size, as recorded by a final run of a point without its own."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number, point in records.final_runs(study).items():
        trial = trials.get(number)
        if trial is None:
            continue
        candidate = candidate_from_params(trial.params, trial.user_attrs.get(records.ATTR_DERIVED))
        if "batch_size" not in candidate.get("training", {}):
            return int(point["batch_size"])
    return None


# --- the model card ---------------------------------------------------------------------------
def render_card(study: optuna.Study, trial: optuna.trial.FrozenTrial,
                description: dict[str, Any], config: TrainConfig, source: Path,
                folder: str, note: str = "") -> str:
    """The exported folder's README.md: what it is, how it scored, how to load and retrain it."""
    setup = records.study_setup(study)
    method = description["method"]
    method_class = get_method_class(method)
    stored = int(trial.user_attrs.get(records.ATTR_STORED, description.get("stored_params", 0)))
    head = trial.user_attrs.get(records.ATTR_HEAD, description.get("head_params"))
    selection = (trial.values or [None])[0]
    final = source.name != Path(trial.user_attrs[records.ATTR_ARTIFACT]).name
    weights = (f"final retraining of trial {trial.number}, seed 0 (`{source.name}`): trained on "
               f"all {description.get('train_samples', '?')} training examples, dev "
               f"{fmt.score(description.get('dev_metrics', {}).get('score'))}"
               if final else
               f"the search's own trial artifact (`{source.name}`), trained without the "
               "selection split")
    task = stored_task(setup.task, setup.task_spec)
    rows = [
        ("task", f"{setup.task} (metric: {setup.primary_metric})"),
        ("labels", _labels_line(task)),
        ("backbone", f"`{description['model']}`"),
        ("budget", f"{setup.budget_spec} = {setup.budget_params:,} stored params "
                   f"(backbone: {setup.backbone_params:,})"),
        ("method", f"`{method}`: {method_class.summary}"),
        ("stored params", f"{stored:,} ({fmt.percent(stored / setup.budget_params)} of the "
                          f"budget); classification head {fmt.count(head)}, not charged"),
        ("selection score", f"{fmt.score(selection)} (held-out split of train, used by the "
                            "search)"),
        ("dev score", _dev_line(study, trial.number)),
        ("weights", weights),
        ("training", f"{config.epochs} epoch(s), batch size {config.batch_size}, learning rate "
                     f"{fmt.knob(config.learning_rate)}, seed {config.seed}"
                     + (f" ({note})" if note else "")),
        ("source", f"study `{study.study_name}`, trial {trial.number} "
                   f"({trial_state(trial)}), autopeft {__version__}"),
    ]
    knob_rows = "\n".join(f"| {name} | {fmt.knob(value)} |"
                          for name, value in sorted(description["knobs"].items()))
    notes = _file_notes(method_class)
    files = "\n".join(f"- `{name}`: {notes.get(name, f'read by the {method} loader')}"
                      for name in sorted({*(p.name for p in source.iterdir()), CARD_FILE,
                                          TRAIN_CONFIG_FILE}))
    labels = "a regression score per row" if task.is_regression else "one class per row"
    texts = ", ".join(f'["{c} text"]' for c in task.text_columns)
    rows_file = "dev.tsv" if task.source is None else f"rows{Path(task.source.train).suffix}"
    layout = ("the task's layout (GLUE TSV, CSV or JSON Lines" if task.source is None else
              "the training file's layout (the same columns; CSV, TSV, JSON Lines or Parquet")
    return f"""# {method} on {setup.task}: `{Path(description['model']).name}`

Exported by `autopeft export` from a search under a budget of stored parameters.

| | |
| --- | --- |
{chr(10).join(f"| {k} | {v} |" for k, v in rows)}

## Knobs

| knob | value |
| --- | --- |
{knob_rows}

## Format

{_format_paragraph(method_class, description)}

{files}

## Use

Python (the backbone is loaded from `{description['model']}`; pass `base_model=` with a copy of
it elsewhere):

```python
import autopeft

loaded = autopeft.load("{folder}")  # .model (eval mode), .tokenizer, .task
batch = loaded.tokenizer({texts}, return_tensors="pt")
logits = loaded.model(**batch).logits
```

Command line, on a file in {layout}; labels optional),
giving {labels} in a CSV:

```
autopeft predict {folder} --input {rows_file} --output predictions.csv
```

Retrain this configuration (`{TRAIN_CONFIG_FILE}`: task, backbone, data, method, knobs,
learning rate, epochs, batch size, seeds):

```
autopeft train --config {folder}/{TRAIN_CONFIG_FILE} --out retrained
```
"""


def _labels_line(task: TaskSpec) -> str:
    """What the model outputs: `0 = neg, 1 = pos` (predict's `label` and `label_name`)."""
    if task.is_regression:
        return f"{task.problem_type}: one score per row"
    names = ", ".join(f"{i} = {name}" for i, name in enumerate(task.label_names))
    return f"{task.problem_type}: {names}"


def _dev_line(study: optuna.Study, number: int) -> str:
    front = pareto_frame(study)
    row = front[front["trial"] == number]
    if row.empty or fmt.is_missing(row[DEV_SCORE].iloc[0]):
        return "not measured (only Pareto points are scored on dev)"
    mean, std, seeds = row[DEV_SCORE].iloc[0], row[DEV_STD].iloc[0], row[DEV_SEEDS].iloc[0]
    if fmt.is_missing(seeds) or int(seeds) == 0:
        return f"{fmt.score(mean)} (the trial artifact on dev)"
    spread = "" if fmt.is_missing(std) else f" ± {fmt.score(std)} (std)"
    return f"{fmt.score(mean)}{spread}, mean of {int(seeds)} seed(s) retrained on all of train"


def _format_paragraph(method: type[Method], description: dict[str, Any]) -> str:
    """Whose format the artifact is in (the method's class knows) and what loads it."""
    if issubclass(method, PeftBackedMethod):
        caveat = method.plain_peft_caveat
        plain = (f"load it with `autopeft.load`: {caveat}." if caveat else
                 "so peft loads it too: `PeftModel.from_pretrained(AutoModelForSequence"
                 f"Classification.from_pretrained(base, num_labels={description['num_labels']})"
                 ", folder)`.")
        layout = " + ".join(f"`{f.name}`" for f in method.artifact_files)
        return (f"peft's own format ({layout}), "
                f"{plain} `{CONFIG_FILE}` adds the method, knobs and task for `autopeft.load`.")
    return (f"autopeft's format: the delta in safetensors and `{CONFIG_FILE}` (method, knobs, "
            "backbone, task). `autopeft.load` applies the method to the backbone and loads the "
            "delta into it; the backbone's own weights are not stored.")
