"""The score table a learned portfolio is chosen from: candidates × studies, normalised.

**Candidates** are the COMPLETE trials within budget of every study, written so that they
transfer to other models and budgets: the method and every knob it declares (defaults filled
in, so studies searched over different spaces agree; learning rate and warmup included), with
the size knob (`portfolio.size_knob`) replaced by `budget_fraction`, the size the trial trained
at (measured before training, as its `budget_used`; DyLoRA stores less afterwards) over its
study's budget, rounded up to 3 significant digits (up, so that the same model and
budget give the same size back). Trials of the same method, knobs and fraction are one
candidate: the same configuration tried in several studies, or twice in one. A space's
per-method epochs or batch size are not kept: the next search trains with its own.

**Cells**: a candidate's score in a study (the mean of its trials there) normalised between the
study's chance level and its best trial, (score − chance) / (best − chance), clipped to [0, 1].
Chance is the best constant prediction on the selection split (`chance_score`, read as the
report reads it, `report.tables.chance_level`); a study that recorded none uses its worst
trial. A study whose best trial is at chance learned nothing: all its cells are 0.

**Imputed cells** (the candidate was not trained in that study): the cell of the study's nearest
candidate of the same method, shrunk by the distance d to it: (1 − d) × that cell. d, in
[0, 1], is the mean over the knobs that vary among the method's candidates of a mismatch (0 or 1)
for categorical knobs and, for numbers, their difference over their spread among those
candidates (log scale when every value is positive: learning rates, budget fractions, ranks).
So the nearer the evidence, the more of it counts; a candidate with no trial of its method in
the study gets 0 (chance): nothing is known of it there. Imputed cells are marked.

**Weights**: every task counts once; a task's studies (budgets, models) share its weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from autopeft import study as records
from autopeft.errors import AutoPeftError
from autopeft.methods import get_method_class
from autopeft.report.tables import chance_level, trials_frame
from autopeft.search.portfolio import size_knob
from autopeft.space.space import FRACTION, candidate_from_params

SHARE_DIGITS = 3  # significant digits of a candidate's budget fraction


@dataclass(frozen=True)
class Candidate:
    """A configuration as it transfers: method, knobs (sorted pairs, no size knob) and size as
    a share of the budget (None for a method without a size knob)."""

    method: str
    knobs: tuple[tuple[str, Any], ...]
    budget_fraction: float | None

    def value(self, name: str) -> Any:
        """A knob's value, or the budget fraction by its name; None when it has none."""
        return self.budget_fraction if name == FRACTION else dict(self.knobs).get(name)


@dataclass(frozen=True)
class Trained:
    """One COMPLETE trial within budget, as a candidate with its score and size."""

    candidate: Candidate
    trial: int
    score: float
    stored_fraction: float


@dataclass(frozen=True)
class StudyRecord:
    """What one study contributes: where its scores come from and its trials."""

    name: str
    task: str
    model: str
    budget: str
    budget_params: int
    chance: float
    chance_recorded: bool  # False: no chance score was recorded, the worst trial stands in
    best: float
    trials: tuple[Trained, ...]

    def normalised(self, score: float) -> float:
        """`score` between this study's chance (0) and its best (1), clipped."""
        if self.best <= self.chance:
            return 0.0
        return min(1.0, max(0.0, (score - self.chance) / (self.best - self.chance)))


@dataclass
class ScoreTable:
    """Candidates (rows, first seen first) × studies (columns), each cell in [0, 1]."""

    candidates: list[Candidate]
    studies: list[StudyRecord]
    scores: pd.DataFrame
    imputed: pd.DataFrame  # True where the candidate was not trained in that study
    cost: pd.Series  # per row: mean stored params over budget of its trials
    sources: list[list[str]]  # per row: "study#trial" of each of its trials

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(s.task for s in self.studies))

    @property
    def weights(self) -> pd.Series:
        """Per study: an equal share of its task's equal share."""
        count = pd.Series([s.task for s in self.studies]).value_counts()
        return pd.Series({s.name: 1.0 / (len(count) * count[s.task]) for s in self.studies})

    def task_scores(self, row: int) -> dict[str, float]:
        """A candidate's cell per task: the mean over the task's studies."""
        return {task: float(self.scores.loc[row, self._columns(task)].mean())
                for task in self.tasks}

    def imputed_tasks(self, row: int) -> list[str]:
        """The tasks where some cell of the candidate is imputed, not trained."""
        return [task for task in self.tasks if self.imputed.loc[row, self._columns(task)].any()]

    def _columns(self, task: str) -> list[str]:
        return [s.name for s in self.studies if s.task == task]


def study_record(study: optuna.Study) -> StudyRecord:
    """One study's candidates and normalisation; one line when it has nothing to give."""
    setup = records.study_setup(study)
    budget = setup.budget_params
    trained = [
        Trained(_candidate(t, budget), t.number, float(t.values[0]), t.values[1] / budget)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and not math.isnan(t.values[0]) and 0 < t.values[1] <= budget
    ]
    if not trained:
        raise AutoPeftError(f"study '{study.study_name}' has no COMPLETE trial within its "
                            "budget: nothing to learn from it; finish it or leave it out")
    scores = [t.score for t in trained]
    chance = chance_level(trials_frame(study))
    return StudyRecord(study.study_name, setup.task, setup.model, setup.budget_spec, budget,
                       min(scores) if chance is None else chance, chance is not None,
                       max(scores), tuple(trained))


def score_table(studies: list[StudyRecord]) -> ScoreTable:
    """The normalised, imputed table of every candidate of `studies` (see the module doc)."""
    rows: dict[Candidate, int] = {}
    sources: list[list[str]] = []
    fractions: list[list[float]] = []
    for study in studies:
        for trial in sorted(study.trials, key=lambda t: t.trial):
            if trial.candidate not in rows:
                rows[trial.candidate] = len(rows)
                sources.append([])
                fractions.append([])
            sources[rows[trial.candidate]].append(f"{study.name}#{trial.trial}")
            fractions[rows[trial.candidate]].append(trial.stored_fraction)
    candidates = list(rows)
    names = [s.name for s in studies]
    scores = pd.DataFrame(np.nan, index=range(len(candidates)), columns=names)
    for study in studies:
        by_candidate: dict[Candidate, list[float]] = {}
        for trial in study.trials:
            by_candidate.setdefault(trial.candidate, []).append(trial.score)
        for candidate, values in by_candidate.items():
            scores.loc[rows[candidate], study.name] = study.normalised(float(np.mean(values)))
    imputed = scores.isna()
    axes = {m: _axes([c for c in candidates if c.method == m])
            for m in dict.fromkeys(c.method for c in candidates)}
    for study in studies:
        trained = [(candidates[i], scores.loc[i, study.name])
                   for i in scores.index[~imputed[study.name]]]
        for row in scores.index[imputed[study.name]]:
            scores.loc[row, study.name] = _nearest(candidates[row], trained,
                                                   axes[candidates[row].method])
    cost = pd.Series([float(np.mean(f)) for f in fractions], index=scores.index)
    return ScoreTable(candidates, list(studies), scores, imputed, cost, sources)


def _candidate(trial: optuna.trial.FrozenTrial, budget: int) -> Candidate:
    source = candidate_from_params(trial.params, trial.user_attrs.get(records.ATTR_DERIVED))
    method = source["method"]
    declared = {k.name: k.default for k in get_method_class(method).config_class.knobs()}
    knobs = {**declared, **source["knobs"]}
    size = size_knob(method)
    fraction = None
    if size is not None:
        knobs.pop(size, None)
        # the size trained, measured before training: DyLoRA stores only the rank it chose
        # afterwards, and that rank as r_max would be another configuration
        fraction = _share(trial.user_attrs.get(records.ATTR_BUDGET_USED, trial.values[1] / budget))
    return Candidate(method, tuple(sorted(knobs.items())), fraction)


def _share(exact: float) -> float:
    """`exact` rounded up to `SHARE_DIGITS` significant digits, at most 1."""
    scale = 10.0 ** (SHARE_DIGITS - 1 - math.floor(math.log10(exact)))
    return min(1.0, math.ceil(exact * scale - 1e-9) / scale)


@dataclass(frozen=True)
class _Axis:
    """A knob that varies among a method's candidates, and how far apart two values are."""

    name: str
    log: bool | None  # None: categorical
    low: float = 0.0
    high: float = 0.0

    def gap(self, a: Any, b: Any) -> float:
        if a is None or b is None or self.log is None:
            return float(a != b)
        spread = self.high - self.low
        return min(1.0, abs(self._scaled(a) - self._scaled(b)) / spread) if spread else 0.0

    def _scaled(self, value: float) -> float:
        return math.log(value) if self.log else float(value)


def _axes(candidates: list[Candidate]) -> list[_Axis]:
    """The knobs (budget fraction included) whose value differs among `candidates`."""
    names = dict.fromkeys([*(k for c in candidates for k, _ in c.knobs), FRACTION])
    axes = []
    for name in names:
        values = [c.value(name) for c in candidates]
        if len(set(values)) < 2:
            continue
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        if not numeric:
            axes.append(_Axis(name, None))
            continue
        log = all(v > 0 for v in values)
        scaled = [math.log(v) if log else float(v) for v in values]
        axes.append(_Axis(name, log, min(scaled), max(scaled)))
    return axes


def _nearest(candidate: Candidate, trained: list[tuple[Candidate, float]],
             axes: list[_Axis]) -> float:
    """(1 − d) × the cell of the nearest trained candidate of the same method (equally near
    ones: their mean); 0 when the study trained none of that method."""
    same = [(other, cell) for other, cell in trained if other.method == candidate.method]
    if not same:
        return 0.0

    def distance(other: Candidate) -> float:
        if not axes:
            return 0.0
        return sum(a.gap(candidate.value(a.name), other.value(a.name)) for a in axes) / len(axes)

    gaps = [distance(other) for other, _ in same]
    nearest = min(gaps)
    cells = [cell for (_, cell), gap in zip(same, gaps, strict=True) if gap <= nearest + 1e-12]
    return (1.0 - nearest) * float(np.mean(cells))
