"""Optuna's own plots of the study (the stored one, else one rebuilt from the records):
optimization history, parallel coordinates and parameter importance (fANOVA).

    extract_history(data) / extract_parallel(data) -> StudyPlotInfo
    extract_importance(data) -> ImportanceInfo
    render_history / render_parallel / render_importance (info, figs) -> HTML
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from harness.report.figures import Figures, complete_count, optuna_figure, target_kwargs
from harness.report.html import note
from harness.sweep.results import SweepData

FANOVA_TREE_BUDGET = 6400       # trees x completed trials: 64 trees up to 100 trials
MIN_FANOVA_TREES = 8
NOTHING_TO_PLOT = "No completed trial yet: nothing to plot."


@dataclass(frozen=True)
class StudyPlotInfo:
    study: optuna.Study
    target_name: str                    # the first objective
    multi_objective: bool
    complete: int                       # COMPLETE trials in the study

    @property
    def target(self) -> dict:
        return target_kwargs(self.target_name, self.multi_objective)


def _study_info(data: SweepData) -> StudyPlotInfo:
    study = data.plot_study
    metric = data.objectives[0][0] if data.objectives else "objective"
    return StudyPlotInfo(study, metric, len(data.objectives) > 1, complete_count(study))


def extract_history(data: SweepData) -> StudyPlotInfo:
    return _study_info(data)


def render_history(info: StudyPlotInfo, figs: Figures) -> str:
    if info.complete == 0:
        return note(NOTHING_TO_PLOT)
    return optuna_figure(figs, lambda: optuna.visualization.plot_optimization_history(
        info.study, **info.target), "optimization history")


def extract_parallel(data: SweepData) -> StudyPlotInfo:
    return _study_info(data)


def render_parallel(info: StudyPlotInfo, figs: Figures) -> str:
    if info.complete == 0:
        return note(NOTHING_TO_PLOT)
    return optuna_figure(figs, lambda: optuna.visualization.plot_parallel_coordinate(
        info.study, **info.target), "parallel coordinates")


# -- parameter importance ----------------------------------------------------------------------
@dataclass(frozen=True)
class ImportanceInfo:
    plot: StudyPlotInfo
    completed: int
    varied: tuple[str, ...]             # parameters with more than one value among them
    skip: str | None                    # why no importance is computed
    evaluator: optuna.importance.BaseImportanceEvaluator | None = None
    how: str = ""                       # e.g. "fANOVA with 64 trees"


def extract_importance(data: SweepData) -> ImportanceInfo:
    """fANOVA importances (fewer trees on big studies, to keep the report fast)."""
    plot = _study_info(data)
    done = plot.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = sorted({k for t in done for k in t.params})
    varied = tuple(k for k in names if len({repr(t.params.get(k)) for t in done}) > 1)
    if len(done) < 2:
        return ImportanceInfo(plot, len(done), varied, "Skipped: needs at least 2 completed "
                              f"trials (has {len(done)}).")
    if not varied:
        return ImportanceInfo(plot, len(done), varied, "Skipped: no parameter took more than "
                              "one value in the completed trials.")
    evaluator, how = importance_evaluator(len(done))
    return ImportanceInfo(plot, len(done), varied, None, evaluator, how)


def importance_evaluator(n_done: int) -> tuple[optuna.importance.BaseImportanceEvaluator, str]:
    """fANOVA (Optuna's default; needs scikit-learn), else PED-ANOVA."""
    trees = max(MIN_FANOVA_TREES, min(64, FANOVA_TREE_BUDGET // n_done))
    try:
        import sklearn.ensemble  # noqa: F401 - fANOVA's random forest
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA (no scikit-learn)"
    return (optuna.importance.FanovaImportanceEvaluator(n_trees=trees, seed=0),
            f"fANOVA with {trees} trees")


def render_importance(info: ImportanceInfo, figs: Figures) -> str:
    if info.skip is not None:
        return note(info.skip)
    return note(f"{info.how} over {info.completed} completed trials.") + optuna_figure(
        figs, lambda: optuna.visualization.plot_param_importances(
            info.plot.study, evaluator=info.evaluator, **info.plot.target),
        "parameter importance", 360)
