"""How the trials trained: loss curves (train and eval) and time and memory per trial.

    extract_loss(data)      -> LossInfo         render_loss(info, figs)
    extract_resources(data) -> ResourcesInfo    render_resources(info, figs)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.records import TrialRecord
from harness.report.figures import Figures, color, webgl
from harness.report.html import e, note
from harness.sweep.results import NO_RESULT, SweepData, num

MAX_LOSS_TRIALS = 40             # loss curves drawn (best first)
MAX_LOSS_POINTS = 200            # points kept per loss curve


@dataclass(frozen=True)
class LossCurve:
    number: int
    method: str
    best: bool                          # the sweep's best trial
    train: tuple[tuple[float | None, float], ...]   # (step, loss), subsampled
    eval: tuple[tuple[float | None, float], ...]    # (step, eval_loss), subsampled


@dataclass(frozen=True)
class LossInfo:
    curves: tuple[LossCurve, ...]       # best trials first
    total: int                          # trials with a loss history


def extract_loss(data: SweepData) -> LossInfo:
    """Train and eval loss per trial (best trials first, points subsampled)."""
    ranked = {r.number for r in data.ranked}
    best_first = data.ranked + [r for r in data.records if r.number not in ranked]
    chosen = [r for r in best_first if r.loss_history][:MAX_LOSS_TRIALS]
    best = data.best.number if data.best else None
    curves = tuple(LossCurve(r.number, r.method, r.number == best, _points(r, "loss"),
                             _points(r, "eval_loss")) for r in chosen)
    return LossInfo(curves, sum(1 for r in data.records if r.loss_history))


def _points(record: TrialRecord, key: str) -> tuple[tuple[float | None, float], ...]:
    rows = [r for r in record.loss_history
            if isinstance(r, dict) and num(r.get(key)) is not None and "step" in r]
    return tuple((num(r["step"]), num(r[key])) for r in subsample(rows, MAX_LOSS_POINTS))


def subsample(rows: list, limit: int) -> list:
    """At most `limit` evenly spaced items, the last one always kept."""
    if len(rows) <= limit:
        return rows
    step = (len(rows) - 1) / (limit - 1)
    return [rows[round(i * step)] for i in range(limit)]


def render_loss(info: LossInfo, figs: Figures) -> str:
    if not info.curves:
        return note("No trial recorded a loss history.")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["train loss", "eval loss"])
    for i, curve in enumerate(info.curves):
        for col, key, points in ((1, "loss", curve.train), (2, "eval_loss", curve.eval)):
            fig.add_trace(_trace(curve, key, points, color(i), col == 1), row=1, col=col)
    fig.update_xaxes(title_text="step")
    shown = len(info.curves)
    head = (note(f"Showing the {shown} best of {info.total} trials with a loss history.")
            if info.total > shown else "")
    return head + figs.html(fig, 460)


def _trace(curve: LossCurve, key: str, points: tuple, colour: str,
           legend: bool) -> go.Scatter:
    label = f"#{curve.number} {curve.method}" + (" (best)" if curve.best else "")
    return go.Scatter(x=np.array([s for s, _ in points], dtype=float),
                      y=np.array([v for _, v in points]),
                      mode="lines+markers" if key == "eval_loss" else "lines",
                      name=label, legendgroup=str(curve.number), showlegend=legend,
                      line={"color": colour, "width": 3 if curve.best else 1.3},
                      opacity=1.0 if curve.best else 0.7,
                      hovertemplate=f"{e(label)}<br>step %{{x}}<br>{key} %{{y:.4g}}"
                                    "<extra></extra>")


# -- time and memory ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ResourceRow:
    number: int
    status: str
    method: str
    train_seconds: float
    eval_seconds: float
    wall_seconds: float
    peak_rss_mb: float
    gpu_max_allocated_mb: float | None


@dataclass(frozen=True)
class ResourcesInfo:
    rows: tuple[ResourceRow, ...]       # every trial with a record


def extract_resources(data: SweepData) -> ResourcesInfo:
    return ResourcesInfo(tuple(
        ResourceRow(r.number, r.status, r.method, r.train_seconds, r.eval_seconds,
                    r.wall_seconds, r.peak_rss_mb, r.gpu_max_allocated_mb)
        for r in data.records if r.status != NO_RESULT))


def render_resources(info: ResourcesInfo, figs: Figures) -> str:
    if not info.rows:
        return note("No trial has a record yet.")
    rows = info.rows
    if webgl(len(rows)):
        return _resources_points(rows, figs)
    # numpy arrays, not lists: plotly validates a list element by element (seconds at 5,000
    # trials) and takes an array as it is.
    xs = np.array([f"#{r.number}" for r in rows])
    hover = np.array([f"{r.status} {r.method}" for r in rows])
    time_fig = go.Figure([go.Bar(x=xs, y=_column(rows, "train_seconds"), name="train",
                                 hovertext=hover),
                          go.Bar(x=xs, y=_column(rows, "eval_seconds"), name="eval",
                                 hovertext=hover),
                          go.Scatter(x=xs, y=_column(rows, "wall_seconds"), name="wall",
                                     mode="markers", hovertext=hover)])
    time_fig.update_layout(barmode="stack", title="seconds per trial", xaxis_type="category")
    mem_fig = go.Figure([go.Bar(x=xs, y=_column(rows, "peak_rss_mb"), name="peak RSS MB",
                                hovertext=hover),
                         go.Bar(x=xs, y=_column(rows, "gpu_max_allocated_mb"),
                                name="GPU max allocated MB", hovertext=hover)])
    mem_fig.update_layout(barmode="group", title="memory per trial (MB)",
                          xaxis_type="category")
    return figs.html(time_fig, 380) + figs.html(mem_fig, 380)


def _column(rows: tuple[ResourceRow, ...], name: str) -> np.ndarray:
    return np.array([np.nan if (v := getattr(r, name)) is None else v for r in rows],
                    dtype=float)


def _resources_points(rows: tuple[ResourceRow, ...], figs: Figures) -> str:
    """Thousands of trials: WebGL markers against the trial number instead of bars (a browser
    took seconds to lay out 5,000 bars a series and their category labels)."""
    xs = np.array([r.number for r in rows])
    hover = np.array([f"#{r.number} {r.status} {r.method}" for r in rows])

    def series(name: str, label: str) -> go.Scattergl:
        return go.Scattergl(x=xs, y=_column(rows, name), name=label, mode="markers",
                            marker={"size": 4, "opacity": 0.6}, hovertext=hover)

    time_fig = go.Figure([series("train_seconds", "train"), series("eval_seconds", "eval"),
                          series("wall_seconds", "wall")])
    time_fig.update_layout(title="seconds per trial", xaxis_title="trial")
    mem_fig = go.Figure([series("peak_rss_mb", "peak RSS MB"),
                         series("gpu_max_allocated_mb", "GPU max allocated MB")])
    mem_fig.update_layout(title="memory per trial (MB)", xaxis_title="trial")
    return (note(f"{len(rows):,} trials: one marker a trial (WebGL).")
            + figs.html(time_fig, 380) + figs.html(mem_fig, 380))
