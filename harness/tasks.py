"""Jobs other than a trial that a launcher runs on a finished folder (re-scoring a saved model).

The driver side writes a request beside the folder's record, the launcher runs the task by name
(harness.registry.TASKS: `python -m harness.launch.task_main KIND DIR` locally, a SLURM job
through submitit), and the job writes its outcome next to the request:

    <kind>.request.json   what to do (e.g. the stages to run, the judge to use)
    <kind>.outcome.json   status (done | unusable | error), one-line message, the pid and host
                          that ran it, seconds
    <kind>.log            the job's output (locally; on SLURM a link to the job's log)

Plain files in the folder, so the same request works on a login node and on a compute node.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

RESCORE = "rescore"   # re-run the expensive evaluations on a finished folder's saved model
DONE, UNUSABLE, ERROR = "done", "unusable", "error"


def request_path(folder: str | Path, kind: str) -> Path:
    return Path(folder) / f"{kind}.request.json"


def outcome_path(folder: str | Path, kind: str) -> Path:
    return Path(folder) / f"{kind}.outcome.json"


def log_path(folder: str | Path, kind: str) -> Path:
    return Path(folder) / f"{kind}.log"


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def write_request(folder: str | Path, kind: str, **fields) -> None:
    """Ask for a task on `folder` (the previous outcome goes: it answered another request)."""
    outcome_path(folder, kind).unlink(missing_ok=True)
    _write(request_path(folder, kind), {**fields, "requested": time.time(),
                                        "requested_by": os.getpid()})


def read_request(folder: str | Path, kind: str) -> dict:
    """The task's request (FileNotFoundError naming the file if none was written)."""
    return json.loads(request_path(folder, kind).read_text())


def write_outcome(folder: str | Path, kind: str, status: str, message: str = "",
                  **fields) -> None:
    """The job's answer: its status, a one-line message and where it ran."""
    _write(outcome_path(folder, kind), {"status": status, "message": message,
                                        "pid": os.getpid(), "host": socket.gethostname(),
                                        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                                        "finished": time.time(), **fields})


def read_outcome(folder: str | Path, kind: str) -> dict | None:
    """The job's answer, or None if it wrote none (it died or never ran)."""
    try:
        return json.loads(outcome_path(folder, kind).read_text())
    except (OSError, ValueError):
        return None
