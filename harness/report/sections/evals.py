"""The evaluations beyond the objective: lm-eval per task, MT-Bench per category (the base model
against the top trials), and sample generations (base model against the best trial).

    extract_lm_eval(data) / extract_mt_bench(data) -> EvalBarsInfo    render_eval_bars(info, figs)
    extract_samples(data) -> SamplesInfo                              render_samples(info, figs)
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

from harness.report.figures import Figures
from harness.report.html import note, table, text
from harness.report.sections.diagnostics import extract_judge
from harness.sweep.results import SweepData, num, plain

MAX_EVAL_BARS = 40               # lm-eval task metrics / MT-Bench categories drawn
EVAL_TRIALS = 3                  # top trials drawn beside the base model in lm-eval / MT-Bench
MAX_SAMPLES = 20                 # prompts shown in the sample generations
MT_BENCH_COUNTS = ("judged", "unparseable", "judge_errors", "judge_requests",
                   "judge_cache_hits")


@dataclass(frozen=True)
class EvalRun:
    """The base model or one of the top trials, on the section's metrics."""

    label: str                          # "base model", "best #3 lora", "#5 qlora"
    values: tuple                       # each metric as recorded (table)
    scores: tuple[float | None, ...]    # each metric as a number (bars)
    errors: tuple[float | None, ...]    # each metric's stderr, where recorded
    counts: tuple = ()                  # MT-Bench judging counts, as recorded


@dataclass(frozen=True)
class EvalBarsInfo:
    skip: str | None = None
    title: str = ""
    metrics: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()        # the metrics without their prefix
    total: int = 0                      # metrics there are (metrics: the first MAX_EVAL_BARS)
    runs: tuple[EvalRun, ...] = ()
    count_names: tuple[str, ...] = ()   # MT-Bench judging counts (empty for lm-eval)


def _runs(data: SweepData, names: list[str], stderr: bool,
          counts: list[str]) -> tuple[EvalRun, ...]:
    """The base model and the top trials that have any of these metrics."""
    runs = [("base model", data.baseline)] if data.baseline else []
    best = data.best.number if data.best else None
    with_metrics = [r for r in data.ranked if any(n in r.metrics for n in names)]
    for record in with_metrics[:EVAL_TRIALS]:
        label = f"best #{record.number}" if record.number == best else f"#{record.number}"
        runs.append((f"{label} {record.method}", record))
    return tuple(
        EvalRun(label, tuple(plain(r.metrics.get(n)) for n in names),
                tuple(num(r.metrics.get(n)) for n in names),
                tuple(num(r.metrics.get(f"{n}_stderr")) if stderr else None for n in names),
                tuple(plain(r.metrics.get(c)) for c in counts))
        for label, r in runs if any(n in r.metrics for n in names))


def extract_lm_eval(data: SweepData) -> EvalBarsInfo:
    """Each lm-eval task's scores: base model against the top trials (± stderr)."""
    names = [m for m in data.metric_names if m.startswith("lm_eval/") and m.count("/") >= 2
             and not m.endswith("_stderr")]
    if not names:
        return EvalBarsInfo("No lm-eval metrics recorded (eval.lm_eval.enabled is false, or no "
                            "trial was scored).")
    shown = names[:MAX_EVAL_BARS]
    return EvalBarsInfo(None, "lm-eval per task (error bars: stderr)", tuple(shown),
                        tuple(m.removeprefix("lm_eval/") for m in shown), len(names),
                        _runs(data, shown, True, []))


def extract_mt_bench(data: SweepData) -> EvalBarsInfo:
    """MT-Bench score, turns and categories: base model against the top trials."""
    counts = sorted(f"mt_bench/{c}" for c in MT_BENCH_COUNTS)
    names = [m for m in data.metric_names if m.startswith("mt_bench/") and m not in counts]
    if not names:
        return EvalBarsInfo("No MT-Bench metrics recorded (eval.mt_bench.enabled is false, or "
                            "no trial was judged).")
    head = [f"mt_bench/{k}" for k in ("score", "turn1", "turn2") if f"mt_bench/{k}" in names]
    order = (head + [m for m in names if m not in head])[:MAX_EVAL_BARS]
    title = "MT-Bench per category (judge score 1-10)" + (
        ": embedded tiny judge, a plumbing check with no quality signal"
        if extract_judge(data).embedded else "")
    return EvalBarsInfo(None, title, tuple(order),
                        tuple(m.removeprefix("mt_bench/") for m in order), len(order),
                        _runs(data, order, False, counts), ())   # counts: diagnostics


def render_eval_bars(info: EvalBarsInfo, figs: Figures) -> str:
    if info.skip is not None:
        return note(info.skip)
    shown = len(info.metrics)
    head = note(f"Showing {shown} of {info.total} task metrics.") if info.total > shown else ""
    if not info.runs:
        return head + note("Neither the base model nor a completed trial has these metrics.")
    labels = list(info.labels)
    fig = go.Figure()
    for run in info.runs:
        bar = go.Bar(x=labels, y=list(run.scores), name=run.label)
        if any(err is not None for err in run.errors):
            bar.error_y = {"type": "data", "array": [err or 0 for err in run.errors],
                           "visible": True}
        fig.add_trace(bar)
    fig.update_layout(barmode="group", title=info.title, xaxis_type="category")
    rows = [[run.label, *run.values] for run in info.runs]
    out = figs.html(fig, 420) + f'<div class="scroll">{table(["run", *labels], rows)}</div>'
    if info.count_names:
        out += table(["run", *[c.removeprefix("mt_bench/") for c in info.count_names]],
                     [[run.label, *run.counts] for run in info.runs], "compact")
    return head + out


# -- sample generations ------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleRow:
    prompt: object
    reference: object
    base: object                        # the base model's generation
    best: object                        # the best trial's generation


@dataclass(frozen=True)
class SamplesInfo:
    rows: tuple[SampleRow, ...]
    best_number: int | None


def extract_samples(data: SweepData) -> SamplesInfo:
    """Base model's generation vs the best trial's vs the reference, per prompt."""
    best, base = data.best, data.baseline
    best_samples = [s for s in (best.samples if best else []) if isinstance(s, dict)]
    base_samples = [s for s in (base.samples if base else []) if isinstance(s, dict)]
    by_prompt = {s.get("prompt"): s for s in base_samples}
    ours = {s.get("prompt"): s for s in best_samples}
    prompts = list(dict.fromkeys([s.get("prompt") for s in best_samples]
                                 + [s.get("prompt") for s in base_samples]))[:MAX_SAMPLES]
    rows = tuple(SampleRow(p, _first(ours, by_prompt, p, "reference"),
                           by_prompt.get(p, {}).get("generation", ""),
                           ours.get(p, {}).get("generation", "")) for p in prompts)
    return SamplesInfo(rows, best.number if best else None)


def _first(a: dict, b: dict, key: str, field_name: str) -> str:
    return (a.get(key) or {}).get(field_name) or (b.get(key) or {}).get(field_name) or ""


def render_samples(info: SamplesInfo, figs: Figures) -> str:
    if not info.rows:
        return note("No sample generations recorded.")
    rows = [[text(r.prompt), text(r.reference), text(r.base), text(r.best)] for r in info.rows]
    label = (f"best trial #{info.best_number}" if info.best_number is not None
             else "best trial (none yet)")
    return table(["prompt", "reference", "base model", label], rows, "samples")
