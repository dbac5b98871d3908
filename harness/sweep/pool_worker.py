"""Job side of launcher.mode=pool: one warm worker per SLURM array task (harness.sweep.pool
submits them).

`PoolWorker()` is what each worker job runs (pickled by submitit; this module is importable on
the node through the job's PYTHONPATH):

    preload          import the training stack once (harness.launch.warm; no CUDA initialised)
    release          trials this same job left RUNNING before a requeue: failed and retried
    loop             under the sweep's ask lock: stop if finished + running >= sweep.n_trials,
                     else ask (Driver.prepare_trial: same search space, sampler, enqueued points
                     and pre-flight as job_per_trial) and mark the trial as this job's
                     -> fork the trial (warm.fork_child: run_trial in a child process, its
                     output in trial.log) -> wait -> tell from its result.json (Driver.tell)

The child reports its eval losses to the study itself (harness.study.TrialReporter, as a
trial job does), so pruning works unchanged. A trial whose child dies without a record
(SIGKILL, out of memory) is told FAILED with the exit status: the trial's fault, counted; so
is one still running after `launcher.timeout_min` (killed, as a trial job at its time limit).
The worker leaves when every trial is asked, after `pool.max_trials_per_worker` trials, past
`sweep.timeout_min`, when its longest trial so far x `pool.time_margin` (+ signal_delay_s) would
not end before its time limit (`pool.timeout_min`), and after SIGUSR2 (SLURM's time-limit
warning) once its running trial ends. SIGTERM (scancel, requeue, preemption): the running
trial is killed, failed and retried (not its fault, not counted), and the worker exits at once
without a result, so SLURM's state says what happened.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import submitit
from omegaconf import OmegaConf
from optuna.exceptions import UpdateFinishedTrialError

from harness.launch.base import write_job_file
from harness.launch.slurm.job import EXIT_PREEMPTED, job_info
from harness.launch.warm import fork_child, preload
from harness.layout import LOG_FILE
from harness.progress import log_to_stderr
from harness.records import (
    FAILED,
    TrialError,
    TrialRecord,
    TrialSpec,
    read_record,
    read_trial_config,
)
from harness.registry import TRIAL_ENTRY, resolve
from harness.sweep.driver import Driver, Sweep, open_study
from harness.sweep.pool_study import (
    OWNER_ATTR,
    ask_lock,
    longest_trial_s,
    owner,
    retry_trial,
    running,
)
from harness.sweep.samplers import make_sampler

log = logging.getLogger(__name__)

POLL_S = 0.2   # how often the worker looks at its trial's child and at its signals


@dataclass
class Signals:
    """What SLURM told the worker: SIGTERM (leave now) and SIGUSR2 (time limit ahead)."""

    term: bool = False
    usr2: bool = False

    def install(self) -> Signals:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGUSR2, self._on_usr2)
        return self

    def _on_term(self, signum: int, frame=None) -> None:   # only flags: see PoolWorker._wait
        self.term = True

    def _on_usr2(self, signum: int, frame=None) -> None:
        self.usr2 = True


class PoolWorker:
    """The callable a pool worker job runs: asks, runs and tells trials until it should stop."""

    def __init__(self, sweep: Sweep, shared: TrialSpec, baseline: TrialRecord | None,
                 deadline: float | None):
        self.sweep, self.shared, self.baseline, self.deadline = sweep, shared, baseline, deadline

    def __call__(self) -> dict:
        started = time.time()
        log_to_stderr()
        signals = Signals().install()   # before the imports: a scancel meanwhile is seen
        warm = preload()
        info = {**job_info(), "pool_worker": True}
        me = str(info["job_id"])
        book = self._book(info)
        log.info("pool worker %s on %s (restart %s): training stack imported in %.1f s",
                 me, info["node"], info["restart_count"], warm["seconds"])
        with ask_lock(self.sweep.dir):   # a requeued job's own trials from before
            for trial in running(book.study.get_trials(deepcopy=False)):
                if owner(trial) == me:
                    retry_trial(book.study, trial, f"its worker job {me} was requeued")
        told, why = 0, None
        while why is None:
            why = self._why_stop(book, told, signals, started)
            if why is not None:
                break
            with ask_lock(self.sweep.dir):
                trials = book.study.get_trials(deepcopy=False)
                if book.finished_count() + len(running(trials)) >= book.target_trials():
                    why = "every trial of the sweep is asked"
                    break
                asked = book.prepare_trial()   # None: refused by the pre-flight, told PRUNED
                if asked is not None:
                    book.set_trial_attr(asked[0], OWNER_ATTR, me)
            if asked is not None and self._run(book, *asked, info, signals):
                told += 1
        if signals.term:
            _leave()
        log.info("pool worker %s leaves after %d trial(s): %s", me, told, why)
        return {"worker": me, "trials": told, "stopped": why, "preload_s": warm["seconds"]}

    def _book(self, info: dict) -> Driver:
        """The driver's one-trial methods (prepare_trial, tell, counts) on this worker's own
        study handle, with a sampler seeded apart from the other workers'."""
        study = open_study(self.sweep)
        sampler = self.sweep.cfg.sweep.sampler
        if sampler.get("seed") is not None:   # same seed everywhere: same first suggestions
            salt = zlib.crc32(f"{info['job_id']}:{info['restart_count']}".encode())
            study.sampler = make_sampler(OmegaConf.merge(sampler, {"seed": int(sampler.seed)
                                                                   + salt}),
                                         self.sweep.space, len(self.sweep.objectives))
        book = Driver(self.sweep, study, launcher=None)
        book.shared, book.baseline = self.shared, self.baseline
        return book

    def _why_stop(self, book: Driver, told: int, signals: Signals, started: float) -> str | None:
        """Why not to start another trial now (None: start one)."""
        cfg = self.sweep.cfg
        cap = cfg.launcher.pool.get("max_trials_per_worker")
        if signals.term:
            return "SIGTERM"
        if signals.usr2:
            return "SIGUSR2: the job's time limit is ahead"
        if cap is not None and told >= int(cap):
            return f"launcher.pool.max_trials_per_worker={cap} reached"
        if self.deadline is not None and time.time() > self.deadline:
            return "sweep.timeout_min reached"
        need = longest_trial_s(book.study.get_trials(deepcopy=False)) \
            * float(cfg.launcher.pool.time_margin) + float(cfg.launcher.signal_delay_s)
        left = started + float(cfg.launcher.pool.timeout_min) * 60 - time.time()
        if need > left:
            return (f"{left / 60:.1f} min left before the job's time limit, a trial may need "
                    f"{need / 60:.1f} (longest so far x launcher.pool.time_margin)")
        return None

    def _run(self, book: Driver, number: int, trial_dir: Path, info: dict,
             signals: Signals) -> bool:
        """Run one trial in a forked child and tell it; False if the worker is leaving
        (SIGTERM) and the trial was retried instead."""
        start = time.time()
        pid = fork_child(partial(_run_trial, str(trial_dir), info), log_path=trial_dir / LOG_FILE)
        write_job_file(trial_dir, {"launcher": "slurm-pool", "job_id": info["job_id"],
                                   "pid": pid, "stdout": info["stdout"], "submitted": start})
        limit_s = float(self.sweep.cfg.launcher.timeout_min) * 60   # a trial's, as a job's
        status = _wait(pid, signals, start + limit_s)
        record = read_record(trial_dir)
        if record is None and signals.term:   # the worker is cancelled: not the trial's fault
            with ask_lock(self.sweep.dir):
                trial = book.study.get_trials(deepcopy=False)[number]
                retry_trial(book.study, trial, f"worker job {info['job_id']} got SIGTERM mid-trial")
            return False
        if record is None:
            timed_out = time.time() - start >= limit_s
            record = died_record(trial_dir, number, status, info,
                                 f"timed out after {limit_s / 60:g} min (launcher.timeout_min)"
                                 if timed_out else None)
        record.job_seconds = time.time() - start   # fork to tell: no queue wait, no imports
        try:
            book.tell(number, record, trial_dir)
        except UpdateFinishedTrialError:   # the driver took this job for gone and retried it
            log.warning("trial %d was already failed and retried: result not told", number)
            return False
        return True


def _run_trial(trial_dir: str, info: dict) -> None:
    """The forked child: the trial entry point (harness.trial.run), as a SLURM trial job runs
    it (its SIGUSR2 ignored: the worker decides about the time limit)."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    resolve(TRIAL_ENTRY)(trial_dir, job=info)


def _wait(pid: int, signals: Signals, kill_at: float) -> int:
    """The child's wait status. Polled, not a blocking waitpid: the signal handlers only set
    flags (journal writes from a handler could meet a lock the interrupted code holds); on
    SIGTERM, or at `kill_at` (the trial's time limit), the child's process group (it leads its
    own session) is killed."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if signals.term or time.time() >= kill_at:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return os.waitpid(pid, 0)[1]
        time.sleep(POLL_S)


def died_record(trial_dir: Path, number: int, status: int, info: dict,
                why: str | None = None) -> TrialRecord:
    """The record of a trial whose process ended without writing one (`why`: it was killed
    for a reason, else its exit status says)."""
    cfg, spec = read_trial_config(trial_dir)
    if why is None and os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        why = f"killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
    elif why is None:
        why = f"exited with code {os.waitstatus_to_exitcode(status)}"
    log_path = str(Path(trial_dir) / LOG_FILE)
    return TrialRecord(number=number, status=FAILED, method=str(cfg.method.name),
                       params=spec.params, seed=spec.seed, log_path=log_path, job=dict(info),
                       error=TrialError("TrialProcessDied",
                                        f"trial process {why} without a result "
                                        f"(pool worker {info['job_id']}, log {log_path})",
                                        log_path))


def _leave() -> None:
    """Exit without a result after SIGTERM: SLURM's state (CANCELLED, requeued, preempted)
    tells the driver what happened, not a pickle saying the job succeeded."""
    logging.shutdown()
    os._exit(EXIT_PREEMPTED)


def worker_outcome(job_folder: Path, job_id: str) -> dict | None:
    """What a worker job returned (None: it raised or left without a result)."""
    paths = submitit.core.utils.JobPaths(job_folder, job_id=job_id)
    if not paths.result_pickle.exists():
        return None
    try:
        kind, value = submitit.core.utils.pickle_load(paths.result_pickle)
    except Exception:  # noqa: BLE001 - a half-written pickle: no outcome
        return None
    return value if kind == "success" and isinstance(value, dict) else None
