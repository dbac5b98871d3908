"""Quality against cost: the first objective against peak memory and against compute, each
with its Pareto front (trials no other trial beats on both cost and quality).

    extract_cost(data) -> CostInfo      render_cost(info, figs) -> HTML
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.records import TrialRecord
from harness.report.figures import Figures, color, scatter_trace
from harness.report.html import e, fmt_hours, fmt_mb, fmt_pct, note, params_text, table
from harness.sweep.results import (
    SweepData,
    compute_hours,
    front_2d,
    num,
    peak_memory_mb,
    plain,
    trainable_pct,
)

COSTS: list[tuple[str, str, Callable[[TrialRecord], float | None]]] = [
    ("memory", "peak memory (MB)", peak_memory_mb),
    ("compute", "compute (GPU-h or CPU core-h)", lambda r: compute_hours(r)[0]),
]


@dataclass(frozen=True)
class CostPoint:
    number: int
    method: str
    cost: float
    value: float                        # the first objective


@dataclass(frozen=True)
class FrontRow:
    point: CostPoint
    params: dict
    value: object                       # the first objective, as recorded
    peak_memory_mb: float | None
    compute_hours: float | None
    compute_unit: str | None
    trainable_pct: float | None


@dataclass(frozen=True)
class CostPanel:
    key: str                            # "memory" or "compute"
    label: str
    points: tuple[CostPoint, ...]       # every ranked trial with this cost
    front: tuple[FrontRow, ...]         # its Pareto front, in order of cost

    @property
    def front_numbers(self) -> tuple[int, ...]:
        return tuple(row.point.number for row in self.front)


@dataclass(frozen=True)
class CostInfo:
    skip: str | None = None
    metric: str = ""
    methods: tuple[str, ...] = ()
    panels: tuple[CostPanel, ...] = ()


def extract_cost(data: SweepData) -> CostInfo:
    if not data.ranked:
        return CostInfo("No completed trial with the objective yet.")
    metric, direction = data.objectives[0]
    sign = -1.0 if direction == "maximize" else 1.0
    panels = []
    for key, label, cost in COSTS:
        points = [(cost(r), num(r.metrics[metric]), r) for r in data.ranked
                  if cost(r) is not None]
        front = []
        for r in front_2d(points, sign):
            hours, unit = compute_hours(r)
            front.append(FrontRow(CostPoint(r.number, r.method, cost(r), num(r.metrics[metric])),
                                  dict(r.params), plain(r.metrics.get(metric)),
                                  peak_memory_mb(r), hours, unit, trainable_pct(r)))
        panels.append(CostPanel(key, label, tuple(CostPoint(r.number, r.method, x, y)
                                                  for x, y, r in points), tuple(front)))
    return CostInfo(None, metric, tuple(sorted({r.method for r in data.ranked})), tuple(panels))


def render_cost(info: CostInfo, figs: Figures) -> str:
    if info.skip is not None:
        return note(info.skip)
    metric = info.metric
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=[f"{metric} vs {p.label}" for p in info.panels])
    tables = []
    for col, panel in enumerate(info.panels, start=1):
        for j, method in enumerate(info.methods):
            mine = [p for p in panel.points if p.method == method]
            fig.add_trace(_scatter(mine, method, color(j), col == 1), row=1, col=col)
        front = [row.point for row in panel.front]
        fig.add_trace(go.Scatter(
            x=[p.cost for p in front], y=[p.value for p in front],
            mode="lines+markers", name="Pareto front", showlegend=col == 1,
            line={"color": "black", "shape": "hv", "width": 1.5},
            marker={"color": "black", "size": 9, "symbol": "star"},
            text=[f"#{p.number}" for p in front],
            hovertemplate="front %{text}: %{y:.4g} at %{x:.4g}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text=panel.label, row=1, col=col)
        tables.append(f"<h3>Pareto front: {e(metric)} against {e(panel.label)}</h3>"
                      + _front_table(panel.front, metric))
    fig.update_yaxes(title_text=metric)
    head = note("Peak memory: GPU max allocated when the trial ran on a GPU, else peak RSS. "
                "Compute: wall time x GPUs (GPU-h), or x torch threads on CPU (core-h). "
                "A trial is on a front when no other trial is both cheaper and better.")
    return head + figs.html(fig, 440) + "".join(tables)


def _scatter(points: list[CostPoint], method: str, colour: str,
             legend: bool) -> go.Scatter | go.Scattergl:
    numbers = [p.number for p in points]
    trace = scatter_trace(len(points))
    return trace(x=np.array([p.cost for p in points], dtype=float),
                 y=np.array([p.value for p in points], dtype=float), mode="markers",
                 name=method, legendgroup=method, showlegend=legend,
                 marker={"color": colour, "size": 6, "opacity": 0.6},
                 customdata=np.array(numbers, dtype=int if numbers else float),
                 hovertemplate="trial #%{customdata}: %{y:.4g} at %{x:.4g}<extra></extra>")


def _front_table(front: tuple[FrontRow, ...], metric: str) -> str:
    rows = [[f"#{r.point.number}", r.point.method, params_text(r.params), r.value,
             fmt_mb(r.peak_memory_mb), fmt_hours(r.compute_hours, r.compute_unit),
             fmt_pct(r.trainable_pct)] for r in front]
    head = ["trial", "method", "params", metric, "peak memory", "compute", "trainable"]
    return table(head, rows, "compact")
