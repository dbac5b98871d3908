"""The forgetting check: general tasks (`report.forgetting.tasks`, lm-eval metrics where higher
is better) on the base model and on every trial. A trial is flagged on a task when its score
drops by more than `threshold` AND by more than `stderrs` standard errors of the difference
(sqrt(se_base^2 + se_trial^2), lm-eval's per-metric stderr).

    extract_forgetting(data) -> ForgettingInfo     render_forgetting(info, figs) -> HTML
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.report.figures import Figures
from harness.report.html import Raw, e, fmt, note, table
from harness.report.kinds import ReportSettings, stderr_of
from harness.sweep.results import SweepData, num


@dataclass(frozen=True)
class ForgettingRow:
    number: int
    method: str
    task: str
    base: float
    value: float
    drop: float                         # base - trial (positive: the trial forgot)
    stderr: float | None                # of the difference
    flagged: bool


@dataclass(frozen=True)
class ForgettingInfo:
    skip: str | None = None
    tasks: tuple[str, ...] = ()
    threshold: float = 0.02
    stderrs: float = 2.0
    rows: tuple[ForgettingRow, ...] = ()
    missing: tuple[str, ...] = ()       # configured tasks the base model has no score for

    @property
    def flagged(self) -> tuple[ForgettingRow, ...]:
        return tuple(r for r in self.rows if r.flagged)


def forgot(drop: float, stderr: float | None, threshold: float, stderrs: float) -> bool:
    """A drop larger than the threshold and than `stderrs` standard errors (0 if unknown)."""
    return drop > threshold and drop > stderrs * (stderr or 0.0)


def extract_forgetting(data: SweepData) -> ForgettingInfo:
    s = ReportSettings.from_config(data.cfg.get("report"))
    if not s.forgetting_tasks:
        return ForgettingInfo("report.forgetting.tasks is empty: no forgetting check.")
    present = tuple(t for t in s.forgetting_tasks if data.base_value(t) is not None)
    missing = tuple(t for t in s.forgetting_tasks if t not in present)
    if not present:
        return ForgettingInfo(
            "No base-model score for the forgetting tasks (" + ", ".join(missing) + "): add "
            "the task to eval.lm_eval.tasks (and keep eval.lm_eval.enabled).",
            missing=missing)
    rows = []
    for record in data.ranked:
        for task in present:
            value = num(record.metrics.get(task))
            if value is None:
                continue
            base = data.base_value(task)
            errs = [num(data.baseline.metrics.get(stderr_of(task))),
                    num(record.metrics.get(stderr_of(task)))]
            se = math.hypot(*(x or 0.0 for x in errs)) if any(x is not None for x in errs) \
                else None
            drop = base - value
            rows.append(ForgettingRow(record.number, record.method, task, base, value, drop,
                                      se, forgot(drop, se, s.forgetting_threshold,
                                                 s.forgetting_stderrs)))
    return ForgettingInfo(None, present, s.forgetting_threshold, s.forgetting_stderrs,
                          tuple(rows), missing)


def render_forgetting(info: ForgettingInfo, figs: Figures) -> str:
    if info.skip is not None:
        return note(info.skip)
    flagged = info.flagged
    head = (f'<p class="worse">{len(flagged)} trial/task pair(s) forgot: '
            + e(", ".join(f"#{r.number} on {r.task} (−{r.drop:.3g})" for r in flagged))
            + "</p>") if flagged else '<p class="ok">No trial lost ground on the general tasks.</p>'
    rule = note(f"Flagged: drop > {info.threshold:g} and > {info.stderrs:g} standard errors "
                "of the difference (lm-eval stderr of base and trial).")
    rows = [[f"#{r.number} {r.method}", r.task, r.base, r.value, f"{r.drop:+.3g}",
             fmt(r.stderr), Raw('<span class="worse">forgot</span>') if r.flagged else "ok"]
            for r in info.rows]
    header = ["trial", "task", "base", "trial value", "drop", "stderr of drop", "flag"]
    out = head + rule + f'<div class="scroll">{table(header, rows, "compact")}</div>'
    if info.missing:
        out += note("Not recorded on the base model: " + ", ".join(info.missing))
    return out
