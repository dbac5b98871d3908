"""Search-space warnings for the first screen: the best trials at the edge of a swept range
(with the widened range to try), categorical choices never tried, near-zero importance.

    extract_warnings(data) -> WarningsInfo      render_warnings(info, figs) -> HTML

"At the edge": within `report.edge_fraction` (default 10%) of the parameter's range from its
low or high end, measured on the log scale for a log parameter. The suggestion moves that end
outward by half the current (log) range, keeping the other end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from omegaconf import OmegaConf

from harness.records import COMPLETE, PRUNED
from harness.report.figures import Figures, report_study
from harness.report.html import e, fmt
from harness.report.kinds import ReportSettings
from harness.report.sections.diagnostics import EMBEDDED_JUDGE_NOTE, extract_judge
from harness.report.sections.optuna_plots import param_importances
from harness.sweep.results import SweepData


@dataclass(frozen=True)
class EdgeWarning:
    param: str
    key: str                            # the config path the parameter sets
    side: str                           # "low" | "high"
    low: float
    high: float
    log: bool
    trials: tuple[int, ...]             # top trials at that edge (best first)
    values: tuple[float, ...]
    best_at_edge: bool                  # the best trial itself is at the edge
    suggested: tuple[float, float]      # the widened range


@dataclass(frozen=True)
class UntriedChoice:
    param: str
    choices: tuple[str, ...]            # choices no finished trial used


@dataclass(frozen=True)
class LowImportance:
    param: str
    importance: float


@dataclass(frozen=True)
class WarningsInfo:
    edges: tuple[EdgeWarning, ...] = ()
    untried: tuple[UntriedChoice, ...] = ()
    unimportant: tuple[LowImportance, ...] = ()
    settings: ReportSettings = ReportSettings()
    importance_note: str | None = None  # why importance was not checked
    judge: str | None = None            # the embedded tiny judge graded MT-Bench

    @property
    def count(self) -> int:
        return (len(self.edges) + len(self.untried) + len(self.unimportant)
                + (self.judge is not None))


def _specs(data: SweepData) -> dict[str, dict]:
    params = data.cfg.sweep.get("params") or {}
    specs = OmegaConf.to_container(params, resolve=True) if OmegaConf.is_config(params) \
        else dict(params)
    return {k: v for k, v in specs.items() if isinstance(v, dict)}


def extract_warnings(data: SweepData) -> WarningsInfo:
    settings = ReportSettings.from_config(data.cfg.get("report"))
    specs = _specs(data)
    top = data.ranked[: max(1, settings.edge_top_k)]
    edges = []
    for name, spec in specs.items():
        if spec.get("type") in ("float", "int") and top:
            edges += _edges(name, spec, top, settings.edge_fraction)
    tried = [r for r in data.records if r.status in (COMPLETE, PRUNED)]
    untried = []
    for name, spec in specs.items():
        if spec.get("type") == "categorical" and tried:
            seen = {str(r.params.get(name)) for r in tried if name in r.params}
            left = tuple(str(c) for c in spec.get("choices") or [] if str(c) not in seen)
            if left:
                untried.append(UntriedChoice(name, left))
    unimportant, why = _unimportant(data, settings.importance_floor)
    judge = extract_judge(data)
    return WarningsInfo(tuple(edges), tuple(untried), unimportant, settings, why,
                        EMBEDDED_JUDGE_NOTE if judge.embedded else None)


def position(value: float, low: float, high: float, log: bool) -> float:
    """Where `value` sits in [low, high]: 0 at low, 1 at high (log scale for a log range)."""
    if log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def widened(low: float, high: float, log: bool, side: str, integer: bool) -> tuple[float, float]:
    """The range with `side` moved outward by half the current (log) range."""
    if log:
        factor = math.sqrt(high / low)
        new = (low / factor, high) if side == "low" else (low, high * factor)
    else:
        half = (high - low) / 2
        new = (low - half, high) if side == "low" else (low, high + half)
        if low >= 0 and new[0] < 0:
            new = (0.0, new[1])
    if integer:
        new = (max(1, math.floor(new[0])) if low >= 1 else math.floor(new[0]), math.ceil(new[1]))
    return float(new[0]), float(new[1])


def _edges(name: str, spec: dict, top: list, fraction: float) -> list[EdgeWarning]:
    low, high, log = float(spec["low"]), float(spec["high"]), bool(spec.get("log"))
    if high <= low:
        return []
    found = {"low": [], "high": []}
    for record in top:
        value = record.params.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        pos = position(float(value), low, high, log)
        if pos <= fraction:
            found["low"].append((record.number, float(value)))
        elif pos >= 1 - fraction:
            found["high"].append((record.number, float(value)))
    out = []
    best = top[0].number
    for side, hits in found.items():
        if hits:
            out.append(EdgeWarning(
                name, str(spec.get("key") or name), side, low, high, log,
                tuple(n for n, _ in hits), tuple(v for _, v in hits),
                any(n == best for n, _ in hits),
                widened(low, high, log, side, spec.get("type") == "int")))
    return out


def _unimportant(data: SweepData, floor: float) -> tuple[tuple[LowImportance, ...], str | None]:
    done = report_study(data).get_trials(deepcopy=False,
                                      states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 4:
        return (), f"importance not checked: needs >= 4 completed trials (has {len(done)})"
    try:
        values = param_importances(report_study(data), len(data.objectives) > 1)
    except Exception as exc:  # noqa: BLE001 - a warning must not sink the summary
        return (), f"importance not checked: {type(exc).__name__}: {exc}"
    return tuple(LowImportance(k, float(v)) for k, v in values.items() if v < floor), None


# -- rendering ---------------------------------------------------------------------------------
def render_warnings(info: WarningsInfo, figs: Figures) -> str:
    items = [_edge_text(w, info.settings.edge_fraction) for w in info.edges]
    items += [f"<b>{e(u.param)}</b>: choice(s) {e(', '.join(u.choices))} never tried by a "
              "finished trial." for u in info.untried]
    items += [f"<b>{e(u.param)}</b> has near-zero importance ({u.importance:.3g} &lt; "
              f"{info.settings.importance_floor:g}): fix it and spend the trials elsewhere."
              for u in info.unimportant]
    if info.judge:
        items.append(f'<b>MT-Bench</b>: {e(info.judge)} (<a href="#judge">the judge</a>)')
    if not items:
        extra = f" ({e(info.importance_note)})" if info.importance_note else ""
        return (f'<p class="ok">No search-space warning: no top trial within '
                f"{100 * info.settings.edge_fraction:g}% of a range's edge, every choice "
                f"tried{extra}.</p>")
    return ('<div class="warnings"><b>Search-space warnings</b><ul>'
            + "".join(f"<li>{i}</li>" for i in items) + "</ul></div>")


def _edge_text(w: EdgeWarning, fraction: float) -> str:
    who = (f"the best trial (#{w.trials[0]})" if w.best_at_edge
           else f"top trial(s) {', '.join(f'#{n}' for n in w.trials)}")
    if w.best_at_edge and len(w.trials) > 1:
        who += f" and {len(w.trials) - 1} more of the top trials"
    scale = "log " if w.log else ""
    lo, hi = w.suggested
    return (f"<b>{e(w.param)}</b>: {who} at {e(', '.join(fmt(v) for v in w.values))}, within "
            f"{100 * fraction:g}% of the {scale}range's <b>{w.side}</b> end ({fmt(w.low)} – "
            f"{fmt(w.high)}, sets {e(w.key)}). The optimum may lie outside: widen it, e.g. "
            f"<code>sweep.params.{e(w.param)}.low={fmt(lo)} "
            f"sweep.params.{e(w.param)}.high={fmt(hi)}</code>.")
