"""Plotly figures as page fragments: plotly.js is embedded once per page (by the first figure),
so a report opens offline. Optuna's plots are drawn through `optuna_figure`, which turns a
plot that fails into a note instead of sinking the page.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna.trial import TrialState

from harness.report.html import note
from harness.sweep.results import quiet


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
