"""The `launcher=local` launcher: each trial a process of its own, on this machine.

`launcher.processes=warm` (the default): trials and tasks are forked from one warm worker that
imported the training stack once (harness.launch.warm); it reports each child's end at once,
so the driver waits on that instead of sleeping `poll_seconds`. `cold`, and every torchrun
trial (gpus_per_trial > 1): `python -m harness.trial DIR`, a fresh interpreter per trial.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.config.validate import LOCAL_PROCESSES
from harness.errors import ConfigError
from harness.launch.base import read_job_file, write_job_file
from harness.launch.devices import DevicePool, device_plan
from harness.launch.torchrun import data_parallel, torchrun_command
from harness.launch.warm import start_ticks
from harness.launch.warm_client import WarmProcess, WarmWorker, WorkerGone
from harness.layout import LOG_FILE, sweep_dir
from harness.progress import QUIET_BARS
from harness.records import read_trial_config
from harness.tasks import log_path as task_log

log = logging.getLogger(__name__)

TASK_MODULE = "harness.launch.task_main"   # runs a registry.TASKS entry by name
WORKER_LOG = "warm_worker.log"   # the warm worker's own log, in the sweep folder
WORKER_STARTS = 3   # a worker that died is replaced this often, then trials run cold


class LocalJob:
    """A trial running as a child process (or an orphan left by a killed driver)."""

    def __init__(self, trial_dir: Path, pid: int,
                 process: subprocess.Popen | WarmProcess | None, timeout_s: float,
                 started: float, on_end: Callable[[], None] | None = None,
                 ticks: int | None = None):
        """`ticks`: the start time of a re-attached warm child (harness.launch.warm
        start_ticks), which identifies it where its command line (the worker's) cannot."""
        self.trial_dir, self.pid, self.process = trial_dir, pid, process
        self.timeout_s, self.started, self.ticks = timeout_s, started, ticks
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
        if isinstance(self.process, WarmProcess):
            return self.process.running()
        if self.process is not None:
            return self.process.poll() is None
        if self.ticks is not None:
            return start_ticks(self.pid) == self.ticks
        return _pid_runs_trial(self.pid, self.trial_dir)

    def failure_reason(self) -> str:
        if self.timed_out:
            return f"timed out after {self.timeout_s / 60:.0f} min (launcher.timeout_min)"
        code = self.process.returncode if self.process is not None else None
        if isinstance(self.process, WarmProcess) and self.process.lost:
            return self.process.lost
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory?)" if name == "SIGKILL" else ""
            return f"trial process killed by {name}{hint}"
        return f"trial process exited with code {code} without a result"

    def cancel(self) -> None:
        try:
            if os.getpgid(self.pid) == self.pid:   # torchrun, a warm child: all it started
                os.killpg(self.pid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process is not None:
            self.process.wait()
        deadline = time.monotonic() + 5   # a re-attached process: not ours to wait for
        while self.process is None and self._alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._alive():
            self._ended()


class LocalLauncher:
    """Runs each trial on this machine as its own process, output in trial.log: forked from
    the warm worker (`launcher.processes=warm`), else `python -m harness.trial DIR`.

    Written here rather than using submitit's LocalExecutor because a restarted driver must
    re-attach to trial processes the killed driver left running; submitit tracks local
    processes only in the memory of the process that started them.
    """

    worker_command: list[str] | None = None   # the warm worker's (None: harness.launch.warm)

    def __init__(self, cfg: DictConfig):
        self.plan = device_plan(cfg.launcher)   # ConfigError before anything is written
        self.parallel = self.plan.parallel
        self.pool = DevicePool(self.plan)
        self.timeout_s = float(cfg.launcher.timeout_min) * 60
        # conf/launcher/local.yaml sets warm; a hand-built config without the key runs cold
        self.mode = cfg.launcher.get("processes", "cold")
        if self.mode not in LOCAL_PROCESSES:
            raise ConfigError(f"launcher.processes must be one of {list(LOCAL_PROCESSES)} for "
                              f"launcher=local, got {self.mode!r}")
        sweeps, name = OmegaConf.select(cfg, "paths.sweeps"), OmegaConf.select(cfg, "sweep.name")
        self.worker_log = sweep_dir(cfg) / WORKER_LOG if sweeps and name else None
        self.worker: WarmWorker | None = None
        self._worker_starts = 0

    def torchrun(self, trial_dir: Path) -> bool:
        """An SFT trial given several GPUs (`gpus_per_trial` > 1) runs under torchrun, one
        rank per GPU (DDP, or FSDP with method.train.fsdp), always cold."""
        nproc = self.plan.per_trial
        return nproc > 1 and data_parallel(*read_trial_config(trial_dir), nproc)

    def command(self, trial_dir: Path) -> list[str]:
        """The cold trial process's command line: torchrun (see `torchrun`), else one
        process."""
        if self.torchrun(trial_dir):
            return torchrun_command(trial_dir, self.plan.per_trial)
        return [sys.executable, "-m", "harness.trial", str(trial_dir)]

    def submit(self, trial_dir: Path) -> LocalJob:
        log_path = trial_dir / LOG_FILE
        warm = self.mode == "warm" and not self.torchrun(trial_dir)
        spawned = self._fork(trial_dir, "trial", [trial_dir], log_path) if warm else None
        if spawned is None:
            command = self.command(trial_dir)
            spawned = self._spawn(trial_dir, command, log_path,
                                  group="torch.distributed.run" in command)
        job, devices = spawned
        info = {"launcher": "local", "pid": job.pid, "started": job.started,
                "devices": list(devices)}
        if isinstance(job.process, WarmProcess):   # its command line is the worker's
            info.update(warm=True, start_ticks=job.process.start_ticks)
        write_job_file(trial_dir, info)
        return job

    def submit_task(self, kind: str, folder: Path) -> LocalJob:
        """A task (registry.TASKS, e.g. re-scoring) on a finished folder: a process with
        GPUs of its own from the pool (forked warm like a trial), output in `<kind>.log`
        (harness.tasks)."""
        log_path = task_log(folder, kind)
        spawned = self._fork(folder, "task", [kind, folder], log_path) \
            if self.mode == "warm" else None
        return (spawned or self._spawn(folder, [sys.executable, "-m", TASK_MODULE, kind,
                                                str(folder)], log_path))[0]

    def _fork(self, folder: Path, kind: str, args: list, log_path: Path
              ) -> tuple[LocalJob, tuple[str, ...]] | None:
        """The job forked by the warm worker (None: no worker, run it cold)."""
        worker = self._warm_worker()
        if worker is None:
            return None
        devices = self.pool.acquire()
        try:
            process = worker.start(kind, args, log_path, self.plan.environment(devices))
        except WorkerGone as exc:
            self.pool.release(devices)
            log.warning("%s: starting %s cold", exc, folder)
            return None
        except BaseException:
            self.pool.release(devices)
            raise
        return LocalJob(folder, process.pid, process, self.timeout_s, time.time(),
                        on_end=lambda: self.pool.release(devices)), devices

    def _warm_worker(self) -> WarmWorker | None:
        """The warm worker, started (and preloaded) on first use; a dead one is replaced up
        to WORKER_STARTS times in all, then trials run cold. None when it cannot start."""
        if self.worker is not None and self.worker.alive():
            return self.worker
        if self.worker is not None:
            log.warning("%s; starting a new warm worker", self.worker.gone)
            self.worker = None
        if self._worker_starts >= WORKER_STARTS:
            return None
        self._worker_starts += 1
        log_path = self.worker_log if self.worker_log and self.worker_log.parent.is_dir() \
            else None
        worker = WarmWorker({**QUIET_BARS, **os.environ}, log_path, self.worker_command)
        try:
            ready = worker.wait_ready()
        except WorkerGone as exc:
            self._worker_starts = WORKER_STARTS   # a failed preload fails again: stay cold
            log.warning("%s: trials run cold (as launcher.processes=cold; log: %s)", exc, log_path)
            return None
        log.info("warm worker %d ready: %d modules preloaded in %.1f s", ready["pid"],
                 ready["modules"], ready["seconds"])
        self.worker = worker
        # a launcher dropped without close() (a test, a script) still lets its worker go
        weakref.finalize(self, worker.close_input)
        return worker

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
        """The job a killed driver left running in `trial_dir` (None if it is not running):
        a cold trial is known by its command line, a warm child by its pid's start time."""
        info = read_job_file(trial_dir)
        if info.get("launcher") != "local":
            return None
        ticks = info.get("start_ticks")
        if info.get("warm"):
            if ticks is None or start_ticks(info["pid"]) != ticks:
                return None
        elif not _pid_runs_trial(info["pid"], trial_dir):
            return None
        devices = tuple(str(d) for d in info.get("devices") or ())
        self.pool.reserve(devices)
        return LocalJob(trial_dir, info["pid"], None, self.timeout_s, info["started"],
                        on_end=lambda: self.pool.release(devices), ticks=ticks)

    def wait(self, seconds: float) -> None:
        """Block up to `seconds`, less when the warm worker reports that a child ended."""
        if self.worker is not None and self.worker.alive():
            self.worker.wait(seconds)
        else:
            time.sleep(seconds)

    def close(self) -> None:
        """Let the warm worker go: it exits once its running children (if any) have ended."""
        if self.worker is not None:
            self.worker.close()
            self.worker = None


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
