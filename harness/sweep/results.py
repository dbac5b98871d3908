"""The one reader of a finished sweep: its config, study, base model, records and replicates.

    load_sweep(sweep_dir)   -> SweepData: records ranked by the first objective (`ranked`,
                               `best`), the Pareto front, replicate groups, the trials table
    best_config_yaml(data, record)   the best trial's params, overrides and config as YAML
    records_study(data)              an in-memory Optuna study rebuilt from the records

The report (harness.report), replicate, merge and compare read sweeps only through here. The
record-level pieces (placeholders, baseline lookup, study storage, cost, deltas) live in
harness.sweep.results_records and are re-exported.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import yaml
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from harness.data.card import DataCard, read_card
from harness.layout import (
    CONFIG_FILE,
    HUMAN_KEY_FILE,
    HUMAN_RATINGS_DIR,
    SWEEP_FILE,
    data_dir,
    human_eval_dir,
    read_sweep_config,
    trial_dir,
)
from harness.records import COMPLETE, PRUNED, TrialRecord, deltas, metric_delta, num
from harness.stats import CISettings
from harness.sweep.results_records import (
    BAD_RECORD,
    NO_RESULT,
    STALE_ATTR,
    compute_hours,
    delta,
    device_text,
    existing_storage,
    load_baseline,
    load_replicates,
    load_study,
    missing,
    missing_reason,
    peak_memory_mb,
    placeholder,
    plain,
    quiet,
    read_or_none,
    read_trial,
    read_trials,
    sweep_digest,
    trainable_pct,
    trial_folders,
)
from harness.sweep.space import parse_space, to_overrides

__all__ = [
    "BAD_RECORD", "NO_RESULT", "STALE_ATTR", "SWEEP_FILE", "Group", "SweepData",
    "best_config_yaml", "compute_hours", "delta", "deltas", "device_text", "existing_storage",
    "front_2d", "is_dead", "load_baseline", "load_replicates", "load_study", "load_sweep",
    "metric_delta",
    "missing", "missing_reason", "num", "objective_text", "overrides", "pareto_front",
    "peak_memory_mb", "placeholder", "plain", "quiet", "rank_records", "read_or_none",
    "read_human_eval", "read_trial", "read_trials", "records_study", "sweep_digest",
    "trainable_pct", "trial_folders",
    "trials_frame",
]

TIME_COLUMNS = ("train_seconds", "eval_seconds", "wall_seconds")
MEMORY_COLUMNS = ("peak_rss_mb", "gpu_max_allocated_mb")
COST_COLUMNS = ("peak_memory_mb", "compute_hours", "compute_unit", "trainable_pct")


@dataclass
class SweepData:
    """Everything recorded about one sweep folder."""

    sweep_dir: Path
    cfg: DictConfig
    study: optuna.Study | None
    baseline: TrialRecord | None
    records: list[TrialRecord]          # one per trial folder; NO_RESULT placeholders included
    trials: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: list[str] = field(default_factory=list)
    dirs: dict[int, Path] = field(default_factory=dict)
    replicates: list[TrialRecord] = field(default_factory=list)  # harness.sweep.replicate runs
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
        return rank_records(self.records, *self.objectives[0])

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
                if any(num(r.metrics.get(m)) is not None for r in done)]

    @cached_property
    def pareto(self) -> list[TrialRecord]:
        return pareto_front(self)

    @cached_property
    def front_numbers(self) -> set[int]:
        return {r.number for r in self.pareto}

    @cached_property
    def data_card(self) -> DataCard | None:
        """The sweep's data card (sweeps/<sweep>/data/card.json), None when there is none."""
        return read_card(data_dir(self.sweep_dir))

    @cached_property
    def plot_study(self) -> optuna.Study:
        """The study for Optuna's plots: the stored one, else one rebuilt from the records."""
        return self.study if self.study is not None else records_study(self)

    def config_path(self, number: int) -> Path:
        return self.dirs.get(number, trial_dir(self.sweep_dir, number)) / CONFIG_FILE

    def base_value(self, metric: str) -> float | None:
        """The base model's value of the metric, if it is a number."""
        return num(self.baseline.metrics.get(metric)) if self.baseline else None

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
        found = [num(r.metrics.get(metric)) for r in self.runs]
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
    cfg = read_sweep_config(sweep_dir)   # paths resolved against where the folder is now
    notes: list[str] = []
    study = load_study(cfg, sweep_dir, notes)
    dirs, records = read_trials(sweep_dir, study)
    data = SweepData(sweep_dir, cfg, study, load_baseline(sweep_dir, cfg), records, notes=notes,
                     dirs=dirs, replicates=load_replicates(sweep_dir),
                     ci=ci or CISettings.from_config((cfg.get("replicate") or {}).get("ci")))
    if not data.objectives:
        notes.append("sweep.objectives is empty: no best trial can be chosen")
    if data.baseline is None:
        notes.append("no COMPLETE base-model record under baseline/: no deltas vs base")
    if dead := [r.number for r in records if is_dead(r)]:
        notes.append(f"{len(dead)} trial(s) with a dead adapter (no effect on the model they "
                     f"started from: {', '.join(f'#{n}' for n in dead)}): marked FAILED, "
                     "kept out of the leaderboard and the best trial")
    data.trials = trials_frame(data)
    return data


# -- ranking and fronts ------------------------------------------------------------------------
def is_dead(record: TrialRecord) -> bool:
    """A trial whose trained weights do not change its model (record.adapter_effect)."""
    return bool((record.adapter_effect or {}).get("dead"))


def rank_records(records: list[TrialRecord], metric: str, direction: str) -> list[TrialRecord]:
    """COMPLETE records with a finite `metric`, best first (ties: lower trial number)."""
    sign = -1.0 if direction == "maximize" else 1.0
    done = [r for r in records if r.status == COMPLETE and num(r.metrics.get(metric)) is not None
            and not is_dead(r)]
    return sorted(done, key=lambda r: (sign * num(r.metrics[metric]), r.number))


def pareto_front(data: SweepData) -> list[TrialRecord]:
    """COMPLETE trials no other trial beats on every objective (from the records)."""
    signs = [-1.0 if d == "maximize" else 1.0 for _, d in data.objectives]
    points = []
    for record in data.records:
        values = [num(record.metrics.get(m)) for m, _ in data.objectives]
        if record.status == COMPLETE and values and None not in values and not is_dead(record):
            points.append((record, [s * v for s, v in zip(signs, values, strict=True)]))

    def dominated(p: list[float]) -> bool:
        return any(all(a <= b for a, b in zip(q, p, strict=True)) and q != p
                   for _, q in points)

    return sorted((r for r, p in points if not dominated(p)), key=lambda r: r.number)


def front_2d(points: list[tuple[float, float, object]], sign: float) -> list:
    """Items no other point beats on both cost x (lower is better) and quality sign*y (lower
    is better), in order of cost."""
    out, best = [], float("inf")
    for _x, y, item in sorted(points, key=lambda p: (p[0], sign * p[1])):
        if sign * y < best:
            out.append(item)
            best = sign * y
    return out


def objective_text(data: SweepData) -> str:
    return ", ".join(f"{m} ({d})" for m, d in data.objectives) or "none"


# -- the trials table --------------------------------------------------------------------------
def trials_frame(data: SweepData) -> pd.DataFrame:
    """One row per trial: status, params, metrics, deltas vs base, times, memory, error."""
    ranks = {r.number: i + 1 for i, r in enumerate(data.ranked)}
    rows = [_trial_row(r, data, ranks.get(r.number)) for r in data.records]
    frame = pd.DataFrame(rows, columns=_frame_columns(data))
    frame["rank"] = frame["rank"].astype("Int64")
    return frame


def _frame_columns(data: SweepData) -> list[str]:
    delta_metrics = [m for m in data.numeric_metrics if data.base_value(m) is not None]
    front = ["pareto"] if len(data.objectives) > 1 else []
    return (["number", "status", "rank", *front, "method"]
            + [f"param:{p}" for p in data.param_names]
            + [f"metric:{m}" for m in data.metric_names]
            + [f"delta:{m}" for m in delta_metrics] + [f"delta_pct:{m}" for m in delta_metrics]
            + [*TIME_COLUMNS, *MEMORY_COLUMNS, *COST_COLUMNS, "trainable_params",
               "total_params", "error_type", "error_message", "note", "config_path"])


def _trial_row(record: TrialRecord, data: SweepData, rank: int | None) -> dict:
    row = {"number": record.number, "status": record.status, "rank": rank,
           "method": record.method}
    if len(data.objectives) > 1:
        row["pareto"] = record.number in data.front_numbers
    row.update({f"param:{p}": plain(record.params.get(p)) for p in data.param_names})
    for metric in data.metric_names:
        value = record.metrics.get(metric)
        row[f"metric:{metric}"] = num(value) if num(value) is not None else plain(value)
        row[f"delta:{metric}"], row[f"delta_pct:{metric}"] = delta(record, data.baseline, metric)
    ran = record.status != NO_RESULT
    row.update({c: num(getattr(record, c)) if ran else None
                for c in (*TIME_COLUMNS, *MEMORY_COLUMNS)})
    hours, unit = compute_hours(record) if ran else (None, None)
    row.update(peak_memory_mb=peak_memory_mb(record) if ran else None, compute_hours=hours,
               compute_unit=unit, trainable_pct=trainable_pct(record) if ran else None)
    row.update(trainable_params=record.trainable_params if ran else None,
               total_params=record.total_params if ran else None,
               error_type=record.error.type if record.error else None,
               error_message=record.error.message if record.error else None,
               note=record.note if record.status == NO_RESULT else None,
               config_path=record.config_path or None)
    return row


# -- a study rebuilt from the records ----------------------------------------------------------
def records_study(data: SweepData) -> optuna.Study:
    """An in-memory study with the records' trials under their own numbers (gaps: FAIL)."""
    directions = [d for _, d in data.objectives] or ["minimize"]
    study = optuna.create_study(study_name=data.name, directions=directions)
    dists = _distributions(data)
    by_number = {r.number: r for r in data.records}
    last = max(by_number, default=-1)
    with quiet():
        for number in range(last + 1):
            study.add_trial(_frozen(by_number.get(number), data, dists))
    return study


def _frozen(record: TrialRecord | None, data: SweepData,
            dists: dict[str, BaseDistribution]) -> optuna.trial.FrozenTrial:
    if record is None or record.status not in (COMPLETE, PRUNED):
        return optuna.trial.create_trial(state=TrialState.FAIL)
    params = {k: v for k, v in record.params.items() if k in dists and v is not None}
    used = {k: dists[k] for k in params}
    values = [num(record.metrics.get(m)) for m, _ in data.objectives]
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
    if all(num(v) is not None and not isinstance(v, bool) for v in seen):
        return FloatDistribution(float(min(seen)), float(max(seen)))
    choices = list(dict.fromkeys(v if isinstance(v, bool | int | float | str) else str(v)
                                 for v in seen))
    return CategoricalDistribution(choices)


def _contains(dist: BaseDistribution, value: object) -> bool:
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


# -- the best configuration --------------------------------------------------------------------
def best_config_yaml(data: SweepData, best: TrialRecord) -> str:
    """The best trial: objectives, params, the overrides that reproduce it, its full config."""
    path = data.config_path(best.number)
    config = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else None
    if isinstance(config, dict):
        config.pop("trial", None)
    doc = {"sweep": data.name, "trial": best.number, "method": best.method,
           "objectives": {m: best.metrics.get(m) for m, _ in data.objectives},
           "params": dict(best.params), "overrides": overrides(data, best.params),
           "config_path": str(path), "config": config}
    header = f"# Best trial of sweep {data.name} by {objective_text(data)}\n"
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def overrides(data: SweepData, params: dict) -> list[str]:
    """Hydra overrides that reproduce the params (harness.sweep.space), else plain key=value."""
    try:
        return to_overrides(parse_space(data.cfg.sweep.get("params")), params)
    except Exception:  # noqa: BLE001 - a changed space still gets plain overrides
        return [f"{k}={v}" for k, v in params.items()]


# -- human ratings (action=human_eval) ---------------------------------------------------------
def read_human_eval(sweep_dir: Path) -> tuple[dict, list[dict]]:
    """The blinding key ({"items": {item: {label: system}}, ...}) and every imported rating row
    (CSV dicts, with the file name as `sheet`); ({}, []) when no sheet was written."""
    folder = human_eval_dir(Path(sweep_dir))
    try:
        key = json.loads((folder / HUMAN_KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, []
    rows = []
    for path in sorted((folder / HUMAN_RATINGS_DIR).glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            rows += [{**row, "sheet": path.name} for row in csv.DictReader(handle)]
    return key, rows


# -- memory estimate against the measured peak (harness.estimate; the report's memory section) ---
def memory_points(data: SweepData) -> list[tuple[TrialRecord, float, float, str]]:
    """(record, predicted GiB allocated, measured GiB, what was measured) of every trial that
    ran with a prediction: GPU max allocated on a GPU, else the process's peak RSS."""
    points = []
    for record in data.records:
        predicted = num((record.prediction or {}).get("allocated_gb"))
        gpu, rss = num(record.gpu_max_allocated_mb), num(record.peak_rss_mb)
        if predicted is not None and (gpu or rss) and not record.preflight:
            points.append((record, predicted, (gpu or rss) / 1024,
                           "GPU max allocated" if gpu else "peak RSS (includes the process)"))
    return points


def preflight_refused(data: SweepData) -> list[TrialRecord]:
    """Trials the driver's pre-flight did not launch (predicted not to fit the GPU)."""
    return [r for r in data.records if r.preflight]
