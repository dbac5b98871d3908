"""The ranked trials: the leaderboard (top trials with what they cost), the full trials table,
and the Pareto front of the objectives (multi-objective sweeps).

    extract_leaderboard(data) -> LeaderboardInfo   render_leaderboard(info, figs)
    extract_trials(data)      -> TrialsInfo        render_trials(info, figs)
    extract_pareto(data)      -> ParetoInfo        render_pareto(info, figs)
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
import pandas as pd

from harness.report.figures import Figures, optuna_figure, report_study
from harness.report.html import (
    Raw,
    delta_html,
    e,
    fmt,
    fmt_hours,
    fmt_mb,
    fmt_pct,
    fmt_seconds,
    note,
    params_text,
    table,
)
from harness.sweep.results import (
    SweepData,
    compute_hours,
    delta,
    missing,
    peak_memory_mb,
    plain,
    trainable_pct,
)

LEADERBOARD_ROWS = 10            # top trials in the leaderboard
TRIALS_CLOSED_FROM = 1000        # trials from which the trials table starts closed: a
#                                  browser took 15 s to lay out 5,000 rows x 75 columns


@dataclass(frozen=True)
class LeaderRow:
    rank: int
    number: int
    method: str
    params: dict
    values: tuple                       # the objectives, as recorded
    delta: float | None                 # first objective minus the base model's
    delta_pct: float | None
    on_front: bool | None               # on the Pareto front (multi-objective only)
    peak_memory_mb: float | None
    compute_hours: float | None
    compute_unit: str | None
    trainable_pct: float | None
    wall_seconds: float


@dataclass(frozen=True)
class LeaderboardInfo:
    objectives: tuple[str, ...]
    direction: str | None
    rows: tuple[LeaderRow, ...]         # best first; at most LEADERBOARD_ROWS
    more: int                           # completed trials not shown


def extract_leaderboard(data: SweepData) -> LeaderboardInfo:
    names = tuple(m for m, _ in data.objectives)
    multi = len(names) > 1
    rows = []
    for rank, r in enumerate(data.ranked[:LEADERBOARD_ROWS], start=1):
        gain, pct = delta(r, data.baseline, names[0])
        hours, unit = compute_hours(r)
        rows.append(LeaderRow(
            rank=rank, number=r.number, method=r.method, params=dict(r.params),
            values=tuple(plain(r.metrics.get(m)) for m in names), delta=gain, delta_pct=pct,
            on_front=(r.number in data.front_numbers) if multi else None,
            peak_memory_mb=peak_memory_mb(r), compute_hours=hours, compute_unit=unit,
            trainable_pct=trainable_pct(r), wall_seconds=r.wall_seconds))
    return LeaderboardInfo(names, data.objectives[0][1] if names else None, tuple(rows),
                           len(data.ranked) - len(rows))


def render_leaderboard(info: LeaderboardInfo, figs: Figures) -> str:
    """The top trials by the first objective, with what they cost."""
    if not info.rows:
        return note("No completed trial yet.")
    names, multi = list(info.objectives), len(info.objectives) > 1
    rows = [[r.rank, f"#{r.number}", r.method, params_text(r.params), *r.values,
             Raw(delta_html(r.delta, r.delta_pct, info.direction)),
             *(["yes" if r.on_front else ""] if multi else []), fmt_mb(r.peak_memory_mb),
             fmt_hours(r.compute_hours, r.compute_unit), fmt_pct(r.trainable_pct),
             fmt_seconds(r.wall_seconds)] for r in info.rows]
    head = ["rank", "trial", "method", "params", *names, f"Δ {names[0]} vs base",
            *(["Pareto"] if multi else []), "peak memory", "compute", "trainable", "wall"]
    return table(head, rows) + (note(f"{info.more} more completed trials in the trials table.")
                                if info.more > 0 else "")


# -- every trial -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialsInfo:
    frame: pd.DataFrame                 # SweepData.trials: one row per trial folder


def extract_trials(data: SweepData) -> TrialsInfo:
    return TrialsInfo(data.trials)


def render_trials(info: TrialsInfo, figs: Figures) -> str:
    if info.frame.empty:
        return note("No trial folders under trials/.")
    shown = info.frame.drop(columns=["config_path"])
    # Written here rather than by DataFrame.to_html: pandas formats every cell through its
    # own printer (about 30x slower: 5,000 trials x 75 columns took seconds).
    head = "".join(f"<th>{e(c)}</th>" for c in shown.columns)
    columns = [[_cell_html(v) for v in shown[c].tolist()] for c in shown.columns]
    body = "".join(f"<tr><td>{'</td><td>'.join(row)}</td></tr>"
                   for row in zip(*columns, strict=True))
    html = (f'<div class="scroll"><table class="dataframe sortable"><thead><tr>{head}</tr>'
            f"</thead><tbody>{body}</tbody></table></div>")
    if len(shown) >= TRIALS_CLOSED_FROM:    # laid out only when opened
        html = f"<details><summary>all {len(shown):,} trials</summary>{html}</details>"
    return ('<p class="note">Click a column header to sort. rank = order by the first '
            f"objective.</p>{html}")


def _cell_html(value: object) -> str:
    """A trials-table cell as HTML: text escaped (a number's digits need no escaping)."""
    shown = table_cell(value)
    return shown if isinstance(value, int | float) else e(shown)


def table_cell(value: object) -> str:
    """A trials-table cell as text: blank when missing, whole numbers without exponent."""
    if missing(value):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else fmt(value)


# -- the Pareto front of the objectives --------------------------------------------------------
@dataclass(frozen=True)
class ParetoRow:
    number: int
    method: str
    params: dict
    values: tuple                       # the objectives, as recorded


@dataclass(frozen=True)
class ParetoInfo:
    objectives: tuple[str, ...]
    rows: tuple[ParetoRow, ...]         # the front, by trial number
    study: optuna.Study | None = None   # for Optuna's front plot (<= 3 objectives)


def extract_pareto(data: SweepData) -> ParetoInfo:
    names = tuple(m for m, _ in data.objectives)
    rows = tuple(ParetoRow(r.number, r.method, dict(r.params),
                           tuple(plain(r.metrics.get(m)) for m in names)) for r in data.pareto)
    study = report_study(data) if rows and len(names) <= 3 else None
    return ParetoInfo(names, rows, study)


def render_pareto(info: ParetoInfo, figs: Figures) -> str:
    if not info.rows:
        return note("No completed trial yet: no Pareto front.")
    names = list(info.objectives)
    fig = ""
    if info.study is not None:
        fig = optuna_figure(figs, lambda: optuna.visualization.plot_pareto_front(
            info.study, target_names=names), "Pareto front")
    rows = [[f"#{r.number}", r.method, params_text(r.params), *r.values] for r in info.rows]
    return fig + table(["trial", "method", "params", *names], rows)

