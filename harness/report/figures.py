"""Plotly figures as page fragments: plotly.js is embedded once per page (by the first figure),
so a report opens offline. Optuna's plots are drawn through `optuna_figure`, which turns a
plot that fails into a note instead of sinking the page, from `report_study(data)`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Container

import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna.trial import TrialState

from harness.report.html import note
from harness.sweep.results import SweepData, quiet

GL_POINTS = 1000                 # scatter traces with this many points are drawn with WebGL


class Figures:
    """Turns plotly figures into page fragments; only the first carries plotly.js."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: go.Figure, height: int = 420) -> str:
        fig.update_layout(height=height, margin={"l": 60, "r": 30, "t": 50, "b": 50})
        out = fig.to_html(full_html=False, include_plotlyjs=self.count == 0,
                          default_height=f"{height}px", config={"displaylogo": False})
        self.count += 1
        return f'<div class="figure">{out}</div>'


def optuna_figure(figs: Figures, plot: Callable[[], go.Figure], what: str,
                  height: int = 420) -> str:
    """An Optuna plot, or a note saying why it could not be drawn (never raises)."""
    try:
        with quiet():
            fig = plot()
    except Exception as exc:  # noqa: BLE001 - one plot must not sink the report
        return note(f"{what} not drawn: {type(exc).__name__}: {exc}")
    return figs.html(fig, height)


class _ReadOnlyStudy(optuna.Study):
    """A finished study as the report's plots read it: trials handed out without Optuna's deep
    copy. The plots only read them, and Optuna's plots copy every trial up to once per
    parameter (0.3-1 s a copy at 5,000 trials)."""

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[optuna.trial.FrozenTrial]:
        return super()._get_trials(False, states, use_cache)


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def report_study(data: SweepData) -> optuna.Study:
    """The sweep's study for Optuna's plots (SweepData.plot_study), read-only, one per study."""
    study = data.plot_study
    view = _VIEWS.get(study)
    if view is None:
        view = object.__new__(_ReadOnlyStudy)     # the same storage and study id
        view.__dict__.update(study.__dict__)
        _VIEWS[study] = view
    return view


def webgl(n_points: int) -> bool:
    """Whether a trace of n points is drawn with WebGL (SVG makes a browser slow from a few
    thousand markers or bars)."""
    return n_points >= GL_POINTS


def scatter_trace(n_points: int) -> type:
    """go.Scatter, or go.Scattergl for a trace of GL_POINTS points or more."""
    return go.Scattergl if webgl(n_points) else go.Scatter


def target_kwargs(target_name: str, multi_objective: bool) -> dict:
    """Optuna plot arguments naming the first objective (a target for multi-objective)."""
    if multi_objective:
        return {"target": lambda t: t.values[0], "target_name": target_name}
    return {"target_name": target_name}


def complete_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def palette() -> list[str]:
    return plotly.colors.qualitative.Plotly


def color(i: int) -> str:
    """The i-th colour of the palette (cycling)."""
    colors = palette()
    return colors[i % len(colors)]
