"""`autopeft train --config`: one chosen configuration trained again, saved as an artifact.

The config file (YAML or JSON) names the task (a GLUE name, a task file, or a task mapping as
in a task file), backbone, data, method, knobs and training settings; `autopeft export` writes
one beside every exported model. Training goes through the search's own path
(`train.trial.fit_candidate`) on all of the task's training data, like the final retraining
of a Pareto point, and the result is scored on dev when the data has one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autopeft.errors import AutoPeftError

REQUIRED = ("task", "method")
_TEXT, _INT = ((str,), "a string"), ((int,), "an integer")
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {  # key -> (accepted types, in words)
    "task": ((str, dict), "a GLUE task name, a task file or a task mapping"),
    "model": _TEXT, "data_dir": _TEXT, "method": _TEXT,
    "knobs": ((dict,), "a mapping of knob: value"), "learning_rate": ((float, int), "a number"),
    "epochs": _INT, "batch_size": _INT, "seed": _INT, "data_seed": _INT,
    "max_train_samples": _INT, "max_length": _INT, "rank": _INT,
    "trust_remote_code": ((bool,), "true or false"),
    "pooling": ((str,), "auto, cls or mean"), "freeze_pooler": ((bool,), "true or false"),
    "drop_invalid_rows": ((bool,), "true or false"),
}
_AT_LEAST_ONE = ("epochs", "batch_size", "max_train_samples", "max_length", "rank")


@dataclass
class TrainConfig:
    """One configuration to train; the keys of the config file, with the CLI's defaults."""

    task: str | dict  # a GLUE name, a task file, or a custom task's mapping (`tasks.custom`)
    method: str
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    data_dir: str | None = None  # None: GLUE from the Hub (a custom task names its files)
    knobs: dict[str, Any] = field(default_factory=dict)  # the method's knobs (`autopeft methods`)
    learning_rate: float | None = None  # shorthand for knobs.learning_rate
    epochs: int = 1
    batch_size: int = 32
    seed: int = 0  # head initialisation, training order, dropout
    data_seed: int | None = None  # seed of the --max-train-samples subsample (default: seed)
    max_train_samples: int | None = None
    max_length: int = 128
    rank: int | None = None  # rank-flexible methods (dylora): the evaluation rank to keep
    trust_remote_code: bool = False
    pooling: str = "auto"  # how the head reads the tokens (`head.POOLINGS`)
    freeze_pooler: bool = False  # keep the pooler as loaded instead of training it
    drop_invalid_rows: bool = False  # train without invalid data rows (the search's flag)

    def candidate(self) -> dict[str, Any]:
        """{"method", "knobs"} as the training path takes it (learning rate folded in)."""
        knobs = dict(self.knobs)
        if self.learning_rate is not None:
            knobs["learning_rate"] = float(self.learning_rate)
        return {"method": self.method, "knobs": knobs}


def read_train_config(path: str | Path) -> TrainConfig:
    """Parse and validate a config file; a bad key or value is one line naming what is accepted.

    Relative `model` / `data_dir` paths are looked up beside the config file first, then in
    the working directory, so a config travels with the folder it sits in.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise AutoPeftError(f"config file '{path}' not found")
    try:
        document = yaml.safe_load(path.read_text())  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise AutoPeftError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict):
        raise AutoPeftError(f"{path}: expected a mapping with keys {', '.join(_TYPES)}")
    accepted = ", ".join(_TYPES)
    for key in document:
        if key not in _TYPES:
            raise AutoPeftError(f"{path}: unknown key '{key}'; accepted: {accepted}")
    for key in REQUIRED:
        if document.get(key) is None:
            raise AutoPeftError(f"{path}: '{key}' is required (accepted keys: {accepted})")
    values = {k: v for k, v in document.items() if v is not None}
    for key, value in values.items():
        types, words = _TYPES[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise AutoPeftError(f"{path}: '{key}' must be {words} (got {value!r})")
    for key in _AT_LEAST_ONE:
        if key in values and values[key] < 1:
            raise AutoPeftError(f"{path}: '{key}' must be at least 1 (got {values[key]})")
    if "learning_rate" in values and "learning_rate" in values.get("knobs", {}):
        raise AutoPeftError(f"{path}: learning_rate is given twice (top level and in knobs); "
                            "keep one")
    for key in ("model", "data_dir"):
        if key in values:
            values[key] = _beside(path, values[key])
    from autopeft.tasks.resolve import is_task_file  # here: --help stays fast

    task = values["task"]
    if isinstance(task, str) and is_task_file(task):
        values["task"] = _beside(path, task)
    elif isinstance(task, dict) and not task.get("dataset"):  # its files beside the config too
        values["task"] = {**task, **{k: _beside(path, task[k]) for k in ("train", "dev")
                                     if isinstance(task.get(k), str)}}
    return TrainConfig(**values)


def write_train_config(config: TrainConfig, path: Path, header: str = "") -> None:
    """The YAML `read_train_config` reads back to the same config (None values left out)."""
    values = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + yaml.safe_dump(values, sort_keys=False))


def train_from_config(config: TrainConfig, out: str | Path, console=None) -> Path:
    """Train `config` on the task's full training data, score it on dev, save it at `out`."""
    # Heavy imports here: `autopeft --help` and the config checks stay fast.
    from autopeft.artifacts.store import save_artifact
    from autopeft.backbones.head import resolve_head
    from autopeft.backbones.models import build_meta_model, load_tokenizer, resolve_model
    from autopeft.inputs.options import check_folder
    from autopeft.methods import build_method
    from autopeft.tasks import artifact_fields, load_task_data, record_of, resolve_task, subsample
    from autopeft.train.data import tokenize_frame
    from autopeft.train.loop import evaluate
    from autopeft.train.trial import TrialContext, fit_candidate

    out = Path(out).expanduser()
    if out.exists():
        raise AutoPeftError(f"'{out}' already exists; pass --out with a new directory")
    check_folder(out, "--out")  # `afile/x` under a file would fail only once trained
    task = resolve_task(config.task)
    build_method(config.method, config.candidate()["knobs"])  # bad knobs fail before any loading
    source = resolve_model(config.model, config.trust_remote_code)
    head = resolve_head(config.pooling, config.freeze_pooler, source.location,
                        build_meta_model(source, task.num_labels))
    data = load_task_data(task, config.data_dir, config.drop_invalid_rows)
    data_seed = config.seed if config.data_seed is None else config.data_seed
    train = subsample(data.train, config.max_train_samples, data_seed)
    tokenizer = load_tokenizer(source)

    def tokenized(frame):
        return tokenize_frame(frame, task.text_columns, tokenizer, config.max_length)

    context = TrialContext(model=source, task=record_of(task), budget_params=0,
                           epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                           study_dir=str(out.parent), head=head)
    started = time.perf_counter()

    def show_epoch(result) -> None:  # minutes per epoch on a CPU: say how far it is
        if console is not None:
            console.print(f"epoch {result.epoch}/{config.epochs}: train loss "
                          f"{result.train_loss:.4f} ({result.train_seconds:.0f} s)",
                          highlight=False)

    trained = fit_candidate(config.candidate(), tokenized(train), None, tokenizer, context,
                            config.seed, rank=config.rank, on_epoch_end=show_epoch)
    dev = evaluate(trained.model, tokenized(data.dev), tokenizer, task,
                   trained.settings.eval_batch_size)
    method, model = trained.method, trained.model
    save_artifact(out, method, model, {
        "model": source.name,
        **artifact_fields(task),
        "stored_params": method.stored_params(model),
        "head_params": method.head_params(model),
        "dev_metrics": {k: float(v) for k, v in dev.items()},
        "seed": config.seed,
        "train_samples": len(train),
        "train_seconds": time.perf_counter() - started,
    })
    write_train_config(config, out / "train_config.yaml",
                       "The configuration this artifact was trained from.")
    if console is not None:
        console.print(f"trained {config.method} on {len(train)} {task.name} examples "
                      f"({config.epochs} epoch(s)); dev {task.primary_metric} "
                      f"{dev['score']:.4f}; stored params {method.stored_params(model):,}",
                      highlight=False)
    return out


def _beside(config_path: Path, value: str) -> str:
    """A relative path that exists beside the config file, made absolute; else unchanged."""
    candidate = config_path.parent / Path(value).expanduser()
    if not Path(value).expanduser().is_absolute() and candidate.exists():
        return str(candidate.resolve())
    return value
