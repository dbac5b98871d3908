"""The sweeps/ folder layout: every path of a sweep's outputs is built here, once.

    sweeps/<sweep>/sweep.yaml            the driver's resolved config
    sweeps/<sweep>/study.db | journal    Optuna storage (conf/storage/)
    sweeps/<sweep>/baseline/<digest>/    the base model's evaluation, keyed by baseline_digest
    sweeps/<sweep>/trials/<NNNN>/        config.yaml, trial.log, loss.jsonl, result.json, model/
    sweeps/<sweep>/stages/               chained-method stages, cached by config hash
    sweeps/<sweep>/replicates/<NNNN>-seed<S>/
    sweeps/<sweep>/merged/<NNNN>/
    sweeps/<sweep>/data/                 the data card (card.json, card.txt) of its prepared data
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
HUMAN_EVAL_DIR = "human_eval"
HUMAN_KEY_FILE = "key.json"       # which blinded label is which system (never shown to raters)
HUMAN_RATINGS_DIR = "ratings"     # imported rating sheets (CSV)
DATA_DIR = "data"


def sweep_dir(cfg: DictConfig) -> Path:
    """sweeps/<sweep.name>/ of a composed (paths resolved) config."""
    return Path(str(cfg.paths.sweeps)) / str(cfg.sweep.name)


def recorded_sweep(folder: str | Path) -> Path:
    """The sweep folder of a trial, baseline, replicate or merged folder (two levels up)."""
    return Path(folder).parents[1]


def rebase(value: object, old: str | Path, new: str | Path) -> object:
    """`value` (plain dicts, lists, strings) with every path under folder `old` moved under
    `new`: what a sweep folder copied elsewhere (cp -r) means by the paths it recorded."""
    old, new = str(old), str(new)
    if isinstance(value, str):
        return new if value == old else value.replace(old + "/", new + "/")
    if isinstance(value, dict):
        return {k: rebase(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [rebase(v, old, new) for v in value]
    return value


def rebase_config(cfg: DictConfig, old: Path, new: Path) -> DictConfig:
    """A resolved config written in sweep folder `old`, read in `new` (a moved copy):
    paths under the sweep folder, and paths.sweeps, point into the copy."""
    if Path(old) == Path(new):
        return cfg
    plain = rebase(OmegaConf.to_container(cfg, resolve=False), old, new)
    paths = plain.get("paths") if isinstance(plain, dict) else None
    if isinstance(paths, dict) and paths.get("sweeps") == str(Path(old).parent):
        paths["sweeps"] = str(Path(new).parent)
    return OmegaConf.create(plain)


def read_sweep_config(sweep: Path) -> DictConfig:
    """sweep.yaml of a sweep folder, its paths resolved against where the folder is now."""
    sweep = Path(sweep)
    cfg = OmegaConf.load(sweep / SWEEP_FILE)
    paths, name = cfg.get("paths") or {}, (cfg.get("sweep") or {}).get("name")
    if not paths.get("sweeps") or not name:
        return cfg
    return rebase_config(cfg, Path(str(paths.sweeps)) / str(name), sweep.resolve())


def trial_dir(sweep: Path, number: int) -> Path:
    return Path(sweep) / TRIALS_DIR / f"{int(number):04d}"


def trial_dirs(sweep: Path) -> list[Path]:
    """Every trial folder of a sweep, in trial-number order."""
    root = Path(sweep) / TRIALS_DIR
    return sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []


def never_started(folder: Path) -> bool:
    """A trial folder the driver made but no job ever ran in (empty, or only config.yaml:
    a driver killed between creating it and submitting it)."""
    folder = Path(folder)
    return folder.is_dir() and {p.name for p in folder.iterdir()} <= {CONFIG_FILE}


def replicate_dir(sweep: Path, number: int, seed: int) -> Path:
    return Path(sweep) / REPLICATES_DIR / f"{int(number):04d}-seed{int(seed)}"


def merged_dir(sweep: Path, number: int) -> Path:
    return Path(sweep) / MERGED_DIR / f"{int(number):04d}"


def stages_dir(sweep: Path) -> Path:
    return Path(sweep) / STAGES_DIR


def human_eval_dir(sweep: Path) -> Path:
    """sweeps/<sweep>/human_eval/: the blinding key and the imported ratings."""
    return Path(sweep) / HUMAN_EVAL_DIR


def data_dir(sweep: Path) -> Path:
    """sweeps/<sweep>/data/: the data card of the sweep's prepared training data."""
    return Path(sweep) / DATA_DIR


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
