"""Launchers run one trial folder as an isolated job: a local process or a SLURM job.

A job writes `result.json` in its folder when it ends (see harness.trial). The driver only
needs to start jobs, ask whether they ended, and learn why one ended without a record.
`job.json` in the folder remembers the job so a restarted driver can pick it up again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from omegaconf import DictConfig

from harness.records import LOG_FILE

JOB_FILE = "job.json"


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

    def close(self) -> None: ...


def make_launcher(cfg: DictConfig) -> Launcher:
    """The launcher named by `launcher.name`."""
    name = cfg.launcher.name
    if name == "local":
        return LocalLauncher(cfg.launcher)
    if name == "slurm":
        from harness.slurm import SlurmLauncher

        return SlurmLauncher(cfg)
    from harness.config import ConfigError

    raise ConfigError(f"launcher.name must be local or slurm, got {name!r}")


def trial_threads(launcher: DictConfig) -> int:
    """Torch threads per trial: configured, or this machine's cores shared by parallel trials."""
    if launcher.get("torch_threads"):
        return int(launcher.torch_threads)
    return max(1, (os.cpu_count() or 1) // max(1, int(launcher.parallel)))


class LocalJob:
    """A trial running as a child process (or an orphan left by a killed driver)."""

    def __init__(self, trial_dir: Path, pid: int, process: subprocess.Popen | None,
                 timeout_s: float, started: float):
        self.trial_dir, self.pid, self.process = trial_dir, pid, process
        self.timeout_s, self.started = timeout_s, started
        self.timed_out = False

    def done(self) -> bool:
        if time.time() - self.started > self.timeout_s and self._alive():
            self.timed_out = True
            self.cancel()
        return not self._alive()

    def _alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _pid_runs_trial(self.pid, self.trial_dir)

    def failure_reason(self) -> str:
        if self.timed_out:
            return f"timed out after {self.timeout_s / 60:.0f} min (launcher.timeout_min)"
        code = self.process.returncode if self.process is not None else None
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if name == "SIGKILL" else ""
            return f"trial process killed by {name}{hint}"
        return f"trial process exited with code {code} without a result"

    def cancel(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process is not None:
            self.process.wait()


class LocalLauncher:
    """Runs each trial as `python -m harness.trial DIR` on this machine, output in trial.log.

    Written here rather than using submitit's LocalExecutor because a restarted driver must
    re-attach to trial processes the killed driver left running; submitit tracks local
    processes only in the memory of the process that started them.
    """

    def __init__(self, cfg: DictConfig):
        self.parallel = int(cfg.parallel)
        self.timeout_s = float(cfg.timeout_min) * 60

    def submit(self, trial_dir: Path) -> LocalJob:
        with (trial_dir / LOG_FILE).open("ab") as log_file:
            process = subprocess.Popen([sys.executable, "-m", "harness.trial", str(trial_dir)],
                                       stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        started = time.time()
        (trial_dir / JOB_FILE).write_text(json.dumps({"launcher": "local", "pid": process.pid,
                                                      "started": started}))
        return LocalJob(trial_dir, process.pid, process, self.timeout_s, started)

    def submit_many(self, trial_dirs: list[Path]) -> list[LocalJob]:
        return [self.submit(trial_dir) for trial_dir in trial_dirs]

    def reattach(self, trial_dir: Path) -> LocalJob | None:
        info = _read_job(trial_dir)
        if info.get("launcher") != "local" or not _pid_runs_trial(info["pid"], trial_dir):
            return None
        return LocalJob(trial_dir, info["pid"], None, self.timeout_s, info["started"])

    def close(self) -> None:
        return None


def _read_job(trial_dir: Path) -> dict:
    path = trial_dir / JOB_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _pid_runs_trial(pid: int, trial_dir: Path) -> bool:
    """True if `pid` is alive and is the trial process of this folder (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.split(") ")[-1].startswith("Z"):
        return False
    return str(trial_dir).encode() in cmdline
