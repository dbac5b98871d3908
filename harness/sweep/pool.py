"""Driver side of launcher.mode=pool: `pool.workers` long-lived SLURM jobs (one job array) that
ask the study for trials and tell the results themselves (harness.sweep.pool_worker), so the
queue wait and the imports are paid once per worker instead of once per trial.

    run_pool(driver)   registry.LAUNCH_MODES["pool"]: after the driver evaluated the base model
                       (one job, as in job_per_trial), keep the pool filled until the study has
                       sweep.n_trials finished trials, then let the workers leave

The driver never asks or tells a trial here, except a lost one: when SLURM says a worker job
ended (scancel, node failure, time limit, an exception), each trial the study still has RUNNING
for it (pool_study.OWNER_ATTR) is failed and its parameters enqueued again (pool_study.
retry_trial), so the count reaches n_trials with no trial counted twice. A worker that leaves
early (cancelled, max_trials_per_worker, time limit) is replaced while trials remain: the pool
keeps min(pool.workers, trials not yet finished) workers queued or running. The workers' job
ids are kept in sweeps/<name>/pool.json, so a restarted driver adopts those still alive.
"""

from __future__ import annotations

import json
import logging
import os
import time

from tqdm import tqdm

from harness.launch.slurm.queue import ACTIVE_STATES, run_command
from harness.launch.slurm.submit import SlurmTrialJob
from harness.progress import running_text
from harness.sweep.driver import Driver
from harness.sweep.pool_study import (
    POOL_FILE,
    ask_lock,
    finished_by,
    owner,
    retry_trial,
    running,
)
from harness.sweep.pool_worker import PoolWorker, worker_outcome

log = logging.getLogger(__name__)

END_WAIT_S = 60.0   # at the end, how long idle workers get to leave by themselves


def run_pool(driver: Driver) -> None:
    """launcher.mode=pool (registry.LAUNCH_MODES): run the sweep through worker jobs."""
    Pool(driver).run()


class Pool:
    """The worker jobs of one sweep, seen from the driver."""

    def __init__(self, driver: Driver):
        self.driver = driver
        cfg = driver.sweep.cfg
        self.settings = cfg.launcher.pool
        self.poll = float(cfg.launcher.poll_seconds)
        timeout = cfg.sweep.get("timeout_min")
        self.deadline = time.time() + float(timeout) * 60 if timeout else None
        self.worker = PoolWorker(driver.sweep, driver.shared, driver.baseline, self.deadline)
        self.workers: dict[str, SlurmTrialJob] = {}
        self.lost_in_a_row = 0
        self.file = driver.sweep.dir / POOL_FILE

    def run(self) -> None:
        driver = self.driver
        self.adopt()
        target = driver.target_trials()
        with tqdm(total=target, initial=driver.finished_count(), unit="trial",
                  desc=f"sweep {driver.sweep.name} (pool)") as bar:
            while True:
                self.reap()
                finished = driver.finished_count()
                if finished != bar.n:
                    driver.best = driver._best_text()
                    bar.update(finished - bar.n)
                bar.set_postfix_str(self.bar_text())
                if finished >= target:
                    break
                past_deadline = self.deadline is not None and time.time() > self.deadline
                if past_deadline and not self.workers:
                    break
                if not past_deadline:
                    self.fill(target - finished)
                time.sleep(self.poll)
        self.close()

    # -- the pool ----------------------------------------------------------------------------
    def fill(self, unfinished: int) -> None:
        """Submit workers until min(pool.workers, unfinished trials) are queued or running."""
        want = min(int(self.settings.workers), unfinished) - len(self.workers)
        if want <= 0:
            return
        jobs = self.driver.launcher.submit_workers(self.worker, want, self.driver.sweep.dir)
        for job in jobs:
            self.workers[job.job_id] = job
        log.info("pool: submitted %d worker job(s): %s", len(jobs), ", ".join(self.workers))
        self._save([job.job_id for job in jobs])

    def reap(self) -> None:
        """Forget ended workers; fail and retry the trials a gone worker left RUNNING."""
        ended = [job for job in self.workers.values() if job.done()]
        for job in ended:
            del self.workers[job.job_id]
        trials = self.driver.study.get_trials(deepcopy=False)
        lost = [t for t in running(trials) if owner(t) not in self.workers
                and (owner(t) is not None or not self.workers)]   # no owner yet: being asked
        if lost:
            reasons = {job.job_id: job.failure_reason() for job in ended}
            with ask_lock(self.driver.sweep.dir):
                for trial in lost:
                    why = reasons.get(owner(trial) or "", "its worker job is gone")
                    retry_trial(self.driver.study, trial, f"worker {owner(trial)}: {why}")
        for job in ended:
            self._ended(job, self.driver.study.get_trials(deepcopy=False))

    def _ended(self, job: SlurmTrialJob, trials: list) -> None:
        outcome = worker_outcome(job.folder, job.job_id)
        if outcome is not None:
            log.info("pool: worker %s left after %d trial(s): %s", job.job_id,
                     outcome["trials"], outcome["stopped"])
            self.lost_in_a_row = 0
            return
        reason = job.failure_reason()
        log.warning("pool: worker %s ended: %s", job.job_id, reason)
        self.lost_in_a_row = 0 if finished_by(trials, job.job_id) else self.lost_in_a_row + 1
        if self.lost_in_a_row >= int(self.settings.max_lost_workers):
            raise RuntimeError(f"pool: {self.lost_in_a_row} worker jobs in a row ended without "
                               f"finishing a trial (launcher.pool.max_lost_workers); last: "
                               f"{reason}")

    def adopt(self) -> None:
        """Workers an earlier driver of this sweep submitted that SLURM still has."""
        if not self.file.exists():
            return
        launcher = self.driver.launcher
        for job_id in json.loads(self.file.read_text()).get("workers", []):
            job = SlurmTrialJob(self.driver.sweep.dir, job_id, launcher.folder, launcher.queue,
                                float(self.settings.timeout_min), marker=None)
            status = launcher.queue.get(job_id, force=True)
            if status is not None and status.state in ACTIVE_STATES:
                log.info("pool: worker %s still %s: adopted", job_id, status.state)
                self.workers[job_id] = job

    def close(self) -> None:
        """Give idle workers END_WAIT_S to leave by themselves (every trial is told), then
        cancel what remains (queued replacements, a worker past the deadline)."""
        end = time.time() + END_WAIT_S
        while self.workers and time.time() < end:
            for job in [j for j in self.workers.values() if j.done()]:
                del self.workers[job.job_id]
            pending = [j for j in self.workers.values()
                       if j.last is not None and j.last.state == "PENDING"]
            if len(pending) == len(self.workers):
                break
            time.sleep(self.poll)
        if self.workers:
            log.info("pool: cancelling worker(s) %s", ", ".join(self.workers))
            run_command(["scancel", *self.workers])

    def bar_text(self) -> str:
        """Each running trial's stage and step (progress.json), and the pool's size."""
        trials = running(self.driver.study.get_trials(deepcopy=False))
        text = running_text({t.number: t.user_attrs["dir"] for t in trials
                             if t.user_attrs.get("dir")})
        parts = [self.driver.best, f"{len(self.workers)} worker(s)", text]
        return " | ".join(p for p in parts if p)

    def _save(self, new: list[str]) -> None:
        known = json.loads(self.file.read_text()).get("workers", []) if self.file.exists() \
            else []
        tmp = self.file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"workers": [*known, *new]}))
        os.replace(tmp, self.file)
