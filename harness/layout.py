"""The sweeps/ folder layout: every path of a sweep's outputs is built here, once.

    sweeps/<sweep>/sweep.yaml            the driver's resolved config
    sweeps/<sweep>/study.db | journal    Optuna storage (conf/storage/)
    sweeps/<sweep>/baseline/<digest>/    the base model's evaluation, keyed by baseline_digest
    sweeps/<sweep>/trials/<NNNN>/        config.yaml, trial.log, loss.jsonl, result.json, model/
    sweeps/<sweep>/stages/               chained-method stages, cached by config hash
    sweeps/<sweep>/replicates/<NNNN>-seed<S>/
    sweeps/<sweep>/merged/<NNNN>/
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

SWEEP_FILE = "sweep.yaml"
RESULT_FILE = "result.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = "trial.log"
JOB_FILE = "job.json"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
TRIALS_DIR = "trials"
BASELINE_DIR = "baseline"
STAGES_DIR = "stages"
REPLICATES_DIR = "replicates"
MERGED_DIR = "merged"


def sweep_dir(cfg: DictConfig) -> Path:
    """sweeps/<sweep.name>/ of a composed (paths resolved) config."""
    return Path(str(cfg.paths.sweeps)) / str(cfg.sweep.name)


def trial_dir(sweep: Path, number: int) -> Path:
    return Path(sweep) / TRIALS_DIR / f"{int(number):04d}"


def trial_dirs(sweep: Path) -> list[Path]:
    """Every trial folder of a sweep, in trial-number order."""
    root = Path(sweep) / TRIALS_DIR
    return sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []


def replicate_dir(sweep: Path, number: int, seed: int) -> Path:
    return Path(sweep) / REPLICATES_DIR / f"{int(number):04d}-seed{int(seed)}"


def merged_dir(sweep: Path, number: int) -> Path:
    return Path(sweep) / MERGED_DIR / f"{int(number):04d}"


def stages_dir(sweep: Path) -> Path:
    return Path(sweep) / STAGES_DIR


def baseline_digest(cfg: DictConfig) -> str:
    """Cache key of the base-model evaluation: the model, data and eval sections, resolved."""
    key = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data", "eval")}
    text = OmegaConf.to_yaml(OmegaConf.create(key), resolve=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def baseline_dir(sweep: Path, digest: str) -> Path:
    return Path(sweep) / BASELINE_DIR / digest


def find_baseline(sweep: Path, digest: str | None = None) -> Path | None:
    """The sweep's completed base-model folder: the one for `digest` first, else the newest
    completed one (a sweep whose eval settings changed since). None if there is none."""
    root = Path(sweep) / BASELINE_DIR
    candidates = [root / digest] if digest else []
    if root.is_dir():
        candidates += sorted(root.glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for folder in candidates:
        try:
            if json.loads((folder / RESULT_FILE).read_text()).get("status") == "COMPLETE":
                return folder
        except (OSError, ValueError):
            continue
    return None
