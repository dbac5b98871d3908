"""The sweep report: one self-contained HTML file, plus CSV / Parquet / YAML exports.

    load_sweep(sweep_dir)               -> SweepData: config, study, baseline, records, trials table
    write_report(sweep_dir, out_path)   -> one HTML file (plotly.js embedded once, opens offline)
    write_exports(sweep_dir, out_dir)   -> trials CSV + Parquet, the best trial's config as YAML,
                                           replicate runs as CSV (when there are any)

Tables come from the trial records (`result.json`). The Optuna plots use the study when its
storage opens, else an in-memory study rebuilt from the records. Every string taken from a
record or a config is HTML-escaped before it reaches the page.

Replicates (harness.replicate: a configuration rerun with other seeds) are grouped with their
trial; the report gives their spread and bootstrap CIs (harness.uncertainty) of each metric's
delta against the base model and against the best configuration.
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
import platform
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from importlib import metadata
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import yaml
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState
from plotly.subplots import make_subplots

from harness.records import (
    COMPLETE,
    CONFIG_FILE,
    FAILED,
    LOG_FILE,
    PRUNED,
    RESULT_FILE,
    TrialRecord,
    read_record,
)
from harness.replicate import load_replicates
from harness.sweep import STALE_ATTR, SWEEP_FILE
from harness.uncertainty import (
    CISettings,
    Interval,
    Spread,
    difference_interval,
    mean_interval,
    spread,
)

log = logging.getLogger(__name__)

NO_RESULT = "NO_RESULT"          # status of a trial folder without a readable result.json
TOP_CONFIGS = 3                  # trials compared in the config difference
MAX_LOSS_TRIALS = 40             # loss curves drawn (best first)
MAX_LOSS_POINTS = 200            # points kept per loss curve
MAX_SAMPLES = 20                 # prompts shown in the sample generations
MAX_LOG_TAILS = 50               # failed trials whose log tail is embedded
LOG_TAIL_BYTES = 3000
FANOVA_TREE_BUDGET = 6400       # trees x completed trials: 64 trees up to 100 trials
MIN_FANOVA_TREES = 8
MAX_SCATTER_METRICS = 24         # metrics plotted against the parameters (no *_stderr)
SCATTER_COLS = 3                 # subplots per row in "metric against parameter"
TIME_COLUMNS = ("train_seconds", "eval_seconds", "wall_seconds")
MEMORY_COLUMNS = ("peak_rss_mb", "gpu_max_allocated_mb")
COST_COLUMNS = ("peak_memory_mb", "compute_hours", "compute_unit", "trainable_pct")
LEADERBOARD_ROWS = 10            # top trials in the leaderboard
MAX_REPLICATE_GROUPS = 12        # replicated configurations compared pairwise
MAX_EVAL_BARS = 40               # lm-eval task metrics / MT-Bench categories drawn
EVAL_TRIALS = 3                  # top trials drawn beside the base model in lm-eval / MT-Bench
MT_BENCH_COUNTS = ("judged", "unparseable", "judge_errors", "judge_requests",
                   "judge_cache_hits")
BAD_RECORD = (OSError, ValueError, TypeError, KeyError, AttributeError)  # unreadable result.json


# -- loading ---------------------------------------------------------------------------------
@dataclass
class SweepData:
    """Everything the report shows about one sweep folder."""

    sweep_dir: Path
    cfg: DictConfig
    study: optuna.Study | None
    baseline: TrialRecord | None
    records: list[TrialRecord]          # one per trial folder; NO_RESULT placeholders included
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    dirs: dict[int, Path] = field(default_factory=dict)
    replicates: list[TrialRecord] = field(default_factory=list)  # harness.replicate runs
    ci: CISettings = field(default_factory=CISettings)

    @property
    def name(self) -> str:
        return str(self.cfg.sweep.name)

    @cached_property
    def objectives(self) -> list[tuple[str, str]]:
        objs = self.cfg.sweep.get("objectives") or []
        return [(str(o.metric), str(o.direction)) for o in objs]

    @cached_property
    def ranked(self) -> list[TrialRecord]:
        """COMPLETE trials with a finite first objective, best first."""
        if not self.objectives:
            return []
        metric, direction = self.objectives[0]
        sign = -1.0 if direction == "maximize" else 1.0
        done = [r for r in self.records
                if r.status == COMPLETE and _num(r.metrics.get(metric)) is not None]
        return sorted(done, key=lambda r: (sign * _num(r.metrics[metric]), r.number))

    @property
    def best(self) -> TrialRecord | None:
        return self.ranked[0] if self.ranked else None

    @cached_property
    def param_names(self) -> list[str]:
        """Swept parameters: the sweep's order, then any others the records carry."""
        names = list(OmegaConf.to_container(self.cfg.sweep.get("params") or {}, resolve=True))
        for record in self.records:
            names += [k for k in record.params if k not in names]
        return names

    @cached_property
    def metric_names(self) -> list[str]:
        """Every metric of a trial or the base model; objectives first."""
        names = [m for m, _ in self.objectives]
        for record in [*self.records, *([self.baseline] if self.baseline else [])]:
            names += [k for k in record.metrics if k not in names]
        return names

    @cached_property
    def numeric_metrics(self) -> list[str]:
        """Metrics with a number in at least one COMPLETE trial."""
        done = [r for r in self.records if r.status == COMPLETE]
        return [m for m in self.metric_names
                if any(_num(r.metrics.get(m)) is not None for r in done)]

    @cached_property
    def pareto(self) -> list[TrialRecord]:
        return pareto_front(self)

    @cached_property
    def front_numbers(self) -> set[int]:
        return {r.number for r in self.pareto}

    @cached_property
    def plot_study(self) -> optuna.Study:
        """The study for Optuna's plots: the stored one, else one rebuilt from the records."""
        return self.study if self.study is not None else records_study(self)

    def config_path(self, number: int) -> Path:
        return self.dirs.get(number, self.sweep_dir / "trials" / f"{number:04d}") / CONFIG_FILE

    @cached_property
    def groups(self) -> dict[int, Group]:
        """Replicated configurations by trial number: the trial's and its replicates' runs."""
        trials = {r.number: r for r in self.records}
        numbers = sorted({r.number for r in self.replicates})
        return {n: Group(n, trials.get(n), [r for r in self.replicates if r.number == n])
                for n in numbers}

    @cached_property
    def best_group(self) -> Group | None:
        """The replicated configuration with the best mean first objective (>= 2 runs)."""
        if not self.objectives:
            return None
        metric, direction = self.objectives[0]
        sign = -1.0 if direction == "maximize" else 1.0
        scored = [(sign * float(np.mean(g.values(metric))), g.number, g)
                  for g in self.groups.values() if len(g.values(metric)) >= 2]
        return min(scored, key=lambda t: t[:2])[2] if scored else None


@dataclass
class Group:
    """One configuration run with several seeds: the sweep's trial plus its replicates."""

    number: int
    trial: TrialRecord | None
    replicates: list[TrialRecord]

    @cached_property
    def runs(self) -> list[TrialRecord]:
        """COMPLETE runs, one per seed: the trial first, then the replicates by seed."""
        runs = [self.trial] if self.trial is not None and self.trial.status == COMPLETE else []
        for record in sorted(self.replicates, key=lambda r: r.seed):
            if record.status == COMPLETE and all(r.seed != record.seed for r in runs):
                runs.append(record)
        return runs

    @property
    def method(self) -> str:
        source = self.trial or (self.replicates[0] if self.replicates else None)
        return source.method if source else ""

    @property
    def params(self) -> dict:
        source = self.trial or (self.replicates[0] if self.replicates else None)
        return dict(source.params) if source else {}

    @property
    def label(self) -> str:
        return f"#{self.number} {self.method}"

    def values(self, metric: str) -> list[float]:
        """The metric in every COMPLETE run that has it (one value per seed)."""
        found = [_num(r.metrics.get(metric)) for r in self.runs]
        return [v for v in found if v is not None]

    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]


def load_sweep(sweep_dir: Path, ci: CISettings | None = None) -> SweepData:
    """Read a sweep folder: its config, study (None if the storage is missing), records and
    replicates. `ci` defaults to the sweep's `replicate.ci` (else CISettings())."""
    sweep_dir = Path(sweep_dir)
    cfg_path = sweep_dir / SWEEP_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(f"no {SWEEP_FILE} in {sweep_dir}: not a sweep folder")
    cfg = OmegaConf.load(cfg_path)
    notes: list[str] = []
    study = _load_study(cfg, sweep_dir, notes)
    dirs = _trial_dirs(sweep_dir)
    known = {t.number: t for t in study.get_trials(deepcopy=False)} if study else {}
    records = [_read_trial(number, path, known.get(number)) for number, path in dirs.items()]
    data = SweepData(sweep_dir, cfg, study, _load_baseline(sweep_dir), records, notes=notes,
                     dirs=dirs, replicates=load_replicates(sweep_dir),
                     ci=ci or CISettings.from_config((cfg.get("replicate") or {}).get("ci")))
    if not data.objectives:
        notes.append("sweep.objectives is empty: no best trial can be chosen")
    if data.baseline is None:
        notes.append("no COMPLETE base-model record under baseline/: no deltas vs base")
    data.trials = trials_frame(data)
    return data


def _trial_dirs(sweep_dir: Path) -> dict[int, Path]:
    root = sweep_dir / "trials"
    if not root.is_dir():
        return {}
    found = {int(p.name): p for p in root.iterdir() if p.is_dir() and p.name.isdigit()}
    return dict(sorted(found.items()))


def _read_trial(number: int, trial_dir: Path,
                trial: optuna.trial.FrozenTrial | None) -> TrialRecord:
    """The trial's record, or a NO_RESULT placeholder (params from config.yaml) if it has none."""
    try:
        record = read_record(trial_dir)
    except BAD_RECORD as exc:
        return _placeholder(number, trial_dir, f"unreadable {RESULT_FILE}: {exc}")
    if record is None:
        return _placeholder(number, trial_dir, _missing_reason(trial))
    record.config_path = str(trial_dir / CONFIG_FILE)
    return record


def _placeholder(number: int, trial_dir: Path, reason: str) -> TrialRecord:
    method, params = "", {}
    with contextlib.suppress(Exception):
        cfg = OmegaConf.load(trial_dir / CONFIG_FILE)
        method = str(cfg.method.name)
        params = OmegaConf.to_container(cfg.trial.get("params") or {}, resolve=True)
    return TrialRecord(number=number, status=NO_RESULT, method=method, params=params,
                       log_path=str(trial_dir / LOG_FILE),
                       config_path=str(trial_dir / CONFIG_FILE), extra={"note": reason})


def _missing_reason(trial: optuna.trial.FrozenTrial | None) -> str:
    """Why a folder has no record, as far as the study knows."""
    if trial is None:
        return f"no {RESULT_FILE}: still running or lost"
    if trial.user_attrs.get(STALE_ATTR):
        return "lost when the sweep driver died; its parameters were asked again"
    if trial.state == TrialState.RUNNING:
        return f"no {RESULT_FILE} yet: the study has it RUNNING"
    return f"no {RESULT_FILE}; the study has it {trial.state.name}"


def _load_baseline(sweep_dir: Path) -> TrialRecord | None:
    """The newest COMPLETE base-model record under baseline/<hash>/."""
    paths = sorted((sweep_dir / "baseline").glob(f"*/{RESULT_FILE}"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for path in paths:
        with contextlib.suppress(*BAD_RECORD):
            record = read_record(path.parent)
            if record is not None and record.status == COMPLETE:
                return record
    return None


def _load_study(cfg: DictConfig, sweep_dir: Path, notes: list[str]) -> optuna.Study | None:
    from harness.study import make_storage

    storage = _existing_storage(cfg.get("storage"), sweep_dir)
    if storage is None:
        notes.append("study storage not found: Optuna plots are rebuilt from the records")
        return None
    try:
        with _quiet():
            return optuna.load_study(study_name=str(cfg.sweep.name),
                                     storage=make_storage(storage))
    except Exception as exc:  # noqa: BLE001 - a report must still come out
        notes.append(f"could not open the study ({type(exc).__name__}: {exc}); "
                     "Optuna plots are rebuilt from the records")
        return None


def _existing_storage(storage: DictConfig | None, sweep_dir: Path) -> DictConfig | None:
    """The storage config if its file exists (else the one beside sweep.yaml, if that does)."""
    if storage is None:
        return None
    kind = storage.get("kind")
    if kind == "rdb":
        return storage
    if kind == "sqlite":
        path = Path(str(storage.url).removeprefix("sqlite:///"))
        local = sweep_dir / "study.db"
        fix = {"url": f"sqlite:///{local.resolve()}"}
    elif kind == "journal":
        path, local = Path(str(storage.path)), sweep_dir / "study.journal"
        fix = {"path": str(local.resolve())}
    else:
        return None
    if path.is_file():
        return storage
    return OmegaConf.merge(storage, fix) if local.is_file() else None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence Optuna's logging and warnings (experimental, empty-study) for a moment."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(level)


# -- the trials table ------------------------------------------------------------------------
def trials_frame(data: SweepData) -> pd.DataFrame:
    """One row per trial: status, params, metrics, deltas vs base, times, memory, error."""
    ranks = {r.number: i + 1 for i, r in enumerate(data.ranked)}
    rows = [_trial_row(r, data, ranks.get(r.number)) for r in data.records]
    frame = pd.DataFrame(rows, columns=_frame_columns(data))
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def _frame_columns(data: SweepData) -> list[str]:
    base = data.baseline.metrics if data.baseline else {}
    delta = [m for m in data.numeric_metrics if _num(base.get(m)) is not None]
    front = ["pareto"] if len(data.objectives) > 1 else []
    return (["number", "status", "rank", *front, "method"]
            + [f"param:{p}" for p in data.param_names]
            + [f"metric:{m}" for m in data.metric_names]
            + [f"delta:{m}" for m in delta] + [f"delta_pct:{m}" for m in delta]
            + [*TIME_COLUMNS, *MEMORY_COLUMNS, *COST_COLUMNS, "trainable_params",
               "total_params", "error_type", "error_message", "note", "config_path"])


def _trial_row(record: TrialRecord, data: SweepData, rank: int | None) -> dict:
    row = {"number": record.number, "status": record.status, "rank": rank,
           "method": record.method}
    if len(data.objectives) > 1:
        row["pareto"] = record.number in data.front_numbers
    row.update({f"param:{p}": _plain(record.params.get(p)) for p in data.param_names})
    for metric in data.metric_names:
        value = record.metrics.get(metric)
        row[f"metric:{metric}"] = _num(value) if _num(value) is not None else _plain(value)
        delta, pct = _delta(record, data.baseline, metric)
        row[f"delta:{metric}"], row[f"delta_pct:{metric}"] = delta, pct
    ran = record.status != NO_RESULT
    row.update({c: _num(getattr(record, c)) if ran else None
                for c in (*TIME_COLUMNS, *MEMORY_COLUMNS)})
    hours, unit = compute_hours(record) if ran else (None, None)
    row.update(peak_memory_mb=peak_memory_mb(record) if ran else None, compute_hours=hours,
               compute_unit=unit, trainable_pct=trainable_pct(record) if ran else None)
    row.update(trainable_params=record.trainable_params if ran else None,
               total_params=record.total_params if ran else None,
               error_type=record.error.type if record.error else None,
               error_message=record.error.message if record.error else None,
               note=record.extra.get("note") if record.status == NO_RESULT else None,
               config_path=record.config_path or None)
    return row


# -- cost of a trial -----------------------------------------------------------------------
def peak_memory_mb(record: TrialRecord) -> float | None:
    """GPU max allocated when the trial used a GPU, else the process's peak RSS."""
    return _num(record.gpu_max_allocated_mb) or _num(record.peak_rss_mb) or None


def compute_hours(record: TrialRecord) -> tuple[float | None, str | None]:
    """(hours, unit): GPU-h = wall time x GPUs; CPU-h = wall time x torch threads (core-hours).

    The device comes from record.extra["device"] (harness.trial); without it a trial that
    reported GPU memory counts one GPU, any other one thread.
    """
    device = record.extra.get("device")
    device = device if isinstance(device, dict) else {}
    seconds = _num(record.wall_seconds) or ((_num(record.train_seconds) or 0.0)
                                            + (_num(record.eval_seconds) or 0.0))
    if not seconds:
        return None, None
    if device.get("type") == "cuda" or (not device and record.gpu_max_allocated_mb is not None):
        return seconds * int(device.get("count") or 1) / 3600, "GPU-h"
    return seconds * int(device.get("threads") or 1) / 3600, "CPU-h"


def trainable_pct(record: TrialRecord) -> float | None:
    """Trainable parameters as a percentage of all parameters."""
    if not record.total_params:
        return None
    return 100.0 * record.trainable_params / record.total_params


def _delta(record: TrialRecord, baseline: TrialRecord | None,
           metric: str) -> tuple[float | None, float | None]:
    """Trial minus base (absolute, and % of the base value)."""
    value = _num(record.metrics.get(metric))
    base = _num(baseline.metrics.get(metric)) if baseline else None
    if value is None or base is None:
        return None, None
    delta = value - base
    return delta, (100.0 * delta / abs(base) if base else None)


# -- a study rebuilt from the records --------------------------------------------------------
def records_study(data: SweepData) -> optuna.Study:
    """An in-memory study with the records' trials under their own numbers (gaps: FAIL)."""
    directions = [d for _, d in data.objectives] or ["minimize"]
    study = optuna.create_study(study_name=data.name, directions=directions)
    dists = _distributions(data)
    by_number = {r.number: r for r in data.records}
    last = max(by_number, default=-1)
    with _quiet():
        for number in range(last + 1):
            study.add_trial(_frozen(by_number.get(number), data, dists))
    return study


def _frozen(record: TrialRecord | None, data: SweepData,
            dists: dict[str, BaseDistribution]) -> optuna.trial.FrozenTrial:
    if record is None or record.status not in (COMPLETE, PRUNED):
        return optuna.trial.create_trial(state=TrialState.FAIL)
    params = {k: v for k, v in record.params.items() if k in dists and v is not None}
    used = {k: dists[k] for k in params}
    values = [_num(record.metrics.get(m)) for m, _ in data.objectives]
    if record.status == PRUNED or None in values or not values:
        state = TrialState.PRUNED if record.status == PRUNED else TrialState.FAIL
        return optuna.trial.create_trial(state=state, params=params, distributions=used)
    return optuna.trial.create_trial(params=params, distributions=used, values=values)


def _distributions(data: SweepData) -> dict[str, BaseDistribution]:
    """Each parameter's distribution from the sweep's space, or from the values seen."""
    specs = OmegaConf.to_container(data.cfg.sweep.get("params") or {}, resolve=True)
    out = {}
    for name in data.param_names:
        seen = [r.params[name] for r in data.records
                if r.status in (COMPLETE, PRUNED) and r.params.get(name) is not None]
        dist = _spec_distribution(specs.get(name))
        if dist is None or not all(_contains(dist, v) for v in seen):
            dist = _seen_distribution(seen)
        if dist is not None:
            out[name] = dist
    return out


def _spec_distribution(spec: dict | None) -> BaseDistribution | None:
    if not isinstance(spec, dict):
        return None
    try:
        if spec.get("type") == "categorical":
            return CategoricalDistribution(list(spec["choices"]))
        if spec.get("type") == "int":
            return IntDistribution(int(spec["low"]), int(spec["high"]),
                                   log=bool(spec.get("log")), step=int(spec.get("step") or 1))
        return FloatDistribution(float(spec["low"]), float(spec["high"]),
                                 log=bool(spec.get("log")), step=spec.get("step"))
    except (KeyError, TypeError, ValueError):
        return None


def _seen_distribution(seen: list) -> BaseDistribution | None:
    if not seen:
        return None
    if all(_num(v) is not None and not isinstance(v, bool) for v in seen):
        return FloatDistribution(float(min(seen)), float(max(seen)))
    choices = list(dict.fromkeys(v if isinstance(v, bool | int | float | str) else str(v)
                                 for v in seen))
    return CategoricalDistribution(choices)


def _contains(dist: BaseDistribution, value: object) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


# -- small formatting helpers ----------------------------------------------------------------
class _Raw(str):
    """HTML built here (already escaped); every other string is escaped when rendered."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object) -> float | None:
    """A finite float, or None (for strings, bools, None, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _missing(value: object) -> bool:
    """None, NaN or pd.NA (a missing table cell)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _plain(value: object) -> object:
    """Scalars as they are; lists and dicts as text (a table cell holds one value)."""
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fmt_seconds(value: float | None) -> str:
    if value is None or value <= 0:
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(round(value)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def _fmt_mb(value: float | None) -> str:
    if value is None or value <= 0:
        return "—"
    return f"{value / 1024:.2f} GB" if value >= 1024 else f"{value:.0f} MB"


def _fmt_count(value: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) or "—"


def _better(delta: float, direction: str) -> bool:
    return delta < 0 if direction == "minimize" else delta > 0


def _delta_html(delta: float | None, pct: float | None, direction: str | None,
                word: bool = False) -> str:
    """'+1.2 (+3.4%)' coloured better/worse when the direction is known (and said, if word)."""
    if delta is None:
        return "—"
    text = f"{delta:+.4g}" + (f" ({pct:+.1f}%)" if pct is not None else "")
    if direction is None or delta == 0:
        return _e(text)
    cls = "better" if _better(delta, direction) else "worse"
    return f'<span class="{cls}">{_e(text)}{", " + cls if word else ""}</span>'


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    """An HTML table; cells are escaped unless they are _Raw."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    cls_attr = f' class="{cls}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    return value if isinstance(value, _Raw) else _e(_fmt(value))


def _text(value: object) -> _Raw:
    """Model or log text: escaped, whitespace kept."""
    return _Raw(f'<div class="text">{_e(value if value is not None else "")}</div>')


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _link(path: Path | str) -> _Raw:
    path = Path(path)
    href = path.resolve().as_uri() if path.is_absolute() or path.exists() else str(path)
    return _Raw(f'<a href="{_e(href)}"><code>{_e(path)}</code></a>')


# -- figures ---------------------------------------------------------------------------------
class Figures:
    """Turns plotly figures into page fragments; only the first carries plotly.js."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: go.Figure, height: int = 420) -> str:
        fig.update_layout(height=height, margin={"l": 60, "r": 30, "t": 50, "b": 50})
        out = fig.to_html(full_html=False, include_plotlyjs=self.count == 0,
                          default_height=f"{height}px", config={"displaylogo": False})
        self.count += 1
        return f'<div class="figure">{out}</div>'


def _optuna_figure(figs: Figures, plot: Callable[[], go.Figure], what: str,
                   height: int = 420) -> str:
    """An Optuna plot, or a note saying why it could not be drawn (never raises)."""
    try:
        with _quiet():
            fig = plot()
    except Exception as exc:  # noqa: BLE001 - one plot must not sink the report
        return _note(f"{what} not drawn: {type(exc).__name__}: {exc}")
    return figs.html(fig, height)


def _target(data: SweepData) -> dict:
    """Optuna plot arguments naming the first objective (a target for multi-objective)."""
    metric = data.objectives[0][0] if data.objectives else "objective"
    if len(data.objectives) > 1:
        return {"target": lambda t: t.values[0], "target_name": metric}
    return {"target_name": metric}


def _complete_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


# -- sections --------------------------------------------------------------------------------
def _summary(data: SweepData, figs: Figures) -> str:
    """The first screen: best trial, its gain over the base model, its memory and time."""
    parts = [f"<p>{_status_counts(data)}</p>"]
    best = data.best
    if best is None:
        parts.append('<p class="headline">No trial has completed with the objective '
                     f"<code>{_e(_objective_text(data))}</code> yet: no best trial.</p>")
    else:
        parts.append(_headline(data, best))
    parts.append(_comparison(data, best))
    parts += [_note(n) for n in data.notes]
    return "".join(parts)


def _objective_text(data: SweepData) -> str:
    return ", ".join(f"{m} ({d})" for m, d in data.objectives) or "none"


def _status_counts(data: SweepData) -> str:
    counts = Counter(r.status for r in data.records)
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trial folders"
    return (f"{len(data.records)} trials ({_e(text)}); objective: "
            f"<code>{_e(_objective_text(data))}</code>")


def _headline(data: SweepData, best: TrialRecord) -> str:
    metric, direction = data.objectives[0]
    value = _num(best.metrics[metric])
    delta, pct = _delta(best, data.baseline, metric)
    base = _num(data.baseline.metrics.get(metric)) if data.baseline else None
    against = (f" vs base model {_e(_fmt(base))}: {_delta_html(delta, pct, direction, True)}"
               if base is not None else " (no base-model value to compare)")
    share = f" ({trainable_pct(best):.2f}%)" if trainable_pct(best) is not None else ""
    hours, unit = compute_hours(best)
    compute = f" · compute {hours:.3g} {unit}" if hours is not None else ""
    gpu = "no GPU" if best.gpu_max_allocated_mb is None else _fmt_mb(best.gpu_max_allocated_mb)
    return (
        '<div class="headline">'
        f'<p class="big">Best trial <a href="#best">#{_e(best.number)}</a> '
        f"<span class=\"tag\">{_e(best.method)}</span>: <b>{_e(metric)} = {_e(_fmt(value))}"
        f"</b>{against}</p>"
        f"<p>params: <code>{_e(_params_text(best.params))}</code></p>"
        f"<p>memory: peak RSS {_fmt_mb(best.peak_rss_mb)} · GPU max allocated "
        f"{gpu} · trainable params "
        f"{_fmt_count(best.trainable_params)} of {_fmt_count(best.total_params)}{share}</p>"
        f"<p>time: train {_fmt_seconds(best.train_seconds)} · eval "
        f"{_fmt_seconds(best.eval_seconds)} · wall {_fmt_seconds(best.wall_seconds)}"
        f"{_e(compute)}</p>"
        f"{_replicate_line(data, best)}{_pareto_line(data)}</div>")


def _pareto_line(data: SweepData) -> str:
    if len(data.objectives) < 2:
        return ""
    front = data.pareto
    numbers = _e(", ".join(f"#{r.number}" for r in front))
    return (f"<p>Pareto front ({len(front)} trials): {numbers}, "
            'see <a href="#pareto">below</a>.</p>')


def _comparison(data: SweepData, best: TrialRecord | None) -> str:
    """Every metric: base model, best trial, delta (absolute and %)."""
    directions = dict(data.objectives)
    rows = []
    for metric in data.metric_names:
        base = data.baseline.metrics.get(metric) if data.baseline else None
        value = best.metrics.get(metric) if best else None
        if base is None and value is None:
            continue
        delta, pct = _delta(best, data.baseline, metric) if best else (None, None)
        rows.append([metric, _plain(base), _plain(value),
                     _Raw(_delta_html(delta, pct, directions.get(metric)))])
    if not rows:
        return ""
    head = ["metric", "base model", f"best #{best.number}" if best else "best", "Δ (Δ%)"]
    return _table(head, rows, "compact")


def _leaderboard(data: SweepData, figs: Figures) -> str:
    """The top trials by the first objective, with what they cost."""
    if not data.ranked:
        return _note("No completed trial yet.")
    names = [m for m, _ in data.objectives]
    rows = []
    for rank, r in enumerate(data.ranked[:LEADERBOARD_ROWS], start=1):
        delta, pct = _delta(r, data.baseline, names[0])
        hours, unit = compute_hours(r)
        front = ["yes" if r.number in data.front_numbers else ""] if len(names) > 1 else []
        rows.append([rank, f"#{r.number}", r.method, _params_text(r.params),
                     *[_plain(r.metrics.get(m)) for m in names],
                     _Raw(_delta_html(delta, pct, data.objectives[0][1])), *front,
                     _fmt_mb(peak_memory_mb(r)),
                     f"{hours:.3g} {unit}" if hours is not None else "—",
                     f"{trainable_pct(r):.3g}%" if trainable_pct(r) is not None else "—",
                     _fmt_seconds(r.wall_seconds)])
    head = ["rank", "trial", "method", "params", *names, f"Δ {names[0]} vs base",
            *(["Pareto"] if len(names) > 1 else []), "peak memory", "compute", "trainable",
            "wall"]
    more = len(data.ranked) - len(rows)
    return _table(head, rows) + (_note(f"{more} more completed trials in the trials table.")
                                 if more > 0 else "")


def _trials_table(data: SweepData, figs: Figures) -> str:
    if data.trials.empty:
        return _note("No trial folders under trials/.")
    shown = data.trials.drop(columns=["config_path"]).astype(object).map(_table_cell)
    table = shown.to_html(index=False, escape=True, border=0, classes="sortable")
    return ('<p class="note">Click a column header to sort. rank = order by the first '
            f'objective.</p><div class="scroll">{table}</div>')


def _table_cell(value: object) -> str:
    """A trials-table cell as text: blank when missing, whole numbers without exponent."""
    if _missing(value):
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else _fmt(value)


def _best_section(data: SweepData, figs: Figures) -> str:
    best = data.best
    if best is None:
        return _note("No completed trial yet.")
    path = data.config_path(best.number)
    rows = [[k, _plain(v)] for k, v in best.params.items()]
    config = path.read_text(errors="replace") if path.is_file() else "(config.yaml missing)"
    return (f"<p>Trial #{_e(best.number)} ({_e(best.method)}), config: {_link(path)}</p>"
            + _table(["parameter", "value"], rows, "compact")
            + f"<details><summary>full config.yaml</summary>{_text(config)}</details>")


def _pareto_section(data: SweepData, figs: Figures) -> str:
    names = [m for m, _ in data.objectives]
    front = data.pareto
    if not front:
        return _note("No completed trial yet: no Pareto front.")
    fig = ""
    if len(names) <= 3:
        fig = _optuna_figure(figs, lambda: optuna.visualization.plot_pareto_front(
            data.plot_study, target_names=names), "Pareto front")
    rows = [[f"#{r.number}", r.method, _params_text(r.params),
             *[_plain(r.metrics.get(m)) for m in names]] for r in front]
    return fig + _table(["trial", "method", "params", *names], rows)


def pareto_front(data: SweepData) -> list[TrialRecord]:
    """COMPLETE trials no other trial beats on every objective (from the records)."""
    signs = [-1.0 if d == "maximize" else 1.0 for _, d in data.objectives]
    points = []
    for record in data.records:
        values = [_num(record.metrics.get(m)) for m, _ in data.objectives]
        if record.status == COMPLETE and values and None not in values:
            points.append((record, [s * v for s, v in zip(signs, values, strict=True)]))

    def dominated(p: list[float]) -> bool:
        return any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p
                   for _, q in points)

    return sorted((r for r, p in points if not dominated(p)), key=lambda r: r.number)


def _history_section(data: SweepData, figs: Figures) -> str:
    if _complete_count(data.plot_study) == 0:
        return _note("No completed trial yet: nothing to plot.")
    return _optuna_figure(figs, lambda: optuna.visualization.plot_optimization_history(
        data.plot_study, **_target(data)), "optimization history")


def _parallel_section(data: SweepData, figs: Figures) -> str:
    if _complete_count(data.plot_study) == 0:
        return _note("No completed trial yet: nothing to plot.")
    return _optuna_figure(figs, lambda: optuna.visualization.plot_parallel_coordinate(
        data.plot_study, **_target(data)), "parallel coordinates")


def _importance_section(data: SweepData, figs: Figures) -> str:
    """fANOVA importances (fewer trees on big studies, to keep the report fast)."""
    study = data.plot_study
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < 2:
        return _note(f"Skipped: needs at least 2 completed trials (has {len(done)}).")
    names = {k for t in done for k in t.params}
    if not any(len({repr(t.params.get(k)) for t in done}) > 1 for k in names):
        return _note("Skipped: no parameter took more than one value in the completed trials.")
    evaluator, how = _importance_evaluator(len(done))
    return _note(f"{how} over {len(done)} completed trials.") + _optuna_figure(
        figs, lambda: optuna.visualization.plot_param_importances(
            study, evaluator=evaluator, **_target(data)), "parameter importance", 360)


def _importance_evaluator(n_done: int) -> tuple[optuna.importance.BaseImportanceEvaluator, str]:
    """fANOVA (Optuna's default; needs scikit-learn), else PED-ANOVA."""
    trees = max(MIN_FANOVA_TREES, min(64, FANOVA_TREE_BUDGET // n_done))
    try:
        import sklearn.ensemble  # noqa: F401 - fANOVA's random forest
    except ImportError:
        return optuna.importance.PedAnovaImportanceEvaluator(), "PED-ANOVA (no scikit-learn)"
    return (optuna.importance.FanovaImportanceEvaluator(n_trees=trees, seed=0),
            f"fANOVA with {trees} trees")


def _scatter_section(data: SweepData, figs: Figures) -> str:
    """Each numeric metric against each swept parameter (categories as categories)."""
    done = [r for r in data.records if r.status == COMPLETE]
    if not done or not data.numeric_metrics:
        return _note("No completed trial with metrics yet.")
    if not data.param_names:
        return _note("The sweep has no swept parameters.")
    metrics = [m for m in data.numeric_metrics if not m.endswith("_stderr")]
    shown = metrics[:MAX_SCATTER_METRICS]
    note = _note(f"Showing the first {len(shown)} of {len(metrics)} metrics (objectives first; "
                 "all are in the trials table).") if len(metrics) > len(shown) else ""
    return note + "".join(figs.html(*_metric_figure(data, done, m)) for m in shown)


def _metric_figure(data: SweepData, done: list[TrialRecord],
                   metric: str) -> tuple[go.Figure, int]:
    names = data.param_names
    rows = math.ceil(len(names) / SCATTER_COLS)
    cols = min(len(names), SCATTER_COLS)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names,
                        horizontal_spacing=0.08, vertical_spacing=0.18)
    methods = sorted({r.method for r in done})
    for i, name in enumerate(names):
        row, col = i // SCATTER_COLS + 1, i % SCATTER_COLS + 1
        for j, method in enumerate(methods):
            fig.add_trace(_param_scatter(data, done, metric, name, method, j, i == 0),
                          row=row, col=col)
        _param_axis(fig, data, name, row, col)
    base = _num(data.baseline.metrics.get(metric)) if data.baseline else None
    note = " (dashed: base model)" if base is not None else ""
    fig.update_layout(title=f"{metric} against each parameter{note}", legend_title="method",
                      shapes=_base_lines(base, len(names)))
    return fig, 140 + 260 * rows


def _base_lines(base: float | None, subplots: int) -> list[dict]:
    """A dashed horizontal line at the base model's value in each subplot (row-major axes)."""
    if base is None:
        return []
    axes = ["" if i == 0 else str(i + 1) for i in range(subplots)]
    return [{"type": "line", "xref": f"x{a} domain", "x0": 0, "x1": 1, "yref": f"y{a}",
             "y0": base, "y1": base, "line": {"dash": "dash", "color": "gray"}} for a in axes]


def _param_scatter(data: SweepData, done: list[TrialRecord], metric: str, name: str,
                   method: str, color: int, legend: bool) -> go.Scatter:
    points = [(r.params[name], _num(r.metrics.get(metric)), r.number) for r in done
              if r.method == method and r.params.get(name) is not None
              and _num(r.metrics.get(metric)) is not None]
    if _is_categorical(data, name):
        xs = np.array([str(x) for x, _, _ in points], dtype=object)
    else:
        xs = np.array([float(x) for x, _, _ in points])
    palette = _palette()
    return go.Scatter(x=xs, y=np.array([y for _, y, _ in points]), mode="markers", name=method,
                      legendgroup=method, showlegend=legend,
                      marker={"color": palette[color % len(palette)], "size": 7,
                              "opacity": 0.75},
                      customdata=np.array([n for _, _, n in points]),
                      hovertemplate=f"trial #%{{customdata}}<br>{_e(name)}=%{{x}}<br>"
                                    f"{_e(metric)}=%{{y}}<extra></extra>")


def _param_axis(fig: go.Figure, data: SweepData, name: str, row: int, col: int) -> None:
    spec = _spec(data, name)
    if _is_categorical(data, name):
        order = [str(c) for c in spec.get("choices") or []]
        seen = sorted({str(r.params[name]) for r in data.records
                       if r.params.get(name) is not None} - set(order))
        fig.update_xaxes(type="category", categoryorder="array",
                         categoryarray=order + seen, row=row, col=col)
    elif spec.get("log"):
        fig.update_xaxes(type="log", row=row, col=col)


def _spec(data: SweepData, name: str) -> dict:
    spec = (data.cfg.sweep.get("params") or {}).get(name)
    return OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else {}


def _is_categorical(data: SweepData, name: str) -> bool:
    if _spec(data, name).get("type") == "categorical":
        return True
    return any(_num(r.params.get(name)) is None for r in data.records
               if r.params.get(name) is not None)


def _palette() -> list[str]:
    import plotly.colors

    return plotly.colors.qualitative.Plotly


def _loss_section(data: SweepData, figs: Figures) -> str:
    """Train and eval loss per trial (best trials first, points subsampled)."""
    ranked = {r.number for r in data.ranked}
    best_first = data.ranked + [r for r in data.records if r.number not in ranked]
    chosen = [r for r in best_first if r.loss_history][:MAX_LOSS_TRIALS]
    if not chosen:
        return _note("No trial recorded a loss history.")
    total = sum(1 for r in data.records if r.loss_history)
    fig = make_subplots(rows=1, cols=2, subplot_titles=["train loss", "eval loss"])
    palette = _palette()
    best = data.best.number if data.best else None
    for i, record in enumerate(chosen):
        color = palette[i % len(palette)]
        for col, key in ((1, "loss"), (2, "eval_loss")):
            fig.add_trace(_loss_trace(record, key, color, col == 1, record.number == best),
                          row=1, col=col)
    fig.update_xaxes(title_text="step")
    note = (_note(f"Showing the {len(chosen)} best of {total} trials with a loss history.")
            if total > len(chosen) else "")
    return note + figs.html(fig, 460)


def _loss_trace(record: TrialRecord, key: str, color: str, legend: bool,
                best: bool) -> go.Scatter:
    rows = [r for r in record.loss_history
            if isinstance(r, dict) and _num(r.get(key)) is not None and "step" in r]
    rows = _subsample(rows, MAX_LOSS_POINTS)
    label = f"#{record.number} {record.method}" + (" (best)" if best else "")
    return go.Scatter(x=np.array([_num(r["step"]) for r in rows], dtype=float),
                      y=np.array([_num(r[key]) for r in rows]),
                      mode="lines+markers" if key == "eval_loss" else "lines",
                      name=label, legendgroup=str(record.number), showlegend=legend,
                      line={"color": color, "width": 3 if best else 1.3},
                      opacity=1.0 if best else 0.7,
                      hovertemplate=f"{_e(label)}<br>step %{{x}}<br>{key} %{{y:.4g}}"
                                    "<extra></extra>")


def _subsample(rows: list, limit: int) -> list:
    """At most `limit` evenly spaced items, the last one always kept."""
    if len(rows) <= limit:
        return rows
    step = (len(rows) - 1) / (limit - 1)
    return [rows[round(i * step)] for i in range(limit)]


def _resources_section(data: SweepData, figs: Figures) -> str:
    ran = [r for r in data.records if r.status != NO_RESULT]
    if not ran:
        return _note("No trial has a record yet.")
    xs = [f"#{r.number}" for r in ran]
    hover = [f"{r.status} {r.method}" for r in ran]
    time_fig = go.Figure([go.Bar(x=xs, y=[r.train_seconds for r in ran], name="train",
                                 hovertext=hover),
                          go.Bar(x=xs, y=[r.eval_seconds for r in ran], name="eval",
                                 hovertext=hover),
                          go.Scatter(x=xs, y=[r.wall_seconds for r in ran], name="wall",
                                     mode="markers", hovertext=hover)])
    time_fig.update_layout(barmode="stack", title="seconds per trial", xaxis_type="category")
    gpu = [r.gpu_max_allocated_mb for r in ran]
    mem_fig = go.Figure([go.Bar(x=xs, y=[r.peak_rss_mb for r in ran], name="peak RSS MB",
                                hovertext=hover),
                         go.Bar(x=xs, y=gpu, name="GPU max allocated MB", hovertext=hover)])
    mem_fig.update_layout(barmode="group", title="memory per trial (MB)",
                          xaxis_type="category")
    return figs.html(time_fig, 380) + figs.html(mem_fig, 380)


def _methods_section(data: SweepData, figs: Figures) -> str:
    """Each objective by method: box with every trial as a point, base model dashed."""
    done = [r for r in data.records if r.status == COMPLETE]
    metrics = [m for m, _ in data.objectives if m in data.numeric_metrics]
    if not done or not metrics:
        return _note("No completed trial with the objective yet.")
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    methods = sorted({r.method for r in done})
    palette = _palette()
    for col, metric in enumerate(metrics, start=1):
        for j, method in enumerate(methods):
            fig.add_trace(_method_box(done, metric, method, palette[j % len(palette)],
                                      col == 1), row=1, col=col)
        base = _num(data.baseline.metrics.get(metric)) if data.baseline else None
        if base is not None:
            fig.add_hline(y=base, line_dash="dash", line_color="gray", row=1, col=col,
                          annotation_text="base", annotation_position="top left")
    return _method_table(data, done) + figs.html(fig, 420)


def _method_box(done: list[TrialRecord], metric: str, method: str, color: str,
                legend: bool) -> go.Box:
    points = [(r.number, _num(r.metrics.get(metric))) for r in done if r.method == method]
    points = [(n, v) for n, v in points if v is not None]
    return go.Box(y=[v for _, v in points], name=method, legendgroup=method,
                  showlegend=legend, boxpoints="all", jitter=0.4, pointpos=0,
                  marker={"color": color}, customdata=[n for n, _ in points],
                  hovertemplate="trial #%{customdata}: %{y:.4g}<extra></extra>")


def _method_table(data: SweepData, done: list[TrialRecord]) -> str:
    metric, direction = data.objectives[0]
    pick = max if direction == "maximize" else min
    rows = []
    for method, count in sorted(Counter(r.method for r in data.records).items()):
        values = [_num(r.metrics.get(metric)) for r in done if r.method == method]
        values = [v for v in values if v is not None]
        med = float(pd.Series(values).median()) if values else None
        rows.append([method, count, len(values), pick(values) if values else None, med])
    return _table(["method", "trials", "completed", f"best {metric}", f"median {metric}"],
                  rows, "compact")


def _samples_section(data: SweepData, figs: Figures) -> str:
    """Base model's generation vs the best trial's vs the reference, per prompt."""
    best, base = data.best, data.baseline
    best_samples = [s for s in (best.samples if best else []) if isinstance(s, dict)]
    base_samples = [s for s in (base.samples if base else []) if isinstance(s, dict)]
    if not best_samples and not base_samples:
        return _note("No sample generations recorded.")
    by_prompt = {s.get("prompt"): s for s in base_samples}
    prompts = list(dict.fromkeys([s.get("prompt") for s in best_samples]
                                 + [s.get("prompt") for s in base_samples]))[:MAX_SAMPLES]
    ours = {s.get("prompt"): s for s in best_samples}
    rows = [[_text(p), _text(_first(ours, by_prompt, p, "reference")),
             _text(by_prompt.get(p, {}).get("generation", "")),
             _text(ours.get(p, {}).get("generation", ""))] for p in prompts]
    label = f"best trial #{best.number}" if best else "best trial (none yet)"
    return _table(["prompt", "reference", "base model", label], rows, "samples")


def _first(a: dict, b: dict, key: str, field_name: str) -> str:
    return (a.get(key) or {}).get(field_name) or (b.get(key) or {}).get(field_name) or ""


def _failures_section(data: SweepData, figs: Figures) -> str:
    """Trials and replicates without a COMPLETE record, with the reason and the log's tail."""
    bad = [(str(r.number), r) for r in data.records if r.status in (FAILED, PRUNED, NO_RESULT)]
    bad += [(f"{r.number} seed {r.seed} (replicate)", r) for r in data.replicates
            if r.status != COMPLETE]
    if not bad:
        return _note("None: every trial has a COMPLETE record.")
    rows = [_failure_row(r, i < MAX_LOG_TAILS, label) for i, (label, r) in enumerate(bad)]
    return _table(["trial", "status", "method", "params", "reason", "log"], rows)


def _failure_row(record: TrialRecord, with_tail: bool, label: str | None = None) -> list:
    if record.error is not None:
        reason = f"{record.error.type}: {record.error.message}"
    else:
        reason = record.extra.get("note") or "(no reason recorded)"
    log = Path(record.error.log if record.error and record.error.log else record.log_path)
    tail = _log_tail(log) if with_tail and str(log) not in ("", ".") else None
    log_html = _link(log) if str(log) not in ("", ".") else _Raw("—")
    if tail:
        log_html = _Raw(f"{log_html}<details><summary>last lines</summary>"
                        f"{_text(tail)}</details>")
    return [label or record.number, record.status, record.method,
            _params_text(record.params), _text(reason), log_html]


def _log_tail(path: Path) -> str | None:
    """The last LOG_TAIL_BYTES of a log file, from a line start."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    return text.split("\n", 1)[-1] if size > LOG_TAIL_BYTES else text


def _config_diff_section(data: SweepData, figs: Figures) -> str:
    """Config keys whose values differ between the top trials' config.yaml."""
    top = [r for r in data.ranked if data.config_path(r.number).is_file()][:TOP_CONFIGS]
    if len(top) < 2:
        return _note("Needs at least 2 completed trials with a config.yaml.")
    flat = [_flatten(OmegaConf.to_container(OmegaConf.load(data.config_path(r.number))))
            for r in top]
    keys = sorted({k for f in flat for k in f if not k.startswith("trial.")})
    missing = object()
    differ = [k for k in keys if len({repr(f.get(k, missing)) for f in flat}) > 1]
    if not differ:
        return _note("The top trials' configs are identical outside `trial`.")
    rows = [[k, *[_plain(f.get(k, "(absent)")) for f in flat]] for k in differ]
    head = ["key", *[f"#{r.number} (rank {i + 1})" for i, r in enumerate(top)]]
    return _note("Keys under `trial` (number, folder, ids) are left out.") + _table(head, rows)


def _flatten(tree: object, prefix: str = "") -> dict:
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def _environment_section(data: SweepData, figs: Figures) -> str:
    """Package versions and git commits the records were made with."""
    records = [r for r in data.records if r.status != NO_RESULT]
    records += [data.baseline] if data.baseline else []
    versions: dict[str, Counter] = {}
    for record in records:
        for package, version in (record.versions or {}).items():
            versions.setdefault(package, Counter())[str(version)] += 1
    rows = [[p, ", ".join(f"{v} ({n} records)" if len(c) > 1 else v for v, n in c.items())]
            for p, c in sorted(versions.items())]
    commits = Counter(str(r.git_commit) for r in records if r.git_commit)
    commit_rows = [[c, n] for c, n in commits.most_common()]
    devices = Counter(device_text(r) for r in records)
    parts = [_table(["package", "version"], rows, "compact") if rows
             else _note("No package versions recorded."),
             _table(["device (GPU or CPU)", "records"], devices.most_common(), "compact")
             if devices else _note("No device recorded."),
             _table(["git commit", "records"], commit_rows, "compact") if commit_rows
             else _note("No git commit recorded.")]
    if any(len(c) > 1 for c in versions.values()) or len(commits) > 1:
        parts.insert(0, _note("Warning: the records were made with different versions."))
    parts.append(_note(f"Report made {datetime.now():%Y-%m-%d %H:%M} with python "
                       f"{platform.python_version()}, " + ", ".join(
                           f"{p} {_version(p)}" for p in ("optuna", "plotly", "pandas"))))
    return "".join(parts)


def device_text(record: TrialRecord) -> str:
    """The GPU (name x count) or CPU a record was made on, as far as it says."""
    device = record.extra.get("device")
    if isinstance(device, dict) and device.get("type") == "cuda":
        return f"GPU: {device.get('name') or '?'} x {device.get('count') or 1}"
    if isinstance(device, dict) and device.get("type"):
        return (f"CPU: {device.get('name') or '?'}, {device.get('threads') or '?'} torch "
                "threads")
    if record.gpu_max_allocated_mb is not None:
        return "GPU (name not recorded)"
    return "CPU (device not recorded)"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


# -- replicates: spread across seeds and confidence intervals ---------------------------------
REPLICATE_HINT = ("No replicates: every configuration ran with one seed, so there is no "
                  "spread or confidence interval. Rerun the top configurations with other "
                  "seeds: python -m harness action=replicate sweep={name} replicate.top_k=2 "
                  "replicate.seeds=[1,2,3]")


def _fmt_interval(iv: Interval | None, signed: bool = False) -> str:
    if iv is None:
        return "—"
    f = (lambda v: f"{v:+.4g}") if signed else (lambda v: f"{v:.4g}")
    return f"{f(iv.estimate)} [{f(iv.low)}, {f(iv.high)}]"


def _fmt_spread(s: Spread) -> str:
    return f"{s.mean:.4g} ± {s.sd:.2g} ({s.low:.4g} – {s.high:.4g})"


def _base_value(data: SweepData, metric: str) -> float | None:
    return _num(data.baseline.metrics.get(metric)) if data.baseline else None


def _vs_base(data: SweepData, group: Group, metric: str) -> Interval | None:
    """CI of the group's mean minus the base model's (single, deterministic) value."""
    base = _base_value(data, metric)
    iv = mean_interval(group.values(metric), data.ci)
    return iv.shifted(base) if iv is not None and base is not None else None


def _vs_best(data: SweepData, group: Group, metric: str) -> Interval | None:
    ref = data.best_group
    if ref is None or ref.number == group.number:
        return None
    return difference_interval(group.values(metric), ref.values(metric), data.ci)


def _verdict(data: SweepData, group: Group, metric: str, direction: str | None) -> _Raw:
    """Whether the group differs from the best configuration on this metric."""
    ref = data.best_group
    if ref is not None and ref.number == group.number:
        return _Raw('<span class="tag">best configuration (reference)</span>')
    diff = _vs_best(data, group, metric)
    if diff is None:
        return _Raw(_e("needs >= 2 seeds in both configurations"))
    if diff.contains(0.0):
        return _Raw('<span class="same">not distinguishable from the best '
                    "(CI of the difference contains 0)</span>")
    if direction is None:
        return _Raw(_e("differs from the best (CI of the difference excludes 0)"))
    cls = "better" if _better(diff.estimate, direction) else "worse"
    return _Raw(f'<span class="{cls}">{cls} than the best (CI of the difference '
                "excludes 0)</span>")


def _replicates_section(data: SweepData, figs: Figures) -> str:
    """Each replicated configuration and method across seeds, with CIs and verdicts."""
    groups = list(data.groups.values())
    if not groups:
        return _note(REPLICATE_HINT.format(name=data.name))
    if not data.objectives:
        return _note("sweep.objectives is empty: no reference configuration.")
    metric, direction = data.objectives[0]
    ref = data.best_group
    head = _note(f"{data.ci.describe()}. A configuration's runs: its sweep trial plus its "
                 "replicates (same config, other seed). Δ vs base: mean minus the base "
                 "model's value; Δ vs best: mean minus the mean of the configuration with the "
                 f"best mean {metric} ({ref.label if ref else 'none with 2 runs yet'}).")
    parts = [head, _replicate_table(data, groups, metric, direction),
             "<h3>Per method (each method's best replicated configuration)</h3>",
             _method_spread_table(data, groups, metric, direction),
             "<h3>Pairs of configurations</h3>", _pairs_table(data, groups, metric, direction),
             _replicate_figure(data, groups, figs),
             "<details><summary>every metric across seeds</summary>",
             _all_metrics_table(data, groups), "</details>"]
    return "".join(parts)


def _group_row(data: SweepData, group: Group, metric: str, direction: str) -> list:
    values = group.values(metric)
    if not values:
        return [group.label, _params_text(group.params), "—", 0, "—", "—", "—", "—",
                _Raw(_e("no COMPLETE run with the metric"))]
    return [group.label, _params_text(group.params), ", ".join(map(str, group.seeds())),
            len(values), _fmt_spread(spread(values)),
            _fmt_interval(mean_interval(values, data.ci)),
            _fmt_interval(_vs_base(data, group, metric), True),
            _fmt_interval(_vs_best(data, group, metric), True),
            _verdict(data, group, metric, direction)]


def _ranked_groups(data: SweepData, groups: list[Group], metric: str,
                   direction: str) -> list[Group]:
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(groups, key=lambda g: (not g.values(metric),
                                         sign * float(np.mean(g.values(metric) or [0.0])),
                                         g.number))


def _replicate_table(data: SweepData, groups: list[Group], metric: str, direction: str) -> str:
    rows = [_group_row(data, g, metric, direction)
            for g in _ranked_groups(data, groups, metric, direction)]
    head = ["configuration", "params", "seeds", "n", f"{metric}: mean ± sd (min – max)",
            "mean [95% CI]", "Δ vs base [CI]", "Δ vs best [CI]", "verdict"]
    return _table(head, rows)


def _method_spread_table(data: SweepData, groups: list[Group], metric: str,
                         direction: str) -> str:
    rows = []
    for method in sorted({g.method for g in groups}):
        mine = _ranked_groups(data, [g for g in groups if g.method == method], metric,
                              direction)
        row = _group_row(data, mine[0], metric, direction)
        rows.append([method, len(mine), *row[:1], *row[2:]])
    head = ["method", "configs replicated", "best configuration", "seeds", "n",
            f"{metric}: mean ± sd (min – max)", "mean [95% CI]", "Δ vs base [CI]",
            "Δ vs best [CI]", "verdict"]
    return _table(head, rows)


def _pairs_table(data: SweepData, groups: list[Group], metric: str, direction: str) -> str:
    ranked = [g for g in _ranked_groups(data, groups, metric, direction)
              if len(g.values(metric)) >= 2][:MAX_REPLICATE_GROUPS]
    if len(ranked) < 2:
        return _note("Needs two configurations with >= 2 runs each.")
    rows = []
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            diff = difference_interval(a.values(metric), b.values(metric), data.ci)
            ia, ib = mean_interval(a.values(metric), data.ci), mean_interval(b.values(metric),
                                                                               data.ci)
            same = diff.contains(0.0)
            verdict = ("not distinguishable" if same else
                       f"{a.label if _better(diff.estimate, direction) else b.label} is better")
            rows.append([a.label, b.label, _fmt_interval(diff, True),
                         "yes" if ia.overlaps(ib) else "no",
                         _Raw(f'<span class="{"same" if same else "better"}">{_e(verdict)}'
                              "</span>")])
    head = ["A", "B", f"{metric}: mean(A) − mean(B) [CI]", "CIs of the means overlap",
            "verdict (CI of the difference contains 0?)"]
    return _table(head, rows, "compact")


def _replicate_figure(data: SweepData, groups: list[Group], figs: Figures) -> str:
    """Each seed's value per configuration, with the mean and its CI, per objective."""
    metrics = [m for m, _ in data.objectives][:3]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    for col, metric in enumerate(metrics, start=1):
        direction = dict(data.objectives)[metric]
        shown = [g for g in _ranked_groups(data, groups, metric, direction)
                 if g.values(metric)][:MAX_REPLICATE_GROUPS]
        xs = [g.label for g in shown]
        seeds_x = [g.label for g in shown for r in g.runs if _num(r.metrics.get(metric))
                   is not None]
        seeds_y = [v for g in shown for v in g.values(metric)]
        seeds_c = [r.seed for g in shown for r in g.runs
                   if _num(r.metrics.get(metric)) is not None]
        fig.add_trace(go.Scatter(x=seeds_x, y=seeds_y, mode="markers", name="one seed",
                                 showlegend=col == 1, marker={"color": "#888", "size": 7},
                                 customdata=seeds_c,
                                 hovertemplate="%{x} seed %{customdata}: %{y:.4g}"
                                               "<extra></extra>"), row=1, col=col)
        ivs = [mean_interval(g.values(metric), data.ci) for g in shown]
        means = [float(np.mean(g.values(metric))) for g in shown]
        fig.add_trace(go.Scatter(
            x=xs, y=means, mode="markers", name="mean and 95% CI", showlegend=col == 1,
            marker={"color": "#1f77b4", "size": 11, "symbol": "diamond"},
            error_y={"type": "data", "symmetric": False,
                     "array": [iv.high - m if iv else 0 for iv, m in zip(ivs, means,
                                                                         strict=True)],
                     "arrayminus": [m - iv.low if iv else 0 for iv, m in zip(ivs, means,
                                                                             strict=True)]}),
            row=1, col=col)
        base = _base_value(data, metric)
        if base is not None:
            fig.add_hline(y=base, line_dash="dash", line_color="gray", row=1, col=col,
                          annotation_text="base", annotation_position="top left")
    fig.update_xaxes(type="category")
    fig.update_layout(title="Replicated configurations across seeds (dashed: base model)")
    return figs.html(fig, 420)


def _all_metrics_table(data: SweepData, groups: list[Group]) -> str:
    directions = dict(data.objectives)
    metrics = [m for m in data.numeric_metrics if not m.endswith("_stderr")]
    rows = []
    for group in _ranked_groups(data, groups, *data.objectives[0]):
        for metric in metrics:
            values = group.values(metric)
            if not values:
                continue
            rows.append([group.label, metric, len(values), _fmt_spread(spread(values)),
                         _fmt_interval(_vs_base(data, group, metric), True),
                         _fmt_interval(_vs_best(data, group, metric), True),
                         _verdict(data, group, metric, directions.get(metric))])
    head = ["configuration", "metric", "n", "mean ± sd (min – max)", "Δ vs base [CI]",
            "Δ vs best [CI]", "verdict"]
    return f'<div class="scroll">{_table(head, rows)}</div>'


def _replicate_line(data: SweepData, best: TrialRecord) -> str:
    """The headline's answer to 'how sure?': the best configuration across seeds."""
    metric, direction = data.objectives[0]
    group, ref = data.groups.get(best.number), data.best_group
    if not data.groups:
        return ('<p>Seeds: one run per configuration, so no confidence interval yet '
                '(see <a href="#replicates">replicates</a>).</p>')
    parts = []
    if group is not None and len(group.values(metric)) >= 2:
        iv = mean_interval(group.values(metric), data.ci)
        parts.append(f"across {iv.n} seeds trial #{best.number}'s {_e(metric)} is "
                     f"{_e(_fmt_interval(iv))}, Δ vs base "
                     f"{_e(_fmt_interval(_vs_base(data, group, metric), True))}")
        if direction and (d := _vs_base(data, group, metric)) is not None and \
                not d.contains(0.0):
            parts[-1] += (" (better than the base model at this confidence)"
                          if _better(d.estimate, direction) else " (worse than the base model)")
    if ref is not None and ref.number != best.number:
        parts.append(f"by mean over seeds the best configuration is #{ref.number} "
                     f"({_e(ref.method)})")
    ties = [g.label for g in data.groups.values() if ref is not None and g is not ref
            and (d := _vs_best(data, g, metric)) is not None and d.contains(0.0)]
    if ties:
        parts.append("not distinguishable from it: " + _e(", ".join(ties)))
    text = "; ".join(parts) or "replicates recorded, but fewer than 2 runs per configuration"
    level = f"{100 * data.ci.level:g}% CI"
    return (f'<p>Seeds [{_e(level)}]: {text}; <a href="#replicates">details and '
            "method</a>.</p>")


# -- quality against cost ---------------------------------------------------------------------
COSTS: list[tuple[str, str, Callable[[TrialRecord], float | None]]] = [
    ("memory", "peak memory (MB)", peak_memory_mb),
    ("compute", "compute (GPU-h or CPU core-h)", lambda r: compute_hours(r)[0]),
]


def front_2d(points: list[tuple[float, float, object]], sign: float) -> list:
    """Items no other point beats on both cost x (lower is better) and quality sign*y (lower
    is better), in order of cost."""
    out, best = [], math.inf
    for _x, y, item in sorted(points, key=lambda p: (p[0], sign * p[1])):
        if sign * y < best:
            out.append(item)
            best = sign * y
    return out


def _cost_section(data: SweepData, figs: Figures) -> str:
    """The first objective against peak memory and against compute, with Pareto fronts."""
    if not data.ranked:
        return _note("No completed trial with the objective yet.")
    metric, direction = data.objectives[0]
    sign = -1.0 if direction == "maximize" else 1.0
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=[f"{metric} vs {label}" for _, label, _ in COSTS])
    palette = _palette()
    methods = sorted({r.method for r in data.ranked})
    tables = []
    for col, (_, label, cost) in enumerate(COSTS, start=1):
        points = [(cost(r), _num(r.metrics[metric]), r) for r in data.ranked
                  if cost(r) is not None]
        for j, method in enumerate(methods):
            mine = [p for p in points if p[2].method == method]
            fig.add_trace(_cost_scatter(mine, method, palette[j % len(palette)], col == 1),
                          row=1, col=col)
        front = front_2d(points, sign)
        by_number = {p[2].number: p for p in points}
        fig.add_trace(go.Scatter(
            x=[by_number[r.number][0] for r in front], y=[by_number[r.number][1] for r in front],
            mode="lines+markers", name="Pareto front", showlegend=col == 1,
            line={"color": "black", "shape": "hv", "width": 1.5},
            marker={"color": "black", "size": 9, "symbol": "star"},
            text=[f"#{r.number}" for r in front],
            hovertemplate="front %{text}: %{y:.4g} at %{x:.4g}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text=label, row=1, col=col)
        tables.append(f"<h3>Pareto front: {_e(metric)} against {_e(label)}</h3>"
                      + _front_table(front, metric))
    fig.update_yaxes(title_text=metric)
    note = _note("Peak memory: GPU max allocated when the trial ran on a GPU, else peak RSS. "
                 "Compute: wall time x GPUs (GPU-h), or x torch threads on CPU (core-h). "
                 "A trial is on a front when no other trial is both cheaper and better.")
    return note + figs.html(fig, 440) + "".join(tables)


def _cost_scatter(points: list, method: str, color: str, legend: bool) -> go.Scatter:
    return go.Scatter(x=np.array([p[0] for p in points], dtype=float),
                      y=np.array([p[1] for p in points], dtype=float), mode="markers",
                      name=method, legendgroup=method, showlegend=legend,
                      marker={"color": color, "size": 6, "opacity": 0.6},
                      customdata=np.array([p[2].number for p in points]),
                      hovertemplate="trial #%{customdata}: %{y:.4g} at %{x:.4g}"
                                    "<extra></extra>")


def _front_table(front: list[TrialRecord], metric: str) -> str:
    rows = []
    for r in front:
        hours, unit = compute_hours(r)
        rows.append([f"#{r.number}", r.method, _params_text(r.params),
                     _plain(r.metrics.get(metric)), _fmt_mb(peak_memory_mb(r)),
                     f"{hours:.3g} {unit}" if hours is not None else "—",
                     f"{trainable_pct(r):.3g}%" if trainable_pct(r) is not None else "—"])
    head = ["trial", "method", "params", metric, "peak memory", "compute", "trainable"]
    return _table(head, rows, "compact")


# -- lm-eval per task and MT-Bench per category -----------------------------------------------
def _eval_runs(data: SweepData, names: list[str]) -> list[tuple[str, TrialRecord]]:
    """The base model and the top trials that have any of these metrics."""
    runs = [("base model", data.baseline)] if data.baseline else []
    best = data.best.number if data.best else None
    with_metrics = [r for r in data.ranked if any(n in r.metrics for n in names)]
    for record in with_metrics[:EVAL_TRIALS]:
        label = f"best #{record.number}" if record.number == best else f"#{record.number}"
        runs.append((f"{label} {record.method}", record))
    return [(label, r) for label, r in runs if any(n in r.metrics for n in names)]


def _eval_bars(data: SweepData, names: list[str], labels: list[str], title: str,
               stderr: Callable[[str], str] | None, figs: Figures) -> str:
    runs = _eval_runs(data, names)
    if not runs:
        return _note("Neither the base model nor a completed trial has these metrics.")
    fig = go.Figure()
    for label, record in runs:
        ys = [_num(record.metrics.get(n)) for n in names]
        errors = [_num(record.metrics.get(stderr(n))) if stderr else None for n in names]
        bar = go.Bar(x=labels, y=ys, name=label)
        if any(e is not None for e in errors):
            bar.error_y = {"type": "data", "array": [e or 0 for e in errors], "visible": True}
        fig.add_trace(bar)
    fig.update_layout(barmode="group", title=title, xaxis_type="category")
    rows = [[label, *[_plain(r.metrics.get(n)) for n in names]] for label, r in runs]
    return figs.html(fig, 420) + f'<div class="scroll">{_table(["run", *labels], rows)}</div>'


def _lm_eval_section(data: SweepData, figs: Figures) -> str:
    """Each lm-eval task's scores: base model against the top trials (± stderr)."""
    names = [m for m in data.metric_names if m.startswith("lm_eval/") and m.count("/") >= 2
             and not m.endswith("_stderr")]
    if not names:
        return _note("No lm-eval metrics recorded (eval.lm_eval.enabled is false, or no "
                     "trial was scored).")
    shown = names[:MAX_EVAL_BARS]
    note = _note(f"Showing {len(shown)} of {len(names)} task metrics.") \
        if len(names) > len(shown) else ""
    labels = [m.removeprefix("lm_eval/") for m in shown]
    return note + _eval_bars(data, shown, labels, "lm-eval per task (error bars: stderr)",
                             lambda n: f"{n}_stderr", figs)


def _mt_bench_section(data: SweepData, figs: Figures) -> str:
    """MT-Bench score, turns and categories: base model against the top trials."""
    counts = {f"mt_bench/{c}" for c in MT_BENCH_COUNTS}
    names = [m for m in data.metric_names if m.startswith("mt_bench/") and m not in counts]
    if not names:
        return _note("No MT-Bench metrics recorded (eval.mt_bench.enabled is false, or no "
                     "trial was judged).")
    head = [f"mt_bench/{k}" for k in ("score", "turn1", "turn2") if f"mt_bench/{k}" in names]
    order = (head + [m for m in names if m not in head])[:MAX_EVAL_BARS]
    labels = [m.removeprefix("mt_bench/") for m in order]
    runs = _eval_runs(data, order)
    count_rows = [[label, *[_plain(r.metrics.get(c)) for c in sorted(counts)]]
                  for label, r in runs]
    judged = _table(["run", *[c.removeprefix("mt_bench/") for c in sorted(counts)]],
                    count_rows, "compact") if count_rows else ""
    return (_eval_bars(data, order, labels, "MT-Bench per category (judge score 1-10)", None,
                       figs) + judged)


# -- the page --------------------------------------------------------------------------------
Section = Callable[[SweepData, Figures], str]

SECTIONS: list[tuple[str, str, Section]] = [
    ("summary", "At a glance", _summary),
    ("leaderboard", "Leaderboard", _leaderboard),
    ("trials", "Trials", _trials_table),
    ("best", "Best trial and its config", _best_section),
    ("replicates", "Replicates: spread across seeds and confidence intervals",
     _replicates_section),
    ("cost", "Quality against cost: memory and compute", _cost_section),
    ("pareto", "Pareto front of the objectives", _pareto_section),
    ("history", "Optimization history", _history_section),
    ("parallel", "Parallel coordinates", _parallel_section),
    ("importance", "Parameter importance", _importance_section),
    ("metrics", "Metrics against parameters", _scatter_section),
    ("loss", "Training loss curves (train and eval)", _loss_section),
    ("lm-eval", "lm-eval per task", _lm_eval_section),
    ("mt-bench", "MT-Bench per category", _mt_bench_section),
    ("resources", "Time and memory per trial", _resources_section),
    ("methods", "Per-method comparison", _methods_section),
    ("samples", "Sample generations", _samples_section),
    ("failures", "Failed, pruned and unfinished trials", _failures_section),
    ("config-diff", "Config difference between the top trials", _config_diff_section),
    ("environment", "Environment", _environment_section),
]

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 0 16px 40px; color: #222; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ccc; padding-top: 12px; }
nav a { margin-right: 10px; white-space: nowrap; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
table.sortable th { cursor: pointer; }
table.compact td { white-space: nowrap; }
.scroll { overflow: auto; max-height: 600px; }
.headline { background: #f6f8fa; border: 1px solid #ddd; padding: 4px 14px; margin: 8px 0; }
.big { font-size: 18px; }
.tag { background: #e4e9f0; padding: 0 6px; border-radius: 3px; }
.better { color: #11772d; font-weight: bold; } .worse { color: #b3261e; font-weight: bold; }
.same { color: #7a5b00; font-weight: bold; }
h3 { font-size: 15px; margin: 14px 0 4px; }
.note { color: #555; font-style: italic; }
.text { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px;
        max-height: 300px; overflow: auto; }
table.samples td { width: 25%; }
"""

SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0];
    var i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.dataset.dir !== "asc";
    th.dataset.dir = asc ? "asc" : "desc";
    function key(row) {
      var t = row.cells[i] ? row.cells[i].textContent.trim() : "";
      var n = Number(t.replace(/,/g, ""));
      return t === "" ? null : (isNaN(n) ? t.toLowerCase() : n);
    }
    var rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) { return (x === null) - (y === null); }
      if (typeof x !== typeof y) { x = String(x); y = String(y); }
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def render(data: SweepData) -> str:
    """The whole report page as one HTML string: summary, contents, then the sections."""
    figs = Figures()
    sections = [(sid, title, fn) for sid, title, fn in SECTIONS
                if sid != "pareto" or len(data.objectives) > 1]
    parts = [_section(sid, title, _body(fn, data, figs)) for sid, title, fn in sections]
    nav = " · ".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections[1:])
    title = f"Sweep {data.name}"
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f'<h1>{_e(title)}</h1><p class="note">{_e(data.sweep_dir.resolve())}</p>'
            f"{parts[0]}<nav>{nav}</nav>{''.join(parts[1:])}"
            f"<script>{SORT_JS}</script></body></html>\n")


def _body(fn: Section, data: SweepData, figs: Figures) -> str:
    """A section's HTML; a section that fails becomes a note, the rest of the report stays."""
    before = figs.count
    try:
        return fn(data, figs)
    except Exception as exc:  # noqa: BLE001 - one section must not sink the report
        log.exception("report section %s failed", fn.__name__)
        if before == 0:
            figs.count = 0      # plotly.js went out with the discarded part: embed it again
        return _note(f"This section could not be made: {type(exc).__name__}: {exc}")


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'


def write_report(sweep_dir: Path, out_path: Path, ci: CISettings | None = None) -> Path:
    """Write the sweep's report as one self-contained HTML file; returns its path."""
    data = load_sweep(Path(sweep_dir), ci)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    text = render(data)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out_path)
    return out_path


# -- exports ---------------------------------------------------------------------------------
def write_exports(sweep_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Trials as CSV and Parquet, and the best trial's config as YAML (when there is one).

    Returns {"csv": ..., "parquet": ..., "best_config": ...}; no best_config key when no trial
    has completed.
    """
    data = load_sweep(Path(sweep_dir))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = _arrow_safe(data.trials)
    paths = {"csv": out_dir / f"{data.name}_trials.csv",
             "parquet": out_dir / f"{data.name}_trials.parquet"}
    frame.to_csv(paths["csv"], index=False)
    frame.to_parquet(paths["parquet"], index=False)
    if data.best is not None:
        paths["best_config"] = out_dir / f"{data.name}_best_config.yaml"
        paths["best_config"].write_text(best_config_yaml(data, data.best))
    if data.replicates:
        paths["replicates"] = out_dir / f"{data.name}_replicates.csv"
        _arrow_safe(replicates_frame(data)).to_csv(paths["replicates"], index=False)
    return paths


def replicates_frame(data: SweepData) -> pd.DataFrame:
    """One row per run of a replicated configuration (the trial and its replicates)."""
    rows = []
    for group in data.groups.values():
        source = [group.trial] if group.trial is not None else []
        for record in source + sorted(group.replicates, key=lambda r: r.seed):
            row = {"number": group.number, "seed": record.seed, "status": record.status,
                   "replicate": record is not group.trial, "method": record.method}
            row.update({f"param:{k}": _plain(v) for k, v in group.params.items()})
            row.update({f"metric:{m}": _num(record.metrics.get(m)) for m in data.metric_names})
            rows.append(row)
    return pd.DataFrame(rows)


def _arrow_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns that mix value types become text (Parquet needs one type a column)."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype != object:
            continue
        kinds = {type(v) for v in frame[column] if not _missing(v)}
        if len(kinds) > 1:
            frame[column] = [None if _missing(v) else str(v) for v in frame[column]]
    return frame


def best_config_yaml(data: SweepData, best: TrialRecord) -> str:
    """The best trial: objectives, params, the overrides that reproduce it, its full config."""
    path = data.config_path(best.number)
    config = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else None
    if isinstance(config, dict):
        config.pop("trial", None)
    doc = {"sweep": data.name, "trial": best.number, "method": best.method,
           "objectives": {m: best.metrics.get(m) for m, _ in data.objectives},
           "params": dict(best.params), "overrides": _overrides(data, best.params),
           "config_path": str(path), "config": config}
    header = f"# Best trial of sweep {data.name} by {_objective_text(data)}\n"
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _overrides(data: SweepData, params: dict) -> list[str]:
    """Hydra overrides that reproduce the params (harness.space), else plain key=value."""
    from harness.space import parse_space, to_overrides

    try:
        return to_overrides(parse_space(data.cfg.sweep.get("params")), params)
    except Exception:  # noqa: BLE001 - a changed space still gets plain overrides
        return [f"{k}={v}" for k, v in params.items()]
