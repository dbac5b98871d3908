"""Job side of a task (harness.registry.TASKS, e.g. re-scoring a saved model) on SLURM.

`TaskRun(kind)(folder)` is what the job runs (pickled by submitit): the registered task on the
folder, its log linked as `<kind>.log` in the folder (as a trial's trial.log is). Requeued
(preemption, node failure), it simply runs again: a task starts from the saved files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import submitit

from harness.progress import log_to_stderr
from harness.registry import TASKS
from harness.tasks import log_path

log = logging.getLogger(__name__)


class TaskRun:
    """The callable a task's SLURM job runs."""

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, folder: str) -> str:
        log_to_stderr()   # before the task imports transformers
        env = submitit.JobEnvironment()
        link_log(log_path(folder, self.kind), Path(env.paths.stdout))
        log.info("%s of %s in SLURM job %s on %s", self.kind, folder, env.job_id, env.hostname)
        TASKS.load(self.kind)(folder)
        return "done"


def link_log(link: Path, stdout: Path) -> None:
    """`link` -> the job's log (stdout and stderr), replaced atomically."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(stdout)
    os.replace(tmp, link)
