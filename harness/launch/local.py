"""The `launcher=local` launcher: each trial a child process of the driver, on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from harness.launch.base import read_job_file, write_job_file
from harness.layout import LOG_FILE


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
        self.parallel = int(cfg.launcher.parallel)
        self.timeout_s = float(cfg.launcher.timeout_min) * 60

    def submit(self, trial_dir: Path) -> LocalJob:
        with (trial_dir / LOG_FILE).open("ab") as log_file:
            process = subprocess.Popen([sys.executable, "-m", "harness.trial", str(trial_dir)],
                                       stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        started = time.time()
        write_job_file(trial_dir, {"launcher": "local", "pid": process.pid, "started": started})
        return LocalJob(trial_dir, process.pid, process, self.timeout_s, started)

    def submit_many(self, trial_dirs: list[Path]) -> list[LocalJob]:
        return [self.submit(trial_dir) for trial_dir in trial_dirs]

    def reattach(self, trial_dir: Path) -> LocalJob | None:
        info = read_job_file(trial_dir)
        if info.get("launcher") != "local" or not _pid_runs_trial(info["pid"], trial_dir):
            return None
        return LocalJob(trial_dir, info["pid"], None, self.timeout_s, info["started"])

    def close(self) -> None:
        return None


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
