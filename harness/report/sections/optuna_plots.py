"""Optuna's own plots of the study (the stored one, else one rebuilt from the records):
optimization history, parallel coordinates and parameter importance (fANOVA).

    extract_history(data) / extract_parallel(data) -> StudyPlotInfo
    extract_importance(data) -> ImportanceInfo
    render_history / render_parallel / render_importance (info, figs) -> HTML
    param_importances(study, multi_objective) -> {param: importance}, computed once a study

Big studies: parallel coordinates become one WebGL `go.Parcoords` trace (Optuna 5 draws one
SVG line per trial), and fANOVA's trees are made shallower (see `importance_evaluator`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna.trial import TrialState

try:    # Optuna's own parallel-coordinate dimensions (private; in Optuna 4 and 5)
    from optuna.visualization._parallel_coordinate import _get_parallel_coordinate_info
except ImportError:  # pragma: no cover - a later Optuna: its own (per-trial SVG) plot
    _get_parallel_coordinate_info = None

from harness.report.figures import (
    Figures,
    complete_count,
    optuna_figure,
    report_study,
    target_kwargs,
)
from harness.report.html import note
from harness.sweep.results import SweepData, quiet

FANOVA_TREE_BUDGET = 6400       # trees x completed trials: 64 trees up to 100 trials
MIN_FANOVA_TREES = 8
# Past the budget even at MIN_FANOVA_TREES (> 800 trials) the trees are cut to this depth (at
# most 256 leaves): on the 5,000-trial benchmark sweep fANOVA took 6-12 s at Optuna's depth 64,
# 0.6 s at depth 8, with every importance within 0.003 of the deep trees'.
FANOVA_SHALLOW_DEPTH = 8
PARCOORDS_FROM = 1000           # completed trials from which parallel coordinates are one trace
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
    study = report_study(data)
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
    if info.complete >= PARCOORDS_FROM:
        return note(f"{info.complete} completed trials: drawn as one WebGL trace (drag along "
                    "an axis to select a range).") + optuna_figure(
            figs, lambda: parcoords(info), "parallel coordinates")
    return optuna_figure(figs, lambda: optuna.visualization.plot_parallel_coordinate(
        info.study, **info.target), "parallel coordinates")


def parcoords(info: StudyPlotInfo) -> go.Figure:
    """Optuna's parallel-coordinate dimensions (its own info function: the same axes, log
    scales, categories and colours) drawn as one go.Parcoords trace, as Optuna drew them before
    version 5. Falls back to Optuna's figure where its private info function is missing."""
    if _get_parallel_coordinate_info is None:
        return optuna.visualization.plot_parallel_coordinate(info.study, **info.target)
    target = info.target
    pc = _get_parallel_coordinate_info(info.study, target=target.get("target"),
                                       target_name=target["target_name"])
    dims = [{"label": d.label, "values": list(d.values), "range": list(d.range),
             **({"tickvals": list(d.tickvals), "ticktext": list(d.ticktext)}
                if d.ticktext else {})} for d in pc.dims_objectives + pc.dims_params]
    line = {"color": list(pc.color_values), "colorscale": plotly.colors.sequential.Blues,
            "reversescale": pc.reverse_scale, "showscale": True,
            "colorbar": {"title": {"text": pc.colorbar_title}}}
    fig = go.Figure(go.Parcoords(dimensions=dims, line=line))
    fig.update_layout(title="Parallel Coordinate Plot")
    return fig


# -- parameter importance ----------------------------------------------------------------------
@dataclass(frozen=True)
class ImportanceInfo:
    plot: StudyPlotInfo
    completed: int
    varied: tuple[str, ...]             # parameters with more than one value among them
    skip: str | None                    # why no importance is computed
    evaluator: optuna.importance.BaseImportanceEvaluator | None = None
    how: str = ""                       # e.g. "fANOVA with 64 trees"
    importances: tuple[tuple[str, float], ...] = ()     # normalised, most important first
    error: str | None = None            # why they could not be computed


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
    try:
        values = param_importances(plot.study, plot.multi_objective)
    except Exception as exc:  # noqa: BLE001 - one plot must not sink the report
        return ImportanceInfo(plot, len(done), varied, None, evaluator, how,
                              error=f"{type(exc).__name__}: {exc}")
    return ImportanceInfo(plot, len(done), varied, None, evaluator, how, tuple(values.items()))


def importance_evaluator(n_done: int) -> tuple[optuna.importance.BaseImportanceEvaluator, str]:
    """fANOVA (Optuna's default; needs scikit-learn), else PED-ANOVA."""
    trees = max(MIN_FANOVA_TREES, min(64, FANOVA_TREE_BUDGET // n_done))
    try:
        import sklearn.ensemble  # noqa: F401 - fANOVA's random forest
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA (no scikit-learn)"
    if trees * n_done <= FANOVA_TREE_BUDGET:
        return (optuna.importance.FanovaImportanceEvaluator(n_trees=trees, seed=0),
                f"fANOVA with {trees} trees")
    return (optuna.importance.FanovaImportanceEvaluator(
        n_trees=trees, max_depth=FANOVA_SHALLOW_DEPTH, seed=0),
            f"fANOVA with {trees} trees of depth {FANOVA_SHALLOW_DEPTH}")


_IMPORTANCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def param_importances(study: optuna.Study, multi_objective: bool) -> dict[str, float]:
    """Normalised importances on the first objective, most important first. Computed once a
    study and number of completed trials: the warnings and the importance plot share them."""
    done = complete_count(study)
    key = (done, multi_objective)
    cached = _IMPORTANCES.get(study)
    if cached is None or cached[0] != key:
        evaluator, _ = importance_evaluator(done)
        target = (lambda t: t.values[0]) if multi_objective else None
        with quiet():
            values = optuna.importance.get_param_importances(study, evaluator=evaluator,
                                                             target=target)
        cached = _IMPORTANCES[study] = (key, {k: float(v) for k, v in values.items()})
    return dict(cached[1])


class _Computed(optuna.importance.BaseImportanceEvaluator):
    """Hands Optuna's importance plot the importances computed for this page."""

    def __init__(self, values: dict[str, float]) -> None:
        self.values = values

    def evaluate(self, study: optuna.Study, params: list[str] | None = None, *,
                 target: object = None) -> dict[str, float]:
        return dict(self.values)


def render_importance(info: ImportanceInfo, figs: Figures) -> str:
    if info.skip is not None:
        return note(info.skip)
    if info.error is not None:
        return note(f"parameter importance not drawn: {info.error}")
    computed = _Computed(dict(info.importances))
    return note(f"{info.how} over {info.completed} completed trials.") + optuna_figure(
        figs, lambda: optuna.visualization.plot_param_importances(
            info.plot.study, evaluator=computed, **info.plot.target),
        "parameter importance", 360)
