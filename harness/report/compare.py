"""One report joining several sweeps on the metrics they share.

    python -m harness action=compare compare.sweeps=[qlora_rank,lora_lr]
        -> reports/compare-qlora_rank-lora_lr.html

For each sweep: its best trial, the gain over its own base model, memory and compute; then
every shared metric side by side, the distribution of the main metric over all trials, quality
against cost across sweeps, and (when sweeps were replicated) whether their best configurations
can be told apart. One self-contained HTML file, plotly.js embedded once.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.records import COMPLETE
from harness.report.figures import Figures, color
from harness.report.html import (
    Raw,
    delta_html,
    document,
    e,
    fmt_hours,
    fmt_interval,
    fmt_mb,
    fmt_pct,
    fmt_seconds,
    note,
    params_text,
    section,
    table,
)
from harness.stats import CISettings, difference_interval, mean_interval
from harness.sweep.results import (
    SweepData,
    compute_hours,
    delta,
    device_text,
    front_2d,
    load_sweep,
    num,
    peak_memory_mb,
    trainable_pct,
)

MAX_SHARED_FIGURES = 6           # shared metrics drawn as distributions across sweeps


def compare_file_name(names: list[str]) -> str:
    """compare-<a>-<b>.html (a short hash instead when the names are long)."""
    safe = [re.sub(r"[^A-Za-z0-9_.]+", "_", n) for n in names]
    joined = "-".join(safe)
    if len(joined) > 100:
        joined = f"{safe[0]}-and-{len(safe) - 1}-more-" + hashlib.sha1(
            "\0".join(names).encode()).hexdigest()[:8]
    return f"compare-{joined}.html"


def shared_metrics(datas: list[SweepData]) -> list[str]:
    """Numeric metrics every sweep has in some COMPLETE trial; objectives first."""
    common = set.intersection(*(set(d.numeric_metrics) for d in datas))
    order = [m for d in datas for m, _ in d.objectives] + [m for d in datas
                                                           for m in d.numeric_metrics]
    return [m for m in dict.fromkeys(order) if m in common]


def _directions(datas: list[SweepData]) -> dict[str, str]:
    out: dict[str, str] = {}
    for data in datas:
        for metric, direction in data.objectives:
            out.setdefault(metric, direction)
    return out


def _best_by(data: SweepData, metric: str, direction: str | None):
    """The sweep's best COMPLETE trial on this metric (its own ranking when it is the
    sweep's first objective)."""
    if data.objectives and data.objectives[0][0] == metric:
        return data.best
    done = [r for r in data.records if r.status == COMPLETE
            and num(r.metrics.get(metric)) is not None]
    if not done:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(done, key=lambda r: (sign * num(r.metrics[metric]), r.number))


# -- sections ----------------------------------------------------------------------------------
def _headline(datas: list[SweepData], metric: str, direction: str | None) -> str:
    """Which sweep's best trial is best on the main metric, by how much, at what cost."""
    bests = [(d, _best_by(d, metric, direction)) for d in datas]
    bests = [(d, b) for d, b in bests if b is not None]
    if not bests or direction is None:
        return note(f"No direction known for {metric}: no overall best.")
    sign = -1.0 if direction == "maximize" else 1.0
    data, best = min(bests, key=lambda p: sign * num(p[1].metrics[metric]))
    gain, pct = delta(best, data.baseline, metric)
    hours, unit = compute_hours(best)
    return ('<div class="headline">'
            f'<p class="big">Best: sweep <b>{e(data.name)}</b>, trial #{best.number} '
            f'<span class="tag">{e(best.method)}</span>: <b>{e(metric)} = '
            f"{num(best.metrics[metric]):.4g}</b>, vs its base model "
            f"{delta_html(gain, pct, direction, True)}</p>"
            f"<p>params: <code>{e(params_text(best.params))}</code></p>"
            f"<p>peak memory {fmt_mb(peak_memory_mb(best))} · wall "
            f"{fmt_seconds(best.wall_seconds)}"
            + (f" · compute {fmt_hours(hours, unit)}" if hours is not None else "")
            + "</p></div>")


def _model_name(data: SweepData) -> str:
    model = data.cfg.get("model")
    return str(model.get("name", "?")) if model is not None else "?"


def _sweeps_table(datas: list[SweepData]) -> str:
    rows = []
    for data in datas:
        best = data.best
        metric = data.objectives[0][0] if data.objectives else None
        counts = Counter(r.status for r in data.records)
        status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if best is None or metric is None:
            rows.append([data.name, _model_name(data), status, *["—"] * 8])
            continue
        gain, pct = delta(best, data.baseline, metric)
        group = data.groups.get(best.number)
        iv = mean_interval(group.values(metric), data.ci) if group else None
        hours, unit = compute_hours(best)
        rows.append([data.name, _model_name(data), status, f"#{best.number} {best.method}",
                     params_text(best.params), f"{metric} = {num(best.metrics[metric]):.4g}",
                     Raw(delta_html(gain, pct, data.objectives[0][1])),
                     fmt_interval(iv), fmt_mb(peak_memory_mb(best)),
                     fmt_hours(hours, unit), fmt_pct(trainable_pct(best))])
    head = ["sweep", "model", "trials", "best trial", "params", "objective", "Δ vs base",
            "mean across seeds [CI]", "peak memory", "compute", "trainable"]
    return table(head, rows)


def _shared_table(datas: list[SweepData], metrics: list[str], dirs: dict[str, str]) -> str:
    """Every shared metric: each sweep's best trial (by that sweep's objective) and Δ vs base."""
    rows = []
    for metric in metrics:
        cells: list = [metric, dirs.get(metric, "—")]
        for data in datas:
            best = data.best
            value = num(best.metrics.get(metric)) if best else None
            gain, pct = delta(best, data.baseline, metric) if best else (None, None)
            cells.append(Raw(f"{e(f'{value:.4g}') if value is not None else '—'} "
                              f"({delta_html(gain, pct, dirs.get(metric))})"))
        rows.append(cells)
    head = ["metric", "direction", *[f"{d.name}: best #{d.best.number}" if d.best
                                     else d.name for d in datas]]
    return (note("Each sweep's best trial by its own first objective; Δ against that sweep's "
                  "base model.") + f'<div class="scroll">{table(head, rows)}</div>')


def _distributions(datas: list[SweepData], metrics: list[str], figs: Figures) -> str:
    """Each shared metric over every COMPLETE trial, one box per sweep."""
    shown = [m for m in metrics if not m.endswith("_stderr")][:MAX_SHARED_FIGURES]
    if not shown:
        return note("No shared metric.")
    rows = -(-len(shown) // 3)
    fig = make_subplots(rows=rows, cols=min(3, len(shown)), subplot_titles=shown,
                        vertical_spacing=0.5 / rows)
    for i, metric in enumerate(shown):
        row, col = i // 3 + 1, i % 3 + 1
        for j, data in enumerate(datas):
            done = [r for r in data.records if r.status == COMPLETE
                    and num(r.metrics.get(metric)) is not None]
            fig.add_trace(go.Box(
                y=np.array([num(r.metrics[metric]) for r in done]), name=data.name,
                legendgroup=data.name, showlegend=i == 0, boxpoints="all", jitter=0.4,
                pointpos=0, marker={"color": color(j)},
                customdata=np.array([r.number for r in done]),
                hovertemplate="trial #%{customdata}: %{y:.4g}<extra></extra>"), row=row, col=col)
    return figs.html(fig, 120 + 300 * rows)


def _cost(datas: list[SweepData], metric: str, direction: str | None, figs: Figures) -> str:
    """The main metric against peak memory and compute, all sweeps, one joint front each."""
    if direction is None:
        return note(f"No direction known for {metric}.")
    sign = -1.0 if direction == "maximize" else 1.0
    costs = [("peak memory (MB)", peak_memory_mb), ("compute (GPU-h or CPU core-h)",
                                                    lambda r: compute_hours(r)[0])]
    fig = make_subplots(rows=1, cols=2, subplot_titles=[c for c, _ in costs])
    for col, (label, cost) in enumerate(costs, start=1):
        every = []
        for j, data in enumerate(datas):
            pts = [(cost(r), num(r.metrics.get(metric)), (data.name, r)) for r in data.records
                   if r.status == COMPLETE and cost(r) is not None
                   and num(r.metrics.get(metric)) is not None]
            every += pts
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts],
                                     mode="markers", name=data.name, legendgroup=data.name,
                                     showlegend=col == 1,
                                     marker={"color": color(j), "size": 7},
                                     text=[f"{data.name} #{p[2][1].number}" for p in pts],
                                     hovertemplate="%{text}: %{y:.4g} at %{x:.4g}"
                                                   "<extra></extra>"), row=1, col=col)
        front = front_2d(every, sign)
        xy = {id(item): (x, y) for x, y, item in every}
        fig.add_trace(go.Scatter(x=[xy[id(i)][0] for i in front],
                                 y=[xy[id(i)][1] for i in front], mode="lines",
                                 name="joint Pareto front", showlegend=col == 1,
                                 line={"color": "black", "shape": "hv"}), row=1, col=col)
        fig.update_xaxes(title_text=label, row=1, col=col)
    fig.update_yaxes(title_text=metric)
    return figs.html(fig, 420)


def _replicates(datas: list[SweepData], metric: str, direction: str | None,
                ci: CISettings) -> str:
    """Each sweep's best replicated configuration, and whether pairs can be told apart."""
    bests = [(d, d.best_group) for d in datas if d.best_group is not None
             and len(d.best_group.values(metric)) >= 2]
    if not bests:
        return note("No sweep has a configuration with >= 2 seeds on this metric "
                     "(action=replicate adds seeds).")
    rows = [[d.name, g.label, ", ".join(map(str, g.seeds())),
             fmt_interval(mean_interval(g.values(metric), ci))] for d, g in bests]
    parts = [note(ci.describe()), table(["sweep", "configuration", "seeds",
                                           f"{metric} mean [CI]"], rows, "compact")]
    pairs = []
    for i, (da, ga) in enumerate(bests):
        for db, gb in bests[i + 1:]:
            diff = difference_interval(ga.values(metric), gb.values(metric), ci)
            same = diff.contains(0.0)
            pairs.append([f"{da.name} {ga.label}", f"{db.name} {gb.label}",
                          fmt_interval(diff, True),
                          "not distinguishable (CI of the difference contains 0)" if same
                          else "distinguishable"])
    if pairs:
        parts.append(table(["A", "B", "mean(A) − mean(B) [CI]", "verdict"], pairs, "compact"))
    return "".join(parts)


def _environment(datas: list[SweepData]) -> str:
    rows = []
    for data in datas:
        records = [r for r in data.records if r.status == COMPLETE]
        commits = Counter(str(r.git_commit) for r in records if r.git_commit)
        devices = Counter(device_text(r) for r in records)
        versions = Counter(f"{p} {v}" for r in records for p, v in (r.versions or {}).items()
                           if p in ("torch", "transformers", "peft"))
        rows.append([data.name, ", ".join(commits) or "—", ", ".join(devices) or "—",
                     ", ".join(sorted(versions)) or "—"])
    return table(["sweep", "git commits", "devices", "torch / transformers / peft"], rows)


# -- the page ----------------------------------------------------------------------------------
def render_compare(datas: list[SweepData], ci: CISettings) -> str:
    """The comparison page as one HTML string."""
    metrics = shared_metrics(datas)
    dirs = _directions(datas)
    title = "Compare sweeps: " + ", ".join(d.name for d in datas)
    if not metrics:
        body = note("These sweeps share no metric.") + _sweeps_table(datas)
        sections = [("summary", "At a glance", body)]
    else:
        main = metrics[0]
        figs = Figures()
        sections = [
            ("summary", "At a glance", _headline(datas, main, dirs.get(main))
             + note(f"Shared metrics: {len(metrics)}; main metric: {main}. Deltas are "
                     "against each sweep's own base model.")),
            ("sweeps", "Sweeps", _sweeps_table(datas)),
            ("shared", "Shared metrics", _shared_table(datas, metrics, dirs)),
            ("distributions", "Shared metrics over all trials",
             _distributions(datas, metrics, figs)),
            ("cost", "Quality against cost", _cost(datas, main, dirs.get(main), figs)),
            ("replicates", "Across seeds", _replicates(datas, main, dirs.get(main), ci)),
            ("environment", "Environment", _environment(datas)),
        ]
    nav = " · ".join(f'<a href="#{sid}">{e(t)}</a>' for sid, t, _ in sections[1:])
    body = "".join(section(sid, t, html) for sid, t, html in sections)
    return document(title, f"<h1>{e(title)}</h1><nav>{nav}</nav>{body}")


def write_compare(sweep_dirs: list[Path], out_path: Path, ci: CISettings | None = None) -> Path:
    """Load the sweeps and write the comparison page; returns its path."""
    if len(sweep_dirs) < 2:
        raise ValueError("compare needs at least two sweeps")
    ci = ci or CISettings()
    datas = [load_sweep(Path(d), ci) for d in sweep_dirs]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text(render_compare(datas, ci), encoding="utf-8")
    tmp.replace(out_path)
    return out_path
