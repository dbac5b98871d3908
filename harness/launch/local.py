"""The `launcher=local` launcher: each trial a child process of the driver, on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from harness.launch.base import read_job_file, write_job_file
from harness.launch.devices import DevicePool, device_plan
from harness.launch.torchrun import data_parallel, torchrun_command
from harness.layout import LOG_FILE
from harness.progress import QUIET_BARS
from harness.records import read_trial_config
from harness.tasks import log_path as task_log

TASK_MODULE = "harness.launch.task_main"   # runs a registry.TASKS entry by name


class LocalJob:
    """A trial running as a child process (or an orphan left by a killed driver)."""

    def __init__(self, trial_dir: Path, pid: int, process: subprocess.Popen | None,
                 timeout_s: float, started: float,
                 on_end: Callable[[], None] | None = None):
        self.trial_dir, self.pid, self.process = trial_dir, pid, process
        self.timeout_s, self.started = timeout_s, started
        self.timed_out = False
        self._on_end = on_end   # gives the trial's GPUs back, once, however the trial ended

    def done(self) -> bool:
        if time.time() - self.started > self.timeout_s and self._alive():
            self.timed_out = True
            self.cancel()
        if self._alive():
            return False
        self._ended()
        return True

    def _ended(self) -> None:
        if self._on_end is not None:
            self._on_end, on_end = None, self._on_end
            on_end()

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
            if os.getpgid(self.pid) == self.pid:   # torchrun: its ranks go with it
                os.killpg(self.pid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process is not None:
            self.process.wait()
        if not self._alive():
            self._ended()


class LocalLauncher:
    """Runs each trial as `python -m harness.trial DIR` on this machine, output in trial.log.

    Written here rather than using submitit's LocalExecutor because a restarted driver must
    re-attach to trial processes the killed driver left running; submitit tracks local
    processes only in the memory of the process that started them.
    """

    def __init__(self, cfg: DictConfig):
        self.plan = device_plan(cfg.launcher)   # ConfigError before anything is written
        self.parallel = self.plan.parallel
        self.pool = DevicePool(self.plan)
        self.timeout_s = float(cfg.launcher.timeout_min) * 60

    def command(self, trial_dir: Path) -> list[str]:
        """The trial process's command line: an SFT trial given several GPUs
        (`gpus_per_trial` > 1) runs under torchrun, one rank per GPU (DDP, or FSDP with
        method.train.fsdp); every other trial as one process."""
        nproc = self.plan.per_trial
        if nproc > 1 and data_parallel(*read_trial_config(trial_dir), nproc):
            return torchrun_command(trial_dir, nproc)
        return [sys.executable, "-m", "harness.trial", str(trial_dir)]

    def submit(self, trial_dir: Path) -> LocalJob:
        command = self.command(trial_dir)
        job, devices = self._spawn(trial_dir, command, trial_dir / LOG_FILE,
                                   group="torch.distributed.run" in command)
        write_job_file(trial_dir, {"launcher": "local", "pid": job.pid, "started": job.started,
                                   "devices": list(devices)})
        return job

    def submit_task(self, kind: str, folder: Path) -> LocalJob:
        """A task (registry.TASKS, e.g. re-scoring) on a finished folder: a child process with
        GPUs of its own from the pool, output in `<kind>.log` (harness.tasks)."""
        return self._spawn(folder, [sys.executable, "-m", TASK_MODULE, kind, str(folder)],
                           task_log(folder, kind))[0]

    def _spawn(self, folder: Path, command: list[str], log_path: Path,
               group: bool = False) -> tuple[LocalJob, tuple[str, ...]]:
        """`group`: in a process group of its own (torchrun and its ranks, killed together)."""
        devices = self.pool.acquire()
        env = {**QUIET_BARS, **os.environ, **self.plan.environment(devices)}
        try:
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, env=env,
                                           start_new_session=group)
        except BaseException:
            self.pool.release(devices)
            raise
        return LocalJob(folder, process.pid, process, self.timeout_s, time.time(),
                        on_end=lambda: self.pool.release(devices)), devices

    def submit_many(self, trial_dirs: list[Path]) -> list[LocalJob]:
        return [self.submit(trial_dir) for trial_dir in trial_dirs]

    def reattach(self, trial_dir: Path) -> LocalJob | None:
        info = read_job_file(trial_dir)
        if info.get("launcher") != "local" or not _pid_runs_trial(info["pid"], trial_dir):
            return None
        devices = tuple(str(d) for d in info.get("devices") or ())
        self.pool.reserve(devices)
        return LocalJob(trial_dir, info["pid"], None, self.timeout_s, info["started"],
                        on_end=lambda: self.pool.release(devices))

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
