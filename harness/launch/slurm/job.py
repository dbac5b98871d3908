"""Job side of `launcher=slurm`, on the compute node: what each SLURM job runs.

    TrialTask          registry.TRIAL_ENTRY (run_trial) on the node, or torchrun of
                       `python -m harness.trial DIR --job-info JSON` for several processes
    PreemptionHandler  SIGTERM (scancel, requeue, preemption) and SIGUSR2 (time limit ahead)
                       save a checkpoint first (harness.train.callbacks), then leave
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import submitit
from omegaconf import DictConfig

from harness.launch.slurm.queue import run_command
from harness.launch.torchrun import data_parallel, torchrun_command
from harness.layout import LOG_FILE, RESULT_FILE
from harness.progress import log_to_stderr
from harness.records import TrialSpec, read_trial_config
from harness.registry import TRIAL_ENTRY, resolve

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 143         # exit status of a trial process leaving on SIGTERM/SIGUSR2
# The module serving checkpoint requests, present in sys.modules only once training runs here.
CHECKPOINT_MODULE = "harness.train.callbacks"


class TrialTask(submitit.helpers.Checkpointable):
    """The callable each SLURM job runs (pickled by submitit): one trial folder.

    Checkpointable: a job requeued by submitit reruns this same call, and the trial resumes
    from its last checkpoint (training resumes from trial_dir/checkpoints).
    """

    def __init__(self, nproc: int = 1, nodes: int = 1, max_requeues: int = 3):
        self.nproc, self.nodes, self.max_requeues = nproc, nodes, max_requeues

    def __call__(self, trial_dir: str) -> str:
        log_to_stderr()
        info = job_info()
        first_task = submitit.JobEnvironment().global_rank == 0
        if first_task:
            _link_log(Path(trial_dir), Path(info["stdout"]))
        log.info("trial %s in SLURM job %s on %s (restart %s)", trial_dir, info["job_id"],
                 info["node"], info["restart_count"])
        if (Path(trial_dir) / RESULT_FILE).exists():   # requeued after it had finished
            log.info("trial %s already has its result: not running it again", trial_dir)
            return "done"
        PreemptionHandler(self.max_requeues).install()
        if self._data_parallel(*read_trial_config(Path(trial_dir))):
            return self._torchrun(trial_dir, info)
        if not first_task:
            return "done"   # one process runs it: the job's first task
        return resolve(TRIAL_ENTRY)(trial_dir, job=info).status

    def _data_parallel(self, cfg: DictConfig, spec: TrialSpec) -> bool:
        """Several processes for this trial: SFT training only (not the base model's eval,
        nor the chained dpo/ppo/grpo stages, which run as one process)."""
        processes = self.nproc * self.nodes
        kind = cfg.method.get("kind", "sft")
        if processes > 1 and not spec.baseline and kind != "sft":
            log.warning("data-parallel runs SFT trials only: method kind %s runs as one process",
                        kind)
        return data_parallel(cfg, spec, processes)

    def _torchrun(self, trial_dir: str, info: dict) -> str:
        cmd = torchrun_command(trial_dir, self.nproc, info, self.nodes, task_rank(),
                               master_address(), master_port())
        log.info("data-parallel: %s", shlex.join(cmd))
        previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # ranks inherit: ignore USR2
        try:
            code = subprocess.call(cmd, env=torchrun_env())
        finally:
            signal.signal(signal.SIGUSR2, previous)
        if code != 0 and not (Path(trial_dir) / RESULT_FILE).exists():
            raise RuntimeError(f"torchrun exited with code {code} without a trial result")
        return "done"


def job_info() -> dict:
    """Where this job runs: SLURM ids, node, restart count and submitit's log paths."""
    env = submitit.JobEnvironment()
    paths = env.paths
    return {
        "launcher": "slurm",
        "job_id": env.job_id,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        "array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "node": os.environ.get("SLURMD_NODENAME", env.hostname),
        "nodes": os.environ.get("SLURM_JOB_NODELIST", ""),
        "partition": os.environ.get("SLURM_JOB_PARTITION", ""),
        "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
        "stdout": str(paths.stdout),
        "submission_file": str(paths.submission_file),
    }


def _link_log(trial_dir: Path, stdout: Path) -> None:
    """trial_dir/trial.log -> the job's log (stdout and stderr), like the local launcher's."""
    link = trial_dir / LOG_FILE
    if link.is_symlink() and os.readlink(link) == str(stdout):
        return
    tmp = trial_dir / f".{LOG_FILE}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(stdout)
    os.replace(tmp, link)


class PreemptionHandler:
    """SIGTERM (scancel, scontrol requeue, preemption): save a checkpoint at the end of the
    current training step, then exit; SLURM requeues or ends the job. SIGUSR2 (sent
    launcher.signal_delay_s before the time limit): save, requeue this job, exit."""

    def __init__(self, max_requeues: int):
        self.max_requeues = max_requeues
        self.leaving = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGUSR2, self.on_usr2)

    def on_term(self, signum: int, frame=None) -> None:
        if self.leaving:
            return
        self.leaving = True
        log.warning("SIGTERM: job cancelled, requeued or preempted; checkpointing, then exiting")
        self._checkpoint_then(_exit_now)

    def on_usr2(self, signum: int, frame=None) -> None:
        if self.leaving:
            return
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if restarts >= self.max_requeues:
            log.warning("SIGUSR2: time limit ahead, but already requeued %d times "
                        "(launcher.max_requeues): not requeueing", restarts)
            return
        self.leaving = True
        log.warning("SIGUSR2: time limit ahead; checkpointing, then requeueing")
        self._checkpoint_then(self._requeue_and_exit)

    def _checkpoint_then(self, then: Callable[[], None]) -> None:
        # Looked up, not imported: a process that imported no training code trains nothing.
        callbacks = sys.modules.get(CHECKPOINT_MODULE)
        if callbacks is None or not callbacks.request_checkpoint(then):
            then()

    def _requeue_and_exit(self) -> None:
        job_id = os.environ.get("SLURM_JOB_ID", "")
        if run_command(["scontrol", "requeue", job_id], timeout=60) is not None:
            log.warning("requeued job %s", job_id)
            _exit_now()
        log.error("scontrol requeue %s failed: carrying on until the time limit", job_id)
        self.leaving = False


def _exit_now() -> None:
    """Leave without a result: SLURM requeues, cancels or times out the job."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_PREEMPTED)


def torchrun_env() -> dict[str, str]:
    """Environment of the ranks: without CUDA, accelerate must be told to use gloo on CPU."""
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def master_address() -> str:
    """First node of the job (torchrun's rendezvous host)."""
    nodes = os.environ.get("SLURM_JOB_NODELIST", "")
    if not nodes:
        return "127.0.0.1"
    out = run_command(["scontrol", "show", "hostnames", nodes])
    return out.split()[0] if out else "127.0.0.1"


def master_port() -> int:
    """A port derived from the job id, so concurrent jobs on one node do not collide."""
    return 20000 + int(os.environ.get("SLURM_JOB_ID", "0") or 0) % 20000


def task_rank() -> int:
    """This task's index in the job (SLURM_PROCID, submitit's global rank): the torchrun node
    rank of its agent, one task per node (harness.launch.torchrun)."""
    return int(os.environ.get("SLURM_PROCID", "0") or 0)
