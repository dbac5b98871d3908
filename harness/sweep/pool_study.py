"""The study-side rules of launcher.mode=pool, shared by the driver (harness.sweep.pool) and its
workers (harness.sweep.pool_worker).

- Ownership: a worker marks each trial it asks with its SLURM job id (user attribute
  OWNER_ATTR), so whoever sees that job gone knows which RUNNING trial it left.
- The ask lock (`ask_lock`, an flock on a file in the sweep folder): a worker checks "finished
  + running < sweep.n_trials" and asks under it, so N workers never ask more trials than the
  sweep needs; a trial's retry (fail it, enqueue its parameters) happens under it too, so no
  worker sees the trial gone before its retry is enqueued.
- A lost trial (its worker cancelled, requeued, timed out or killed) is failed with STALE_ATTR
  (not counted as finished, as a dead driver's trial) and its parameters are enqueued again:
  Optuna's ask pops a waiting trial for exactly one process (journal storage: the first
  RUNNING write in the log wins, `Study._pop_waiting_trial_id`). The FAIL is told once: the
  journal orders every write, a second tell of a finished trial raises UpdateFinishedTrialError
  and that caller enqueues nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from harness.sweep.results_records import STALE_ATTR

log = logging.getLogger(__name__)

OWNER_ATTR = "pool_worker"     # trial user attribute: the SLURM job id of the worker running it
LOCK_FILE = "pool.lock"        # in the sweep folder (shared by the nodes, like the journal)
POOL_FILE = "pool.json"        # in the sweep folder: the worker jobs the driver submitted


@contextlib.contextmanager
def ask_lock(sweep_dir: Path) -> Iterator[None]:
    """Exclusive lock of the sweep's asks. fcntl.flock rather than a lock file one creates and
    deletes: the kernel releases it when its holder dies (a scancelled worker never leaves it
    held); Linux NFS clients map it onto POSIX locks, which NFS servers honour."""
    path = Path(sweep_dir) / LOCK_FILE
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def running(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.RUNNING]


def owner(trial: FrozenTrial) -> str | None:
    value = trial.user_attrs.get(OWNER_ATTR)
    return None if value is None else str(value)


def retry_trial(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Fail a RUNNING trial whose worker is gone (not counted: STALE_ATTR) and enqueue its
    parameters again; call under ask_lock. False when someone already finished it (the
    journal's order decides), and then nothing is enqueued."""
    storage = study._storage   # attributes of a trial not in hand (as Driver.set_trial_attr)
    try:
        storage.set_trial_user_attr(trial._trial_id, STALE_ATTR, True)
        storage.set_trial_user_attr(trial._trial_id, "error", f"WorkerLost: {reason}")
        study.tell(trial.number, state=TrialState.FAIL)
    except (UpdateFinishedTrialError, ValueError, RuntimeError) as exc:
        log.info("trial %d already finished (%s): not retried", trial.number, exc)
        return False
    study.enqueue_trial(trial.params)
    log.warning("trial %d lost (%s): failed, its parameters asked again", trial.number, reason)
    return True


def finished_by(trials: list[FrozenTrial], job_id: str) -> int:
    """Trials a worker job told (COMPLETE, PRUNED or FAIL, lost ones not counted)."""
    return sum(1 for t in trials if owner(t) == job_id and t.state.is_finished()
               and not t.user_attrs.get(STALE_ATTR))


def longest_trial_s(trials: list[FrozenTrial]) -> float:
    """The longest finished trial of the study so far (0 before any): the worker's estimate
    of the next one."""
    spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
             if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
             and t.datetime_start and t.datetime_complete]
    return max(spans, default=0.0)
