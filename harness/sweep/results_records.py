"""The records of a finished sweep folder, and the numbers of one record (part of
harness.sweep.results, which re-exports every public name here).

    read_trials(sweep_dir, study)    -> {number: folder}, one record per trial folder (a NO_RESULT
                                        placeholder, with a `note`, where result.json is missing)
    load_baseline(sweep_dir, cfg)    -> the base model's COMPLETE record (harness.layout lookup)
    load_study(cfg, sweep_dir, notes)-> the Optuna study, or None (why goes into `notes`)
    load_replicates(sweep_dir)       -> every replicate record under replicates/
    peak_memory_mb / compute_hours / trainable_pct / delta: one record's cost and gain
                                        (the deltas themselves: harness.records)
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from harness.layout import (
    CONFIG_FILE,
    LOG_FILE,
    REPLICATES_DIR,
    RESULT_FILE,
    TRIALS_DIR,
    baseline_digest,
    find_baseline,
    never_started,
)
from harness.records import (
    COMPLETE,
    TrialRecord,
    metric_delta,
    num,
    read_record,
    read_trial_config,
)
from harness.study import make_storage

NO_RESULT = "NO_RESULT"          # status of a trial folder without a readable result.json
STALE_ATTR = "retried_as_new_trial"   # user attr of a trial the driver gave up on and re-asked
BAD_RECORD = (OSError, ValueError, TypeError, KeyError, AttributeError)  # unreadable result.json


# -- trial folders -----------------------------------------------------------------------------
def trial_folders(sweep_dir: Path) -> dict[int, Path]:
    """{number: folder} of every numbered folder under trials/, in number order."""
    root = Path(sweep_dir) / TRIALS_DIR
    if not root.is_dir():
        return {}
    found = {int(p.name): p for p in root.iterdir() if p.is_dir() and p.name.isdigit()}
    return dict(sorted(found.items()))


def read_trials(sweep_dir: Path, study: optuna.Study | None
                ) -> tuple[dict[int, Path], list[TrialRecord]]:
    """The trial folders and one record per folder (the study says why one has none); a
    folder no job ever ran in (a driver killed while making it) is not a trial."""
    dirs = {n: p for n, p in trial_folders(sweep_dir).items() if not never_started(p)}
    known = {t.number: t for t in study.get_trials(deepcopy=False)} if study else {}
    return dirs, [read_trial(number, path, known.get(number)) for number, path in dirs.items()]


def read_trial(number: int, trial_dir: Path,
               trial: optuna.trial.FrozenTrial | None = None) -> TrialRecord:
    """The trial's record, or a NO_RESULT placeholder (params from config.yaml) if it has none."""
    try:
        record = read_record(trial_dir)
    except BAD_RECORD as exc:
        return placeholder(number, trial_dir, f"unreadable {RESULT_FILE}: {exc}")
    if record is None:
        return placeholder(number, trial_dir, missing_reason(trial))
    record.config_path = str(trial_dir / CONFIG_FILE)
    return record


def placeholder(number: int, trial_dir: Path, reason: str) -> TrialRecord:
    """A NO_RESULT record for a folder without a readable result.json; `note` says why."""
    method, params = "", {}
    with contextlib.suppress(Exception):
        cfg, spec = read_trial_config(trial_dir)
        method, params = str(cfg.method.name), dict(spec.params)
    return TrialRecord(number=number, status=NO_RESULT, method=method, params=params,
                       log_path=str(trial_dir / LOG_FILE),
                       config_path=str(trial_dir / CONFIG_FILE), note=reason)


def missing_reason(trial: optuna.trial.FrozenTrial | None) -> str:
    """Why a folder has no record, as far as the study knows."""
    if trial is None:
        return f"no {RESULT_FILE}: still running or lost"
    if trial.user_attrs.get(STALE_ATTR):
        lost = trial.user_attrs.get("error") or "lost when the sweep driver died"
        return f"{lost}; its parameters were asked again"   # (a pool worker's: WorkerLost)
    if trial.state == TrialState.RUNNING:
        return f"no {RESULT_FILE} yet: the study has it RUNNING"
    return f"no {RESULT_FILE}; the study has it {trial.state.name}"


def load_replicates(sweep_dir: Path) -> list[TrialRecord]:
    """Every replicate record under sweeps/<sweep>/replicates/ (unreadable ones skipped)."""
    root = Path(sweep_dir) / REPLICATES_DIR
    if not root.is_dir():
        return []
    records = []
    for path in sorted(root.glob(f"*/{RESULT_FILE}")):
        record = read_or_none(path.parent)
        if record is not None:
            record.config_path = str(path.parent / CONFIG_FILE)
            records.append(record)
    return records


def read_or_none(folder: Path) -> TrialRecord | None:
    """The folder's record; None when it has none or it cannot be read."""
    try:
        return read_record(folder)
    except BAD_RECORD:
        return None


# -- the base model ----------------------------------------------------------------------------
def sweep_digest(cfg: DictConfig) -> str | None:
    """The baseline digest of a sweep config with model, data and eval sections, else None."""
    if not all(cfg.get(key) is not None for key in ("model", "data", "eval")):
        return None
    try:
        return baseline_digest(cfg)
    except Exception:  # noqa: BLE001 - an unresolvable config still finds the newest baseline
        return None


def load_baseline(sweep_dir: Path, cfg: DictConfig) -> TrialRecord | None:
    """The base model's COMPLETE record: baseline/<digest of cfg>/, else the newest COMPLETE."""
    folder = find_baseline(Path(sweep_dir), sweep_digest(cfg))
    record = read_or_none(folder) if folder is not None else None
    return record if record is not None and record.status == COMPLETE else None


# -- the study ---------------------------------------------------------------------------------
def load_study(cfg: DictConfig, sweep_dir: Path, notes: list[str]) -> optuna.Study | None:
    """The sweep's Optuna study; None (and a note) when its storage is missing or broken."""
    storage = existing_storage(cfg.get("storage"), sweep_dir)
    if storage is None:
        notes.append("study storage not found: Optuna plots are rebuilt from the records")
        return None
    try:
        with quiet():
            return optuna.load_study(study_name=str(cfg.sweep.name),
                                     storage=make_storage(storage))
    except Exception as exc:  # noqa: BLE001 - a report must still come out
        notes.append(f"could not open the study ({type(exc).__name__}: {exc}); "
                     "Optuna plots are rebuilt from the records")
        return None


def existing_storage(storage: DictConfig | None, sweep_dir: Path) -> DictConfig | None:
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
def quiet() -> Iterator[None]:
    """Silence Optuna's logging and warnings (experimental, empty-study) for a moment."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(level)


# -- values ------------------------------------------------------------------------------------
def missing(value: object) -> bool:
    """None, NaN or pd.NA (a missing table cell)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def plain(value: object) -> object:
    """Scalars as they are; lists and dicts as text (a table cell holds one value)."""
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


# -- one record's gain over the base model -----------------------------------------------------
def delta(record: TrialRecord | None, baseline: TrialRecord | None,
          metric: str) -> tuple[float | None, float | None]:
    """The record's metric minus the base model's (absolute, and %)."""
    if record is None or baseline is None:
        return None, None
    return metric_delta(record.metrics.get(metric), baseline.metrics.get(metric))


# -- one record's cost -------------------------------------------------------------------------
def peak_memory_mb(record: TrialRecord) -> float | None:
    """GPU max allocated when the trial used a GPU, else the process's peak RSS."""
    return num(record.gpu_max_allocated_mb) or num(record.peak_rss_mb) or None


def compute_hours(record: TrialRecord) -> tuple[float | None, str | None]:
    """(hours, unit): GPU-h = wall time x GPUs; CPU-h = wall time x torch threads (core-hours).

    The device comes from record.device (harness.trial); without it a trial that reported GPU
    memory counts one GPU, any other one thread.
    """
    device = record.device if isinstance(record.device, dict) else {}
    seconds = num(record.wall_seconds) or ((num(record.train_seconds) or 0.0)
                                           + (num(record.eval_seconds) or 0.0))
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


def device_text(record: TrialRecord) -> str:
    """The GPU (name x count) or CPU a record was made on, as far as it says."""
    device = record.device
    if isinstance(device, dict) and device.get("type") == "cuda":
        return f"GPU: {device.get('name') or '?'} x {device.get('count') or 1}"
    if isinstance(device, dict) and device.get("type"):
        return (f"CPU: {device.get('name') or '?'}, {device.get('threads') or '?'} torch "
                "threads")
    if record.gpu_max_allocated_mb is not None:
        return "GPU (name not recorded)"
    return "CPU (device not recorded)"
