"""The result record of one trial: plain data written as JSON next to the trial's outputs.

A trial process writes `result.json` in its folder; the sweep driver reads it, tells Optuna,
and adds the deltas against the base model; the report reads every record back.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path

RESULT_FILE = "result.json"
CONFIG_FILE = "config.yaml"
LOG_FILE = "trial.log"

COMPLETE = "COMPLETE"
FAILED = "FAILED"
PRUNED = "PRUNED"

TRACKED_PACKAGES = ("harness", "torch", "transformers", "peft", "trl", "bitsandbytes",
                    "accelerate", "datasets", "optuna", "hydra-core", "lm-eval", "rouge-score",
                    "submitit")


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
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    @classmethod
    def from_dict(cls, data: dict) -> TrialRecord:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        if data.get("error"):
            data["error"] = TrialError(**data["error"])
        return cls(**data)


def write_record(record: TrialRecord, trial_dir: Path) -> Path:
    """Write result.json atomically (a reader never sees half a record)."""
    path = Path(trial_dir) / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(record.to_json())
    os.replace(tmp, path)
    return path


def read_record(trial_dir: Path) -> TrialRecord | None:
    """The record in a trial folder, or None if the trial wrote none."""
    path = Path(trial_dir) / RESULT_FILE
    if not path.exists():
        return None
    return TrialRecord.from_dict(json.loads(path.read_text()))


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
