"""Driver side of `launcher=slurm` (a login node, or a job itself: slurm/driver.sbatch).

    SlurmLauncher   submits trial folders (several at once as one job array), re-attaches to
                    the jobs a killed driver left queued or running, checks the request first
    SlurmTrialJob   one trial's job: ended or not, and why, from squeue/sacct (bounded calls)
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import submitit
from omegaconf import DictConfig
from submitit.core.utils import FailedJobError, JobPaths
from submitit.slurm.slurm import _make_sbatch_string

from harness.config.validate import check_slurm_config
from harness.errors import ConfigError
from harness.launch.base import read_job_file, write_job_file
from harness.launch.slurm.job import TrialTask
from harness.launch.slurm.queue import (
    ACTIVE_STATES,
    HOPELESS_PENDING,
    QUERY_TIMEOUT_S,
    STATE_REASONS,
    JobStatus,
    SlurmQueue,
    partition_nodes,
    run_command,
)
from harness.launch.slurm.settings import (
    nproc_per_node,
    pool_parameters,
    request_text,
    sbatch_parameters,
    sized_parameters,
)
from harness.launch.slurm.task import TaskRun
from harness.layout import RESULT_FILE
from harness.records import read_trial_config

log = logging.getLogger(__name__)


class SubmitError(ConfigError):
    """sbatch refused the request (one line: sbatch's error)."""


class SlurmTrialJob:
    """A trial's SLURM job (or array task), seen from the driver."""

    def __init__(self, trial_dir: Path, job_id: str, folder: Path, queue: SlurmQueue,
                 timeout_min: float, started: float | None = None,
                 marker: str | None = RESULT_FILE):
        self.trial_dir, self.job_id, self.folder = Path(trial_dir), str(job_id), Path(folder)
        self.marker = marker   # the file whose presence means it ended (None: a task's job)
        self.queue, self.timeout_min = queue, timeout_min
        self.started = time.time() if started is None else started   # submission time
        self.job = submitit.SlurmJob(folder=self.folder, job_id=self.job_id)
        self.paths = JobPaths(self.folder, job_id=self.job_id)
        self.last: JobStatus | None = None
        self.why: str | None = None
        queue.watch(self.job_id)

    def __repr__(self) -> str:
        return f"SlurmTrialJob({self.job_id}, {self.trial_dir})"

    def done(self) -> bool:
        """Ended: wrote its record, raised, or SLURM says it is over (never blocks)."""
        if self._ended():
            self.queue.forget(self.job_id)
            return True
        return False

    def _ended(self) -> bool:
        if (self.marker and (self.trial_dir / self.marker).exists()) \
                or self.paths.result_pickle.exists():
            return True
        status = self.queue.get(self.job_id)
        if status is None:
            if self.queue.vanished(self.job_id):
                self.why = "job unknown to SLURM (neither squeue nor sacct lists it)"
                return True
            return False
        self.last = status
        if status.state == "PENDING" and status.reason in HOPELESS_PENDING:
            self.why = f"can never start (pending reason {status.reason}); cancelled"
            self.cancel()
            return True
        return self.queue.ended(self.job_id, status)

    def failure_reason(self) -> str:
        """Why the job ended without a trial record, with its id and log."""
        where = f"(job {self.job_id}, log {self.paths.stdout})"
        trace = self.remote_error()
        if trace:
            return f"{_last_line(trace)} {where}"
        if self.why:
            return f"{self.why} {where}"
        status = self.last or self.queue.get(self.job_id, force=True)
        if status is None:
            return f"job ended without a trial result {where}"
        text = STATE_REASONS.get(status.state, f"job ended in state {status.state}")
        return f"{text.format(timeout=self.timeout_min, exit_code=status.exit_code)} {where}"

    def remote_error(self) -> str | None:
        """The traceback the job function raised (submitit's result pickle), if any."""
        if not self.paths.result_pickle.exists():
            return None
        try:
            outcome, payload = submitit.core.utils.pickle_load(self.paths.result_pickle)
        except Exception:  # noqa: BLE001 - a half-written pickle: no traceback to show
            return None
        return str(payload) if outcome == "error" else None

    def info(self) -> dict:
        """Job id, node and log paths (what the trial record names)."""
        return {"launcher": "slurm", "job_id": self.job_id, "node": self.last.node if self.last
                else "", "stdout": str(self.paths.stdout), "folder": str(self.folder)}

    def cancel(self) -> None:
        run_command(["scancel", self.job_id])


def _last_line(trace: str) -> str:
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "job raised an error"


class SlurmLauncher:
    """Submits trials as SLURM jobs (job arrays for batches); see conf/launcher/slurm.yaml."""

    def __init__(self, cfg: DictConfig):
        check_slurm_config(cfg)
        self.cfg = cfg.launcher
        self.parallel = int(self.cfg.parallel)
        self.folder = Path(str(self.cfg.folder)).expanduser().resolve()
        self.queue = SlurmQueue(max_age_s=0.9 * float(self.cfg.poll_seconds))
        self.params = sbatch_parameters(self.cfg)
        self.task = TrialTask(nproc=nproc_per_node(self.cfg), nodes=int(self.cfg.nodes),
                              max_requeues=int(self.cfg.max_requeues))
        self.executor = self._executor()
        self._check_cluster(cfg.storage)

    def _executor(self) -> submitit.SlurmExecutor:
        python = self.cfg.get("python")
        try:
            executor = submitit.SlurmExecutor(folder=self.folder,
                                              max_num_timeout=int(self.cfg.max_requeues),
                                              python=str(python) if python else None)
        except RuntimeError as exc:
            raise ConfigError(f"launcher=slurm: {exc} (no srun on PATH)") from None
        executor.update_parameters(**self.params)
        return executor

    def _check_cluster(self, storage: DictConfig) -> None:
        """Refuse an impossible request now (sbatch --test-only), before any job is queued."""
        if storage.get("kind") == "sqlite" and partition_nodes(self.cfg.get("partition")) > 1:
            raise ConfigError("storage=sqlite cannot be shared by trials on the several nodes of "
                              "this partition: use storage=journal or storage=rdb")
        test_request(self.params, self.folder)
        if self.cfg.get("mode") == "pool":   # the workers' longer --time, too
            test_request(pool_parameters(self.cfg), self.folder)

    def submit(self, trial_dir: Path) -> SlurmTrialJob:
        return self.submit_many([trial_dir])[0]

    def submit_many(self, trial_dirs: list[Path]) -> list[SlurmTrialJob]:
        """Submit the trial folders as one job array (a plain job for one folder); a folder
        whose job is still queued or running is re-attached, not submitted again."""
        jobs: dict[Path, SlurmTrialJob] = {}
        fresh = []
        for trial_dir in map(Path, trial_dirs):
            existing = self.reattach(trial_dir)
            if existing is not None:
                jobs[trial_dir] = existing
            else:
                fresh.append(trial_dir)
        for trial_dir, job in zip(fresh, self._sbatch(fresh), strict=True):
            jobs[trial_dir] = job
        return [jobs[Path(d)] for d in trial_dirs]

    def _sbatch(self, trial_dirs: list[Path]) -> list[SlurmTrialJob]:
        if not trial_dirs:
            return []
        if self.cfg.get("size_from_estimate"):   # --gpus-per-node, --mem, --time
            sized = sized_parameters(self.cfg, [read_trial_config(d)[1].prediction
                                                for d in trial_dirs])
            self.executor.update_parameters(**{**self.params, **sized})
        try:   # clean_env: a driver running as a job must not pass its SLURM_* on
            with submitit.helpers.clean_env(), self.executor.batch():
                submitted = [self.executor.submit(self.task, str(d)) for d in trial_dirs]
        except FailedJobError as exc:
            raise SubmitError(f"sbatch refused the trial job: {sbatch_error(str(exc))} "
                              f"({request_text(self.executor.parameters)})") from None
        jobs = []
        for trial_dir, sub in zip(trial_dirs, submitted, strict=True):
            job = SlurmTrialJob(trial_dir, sub.job_id, self.folder, self.queue,
                                float(self.cfg.timeout_min))
            write_job_file(trial_dir, {"launcher": "slurm", "job_id": job.job_id,
                                       "folder": str(job.folder),
                                       "stdout": str(job.paths.stdout), "submitted": job.started})
            log.info("trial %s -> SLURM job %s", trial_dir.name, job.job_id)
            jobs.append(job)
        return jobs

    def reattach(self, trial_dir: Path) -> SlurmTrialJob | None:
        """The job named by the folder's job.json if SLURM still has it queued or running."""
        info = read_job_file(trial_dir)
        if info.get("launcher") != "slurm":
            return None
        job = SlurmTrialJob(trial_dir, info["job_id"], Path(info["folder"]), self.queue,
                            float(self.cfg.timeout_min), started=info.get("submitted"))
        status = self.queue.get(job.job_id, force=True)
        if status is None or status.state not in ACTIVE_STATES | {"PREEMPTED"}:
            return None
        return job

    def submit_task(self, kind: str, folder: Path) -> SlurmTrialJob:
        """A task (registry.TASKS, e.g. re-scoring) on a finished folder as its own job: a
        trial's resources on one node (`<job_name>-<kind>`), its log linked as `<kind>.log`."""
        executor = self._executor()
        executor.update_parameters(**{**self.params, "nodes": 1,
                                      "job_name": f"{self.params['job_name']}-{kind}"})
        try:
            with submitit.helpers.clean_env():
                sub = executor.submit(TaskRun(kind), str(folder))
        except FailedJobError as exc:
            raise SubmitError(f"sbatch refused the {kind} job: {sbatch_error(str(exc))} "
                              f"({request_text(executor.parameters)})") from None
        log.info("%s of %s -> SLURM job %s", kind, Path(folder).name, sub.job_id)
        return SlurmTrialJob(folder, sub.job_id, self.folder, self.queue,
                             float(self.cfg.timeout_min), marker=None)

    def submit_workers(self, worker: Callable[[], object], count: int,
                       where: Path) -> list[SlurmTrialJob]:
        """`count` jobs running the callable `worker` (launcher.mode=pool: the sweep's pool
        workers, harness.sweep.pool) as one job array with pool_parameters; `where` is the
        folder the jobs serve (the sweep's). The callable is named by the caller, never
        imported here."""
        executor = self._executor()
        executor.update_parameters(**pool_parameters(self.cfg))
        try:
            with submitit.helpers.clean_env(), executor.batch():
                submitted = [executor.submit(worker) for _ in range(count)]
        except FailedJobError as exc:
            raise SubmitError(f"sbatch refused the pool workers: {sbatch_error(str(exc))} "
                              f"({request_text(executor.parameters)})") from None
        return [SlurmTrialJob(where, sub.job_id, self.folder, self.queue,
                              float(self.cfg.pool.timeout_min), marker=None)
                for sub in submitted]

    def close(self) -> None:
        """Nothing to release: queued and running jobs outlive the driver (re-attached)."""
        return None


def sbatch_error(text: str) -> str:
    """sbatch's own error line from its stderr (one line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    line = (errors or lines or ["sbatch failed"])[-1]
    return line.removeprefix("sbatch: error: ")


def test_request(params: dict, folder: Path) -> None:
    """`sbatch --test-only` the trial job's options: SubmitError with sbatch's message when no
    node could ever run it (too many CPUs/GPUs, unknown partition...)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "probe.sh"
        script.write_text(_make_sbatch_string(command="true", folder=folder, **params))
        try:
            with submitit.helpers.clean_env():
                done = subprocess.run(["sbatch", "--test-only", str(script)],
                                      capture_output=True, text=True, timeout=QUERY_TIMEOUT_S,
                                      cwd=tmp)
        except FileNotFoundError:
            raise ConfigError("launcher=slurm needs sbatch on PATH") from None
        except subprocess.TimeoutExpired:
            log.warning("sbatch --test-only did not answer in %.0f s", QUERY_TIMEOUT_S)
            return
    if done.returncode != 0:
        raise SubmitError(f"sbatch refused the trial job: {sbatch_error(done.stderr)} "
                          f"({request_text(params)})")
