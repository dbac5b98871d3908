"""The decision: per method, its best configuration, its difference to the overall best on
each objective (paired by seed when the runs share seeds, Holm-corrected across methods), and
its cost beside its quality.

    extract_decision(data) -> DecisionInfo      render_decision(info, figs) -> HTML

A method's best configuration is its replicated configuration with the best mean first
objective (harness.sweep.replicate), else its best single trial. The reference is the best of
those. On each objective the other methods' differences to the reference form one family of
comparisons: p-values are Holm-adjusted and each interval is drawn at its Holm step's level
(1 - alpha / (m - rank)), so "not distinguishable" (adjusted p >= alpha, or the interval
covers 0) already accounts for comparing several methods.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from harness.records import TrialRecord
from harness.report.figures import Figures
from harness.report.html import Raw, better, e, fmt, fmt_hours, fmt_mb, note, params_text, table
from harness.stats import Comparison, compare, holm, holm_levels
from harness.sweep.results import (
    SweepData,
    compute_hours,
    num,
    peak_memory_mb,
    rank_records,
)

REFERENCE = "reference"
SAME = "not distinguishable"
ONE_RUN = "one run: no interval"


@dataclass(frozen=True)
class ObjectiveDiff:
    """One method's best configuration against the reference, on one objective."""

    metric: str
    direction: str
    mean: float | None                  # the configuration's mean over its runs
    comparison: Comparison | None       # mean - reference mean, CI at the Holm level
    p_adjusted: float | None            # Holm-adjusted p-value
    verdict: str                        # reference | not distinguishable | better | worse | one run


@dataclass(frozen=True)
class MethodDecision:
    method: str
    number: int                         # the configuration's trial number
    params: dict
    seeds: tuple[int, ...]              # its COMPLETE runs' seeds
    diffs: tuple[ObjectiveDiff, ...]    # by objective
    compute_hours: float | None         # the configuration's sweep trial
    compute_unit: str | None
    peak_memory_mb: float | None
    reference: bool


@dataclass(frozen=True)
class DecisionInfo:
    skip: str | None = None
    level: float = 0.95
    rows: tuple[MethodDecision, ...] = ()   # reference first, then by first objective
    paired: bool = False                # every comparison was paired by seed
    comparisons: int = 0                # per objective: the Holm family's size
    sentence: str = ""                  # the decision in words


@dataclass
class _Candidate:
    method: str
    number: int
    params: dict
    runs: list[TrialRecord]
    cost_record: TrialRecord

    def by_seed(self, metric: str) -> dict[int, float]:
        out = {}
        for run in self.runs:
            value = num(run.metrics.get(metric))
            if value is not None and run.seed not in out:
                out[run.seed] = value
        return out


def _candidates(data: SweepData) -> list[_Candidate]:
    """Each method's best configuration: its best replicated group, else its best trial."""
    metric, direction = data.objectives[0]
    sign = -1.0 if direction == "maximize" else 1.0
    out = []
    for method in sorted({r.method for r in data.ranked}):
        groups = [g for g in data.groups.values() if g.method == method and g.values(metric)]
        if groups:
            g = min(groups, key=lambda g: (sign * float(np.mean(g.values(metric))), g.number))
            out.append(_Candidate(method, g.number, g.params, list(g.runs),
                                  g.trial or g.runs[0]))
            continue
        best = rank_records([r for r in data.ranked if r.method == method], metric,
                            direction)[0]
        out.append(_Candidate(method, best.number, dict(best.params), [best], best))
    return out


def _mean(values: dict[int, float]) -> float | None:
    return float(np.mean(list(values.values()))) if values else None


def extract_decision(data: SweepData) -> DecisionInfo:
    if not data.objectives:
        return DecisionInfo("sweep.objectives is empty: nothing to decide on.")
    if not data.ranked:
        return DecisionInfo("No trial completed with the objective yet.")
    cands = _candidates(data)
    metric, direction = data.objectives[0]
    sign = -1.0 if direction == "maximize" else 1.0
    cands.sort(key=lambda c: (sign * (_mean(c.by_seed(metric)) or 0.0), c.number))
    ref = cands[0]
    level = data.ci.level
    diffs: dict[int, list[ObjectiveDiff]] = {c.number: [] for c in cands}
    paired = True
    for m, d in data.objectives:
        ref_values = ref.by_seed(m)
        others = cands[1:]
        raw = [compare(c.by_seed(m), ref_values, level) for c in others]
        tested = [(c, r) for c, r in zip(others, raw, strict=True) if r is not None]
        adjusted = holm([r.p_value for _, r in tested])
        levels = holm_levels([r.p_value for _, r in tested], level)
        done = {}
        for (c, r), p_adj, lvl in zip(tested, adjusted, levels, strict=True):
            paired &= r.paired
            done[c.number] = (compare(c.by_seed(m), ref_values, lvl), p_adj)
        diffs[ref.number].append(ObjectiveDiff(m, d, _mean(ref_values), None, None, REFERENCE))
        for c in others:
            comp, p_adj = done.get(c.number, (None, None))
            diffs[c.number].append(ObjectiveDiff(m, d, _mean(c.by_seed(m)), comp, p_adj,
                                                 _verdict(comp, p_adj, d, 1 - level)))
        if not tested:
            paired = False
    rows = tuple(_row(c, tuple(diffs[c.number]), c is ref) for c in cands)
    info = DecisionInfo(None, level, rows, paired and len(cands) > 1, len(cands) - 1)
    return replace(info, sentence=_sentence(info, metric))


def _verdict(comp: Comparison | None, p_adj: float | None, direction: str,
             alpha: float) -> str:
    if comp is None or p_adj is None:
        return ONE_RUN
    if p_adj >= alpha or comp.interval.contains(0.0):
        return SAME
    return "better" if better(comp.interval.estimate, direction) else "worse"


def _row(c: _Candidate, diffs: tuple[ObjectiveDiff, ...], reference: bool) -> MethodDecision:
    hours, unit = compute_hours(c.cost_record)
    return MethodDecision(c.method, c.number, c.params,
                          tuple(sorted(r.seed for r in c.runs)), diffs, hours, unit,
                          peak_memory_mb(c.cost_record), reference)


def _sentence(info: DecisionInfo, metric: str) -> str:
    ref = info.rows[0]
    text = f"{ref.method} wins on {metric} (configuration #{ref.number})"
    if len(info.rows) == 1:
        return text + "; it is the only method with a completed trial."
    first = [(r.method, r.diffs[0].verdict) for r in info.rows[1:]]
    same = [m for m, v in first if v == SAME]
    worse = [m for m, v in first if v == "worse"]
    single = [m for m, v in first if v == ONE_RUN]
    parts = [text]
    if same:
        parts.append("not distinguishable from it: " + ", ".join(same))
    if worse:
        parts.append("worse at this confidence: " + ", ".join(worse))
    if single:
        parts.append("one run only, so no interval: " + ", ".join(single)
                     + " (python -m harness action=replicate)")
    return "; ".join(parts) + "."


# -- rendering ---------------------------------------------------------------------------------
def render_decision(info: DecisionInfo, figs: Figures) -> str:
    if info.skip is not None:
        return note(info.skip)
    objectives = [d.metric for d in info.rows[0].diffs]
    header = ["method", "best configuration", "seeds"]
    for m in objectives:
        header += [f"{m} (mean)", "Δ vs best [CI] · p (Holm): verdict"]
    header += ["cost: compute · peak memory"]
    rows = []
    for r in info.rows:
        row = [Raw(f"<b>{e(r.method)}</b>"), f"#{r.number} {params_text(r.params)}",
               ", ".join(map(str, r.seeds))]
        for d in r.diffs:
            row += [d.mean, Raw(f"{e(_diff_text(d))} {_verdict_html(d)}")]
        row.append(f"{fmt_hours(r.compute_hours, r.compute_unit)} · {fmt_mb(r.peak_memory_mb)}")
        rows.append(row)
    how = ("paired by seed (the runs share seeds)" if info.paired
           else "unpaired (Welch) where the runs do not share seeds")
    family = (f"Holm-corrected over {info.comparisons} comparisons per objective"
              if info.comparisons > 1 else "one comparison per objective")
    said = note(f"Δ: mean minus the best method's, {how}; {family}; {100 * info.level:g}% "
                "family level (t intervals over seeds). Cost: the configuration's sweep trial "
                "(wall time x GPUs or torch threads).")
    return (f'<p class="decision"><b>Decision:</b> {e(info.sentence)}</p>'
            + table(header, rows, "compact decision") + said)


def _diff_text(d: ObjectiveDiff) -> str:
    if d.comparison is None:
        return ""
    iv = d.comparison.interval
    return (f"{iv.estimate:+.4g} [{iv.low:+.4g}, {iv.high:+.4g}] · p={fmt(d.p_adjusted)}"
            + (" (paired)" if d.comparison.paired else " (Welch)"))


def _verdict_html(d: ObjectiveDiff) -> Raw:
    cls = {"better": "better", "worse": "worse", SAME: "same"}.get(d.verdict, "tag")
    return Raw(f'<span class="{cls}">{e(d.verdict)}</span>')
