"""Predicted against measured peak memory (harness.estimate), with the y = x line, and the trials
the pre-flight refused to launch.

    extract_memory_estimate(data) -> MemoryEstimateInfo      render_memory_estimate(info, figs)
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from harness.report.figures import Figures, color
from harness.report.html import note, params_text, table
from harness.sweep.results import SweepData, memory_points, preflight_refused


@dataclass(frozen=True)
class MemoryPoint:
    number: int
    method: str
    predicted_gb: float
    measured_gb: float
    measured: str                       # what the measurement is (GPU allocated, RSS)


@dataclass(frozen=True)
class RefusedTrial:
    number: int
    method: str
    params: dict
    reason: str


@dataclass(frozen=True)
class MemoryEstimateInfo:
    points: tuple[MemoryPoint, ...]
    refused: tuple[RefusedTrial, ...]


def extract_memory_estimate(data: SweepData) -> MemoryEstimateInfo:
    points = tuple(MemoryPoint(r.number, r.method, predicted, measured, what)
                   for r, predicted, measured, what in memory_points(data))
    refused = tuple(RefusedTrial(r.number, r.method, dict(r.params), str(r.preflight))
                    for r in preflight_refused(data))
    return MemoryEstimateInfo(points, refused)


def render_memory_estimate(info: MemoryEstimateInfo, figs: Figures) -> str:
    parts = []
    if info.points:
        fig = go.Figure()
        methods = sorted({p.method for p in info.points})
        for i, method in enumerate(methods):
            pts = [p for p in info.points if p.method == method]
            fig.add_trace(go.Scatter(
                x=[p.predicted_gb for p in pts], y=[p.measured_gb for p in pts],
                mode="markers", name=method, marker={"color": color(i), "size": 9},
                text=[f"trial {p.number}: {p.measured}" for p in pts]))
        top = max(max(p.predicted_gb, p.measured_gb) for p in info.points) * 1.1
        fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", name="y = x",
                                 line={"dash": "dash", "color": "#888"}))
        fig.update_layout(xaxis_title="predicted peak, allocated (GiB)",
                          yaxis_title="measured peak (GiB)")
        parts.append(figs.html(fig))
        kinds = sorted({p.measured for p in info.points})
        parts.append(note(f"Measured: {', '.join(kinds)}. On CPU the RSS includes the Python "
                          "process and its libraries, so points sit above the line by that "
                          "baseline; on a GPU, max allocated is comparable to the prediction."))
    else:
        parts.append(note("No trial carries both a prediction and a measured peak."))
    if info.refused:
        parts.append(table(["trial", "method", "params", "not launched because"],
                           [[r.number, r.method, params_text(r.params), r.reason]
                            for r in info.refused]))
    else:
        parts.append(note("The pre-flight refused no trial."))
    return "\n".join(parts)
