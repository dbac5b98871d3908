"""Metrics against the swept parameters, and the objectives per method.

    extract_metrics(data) -> MetricsInfo    render_metrics(info, figs): one figure per metric
    extract_methods(data) -> MethodsInfo    render_methods(info, figs): table + box plots
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from omegaconf import DictConfig, OmegaConf
from plotly.subplots import make_subplots

from harness.records import COMPLETE
from harness.report.figures import Figures, color, scatter_trace
from harness.report.html import e, note, table
from harness.report.kinds import ReportSettings, is_quality
from harness.sweep.results import SweepData, num

MAX_SCATTER_METRICS = 24         # metrics plotted against the parameters (objectives first)
SCATTER_COLS = 3                 # subplots per row in "metric against parameter"


@dataclass(frozen=True)
class ParamAxis:
    name: str
    categorical: bool
    log: bool
    categories: tuple[str, ...] = ()    # the axis order of a categorical parameter


@dataclass(frozen=True)
class ParamPoints:
    """One method's COMPLETE trials: a parameter's value against a metric."""

    param: str
    method: str
    x: tuple                            # text for a categorical parameter, else floats
    y: tuple[float, ...]
    numbers: tuple[int, ...]


@dataclass(frozen=True)
class MetricPanel:
    metric: str
    base: float | None
    points: tuple[ParamPoints, ...]     # by parameter, then by method


@dataclass(frozen=True)
class MetricsInfo:
    skip: str | None = None
    axes: tuple[ParamAxis, ...] = ()
    methods: tuple[str, ...] = ()
    panels: tuple[MetricPanel, ...] = ()
    total: int = 0                      # metrics asked for; panels: the first
    others: tuple[str, ...] = ()        # quality metrics not drawn (add them: report.metrics)
    unknown: tuple[str, ...] = ()       # report.metrics no completed trial recorded


def extract_metrics(data: SweepData) -> MetricsInfo:
    """The objectives and the `report.metrics` against each swept parameter (categories as
    categories); other quality metrics are listed, not drawn."""
    done = [r for r in data.records if r.status == COMPLETE]
    if not done or not data.numeric_metrics:
        return MetricsInfo("No completed trial with metrics yet.")
    if not data.param_names:
        return MetricsInfo("The sweep has no swept parameters.")
    chosen = [m for m, _ in data.objectives] + list(
        ReportSettings.from_config(data.cfg.get("report")).metrics)
    metrics = [m for m in dict.fromkeys(chosen) if m in data.numeric_metrics]
    unknown = tuple(m for m in dict.fromkeys(chosen) if m not in data.numeric_metrics)
    others = tuple(m for m in data.numeric_metrics if is_quality(m) and m not in metrics)
    axes = tuple(_axis(data, name) for name in data.param_names)
    methods = tuple(sorted({r.method for r in done}))
    panels = []
    for metric in metrics[:MAX_SCATTER_METRICS]:
        points = []
        for axis in axes:
            for method in methods:
                found = [(r.params[axis.name], num(r.metrics.get(metric)), r.number)
                         for r in done if r.method == method
                         and r.params.get(axis.name) is not None
                         and num(r.metrics.get(metric)) is not None]
                xs = tuple(str(x) if axis.categorical else float(x) for x, _, _ in found)
                points.append(ParamPoints(axis.name, method, xs, tuple(y for _, y, _ in found),
                                          tuple(n for _, _, n in found)))
        panels.append(MetricPanel(metric, data.base_value(metric), tuple(points)))
    return MetricsInfo(None, axes, methods, tuple(panels), len(metrics), others, unknown)


def _spec(data: SweepData, name: str) -> dict:
    spec = (data.cfg.sweep.get("params") or {}).get(name)
    return OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else {}


def _axis(data: SweepData, name: str) -> ParamAxis:
    spec = _spec(data, name)
    categorical = spec.get("type") == "categorical" or any(
        num(r.params.get(name)) is None for r in data.records if r.params.get(name) is not None)
    if not categorical:
        return ParamAxis(name, False, bool(spec.get("log")))
    order = [str(c) for c in spec.get("choices") or []]
    seen = sorted({str(r.params[name]) for r in data.records
                   if r.params.get(name) is not None} - set(order))
    return ParamAxis(name, True, False, tuple(order + seen))


def render_metrics(info: MetricsInfo, figs: Figures) -> str:
    if info.skip is not None:
        return note(info.skip)
    shown = len(info.panels)
    head = note(f"Showing the first {shown} of {info.total} metrics (objectives first; "
                "all are in the trials table).") if info.total > shown else ""
    tail = note("Drawn: the objectives and report.metrics. Other quality metrics (in the "
                "trials table; draw them with report.metrics=[...]): "
                + ", ".join(info.others)) if info.others else ""
    if info.unknown:
        tail += note("Not drawn, no completed trial recorded them: " + ", ".join(info.unknown))
    return head + "".join(figs.html(*_metric_figure(info, p)) for p in info.panels) + tail


def _metric_figure(info: MetricsInfo, panel: MetricPanel) -> tuple[go.Figure, int]:
    names = [a.name for a in info.axes]
    rows = math.ceil(len(names) / SCATTER_COLS)
    fig = make_subplots(rows=rows, cols=min(len(names), SCATTER_COLS), subplot_titles=names,
                        horizontal_spacing=0.08, vertical_spacing=0.18)
    by_param = {(p.param, p.method): p for p in panel.points}
    for i, axis in enumerate(info.axes):
        row, col = i // SCATTER_COLS + 1, i % SCATTER_COLS + 1
        for j, method in enumerate(info.methods):
            fig.add_trace(_scatter(by_param[axis.name, method], axis, panel.metric, j, i == 0),
                          row=row, col=col)
        if axis.categorical:
            fig.update_xaxes(type="category", categoryorder="array",
                             categoryarray=list(axis.categories), row=row, col=col)
        elif axis.log:
            fig.update_xaxes(type="log", row=row, col=col)
    said = " (dashed: base model)" if panel.base is not None else ""
    fig.update_layout(title=f"{panel.metric} against each parameter{said}",
                      legend_title="method", shapes=_base_lines(panel.base, len(names)))
    return fig, 140 + 260 * rows


def _scatter(points: ParamPoints, axis: ParamAxis, metric: str, index: int,
             legend: bool) -> go.Scatter | go.Scattergl:
    xs = np.array(points.x, dtype=object) if axis.categorical else np.array(points.x,
                                                                            dtype=float)
    trace = go.Scatter if axis.categorical else scatter_trace(len(xs))
    return trace(x=xs, y=np.array(points.y, dtype=float), mode="markers",
                 name=points.method, legendgroup=points.method, showlegend=legend,
                 marker={"color": color(index), "size": 7, "opacity": 0.75},
                 customdata=np.array(points.numbers, dtype=int if points.numbers else float),
                 hovertemplate=f"trial #%{{customdata}}<br>{e(axis.name)}=%{{x}}<br>"
                               f"{e(metric)}=%{{y}}<extra></extra>")


def _base_lines(base: float | None, subplots: int) -> list[dict]:
    """A dashed horizontal line at the base model's value in each subplot (row-major axes)."""
    if base is None:
        return []
    axes = ["" if i == 0 else str(i + 1) for i in range(subplots)]
    return [{"type": "line", "xref": f"x{a} domain", "x0": 0, "x1": 1, "yref": f"y{a}",
             "y0": base, "y1": base, "line": {"dash": "dash", "color": "gray"}} for a in axes]


# -- per method --------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodRow:
    method: str
    trials: int
    completed: int                      # COMPLETE trials with the first objective
    best: float | None                  # best first objective among them
    median: float | None


@dataclass(frozen=True)
class MethodBox:
    metric: str
    method: str
    numbers: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class MethodsInfo:
    skip: str | None = None
    metric: str = ""                    # the first objective (the table's)
    rows: tuple[MethodRow, ...] = ()
    metrics: tuple[str, ...] = ()       # the objectives drawn
    bases: tuple[float | None, ...] = ()
    boxes: tuple[MethodBox, ...] = ()   # by metric, then by method


def extract_methods(data: SweepData) -> MethodsInfo:
    """Each objective by method: the best and median value, every trial as a point."""
    done = [r for r in data.records if r.status == COMPLETE]
    metrics = [m for m, _ in data.objectives if m in data.numeric_metrics]
    if not done or not metrics:
        return MethodsInfo("No completed trial with the objective yet.")
    metric, direction = data.objectives[0]
    pick = max if direction == "maximize" else min
    rows = []
    for method, count in sorted(Counter(r.method for r in data.records).items()):
        values = [num(r.metrics.get(metric)) for r in done if r.method == method]
        values = [v for v in values if v is not None]
        median = float(pd.Series(values).median()) if values else None
        rows.append(MethodRow(method, count, len(values), pick(values) if values else None,
                              median))
    boxes = []
    for m in metrics:
        for method in sorted({r.method for r in done}):
            points = [(r.number, num(r.metrics.get(m))) for r in done if r.method == method]
            points = [(n, v) for n, v in points if v is not None]
            boxes.append(MethodBox(m, method, tuple(n for n, _ in points),
                                   tuple(v for _, v in points)))
    return MethodsInfo(None, metric, tuple(rows), tuple(metrics),
                       tuple(data.base_value(m) for m in metrics), tuple(boxes))


def render_methods(info: MethodsInfo, figs: Figures) -> str:
    if info.skip is not None:
        return note(info.skip)
    rows = [[r.method, r.trials, r.completed, r.best, r.median] for r in info.rows]
    head = table(["method", "trials", "completed", f"best {info.metric}",
                  f"median {info.metric}"], rows, "compact")
    fig = make_subplots(rows=1, cols=len(info.metrics), subplot_titles=list(info.metrics))
    for col, (metric, base) in enumerate(zip(info.metrics, info.bases, strict=True), start=1):
        mine = [b for b in info.boxes if b.metric == metric]
        for j, box in enumerate(mine):
            fig.add_trace(go.Box(y=list(box.values), name=box.method, legendgroup=box.method,
                                 showlegend=col == 1, boxpoints="all", jitter=0.4, pointpos=0,
                                 marker={"color": color(j)}, customdata=list(box.numbers),
                                 hovertemplate="trial #%{customdata}: %{y:.4g}<extra></extra>"),
                          row=1, col=col)
        if base is not None:
            fig.add_hline(y=base, line_dash="dash", line_color="gray", row=1, col=col,
                          annotation_text="base", annotation_position="top left")
    return head + figs.html(fig, 420)
