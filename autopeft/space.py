"""Search spaces: `search_spaces/*.yaml` (method → knob → range) turned into Optuna samples.

Ranges live only in the YAML; methods declare knob types, defaults and validity. A space object
is picklable (no closures) so Ray can ship it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from autopeft.errors import AutoPeftError
from autopeft.methods import get_method_class

DEFAULT_SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "default.yaml"
METHOD_PARAM = "method"


@dataclass(frozen=True)
class KnobRange:
    """One knob's range: a list of choices, or low/high (log-scaled when `log`)."""

    type: type
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    def sample(self, trial: optuna.Trial, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if self.type is int:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def clip(self, value: Any) -> Any:
        """The value itself when in range, else the nearest allowed one (for enqueued defaults)."""
        if self.choices is not None:
            if value in self.choices:
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return min(self.choices, key=lambda c: abs(c - value))
            return self.choices[0]
        return self.type(min(max(value, self.low), self.high))


@dataclass(frozen=True)
class SearchSpace:
    """Which methods may be proposed, and each one's searched knobs."""

    methods: dict[str, dict[str, KnobRange]]
    source: str = "default"

    def restrict(self, names: list[str]) -> SearchSpace:
        missing = [n for n in names if n not in self.methods]
        if missing:
            raise AutoPeftError(
                f"method(s) {', '.join(missing)} have no entry in the search space {self.source}; "
                f"it covers: {', '.join(self.methods)}"
            )
        return SearchSpace({n: self.methods[n] for n in names}, self.source)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        """Define-by-run sampling: the method first, then that method's knobs."""
        method = trial.suggest_categorical(METHOD_PARAM, list(self.methods))
        knobs = {
            knob: spec.sample(trial, param_name(method, knob))
            for knob, spec in self.methods[method].items()
        }
        return {"method": method, "knobs": knobs}

    def default_params(self, method: str) -> dict[str, Any]:
        """Optuna params of the method's declared defaults, for the first coverage trials."""
        defaults = {k.name: k.default for k in get_method_class(method).config_class.knobs()}
        params = {METHOD_PARAM: method}
        for knob, spec in self.methods[method].items():
            params[param_name(method, knob)] = spec.clip(defaults[knob])
        return params


def param_name(method: str, knob: str) -> str:
    return f"{method}.{knob}"


def candidate_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """Inverse of sampling: Optuna params → {"method", "knobs"}."""
    method = params[METHOD_PARAM]
    prefix = f"{method}."
    knobs = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    return {"method": method, "knobs": knobs}


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read and validate a space file; errors name the file, the key and what is allowed."""
    path = Path(path) if path else DEFAULT_SPACE
    if not path.is_file():
        raise AutoPeftError(f"search space file '{path}' not found")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AutoPeftError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict) or not isinstance(document.get("methods"), dict):
        raise AutoPeftError(f"{path}: expected a mapping with a 'methods' key (method → knobs)")
    methods = {}
    for method, knobs in document["methods"].items():
        cls = get_method_class(str(method))
        declared = {k.name: k for k in cls.config_class.knobs()}
        knobs = knobs or {}
        if not isinstance(knobs, dict):
            raise AutoPeftError(f"{path}: methods.{method} must map knob names to ranges")
        ranges = {}
        for knob, spec in knobs.items():
            where = f"{path}: methods.{method}.{knob}"
            if knob not in declared:
                raise AutoPeftError(
                    f"{where}: unknown knob; {method} has: {', '.join(sorted(declared))}"
                )
            ranges[knob] = _parse_range(where, spec, declared[knob])
        methods[str(method)] = ranges
    if not methods:
        raise AutoPeftError(f"{path}: 'methods' is empty")
    return SearchSpace(methods, str(path))


def _parse_range(where: str, spec: Any, knob) -> KnobRange:
    if not isinstance(spec, dict):
        raise AutoPeftError(f"{where}: expected {{choices: [...]}} or {{low: x, high: y, log: b}}")
    extra = set(spec) - {"choices", "low", "high", "log"}
    if extra:
        raise AutoPeftError(
            f"{where}: unknown key(s) {sorted(extra)}; allowed: choices, low, high, log"
        )
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise AutoPeftError(f"{where}: choices must be a non-empty list")
        for value in choices:
            _check_value(where, value, knob)
        return KnobRange(type=knob.type, choices=tuple(choices))
    if knob.type not in (int, float):
        raise AutoPeftError(f"{where}: a {knob.type.__name__} knob needs choices: [...]")
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (KeyError, TypeError, ValueError):
        raise AutoPeftError(f"{where}: needs numeric low and high (or choices)") from None
    if not low < high:
        raise AutoPeftError(f"{where}: low ({low}) must be below high ({high})")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise AutoPeftError(f"{where}: log scale needs low > 0")
    _check_value(where, low, knob)
    return KnobRange(type=knob.type, low=low, high=high, log=log)


def _check_value(where: str, value: Any, knob) -> None:
    if knob.choices is not None and value not in knob.choices:
        raise AutoPeftError(f"{where}: {value!r} is not allowed; choose from {list(knob.choices)}")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if knob.type in (int, float) and not numeric:
        raise AutoPeftError(f"{where}: {value!r} is not a number")
    if knob.type is int and numeric and value != int(value):
        raise AutoPeftError(f"{where}: {value!r} is not an integer")
    if knob.minimum is not None and numeric and value < knob.minimum:
        raise AutoPeftError(f"{where}: {value!r} is below the minimum {knob.minimum}")
