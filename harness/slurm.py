"""Trials as SLURM jobs submitted with submitit: the `launcher=slurm` launcher.

Driver side (a login node, or a job itself: slurm/driver.sbatch):
    SlurmLauncher   submits trial folders (several at once as one job array), re-attaches to
                    the jobs a killed driver left queued or running, checks the request first
    SlurmTrialJob   one trial's job: ended or not, and why, from squeue/sacct (bounded calls)
Job side (on the compute node):
    TrialTask       what each job runs: harness.trial.run_trial(trial_dir), or torchrun of it
                    for several processes per node; SIGTERM (scancel, requeue, preemption)
                    and SIGUSR2 (time limit ahead) save a checkpoint first (harness.train)

`job.json` in the trial folder names the job, so a restarted driver finds it again.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import submitit
from omegaconf import DictConfig, OmegaConf
from submitit.core.utils import FailedJobError, JobPaths
from submitit.slurm.slurm import _make_sbatch_string, read_job_id

from harness.config import ConfigError
from harness.launcher import JOB_FILE
from harness.records import CONFIG_FILE, LOG_FILE, RESULT_FILE

log = logging.getLogger(__name__)

# SLURM job states (squeue %T / sacct State) in which the job may still produce a result.
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED",
                 "REQUEUE_HOLD", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED",
                 "SPECIAL_EXIT", "RESV_DEL_HOLD"}
# Why a job that ended in this state left no result.
STATE_REASONS = {
    "CANCELLED": "cancelled (scancel)",
    "TIMEOUT": "timed out (time limit launcher.timeout_min={timeout} min)",
    "NODE_FAIL": "node failure",
    "OUT_OF_MEMORY": "out of memory (launcher.mem_gb)",
    "FAILED": "job failed with exit code {exit_code}",
    "BOOT_FAIL": "node boot failure",
    "DEADLINE": "deadline reached",
    "PREEMPTED": "preempted and not requeued",
    "REVOKED": "revoked (federation)",
    "COMPLETED": "job ended without a trial result",
}
# Pending reasons that never clear by themselves: the job would wait forever.
HOPELESS_PENDING = {"BadConstraints", "DependencyNeverSatisfied", "InvalidAccount", "InvalidQOS",
                    "PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit"}
PREEMPTED_GRACE_S = 300.0    # a PREEMPTED job not requeued within this is over
UNKNOWN_GRACE_S = 120.0      # a job neither squeue nor sacct knows for this long is gone
QUERY_TIMEOUT_S = 30.0       # bound on every squeue/sacct/scancel/scontrol call
EXIT_PREEMPTED = 143         # exit status of a trial process leaving on SIGTERM/SIGUSR2


class SubmitError(ConfigError):
    """sbatch refused the request (one line: sbatch's error)."""


# -- configuration ----------------------------------------------------------------------------
def check_slurm_config(cfg: DictConfig) -> None:
    """Check `launcher=slurm` settings and their storage before any job runs (ConfigError)."""
    launcher = cfg.launcher
    if launcher.get("name") != "slurm":
        return
    for key in ("parallel", "array_parallelism", "nodes", "cpus_per_task"):
        _check_int(launcher, key, minimum=1)
    _check_int(launcher, "gpus_per_node", minimum=0)
    _check_int(launcher, "max_requeues", minimum=0)
    if launcher.get("nproc_per_node") is not None:
        _check_int(launcher, "nproc_per_node", minimum=1)
    _check_number(launcher, "timeout_min", allow_none=False)
    _check_number(launcher, "mem_gb", allow_none=True)
    _check_number(launcher, "poll_seconds", allow_none=False)
    delay = launcher.signal_delay_s
    if not isinstance(delay, int) or delay < 0 or delay >= float(launcher.timeout_min) * 60:
        raise ConfigError(f"launcher.signal_delay_s must be an integer in [0, timeout_min * 60), "
                          f"got {delay!r}")
    if not OmegaConf.is_list(launcher.setup):
        raise ConfigError(f"launcher.setup must be a list of shell lines, got {launcher.setup!r}")
    if not OmegaConf.is_dict(launcher.additional):
        raise ConfigError("launcher.additional must be a mapping of sbatch options, "
                          f"got {launcher.additional!r}")
    check_storage(cfg.storage, int(launcher.nodes))


def check_storage(storage: DictConfig, nodes: int) -> None:
    """SQLite cannot be shared by processes on several nodes: refuse it for multi-node runs."""
    if storage.get("kind") == "sqlite" and nodes > 1:
        raise ConfigError(f"storage=sqlite cannot be shared by trials running on {nodes} nodes "
                          "(SQLite locking breaks on shared file systems): use storage=journal "
                          "or storage=rdb")


def _check_int(node: DictConfig, key: str, minimum: int) -> None:
    value = node.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"launcher.{key} must be an integer >= {minimum}, got {value!r}")


def _check_number(node: DictConfig, key: str, allow_none: bool) -> None:
    value = node.get(key)
    if value is None and allow_none:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"launcher.{key} must be > 0, got {value!r}")


def nproc_per_node(launcher: DictConfig) -> int:
    """Processes per node of one trial: nproc_per_node, else one per GPU, else 1."""
    if launcher.get("nproc_per_node"):
        return int(launcher.nproc_per_node)
    return max(1, int(launcher.get("gpus_per_node") or 0))


def sbatch_parameters(launcher: DictConfig) -> dict:
    """submitit SlurmExecutor parameters (sbatch options) from `conf/launcher/slurm.yaml`."""
    params = {
        "job_name": str(launcher.job_name),
        "time": int(math.ceil(float(launcher.timeout_min))),
        "nodes": int(launcher.nodes),
        "ntasks_per_node": 1,       # one trial process per node (it starts torchrun if needed)
        "cpus_per_task": int(launcher.cpus_per_task),
        "signal_delay_s": int(launcher.signal_delay_s),
        "array_parallelism": int(launcher.array_parallelism),
        "stderr_to_stdout": True,   # one log per job: trial.log links to it
        "setup": [_pythonpath_line(), *[str(line) for line in launcher.setup]],
        "additional_parameters": _additional(launcher),
    }
    for key in ("partition", "account", "qos", "constraint"):
        if launcher.get(key):
            params[key] = str(launcher[key])
    if launcher.get("gpus_per_node"):
        params["gpus_per_node"] = int(launcher.gpus_per_node)
    if launcher.get("mem_gb"):
        mem = float(launcher.mem_gb)
        params["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    return params


def _additional(launcher: DictConfig) -> dict:
    extra = dict(OmegaConf.to_container(launcher.additional, resolve=True) or {})
    if launcher.get("requeue", True):
        extra.setdefault("requeue", True)
    return extra


def _pythonpath_line() -> str:
    """Make this checkout's harness importable in the job whatever the job's directory."""
    root = shlex.quote(str(Path(__file__).resolve().parents[1]))
    return f'export PYTHONPATH={root}"${{PYTHONPATH:+:$PYTHONPATH}}"'


# -- job states -------------------------------------------------------------------------------
@dataclass
class JobStatus:
    """What SLURM says about one job (or one array task)."""

    state: str
    node: str = ""
    reason: str = ""
    exit_code: str = ""


def _run(cmd: list[str], timeout: float = QUERY_TIMEOUT_S) -> str | None:
    """stdout of a SLURM command, or None (logged) if it failed or took too long."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s: %s", cmd[0], exc)
        return None
    if done.returncode != 0:
        log.warning("%s failed: %s", " ".join(cmd[:2]), done.stderr.strip()[:300])
        return None
    return done.stdout


def squeue_status() -> dict[str, JobStatus] | None:
    """This user's jobs known to the controller (array tasks one per line); None on error."""
    out = _run(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(),
                "-o", "%i|%T|%N|%r"])
    if out is None:
        return None
    found = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            found[parts[0]] = JobStatus(parts[1].split()[0], parts[2], parts[3])
    return found


def sacct_status(job_ids: Iterable[str]) -> dict[str, JobStatus] | None:
    """Accounting records of these jobs (array ids expanded to tasks); None on error."""
    mains = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not mains:
        return {}
    out = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,NodeList,ExitCode,Reason",
                "-j", ",".join(mains)])
    if out is None:
        return None
    found = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or "." in parts[0]:
            continue
        status = JobStatus(parts[1].split()[0] if parts[1] else "", parts[2], parts[4], parts[3])
        for split in read_job_id(parts[0]):
            found["_".join(split[:2])] = status
            if len(split) >= 3:
                for index in range(int(split[1]), int(split[2]) + 1):
                    found[f"{split[0]}_{index}"] = status
    return found


class SlurmQueue:
    """States of the jobs a launcher watches: one squeue (and, for jobs it no longer lists,
    one sacct) call per refresh, at most one refresh per `max_age_s`; every call bounded."""

    def __init__(self, max_age_s: float):
        self.max_age_s = max_age_s
        self.status: dict[str, JobStatus] = {}
        self.last_seen: dict[str, float] = {}
        self.first_preempted: dict[str, float] = {}
        self.refreshed = float("-inf")

    def watch(self, job_id: str) -> None:
        self.last_seen.setdefault(job_id, time.time())

    def get(self, job_id: str, force: bool = False) -> JobStatus | None:
        """The job's latest status (refreshed if older than max_age_s), None if unknown."""
        self.watch(job_id)
        if force or time.time() - self.refreshed >= self.max_age_s:
            self.refresh()
        return self.status.get(job_id)

    def refresh(self) -> None:
        live = squeue_status()
        missing = [j for j in self.last_seen if live is None or j not in live]
        accounted = sacct_status(missing) if missing else {}
        now = time.time()
        for job_id in self.last_seen:
            status = (live or {}).get(job_id) or (accounted or {}).get(job_id)
            if status is not None:
                self.status[job_id] = status
                self.last_seen[job_id] = now
        self.refreshed = now

    def forget(self, job_id: str) -> None:
        """Stop asking about a job that ended."""
        for table in (self.status, self.last_seen, self.first_preempted):
            table.pop(job_id, None)

    def vanished(self, job_id: str) -> bool:
        """Neither squeue nor sacct has known the job for UNKNOWN_GRACE_S."""
        return job_id not in self.status and \
            time.time() - self.last_seen.get(job_id, time.time()) > UNKNOWN_GRACE_S

    def ended(self, job_id: str, status: JobStatus) -> bool:
        """True once a job is in a final state (PREEMPTED only if not requeued in time)."""
        if status.state in ACTIVE_STATES or not status.state:
            return False
        if status.state == "PREEMPTED":
            first = self.first_preempted.setdefault(job_id, time.time())
            return time.time() - first > PREEMPTED_GRACE_S
        return True


# -- one trial's job --------------------------------------------------------------------------
class SlurmTrialJob:
    """A trial's SLURM job (or array task), seen from the driver."""

    def __init__(self, trial_dir: Path, job_id: str, folder: Path, queue: SlurmQueue,
                 timeout_min: float, started: float | None = None):
        self.trial_dir, self.job_id, self.folder = Path(trial_dir), str(job_id), Path(folder)
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
        if (self.trial_dir / RESULT_FILE).exists() or self.paths.result_pickle.exists():
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
        _run(["scancel", self.job_id])


def _last_line(trace: str) -> str:
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "job raised an error"


# -- launcher ---------------------------------------------------------------------------------
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
            _write_job_file(trial_dir, job)
            log.info("trial %s -> SLURM job %s", trial_dir.name, job.job_id)
            jobs.append(job)
        return jobs

    def reattach(self, trial_dir: Path) -> SlurmTrialJob | None:
        """The job named by the folder's job.json if SLURM still has it queued or running."""
        path = Path(trial_dir) / JOB_FILE
        info = json.loads(path.read_text()) if path.exists() else {}
        if info.get("launcher") != "slurm":
            return None
        job = SlurmTrialJob(trial_dir, info["job_id"], Path(info["folder"]), self.queue,
                            float(self.cfg.timeout_min), started=info.get("submitted"))
        status = self.queue.get(job.job_id, force=True)
        if status is None or status.state not in ACTIVE_STATES | {"PREEMPTED"}:
            return None
        return job

    def close(self) -> None:
        """Nothing to release: queued and running jobs outlive the driver (re-attached)."""
        return None


def _write_job_file(trial_dir: Path, job: SlurmTrialJob) -> None:
    info = {"launcher": "slurm", "job_id": job.job_id, "folder": str(job.folder),
            "stdout": str(job.paths.stdout), "submitted": job.started}
    tmp = Path(trial_dir) / f"{JOB_FILE}.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, Path(trial_dir) / JOB_FILE)


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


def request_text(params: dict) -> str:
    """What a trial job asks for (its sbatch options), for error messages."""
    keys = ("partition", "nodes", "cpus_per_task", "gpus_per_node", "mem", "constraint", "qos",
            "account")
    shown = [f"{key}={params[key]}" for key in keys if params.get(key)]
    return "asked: " + ", ".join(shown)


def partition_nodes(partition: str | None) -> int:
    """Nodes in the partition (the default one if None); 0 if sinfo cannot tell."""
    cmd = ["sinfo", "-h", "-o", "%D"] + (["-p", str(partition)] if partition else [])
    out = _run(cmd)
    if not out:
        return 0
    return sum(int(x) for x in out.split() if x.isdigit())


# -- job side ---------------------------------------------------------------------------------
class TrialTask(submitit.helpers.Checkpointable):
    """The callable each SLURM job runs (pickled by submitit): one trial folder.

    Checkpointable: a job requeued by submitit reruns this same call, and the trial resumes
    from its last checkpoint (harness.train resumes from trial_dir/checkpoints).
    """

    def __init__(self, nproc: int = 1, nodes: int = 1, max_requeues: int = 3):
        self.nproc, self.nodes, self.max_requeues = nproc, nodes, max_requeues

    def __call__(self, trial_dir: str) -> str:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        info = job_info()
        os.environ["HARNESS_JOB"] = json.dumps(info)   # harness.trial copies it to record.job
        first_task = submitit.JobEnvironment().global_rank == 0
        if first_task:
            _link_log(Path(trial_dir), Path(info["stdout"]))
        log.info("trial %s in SLURM job %s on %s (restart %s)", trial_dir, info["job_id"],
                 info["node"], info["restart_count"])
        if (Path(trial_dir) / RESULT_FILE).exists():   # requeued after it had finished
            log.info("trial %s already has its result: not running it again", trial_dir)
            return "done"
        PreemptionHandler(self.max_requeues).install()
        data_parallel = self._data_parallel(OmegaConf.load(Path(trial_dir) / CONFIG_FILE))
        if data_parallel:
            return self._torchrun(trial_dir)
        if not first_task:
            return "done"   # one process runs it: the job's first task
        from harness.trial import run_trial

        return run_trial(trial_dir).status

    def _data_parallel(self, cfg: DictConfig) -> bool:
        """Several processes for this trial: SFT training only (not the base model's eval,
        nor the chained dpo/ppo/grpo stages, which run as one process)."""
        if self.nproc * self.nodes == 1 or cfg.trial.get("baseline"):
            return False
        kind = cfg.method.get("kind", "sft")
        if kind != "sft":
            log.warning("data-parallel runs SFT trials only: method kind %s runs as one process",
                        kind)
        return kind == "sft"

    def _torchrun(self, trial_dir: str) -> str:
        env = os.environ
        cmd = torchrun_command(trial_dir, self.nproc, self.nodes, int(env.get("SLURM_NODEID", 0)),
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
        train = sys.modules.get("harness.train")   # not imported: this process trains nothing
        if train is None or not train.request_checkpoint(then):
            then()

    def _requeue_and_exit(self) -> None:
        job_id = os.environ.get("SLURM_JOB_ID", "")
        if _run(["scontrol", "requeue", job_id], timeout=60) is not None:
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
    out = _run(["scontrol", "show", "hostnames", nodes])
    return out.split()[0] if out else "127.0.0.1"


def master_port() -> int:
    """A port derived from the job id, so concurrent jobs on one node do not collide."""
    return 20000 + int(os.environ.get("SLURM_JOB_ID", "0") or 0) % 20000


def torchrun_command(trial_dir: str | Path, nproc: int, nodes: int = 1, node_rank: int = 0,
                     master: str = "127.0.0.1", port: int = 29500) -> list[str]:
    """The data-parallel command of one node: torchrun with `nproc` ranks of harness.trial."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={nodes}", f"--node-rank={node_rank}", f"--master-addr={master}",
                f"--master-port={port}"]
    return cmd + ["-m", "harness.trial", str(trial_dir)]
