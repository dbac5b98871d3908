"""What SLURM says about the jobs: squeue / sacct / sinfo parsing, job states, SlurmQueue.

Every SLURM command runs with a time bound (QUERY_TIMEOUT_S) and failures are logged, not
raised: a slow or restarting controller delays the driver's view, never stops the sweep.
"""

from __future__ import annotations

import getpass
import logging
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

from submitit.slurm.slurm import read_job_id

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


def run_command(cmd: list[str], timeout: float = QUERY_TIMEOUT_S) -> str | None:
    """stdout of a SLURM command (scancel, scontrol...), or None (logged) on failure."""
    return _run(cmd, timeout)


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


def partition_nodes(partition: str | None) -> int:
    """Nodes in the partition (the default one if None); 0 if sinfo cannot tell."""
    cmd = ["sinfo", "-h", "-o", "%D"] + (["-p", str(partition)] if partition else [])
    out = _run(cmd)
    if not out:
        return 0
    return sum(int(x) for x in out.split() if x.isdigit())


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
