"""Launchers run one trial folder as an isolated job: a local process or a SLURM job.

A job writes `result.json` in its folder when it ends (see harness.trial.run). The driver only
needs to start jobs, ask whether they ended, and learn why one ended without a record.
`job.json` in the folder remembers the job so a restarted driver can pick it up again.

Backends (harness.launch.local, harness.launch.slurm) build on this module, never the reverse;
`launcher.name` picks one through harness.registry.LAUNCHERS.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Protocol

from omegaconf import DictConfig

from harness.launch.devices import device_plan
from harness.layout import JOB_FILE
from harness.registry import LAUNCHERS


class Job(Protocol):
    """A running or finished trial job."""

    trial_dir: Path
    started: float  # time.time() when the job was submitted

    def done(self) -> bool: ...

    def failure_reason(self) -> str: ...

    def cancel(self) -> None: ...


class Launcher(Protocol):
    """Starts trial jobs and re-attaches to jobs a previous driver started."""

    parallel: int

    def submit(self, trial_dir: Path) -> Job: ...

    def submit_many(self, trial_dirs: list[Path]) -> list[Job]: ...

    def reattach(self, trial_dir: Path) -> Job | None: ...

    def submit_task(self, kind: str, folder: Path) -> Job:
        """A registry.TASKS job on a finished folder (re-scoring), where trials run."""
        ...

    def close(self) -> None: ...


def wait_for_jobs(launcher: object, seconds: float) -> None:
    """Wait up to `seconds` for a job to end: the launcher's own `wait` where it has one (the
    local launcher's warm worker says at once when a trial ends), else a plain sleep (SLURM:
    the queue is polled)."""
    wait = getattr(launcher, "wait", None)
    if wait is None:
        time.sleep(seconds)
    else:
        wait(seconds)


def make_launcher(cfg: DictConfig) -> Launcher:
    """The launcher named by `launcher.name` (ConfigError if unknown), built from the config."""
    return LAUNCHERS.load(str(cfg.launcher.name))(cfg)


def trial_threads(launcher: DictConfig) -> int:
    """Torch threads per trial: configured, or this machine's cores shared by parallel trials."""
    if launcher.get("torch_threads"):
        return int(launcher.torch_threads)
    parallel = launcher.get("parallel")
    if parallel is None:   # local: as many trials as the GPUs allow (launch.devices)
        parallel = device_plan(launcher).parallel
    return max(1, (os.cpu_count() or 1) // max(1, int(parallel)))


def read_job_file(trial_dir: Path) -> dict:
    """The job a launcher recorded in `trial_dir/job.json` ({} if none)."""
    path = Path(trial_dir) / JOB_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_job_file(trial_dir: Path, info: dict) -> None:
    """Record the trial's job in `trial_dir/job.json` (atomically: a reader never sees half)."""
    tmp = Path(trial_dir) / f"{JOB_FILE}.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, Path(trial_dir) / JOB_FILE)
