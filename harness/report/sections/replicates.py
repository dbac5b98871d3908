"""Replicates: each replicated configuration across seeds, with bootstrap CIs (harness.report.
stats) of its mean, its delta against the base model and against the best configuration.

    extract_replicates(data) -> ReplicatesInfo     render_replicates(info, figs) -> HTML

`group_stats` is shared with the summary's "how sure?" line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from harness.report.figures import Figures
from harness.report.html import (
    Raw,
    better,
    e,
    fmt_interval,
    fmt_spread,
    note,
    params_text,
    table,
)
from harness.report.kinds import is_quality
from harness.stats import (
    CISettings,
    Interval,
    Spread,
    compare,
    difference_interval,
    mean_interval,
    spread,
)
from harness.sweep.results import Group, SweepData, num

MAX_REPLICATE_GROUPS = 12        # replicated configurations compared pairwise
REPLICATE_HINT = ("No replicates: every configuration ran with one seed, so there is no "
                  "spread or confidence interval. Rerun the top configurations with other "
                  "seeds: python -m harness action=replicate sweep={name} replicate.top_k=2 "
                  "replicate.seeds=[1,2,3]")


@dataclass(frozen=True)
class GroupStats:
    """One replicated configuration on one metric."""

    number: int
    label: str
    method: str
    params: dict
    metric: str
    direction: str | None
    seeds: tuple[int, ...]              # the configuration's COMPLETE runs
    values: tuple[float, ...]           # the metric in those runs (one per seed)
    spread: Spread | None
    mean: Interval | None               # CI of the mean (>= 2 values)
    vs_base: Interval | None            # mean minus the base model's value
    vs_best: Interval | None            # mean minus the best configuration's mean
    reference: bool                     # this is the best configuration


@dataclass(frozen=True)
class PairStats:
    """Two configurations' difference on the first objective."""

    a: str
    b: str
    diff: Interval
    overlap: bool                       # the CIs of the two means overlap
    better: str | None                  # label of the better one; None: not distinguishable


@dataclass(frozen=True)
class SeedsPlot:
    """One objective: every seed's value per configuration, the mean and its CI."""

    metric: str
    labels: tuple[str, ...]
    seed_labels: tuple[str, ...]
    seed_values: tuple[float, ...]
    seeds: tuple[int, ...]
    means: tuple[float, ...]
    intervals: tuple[Interval | None, ...]
    base: float | None


@dataclass(frozen=True)
class ReplicatesInfo:
    hint: str | None = None             # instead of the section: no replicates / objectives
    ci_text: str = ""
    metric: str = ""
    reference: str | None = None        # label of the best configuration
    groups: tuple[GroupStats, ...] = ()                 # first objective, best mean first
    by_method: tuple[tuple[str, int, GroupStats], ...] = ()  # method, configs, its best
    pairs: tuple[PairStats, ...] | None = None          # None: < 2 configs with >= 2 runs
    plots: tuple[SeedsPlot, ...] = ()
    all_metrics: tuple[GroupStats, ...] = ()


def group_stats(data: SweepData, group: Group, metric: str,
                direction: str | None) -> GroupStats:
    values = group.values(metric)
    ref = data.best_group
    base = data.base_value(metric)
    mean = mean_interval(values, data.ci)
    vs_best = None
    if ref is not None and ref.number != group.number:
        vs_best = group_difference(group, ref, metric, data.ci)
    return GroupStats(
        number=group.number, label=group.label, method=group.method, params=group.params,
        metric=metric, direction=direction, seeds=tuple(group.seeds()), values=tuple(values),
        spread=spread(values) if values else None, mean=mean,
        vs_base=mean.shifted(base) if mean is not None and base is not None else None,
        vs_best=vs_best, reference=ref is not None and ref.number == group.number)


def by_seed(group: Group, metric: str) -> dict[int, float]:
    """The group's metric per seed (its COMPLETE runs)."""
    found = {r.seed: num(r.metrics.get(metric)) for r in group.runs}
    return {s: v for s, v in found.items() if v is not None}


def group_difference(a: Group, b: Group, metric: str, ci: CISettings) -> Interval | None:
    """CI of mean(a) - mean(b): paired by seed (paired t, harness.stats.compare) when the runs
    share >= 2 seeds and replicate.ci.method is t; else the groups resampled independently."""
    sa, sb = by_seed(a, metric), by_seed(b, metric)
    if ci.method == "t" and len(set(sa) & set(sb)) >= 2:
        return compare(sa, sb, ci.level).interval
    return difference_interval(a.values(metric), b.values(metric), ci)


def ranked_groups(groups: list[Group], metric: str, direction: str) -> list[Group]:
    """Groups with the metric first, best mean first (ties: lower trial number)."""
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(groups, key=lambda g: (not g.values(metric),
                                         sign * float(np.mean(g.values(metric) or [0.0])),
                                         g.number))


def extract_replicates(data: SweepData) -> ReplicatesInfo:
    groups = list(data.groups.values())
    if not groups:
        return ReplicatesInfo(hint=REPLICATE_HINT.format(name=data.name))
    if not data.objectives:
        return ReplicatesInfo(hint="sweep.objectives is empty: no reference configuration.")
    metric, direction = data.objectives[0]
    ref = data.best_group
    ranked = ranked_groups(groups, metric, direction)
    by_method = []
    for method in sorted({g.method for g in groups}):
        mine = [g for g in ranked if g.method == method]
        by_method.append((method, len(mine), group_stats(data, mine[0], metric, direction)))
    directions = dict(data.objectives)
    metrics = [m for m in data.numeric_metrics if is_quality(m)]
    every = [group_stats(data, g, m, directions.get(m)) for g in ranked for m in metrics
             if g.values(m)]
    return ReplicatesInfo(
        ci_text=data.ci.describe(), metric=metric, reference=ref.label if ref else None,
        groups=tuple(group_stats(data, g, metric, direction) for g in ranked),
        by_method=tuple(by_method), pairs=_pairs(data, ranked, metric, direction),
        plots=tuple(_seeds_plot(data, groups, m, d) for m, d in data.objectives[:3]),
        all_metrics=tuple(every))


def _pairs(data: SweepData, ranked: list[Group], metric: str,
           direction: str) -> tuple[PairStats, ...] | None:
    shown = [g for g in ranked if len(g.values(metric)) >= 2][:MAX_REPLICATE_GROUPS]
    if len(shown) < 2:
        return None
    pairs = []
    for i, a in enumerate(shown):
        for b in shown[i + 1:]:
            diff = group_difference(a, b, metric, data.ci)
            ia = mean_interval(a.values(metric), data.ci)
            ib = mean_interval(b.values(metric), data.ci)
            winner = None if diff.contains(0.0) else (
                a.label if better(diff.estimate, direction) else b.label)
            pairs.append(PairStats(a.label, b.label, diff, ia.overlaps(ib), winner))
    return tuple(pairs)


def _seeds_plot(data: SweepData, groups: list[Group], metric: str,
                direction: str) -> SeedsPlot:
    shown = [g for g in ranked_groups(groups, metric, direction)
             if g.values(metric)][:MAX_REPLICATE_GROUPS]
    runs = [(g, r) for g in shown for r in g.runs if num(r.metrics.get(metric)) is not None]
    return SeedsPlot(
        metric=metric, labels=tuple(g.label for g in shown),
        seed_labels=tuple(g.label for g, _ in runs),
        seed_values=tuple(v for g in shown for v in g.values(metric)),
        seeds=tuple(r.seed for _, r in runs),
        means=tuple(float(np.mean(g.values(metric))) for g in shown),
        intervals=tuple(mean_interval(g.values(metric), data.ci) for g in shown),
        base=data.base_value(metric))


# -- rendering ---------------------------------------------------------------------------------
def verdict(stats: GroupStats) -> Raw:
    """Whether the configuration differs from the best one on this metric."""
    if stats.reference:
        return Raw('<span class="tag">best configuration (reference)</span>')
    diff = stats.vs_best
    if diff is None:
        return Raw(e("needs >= 2 seeds in both configurations"))
    if diff.contains(0.0):
        return Raw('<span class="same">not distinguishable from the best '
                   "(CI of the difference contains 0)</span>")
    if stats.direction is None:
        return Raw(e("differs from the best (CI of the difference excludes 0)"))
    cls = "better" if better(diff.estimate, stats.direction) else "worse"
    return Raw(f'<span class="{cls}">{cls} than the best (CI of the difference '
               "excludes 0)</span>")


def _row(stats: GroupStats) -> list:
    if not stats.values:
        return [stats.label, params_text(stats.params), "—", 0, "—", "—", "—", "—",
                Raw(e("no COMPLETE run with the metric"))]
    return [stats.label, params_text(stats.params), ", ".join(map(str, stats.seeds)),
            len(stats.values), fmt_spread(stats.spread), fmt_interval(stats.mean),
            fmt_interval(stats.vs_base, True), fmt_interval(stats.vs_best, True),
            verdict(stats)]


def render_replicates(info: ReplicatesInfo, figs: Figures) -> str:
    if info.hint is not None:
        return note(info.hint)
    metric = info.metric
    head = note(f"{info.ci_text}; differences paired by seed where the runs share seeds "
                "(paired t). A configuration's runs: its sweep trial plus its "
                "replicates (same config, other seed). Δ vs base: mean minus the base "
                "model's value; Δ vs best: mean minus the mean of the configuration with the "
                f"best mean {metric} ({info.reference or 'none with 2 runs yet'}).")
    columns = [f"{metric}: mean ± sd (min – max)", "mean [95% CI]", "Δ vs base [CI]",
               "Δ vs best [CI]", "verdict"]
    groups = table(["configuration", "params", "seeds", "n", *columns],
                   [_row(g) for g in info.groups])
    methods = table(["method", "configs replicated", "best configuration", "seeds", "n",
                     *columns],
                    [[method, n, *_without_params(_row(best))]
                     for method, n, best in info.by_method])
    every = [[s.label, s.metric, len(s.values), fmt_spread(s.spread),
              fmt_interval(s.vs_base, True), fmt_interval(s.vs_best, True), verdict(s)]
             for s in info.all_metrics]
    every_head = ["configuration", "metric", "n", "mean ± sd (min – max)", "Δ vs base [CI]",
                  "Δ vs best [CI]", "verdict"]
    parts = [head, groups,
             "<h3>Per method (each method's best replicated configuration)</h3>", methods,
             "<h3>Pairs of configurations</h3>", _pairs_table(info),
             _seeds_figure(info.plots, figs),
             "<details><summary>every metric across seeds</summary>",
             f'<div class="scroll">{table(every_head, every)}</div>', "</details>"]
    return "".join(parts)


def _without_params(row: list) -> list:
    return [row[0], *row[2:]]


def _pairs_table(info: ReplicatesInfo) -> str:
    if info.pairs is None:
        return note("Needs two configurations with >= 2 runs each.")
    rows = []
    for pair in info.pairs:
        same = pair.better is None
        text = "not distinguishable" if same else f"{pair.better} is better"
        rows.append([pair.a, pair.b, fmt_interval(pair.diff, True),
                     "yes" if pair.overlap else "no",
                     Raw(f'<span class="{"same" if same else "better"}">{e(text)}</span>')])
    head = ["A", "B", f"{info.metric}: mean(A) − mean(B) [CI]", "CIs of the means overlap",
            "verdict (CI of the difference contains 0?)"]
    return table(head, rows, "compact")


def _seeds_figure(plots: tuple[SeedsPlot, ...], figs: Figures) -> str:
    """Each seed's value per configuration, with the mean and its CI, per objective."""
    fig = make_subplots(rows=1, cols=len(plots), subplot_titles=[p.metric for p in plots])
    for col, plot in enumerate(plots, start=1):
        fig.add_trace(go.Scatter(x=list(plot.seed_labels), y=list(plot.seed_values),
                                 mode="markers", name="one seed", showlegend=col == 1,
                                 marker={"color": "#888", "size": 7},
                                 customdata=list(plot.seeds),
                                 hovertemplate="%{x} seed %{customdata}: %{y:.4g}"
                                               "<extra></extra>"), row=1, col=col)
        pairs = list(zip(plot.intervals, plot.means, strict=True))
        fig.add_trace(go.Scatter(
            x=list(plot.labels), y=list(plot.means), mode="markers", name="mean and 95% CI",
            showlegend=col == 1, marker={"color": "#1f77b4", "size": 11, "symbol": "diamond"},
            error_y={"type": "data", "symmetric": False,
                     "array": [iv.high - m if iv else 0 for iv, m in pairs],
                     "arrayminus": [m - iv.low if iv else 0 for iv, m in pairs]}),
            row=1, col=col)
        if plot.base is not None:
            fig.add_hline(y=plot.base, line_dash="dash", line_color="gray", row=1, col=col,
                          annotation_text="base", annotation_position="top left")
    fig.update_xaxes(type="category")
    fig.update_layout(title="Replicated configurations across seeds (dashed: base model)")
    return figs.html(fig, 420)
