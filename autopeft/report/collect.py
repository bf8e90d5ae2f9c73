"""Everything a study's report shows, computed once from the stored study alone.

Every file of the report (CSVs, summary, plots, index.html) and the multi-study comparison read
these tables, so they agree with each other and the study is read only once.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import pandas as pd

from autopeft.report.allocation import AllocationGrid, front_allocations
from autopeft.report.hypervolume import hypervolume_curve, reference_point
from autopeft.report.tables import best_per_method, chance_level, pareto_frame, trials_frame
from autopeft.study import StudySetup, study_setup


@dataclass(frozen=True)
class StudyViews:
    """A study's tables: trials, feasible front, best per method, progress and allocations."""

    name: str
    setup: StudySetup
    trials: pd.DataFrame
    pareto: pd.DataFrame
    best: pd.DataFrame
    curve: pd.DataFrame  # hypervolume after each trial
    hv_reference: tuple[float, float]  # the curve's reference point
    grids: list[AllocationGrid]  # the Pareto points' layer × type allocations


def collect(study: optuna.Study) -> StudyViews:
    """Read the study into its report tables (raises AutoPeftError if autopeft did not make it)."""
    setup = study_setup(study)
    trials = trials_frame(study)
    pareto = pareto_frame(study, trials)
    reference = reference_point(chance_level(trials))
    return StudyViews(
        name=study.study_name,
        setup=setup,
        trials=trials,
        pareto=pareto,
        best=best_per_method(study, trials),
        curve=hypervolume_curve(trials, reference),
        hv_reference=reference,
        grids=front_allocations(study, pareto),
    )
