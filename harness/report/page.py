"""The sweep report: one self-contained HTML file (plotly.js embedded once, opens offline).

    write_report(sweep_dir, out_path)   -> the page, from harness.sweep.results.load_sweep
    extract(data)                       -> {section id: its info object} (the page's numbers)

The page is the table SECTIONS: each row is a section's id, title, `extract(data) -> Info`
(a frozen dataclass of the numbers: rows, values, intervals, best trial numbers) and
`render(info, figs) -> HTML`, in the manner of Optuna's visualization (`_get_xxx_info` then
`_get_xxx_plot`). Adding a section is one module under harness/report/sections/ plus one row
here. A section that fails becomes a note; the rest of the page stays. Every string taken from
a record or a config is HTML-escaped before it reaches the page (harness.report.html).

Exports (CSV / Parquet / YAML) are harness.report.exports; the cross-sweep page is
harness.report.compare.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report.figures import Figures
from harness.report.html import document, e, note, section
from harness.report.sections import (
    cost,
    data_card,
    decision,
    diagnostics,
    environment,
    evals,
    failures,
    forgetting,
    hacking,
    human,
    leaderboard,
    memory_estimate,
    metrics,
    optuna_plots,
    replicates,
    space_warnings,
    summary,
    training,
)
from harness.stats import CISettings
from harness.sweep.results import SweepData, load_sweep

log = logging.getLogger(__name__)


def _always(data: SweepData) -> bool:
    return True


def _multi_objective(data: SweepData) -> bool:
    return len(data.objectives) > 1


@dataclass(frozen=True)
class Section:
    """One section of the page: the numbers `extract` takes from the sweep, drawn by `render`."""

    id: str
    title: str
    extract: Callable[[SweepData], Any]
    render: Callable[[Any, Figures], str]
    when: Callable[[SweepData], bool] = _always     # the section is on this sweep's page
    top: bool = False                   # on the first screen, above the contents line

    def html(self, data: SweepData, figs: Figures) -> str:
        return self.render(self.extract(data), figs)


SECTIONS: tuple[Section, ...] = (
    Section("summary", "At a glance", summary.extract_summary, summary.render_summary,
            top=True),
    Section("decision", "Decision: which method, by how much, how sure, at what cost",
            decision.extract_decision, decision.render_decision, top=True),
    Section("warnings", "", space_warnings.extract_warnings,      # its box has the heading
            space_warnings.render_warnings, top=True),
    Section("leaderboard", "Leaderboard", leaderboard.extract_leaderboard,
            leaderboard.render_leaderboard),
    Section("trials", "Trials", leaderboard.extract_trials, leaderboard.render_trials),
    Section("best", "Best trial and its config", summary.extract_best, summary.render_best),
    Section("replicates", "Replicates: spread across seeds and confidence intervals",
            replicates.extract_replicates, replicates.render_replicates),
    Section("cost", "Quality against cost: memory and compute", cost.extract_cost,
            cost.render_cost),
    Section("pareto", "Pareto front of the objectives", leaderboard.extract_pareto,
            leaderboard.render_pareto, when=_multi_objective),
    Section("history", "Optimization history", optuna_plots.extract_history,
            optuna_plots.render_history),
    Section("parallel", "Parallel coordinates", optuna_plots.extract_parallel,
            optuna_plots.render_parallel),
    Section("importance", "Parameter importance", optuna_plots.extract_importance,
            optuna_plots.render_importance),
    Section("metrics", "Metrics against parameters", metrics.extract_metrics,
            metrics.render_metrics),
    Section("loss", "Training loss curves (train and eval)", training.extract_loss,
            training.render_loss),
    Section("lm-eval", "lm-eval per task", evals.extract_lm_eval, evals.render_eval_bars),
    Section("mt-bench", "MT-Bench per category", evals.extract_mt_bench,
            evals.render_eval_bars),
    Section("resources", "Time and memory per trial", training.extract_resources,
            training.render_resources),
    Section("memory-estimate", "Predicted against measured memory; trials not launched",
            memory_estimate.extract_memory_estimate, memory_estimate.render_memory_estimate),
    Section("methods", "Per-method comparison", metrics.extract_methods,
            metrics.render_methods),
    Section("methods-start", "Each method against its start; reward hacking",
            hacking.extract_methods_start, hacking.render_methods_start),
    Section("forgetting", "Forgetting check: general tasks, base model against each trial",
            forgetting.extract_forgetting, forgetting.render_forgetting),
    Section("human", "Human evaluation: blinded ratings and inter-rater agreement",
            human.extract_human, human.render_human),
    Section("judge", "The judge: who graded, how, and how consistently",
            diagnostics.extract_judge, diagnostics.render_judge),
    Section("diagnostics", "Diagnostics: how the evaluations ran (counters, adapter check)",
            diagnostics.extract_diagnostics, diagnostics.render_diagnostics),
    Section("samples", "Sample generations", evals.extract_samples, evals.render_samples),
    Section("failures", "Failed, pruned and unfinished trials", failures.extract_failures,
            failures.render_failures),
    Section("config-diff", "Config difference between the top trials",
            failures.extract_config_diff, failures.render_config_diff),
    Section("data-card", "Data card: preparation, duplicates, PII, contamination",
            data_card.extract_data_card, data_card.render_data_card),
    Section("environment", "Environment", environment.extract_environment,
            environment.render_environment),
)


def extract(data: SweepData) -> dict[str, Any]:
    """Every section's info object on this sweep's page, by section id."""
    return {s.id: s.extract(data) for s in SECTIONS if s.when(data)}


def render(data: SweepData) -> str:
    """The whole report page as one HTML string: summary, contents, then the sections."""
    figs = Figures()
    shown = [s for s in SECTIONS if s.when(data)]
    parts = [section(s.id, s.title, _body(s, data, figs)) for s in shown]
    top = "".join(p for s, p in zip(shown, parts, strict=True) if s.top)
    rest = "".join(p for s, p in zip(shown, parts, strict=True) if not s.top)
    nav = " · ".join(f'<a href="#{s.id}">{e(s.title)}</a>' for s in shown if not s.top)
    title = f"Sweep {data.name}"
    return document(title, f'<h1>{e(title)}</h1><p class="note">{e(data.sweep_dir.resolve())}'
                           f"</p>{top}<nav>{nav}</nav>{rest}")


def _body(entry: Section, data: SweepData, figs: Figures) -> str:
    """A section's HTML; a section that fails becomes a note, the rest of the report stays."""
    before = figs.count
    try:
        return entry.html(data, figs)
    except Exception as exc:  # noqa: BLE001 - one section must not sink the report
        log.exception("report section %s failed", entry.id)
        if before == 0:
            figs.count = 0      # plotly.js went out with the discarded part: embed it again
        return note(f"This section could not be made: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a report is built: a big sweep's records
    are millions of objects, and each full collection walks them all (a quarter of the build
    at 5,000 trials; peak memory 1% higher without it). Resumed, as it was, afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write_report(sweep_dir: Path, out_path: Path, ci: CISettings | None = None,
                 report: Any = None) -> Path:
    """Write the sweep's report as one self-contained HTML file; returns its path. `report`
    (the command line's `report:` block) replaces the one the sweep was run with."""
    with paused_gc():
        data = load_sweep(Path(sweep_dir), ci)
        if report is not None:
            data.cfg.report = report
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        text = render(data)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out_path)
    return out_path
