"""The first screen (best trial, its gain over the base model, its cost, how sure) and the best
trial's config.

    extract_summary(data) -> SummaryInfo       render_summary(info, figs) -> HTML
    extract_best(data)    -> BestInfo          render_best(info, figs)    -> HTML
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from harness.report.figures import Figures
from harness.report.html import (
    Raw,
    better,
    delta_html,
    e,
    fmt,
    fmt_count,
    fmt_interval,
    fmt_mb,
    fmt_seconds,
    link,
    note,
    params_text,
    table,
    text,
)
from harness.report.kinds import is_quality
from harness.report.sections.replicates import GroupStats, group_stats
from harness.sweep.results import (
    SweepData,
    compute_hours,
    delta,
    num,
    objective_text,
    plain,
    trainable_pct,
)


@dataclass(frozen=True)
class SeedsLine:
    """The headline's answer to 'how sure?': the best configuration across seeds."""

    replicated: bool                    # the sweep has any replicates
    level: float                        # CI level
    stats: GroupStats | None            # the best trial's configuration (>= 2 runs)
    reference: tuple[int, str] | None   # best configuration by mean, when not the best trial
    ties: tuple[str, ...]               # configurations not distinguishable from it


@dataclass(frozen=True)
class Headline:
    number: int
    method: str
    metric: str
    direction: str
    value: float
    base: float | None
    delta: float | None
    delta_pct: float | None
    params: dict
    peak_rss_mb: float
    gpu_max_allocated_mb: float | None
    trainable_params: int
    total_params: int
    trainable_pct: float | None
    compute_hours: float | None
    compute_unit: str | None
    train_seconds: float
    eval_seconds: float
    wall_seconds: float
    seeds: SeedsLine
    pareto: tuple[int, ...] | None      # the Pareto front's trials (multi-objective only)


@dataclass(frozen=True)
class ComparisonRow:
    metric: str
    base: object
    value: object
    delta: float | None
    delta_pct: float | None
    direction: str | None


@dataclass(frozen=True)
class SummaryInfo:
    n_trials: int
    status_counts: tuple[tuple[str, int], ...]
    objective_text: str
    headline: Headline | None           # None: no trial completed with the objective
    best_number: int | None
    comparison: tuple[ComparisonRow, ...]
    notes: tuple[str, ...]


def extract_summary(data: SweepData) -> SummaryInfo:
    best = data.best
    counts = Counter(r.status for r in data.records)
    directions = dict(data.objectives)
    rows = []
    for metric in data.metric_names:
        if not is_quality(metric):      # counters: diagnostics; stderr: beside its metric
            continue
        base = data.baseline.metrics.get(metric) if data.baseline else None
        value = best.metrics.get(metric) if best else None
        if base is None and value is None:
            continue
        rows.append(ComparisonRow(metric, plain(base), plain(value),
                                  *delta(best, data.baseline, metric), directions.get(metric)))
    return SummaryInfo(
        n_trials=len(data.records), status_counts=tuple(sorted(counts.items())),
        objective_text=objective_text(data),
        headline=_headline(data) if best is not None else None,
        best_number=best.number if best else None, comparison=tuple(rows),
        notes=tuple(data.notes))


def _headline(data: SweepData) -> Headline:
    best = data.best
    metric, direction = data.objectives[0]
    hours, unit = compute_hours(best)
    gain, pct = delta(best, data.baseline, metric)
    return Headline(
        number=best.number, method=best.method, metric=metric, direction=direction,
        value=num(best.metrics[metric]), base=data.base_value(metric), delta=gain,
        delta_pct=pct, params=dict(best.params), peak_rss_mb=best.peak_rss_mb,
        gpu_max_allocated_mb=best.gpu_max_allocated_mb,
        trainable_params=best.trainable_params, total_params=best.total_params,
        trainable_pct=trainable_pct(best), compute_hours=hours, compute_unit=unit,
        train_seconds=best.train_seconds, eval_seconds=best.eval_seconds,
        wall_seconds=best.wall_seconds, seeds=_seeds_line(data, best.number, metric, direction),
        pareto=tuple(r.number for r in data.pareto) if len(data.objectives) > 1 else None)


def _seeds_line(data: SweepData, number: int, metric: str, direction: str) -> SeedsLine:
    group, ref = data.groups.get(number), data.best_group
    stats = None
    if group is not None and len(group.values(metric)) >= 2:
        stats = group_stats(data, group, metric, direction)
    ties = []
    if ref is not None:
        for g in data.groups.values():
            if g.number != ref.number:
                diff = group_stats(data, g, metric, direction).vs_best
                if diff is not None and diff.contains(0.0):
                    ties.append(g.label)
    return SeedsLine(replicated=bool(data.groups), level=data.ci.level, stats=stats,
                     reference=(ref.number, ref.method) if ref and ref.number != number
                     else None, ties=tuple(ties))


# -- rendering ---------------------------------------------------------------------------------
def render_summary(info: SummaryInfo, figs: Figures) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in info.status_counts) or "no trial folders"
    parts = [f"<p>{info.n_trials} trials ({e(counts)}); objective: "
             f"<code>{e(info.objective_text)}</code></p>"]
    if info.headline is None:
        parts.append('<p class="headline">No trial has completed with the objective '
                     f"<code>{e(info.objective_text)}</code> yet: no best trial.</p>")
    else:
        parts.append(_render_headline(info.headline))
    parts.append(_comparison(info))
    parts += [note(n) for n in info.notes]
    return "".join(parts)


def _render_headline(h: Headline) -> str:
    against = (f" vs base model {e(fmt(h.base))}: "
               f"{delta_html(h.delta, h.delta_pct, h.direction, True)}"
               if h.base is not None else " (no base-model value to compare)")
    share = f" ({h.trainable_pct:.2f}%)" if h.trainable_pct is not None else ""
    compute = f" · compute {h.compute_hours:.3g} {h.compute_unit}" \
        if h.compute_hours is not None else ""
    gpu = "no GPU" if h.gpu_max_allocated_mb is None else fmt_mb(h.gpu_max_allocated_mb)
    return (
        '<div class="headline">'
        f'<p class="big">Best trial <a href="#best">#{e(h.number)}</a> '
        f"<span class=\"tag\">{e(h.method)}</span>: <b>{e(h.metric)} = {e(fmt(h.value))}"
        f"</b>{against}</p>"
        f"<p>params: <code>{e(params_text(h.params))}</code></p>"
        f"<p>memory: peak RSS {fmt_mb(h.peak_rss_mb)} · GPU max allocated "
        f"{gpu} · trainable params "
        f"{fmt_count(h.trainable_params)} of {fmt_count(h.total_params)}{share}</p>"
        f"<p>time: train {fmt_seconds(h.train_seconds)} · eval "
        f"{fmt_seconds(h.eval_seconds)} · wall {fmt_seconds(h.wall_seconds)}"
        f"{e(compute)}</p>"
        f"{_seeds(h)}{_pareto(h)}</div>")


def _seeds(h: Headline) -> str:
    line = h.seeds
    if not line.replicated:
        return ('<p>Seeds: one run per configuration, so no confidence interval yet '
                '(see <a href="#replicates">replicates</a>).</p>')
    parts = []
    if line.stats is not None:
        iv, vs_base = line.stats.mean, line.stats.vs_base
        parts.append(f"across {iv.n} seeds trial #{h.number}'s {e(h.metric)} is "
                     f"{e(fmt_interval(iv))}, Δ vs base {e(fmt_interval(vs_base, True))}")
        if h.direction and vs_base is not None and not vs_base.contains(0.0):
            parts[-1] += (" (better than the base model at this confidence)"
                          if better(vs_base.estimate, h.direction)
                          else " (worse than the base model)")
    if line.reference is not None:
        number, method = line.reference
        parts.append(f"by mean over seeds the best configuration is #{number} ({e(method)})")
    if line.ties:
        parts.append("not distinguishable from it: " + e(", ".join(line.ties)))
    body = "; ".join(parts) or "replicates recorded, but fewer than 2 runs per configuration"
    level = f"{100 * line.level:g}% CI"
    return (f'<p>Seeds [{e(level)}]: {body}; <a href="#replicates">details and '
            "method</a>.</p>")


def _pareto(h: Headline) -> str:
    if h.pareto is None:
        return ""
    numbers = e(", ".join(f"#{n}" for n in h.pareto))
    return (f"<p>Pareto front ({len(h.pareto)} trials): {numbers}, "
            'see <a href="#pareto">below</a>.</p>')


def _comparison(info: SummaryInfo) -> str:
    """Every metric: base model, best trial, delta (absolute and %)."""
    if not info.comparison:
        return ""
    rows = [[r.metric, r.base, r.value, Raw(delta_html(r.delta, r.delta_pct, r.direction))]
            for r in info.comparison]
    best = f"best #{info.best_number}" if info.best_number is not None else "best"
    return ("<details><summary>every quality metric: base model against the best trial"
            "</summary>" + table(["metric", "base model", best, "Δ (Δ%)"], rows, "compact")
            + "</details>")


# -- the best trial and its config -------------------------------------------------------------
@dataclass(frozen=True)
class BestInfo:
    number: int | None                  # None: no completed trial
    method: str = ""
    params: tuple[tuple[str, object], ...] = ()
    config_path: Path | None = None
    config_text: str = ""


def extract_best(data: SweepData) -> BestInfo:
    best = data.best
    if best is None:
        return BestInfo(None)
    path = data.config_path(best.number)
    config = path.read_text(errors="replace") if path.is_file() else "(config.yaml missing)"
    return BestInfo(best.number, best.method, tuple((k, plain(v)) for k, v in best.params.items()),
                    path, config)


def render_best(info: BestInfo, figs: Figures) -> str:
    if info.number is None:
        return note("No completed trial yet.")
    return (f"<p>Trial #{e(info.number)} ({e(info.method)}), config: {link(info.config_path)}"
            "</p>" + table(["parameter", "value"], [list(p) for p in info.params], "compact")
            + f"<details><summary>full config.yaml</summary>{text(info.config_text)}</details>")
