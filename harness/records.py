"""The typed hand-offs between stages: the trial spec (driver -> trial) and the result record
(trial -> driver -> report).

- `TrialSpec`: what the driver tells one trial process. Serialized as the `trial:` block of the
  trial's `config.yaml` (written only by `write_trial_config`, read only by `read_trial_config`),
  so a trial's folder alone says how to rerun it.
- `TrialRecord`: what a trial produced. A trial process writes `result.json` in its folder; the
  sweep driver reads it, tells Optuna and adds the deltas against the base model; the report
  reads every record back.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.layout import CONFIG_FILE, RESULT_FILE, rebase, rebase_config, recorded_sweep

try:    # a dependency (pyproject.toml); absent only on a machine that carries a few wheels
    import orjson
except ImportError:  # pragma: no cover - the standard parser reads the same records
    orjson = None

COMPLETE = "COMPLETE"
FAILED = "FAILED"
PRUNED = "PRUNED"

TRACKED_PACKAGES = ("harness", "torch", "transformers", "peft", "trl", "bitsandbytes",
                    "accelerate", "datasets", "optuna", "hydra-core", "lm-eval", "rouge-score",
                    "submitit")


PROMOTED = ("device", "train_steps", "resumed_from_step", "job_seconds", "cascade", "note")


@dataclass(frozen=True)
class TrialSpec:
    """The driver's instructions to one trial process (the `trial:` block of config.yaml).

    number: the Optuna trial number (-1 for the base model); trial_id / study_name: where the
    trial reports intermediate values for pruning (None: no pruning); params: the suggested
    values; seed: the trial's seed (`cfg.seed`, which the spec mirrors); baseline: evaluate the
    untrained base model; replicate_of: the trial a replicate reruns; dir: the trial folder;
    baseline_dir: the sweep's base-model folder (lm-eval's "identical to base" guard);
    stages_dir: where chained methods cache their SFT / reward stages; judge_url / judge_model:
    a judge server the driver runs for every trial (127.0.0.1, or the node:port of the SLURM
    judge job with eval.judge.serve.where=slurm; None: the trial's own `eval.judge`);
    threads: torch threads; git_commit: the harness checkout that ran the driver; prediction:
    the estimator's prediction for the trial (harness.estimate.predict), copied into the record;
    build_scorer: the base-model job builds the sweep's scoring reward model (some trial of the
    sweep computes preference metrics) and scores the base model with it.
    """

    number: int = 0
    params: dict = field(default_factory=dict)
    seed: int = 0
    baseline: bool = False
    replicate_of: int | None = None
    trial_id: int | None = None
    study_name: str | None = None
    dir: str = ""
    baseline_dir: str | None = None
    stages_dir: str | None = None
    judge_url: str | None = None
    judge_model: str | None = None
    threads: int | None = None
    git_commit: str | None = None
    prediction: dict | None = None   # harness.estimate's Prediction (peak_gb, parts_gb, ...)
    build_scorer: bool = False

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrialSpec:
        """The spec in a trial config (an absent or partial `trial:` block gives defaults)."""
        block = cfg.get("trial") if isinstance(cfg, DictConfig) else None
        raw = OmegaConf.to_container(block, resolve=True) if isinstance(block, DictConfig) \
            else dict(block or {})
        known = {f.name for f in fields(cls)}
        spec = cls(**{k: v for k, v in raw.items() if k in known})
        return replace(spec, seed=int(cfg.get("seed", spec.seed) or 0),
                       params=dict(spec.params or {}))

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def model_id(self) -> str:
        """FastChat model id of the run: 'base' or 'trial-NNNN'."""
        return "base" if self.baseline else f"trial-{self.number:04d}"


def write_trial_config(trial_dir: Path, cfg: DictConfig, spec: TrialSpec) -> Path:
    """Write the trial's fully resolved config.yaml: `cfg` with `seed` and `trial:` from the spec
    (the one place a trial config is written)."""
    out = cfg.copy()
    OmegaConf.set_struct(out, False)
    out.seed = spec.seed
    out.trial = spec.as_dict()
    path = Path(trial_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(out, resolve=True))
    return path


def read_trial_config(trial_dir: Path) -> tuple[DictConfig, TrialSpec]:
    """(config, spec) of a trial folder (the one place a trial config is read)."""
    cfg = OmegaConf.load(Path(trial_dir) / CONFIG_FILE)
    spec = TrialSpec.from_config(cfg)
    if moved(spec.dir, Path(trial_dir).resolve()):   # a moved sweep folder
        cfg = rebase_config(cfg, recorded_sweep(spec.dir), recorded_sweep(
            Path(trial_dir).resolve()))
        spec = TrialSpec.from_config(cfg)
    return cfg, spec


@dataclass
class TrialError:
    """Why a trial did not complete."""

    type: str
    message: str
    log: str = ""


@dataclass
class TrialRecord:
    """Everything one trial produced that a report or a later stage needs."""

    number: int
    status: str
    method: str
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    delta_vs_base: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    gpu_max_allocated_mb: float | None = None
    trainable_params: int = 0
    total_params: int = 0
    seed: int = 0
    loss_history: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    stages: list = field(default_factory=list)
    output_dir: str = ""
    log_path: str = ""
    config_path: str = ""
    job: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    git_commit: str | None = None
    error: TrialError | None = None
    # What the report and the cascade read (promoted from `extra`):
    device: dict = field(default_factory=dict)     # {"type": cuda|cpu, "name", "count"|"threads"}
    train_steps: int | None = None                 # optimizer steps of the trial's own training
    resumed_from_step: int = 0                     # checkpoint step a requeued trial resumed at
    train_tokens: int | None = None                # non-padding tokens trained on (SFT stages)
    job_seconds: float | None = None               # submission to end, as the driver saw it
    cascade: dict | None = None                    # {"judged", "reason", "deferred"} (eval.cascade)
    note: str | None = None                        # why a folder has no readable record (report)
    prediction: dict | None = None                 # predicted peak memory by part (estimate)
    preflight: str | None = None                   # why the pre-flight did not launch it
    # Whether the trained weights change the model (harness.trial.saved.adapter_effect):
    # {"check", "max_logit_diff", "lora_layers", "nonzero_lora_layers", "dead"}; dead: FAILED.
    adapter_effect: dict = field(default_factory=dict)
    # What was evaluated: the saved model reloaded, its dtypes as trained / saved / evaluated.
    artifact: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)      # stage-specific notes (files, warnings, ...)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    @classmethod
    def from_dict(cls, data: dict) -> TrialRecord:
        known = {f.name for f in fields(cls)}
        extra = dict(data.get("extra") or {})
        for key in PROMOTED:   # records written before these keys became fields
            if key in extra and data.get(key) in (None, {}, 0):
                data = {**data, key: extra.pop(key)}
        data = {**{k: v for k, v in data.items() if k in known}, "extra": extra}
        if data.get("error"):
            data["error"] = TrialError(**data["error"])
        return cls(**data)


# -- deltas against the base model: the one computation (driver, re-scoring, report) ---------
def num(value: object) -> float | None:
    """A finite float, or None (for strings, bools, None, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def metric_delta(value: object, base: object) -> tuple[float | None, float | None]:
    """value minus base (absolute, and % of the base value); None where either is no number.
    The one place a delta against the base model is computed."""
    value, base = num(value), num(base)
    if value is None or base is None:
        return None, None
    difference = value - base
    return difference, (100.0 * difference / abs(base) if base else None)


def deltas(metrics: Mapping, baseline: TrialRecord | Mapping | None) -> dict[str, float]:
    """Metric minus base-model metric, for every metric both have as a number (a record's
    `delta_vs_base`); `baseline` is the base record or its metrics."""
    if baseline is None:
        return {}
    base = baseline.metrics if isinstance(baseline, TrialRecord) else baseline
    out = {}
    for key, value in metrics.items():
        if key in base and (difference := metric_delta(value, base[key])[0]) is not None:
            out[key] = difference
    return out


def moved(written_in: str | Path | None, here: Path) -> bool:
    """Whether a sweep's trial (baseline, replicate) folder recorded as `written_in` is now read
    at another place `here` (both two levels below their sweep folder)."""
    return bool(written_in) and Path(written_in) != here and len(Path(written_in).parents) > 2 \
        and len(here.parents) > 2


def write_record(record: TrialRecord, trial_dir: Path) -> Path:
    """Write result.json atomically (a reader never sees half a record)."""
    path = Path(trial_dir) / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(record.to_json())
    os.replace(tmp, path)
    return path


def loads(text: bytes | str) -> dict:
    """A JSON document: orjson (2.5x faster on records with long loss histories; a 5,000-trial
    report reads them all), else the standard parser for what orjson refuses and json.dumps
    writes (NaN, Infinity, integers past 64 bits)."""
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def read_record(trial_dir: Path) -> TrialRecord | None:
    """The record in a trial folder, or None if the trial wrote none."""
    path = Path(trial_dir) / RESULT_FILE
    if not path.exists():
        return None
    data = loads(path.read_bytes())
    written_in = Path(str(data.get("config_path") or "")).parent
    here = Path(trial_dir)
    if written_in != here:      # read where it was written: no resolve() syscalls needed
        here = here.resolve()
    if data.get("config_path") and moved(written_in, here):   # a moved sweep folder
        data = rebase(data, recorded_sweep(written_in), recorded_sweep(here))
    return TrialRecord.from_dict(data)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a result."""
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(cwd: Path | None = None) -> str | None:
    """The harness checkout's commit (with '-dirty' if it has local changes), if any."""
    repo = cwd or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty.strip() else commit
