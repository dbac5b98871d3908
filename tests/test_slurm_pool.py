"""launcher.mode=pool: worker jobs that ask and tell the study themselves (harness.sweep.pool).

Unit tests of the config checks and of the retry rule, then one sweep on the real SLURM
cluster (marked `slurm`, see tests/test_slurm.py): 6 trials through 2 array workers, one of
which is scancelled mid-trial; the module's tests read that one run.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from harness import progress
from harness.config.compose import compose_config
from harness.config.validate import Problems, validate_sweep
from harness.errors import ConfigError
from harness.records import COMPLETE, read_record
from harness.sweep.driver import prepare
from harness.sweep.pool import Pool
from harness.sweep.pool_study import OWNER_ATTR, STALE_ATTR, retry_trial
from tests.test_slurm import (
    FAST,
    cluster,
    driver_alive,
    load_study,
    start_driver,
    trial_dirs,
    wait_until,
)

__all__ = ["cluster"]   # the module-scoped fixture of tests/test_slurm.py

POOL = [*(a for a in FAST if not a.startswith(("launcher.parallel", "launcher.array_parallelism",
                                               "eval.rouge", "eval.perplexity"))),
        "launcher.mode=pool", "launcher.pool.workers=2", "launcher.pool.timeout_min=20",
        "eval.rouge.enabled=false", "eval.perplexity.max_texts=8"]


# -- no cluster ---------------------------------------------------------------------------------
def _problems(*overrides: str) -> list[str]:
    """The sweep validation's lines for these overrides (what prepare() raises with)."""
    problems = Problems()
    validate_sweep(compose_config(list(overrides)), 1, problems)
    return problems.lines


def test_pool_refuses_what_it_cannot_run():
    lines = _problems("launcher=slurm", "launcher.mode=pool", "storage=sqlite",
                      "launcher.nproc_per_node=2", "launcher.size_from_estimate=true",
                      "launcher.pool.workers=0", "launcher.pool.max_trials_per_worker=0")
    for start in ("launcher.pool.workers must be an integer >= 1, got 0",
                  "launcher.pool.max_trials_per_worker must be an integer >= 1 or null",
                  "launcher.mode=pool: storage=sqlite cannot be shared",
                  "launcher.mode=pool runs each trial as one process: 2 processes per node",
                  "launcher.size_from_estimate sizes each trial's job"):
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert _problems("+launcher.mode=pool") == ["launcher.mode=pool needs launcher=slurm, got "
                                                "launcher='local'"]
    assert _problems("launcher=slurm", "launcher.mode=pools") == [
        "launcher.mode must be one of ['job_per_trial', 'pool'], got 'pools'"]
    assert _problems("launcher=slurm", "launcher.mode=pool") == []


def test_sweep_refuses_a_bad_pool_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="launcher.pool.time_margin must be a number >= 1"):
        prepare(["launcher=slurm", "launcher.mode=pool", "launcher.pool.time_margin=0.5",
                 f"paths.sweeps={tmp_path}"])
    assert list(tmp_path.iterdir()) == []


def _finishing_writes(journal: Path) -> Counter:
    """trial id -> how many writes in the journal set a finished state (told)."""
    finished = {s.value for s in TrialState if s.is_finished()}
    ops = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    return Counter(op["trial_id"] for op in ops
                   if op.get("state") in finished and "trial_id" in op)


def test_lost_trial_is_failed_once_and_asked_again_once(tmp_path):
    """Two processes (two storage handles) retry the same lost trial: one fails it and
    enqueues its parameters, the other finds it finished and enqueues nothing."""
    journal = tmp_path / "study.journal"

    def handle() -> optuna.Study:
        return optuna.create_study(study_name="s", load_if_exists=True,
                                   storage=JournalStorage(JournalFileBackend(str(journal))))

    worker, driver = handle(), handle()
    trial = worker.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    trial.set_user_attr(OWNER_ATTR, "7_1")
    lost = driver.get_trials(deepcopy=False)[0]
    assert retry_trial(driver, lost, "worker 7_1: cancelled (scancel)") is True
    assert retry_trial(worker, lost, "its worker job 7_1 was requeued") is False
    trials = handle().get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[0].user_attrs[STALE_ATTR] is True
    assert trials[1].system_attrs["fixed_params"] == trials[0].params
    assert _finishing_writes(journal) == {trials[0]._trial_id: 1}
    again = worker.ask()   # the retry is what the next ask gets, with the lost parameters
    assert again.number == 1
    assert again.suggest_float("lr", 1e-4, 1e-2, log=True) == trials[0].params["lr"]


class FakeWorkerJob:
    """A worker job as Pool sees it (SlurmTrialJob's surface), ended or not."""

    def __init__(self, job_id: str, folder: Path, ended: bool = False, why: str = ""):
        self.job_id, self.folder, self.ended, self.why, self.last = job_id, folder, ended, why, None

    def done(self) -> bool:
        return self.ended

    def failure_reason(self) -> str:
        return self.why


def test_driver_retries_the_trials_of_ended_workers_only(tmp_path):
    """Pool.reap: a RUNNING trial of an ended worker is failed and re-enqueued; one of a live
    worker, or one not yet marked by its worker while workers live, is left alone; workers
    that end without finishing a trial stop the sweep after pool.max_lost_workers."""
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(
        str(tmp_path / "study.journal"))))
    for owner in ("7_0", "7_1", None):
        trial = study.ask()
        trial.suggest_int("rank", 4, 64)
        if owner:
            trial.set_user_attr(OWNER_ATTR, owner)
    submitted = []
    cfg = OmegaConf.create({"launcher": {"poll_seconds": 1, "pool": {
        "workers": 2, "timeout_min": 10, "max_lost_workers": 3}}, "sweep": {}})
    launcher = SimpleNamespace(submit_workers=lambda worker, count, where: submitted.append(
        count) or [FakeWorkerJob(f"8_{i}", tmp_path) for i in range(count)])
    driver = SimpleNamespace(sweep=SimpleNamespace(cfg=cfg, dir=tmp_path), shared=None,
                             baseline=None, study=study, launcher=launcher)
    pool = Pool(driver)
    pool.workers = {"7_0": FakeWorkerJob("7_0", tmp_path, True, "cancelled (scancel)"),
                    "7_1": FakeWorkerJob("7_1", tmp_path)}
    pool.reap()
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.RUNNING,
                      TrialState.WAITING]
    assert study.trials[0].user_attrs["error"] == "WorkerLost: worker 7_0: cancelled (scancel)"
    assert pool.lost_in_a_row == 1 and list(pool.workers) == ["7_1"]
    pool.fill(unfinished=5)   # one worker live: one more, up to pool.workers
    assert submitted == [1] and list(pool.workers) == ["7_1", "8_0"]
    assert json.loads((tmp_path / "pool.json").read_text()) == {"workers": ["8_0"]}
    pool.fill(unfinished=1)   # one trial left, two workers: none
    assert submitted == [1]
    for job in pool.workers.values():
        job.ended = True
    with pytest.raises(RuntimeError, match="3 worker jobs in a row ended without finishing"):
        pool.reap()
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL] * 3 + [TrialState.WAITING] * 3   # no worker left
    assert [t.system_attrs["fixed_params"] for t in study.trials[3:]] == [
        t.params for t in study.trials[:3]]


# -- the real cluster -----------------------------------------------------------------------------
def sacct_tasks(name: str) -> dict[str, str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "--name", name,
                          "-S", "now-1hour"], capture_output=True, text=True, timeout=30)
    print(out.stdout)
    return dict(line.split("|")[:2] for line in out.stdout.splitlines() if "|" in line)


def sacct_times(job_id: str) -> tuple[float, float]:
    """(queue wait, elapsed) of a job in seconds."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "Submit,Start,ElapsedRaw", "-j",
                          job_id], capture_output=True, text=True, timeout=30).stdout
    submit, start, elapsed = out.splitlines()[0].split("|")
    wait = (datetime.fromisoformat(start) - datetime.fromisoformat(submit)).total_seconds()
    return wait, float(elapsed)


@pytest.fixture(scope="module")
def pool_sweep(cluster, tmp_path_factory) -> tuple[Path, str, str, str]:
    """6 trials through 2 pool workers; once a trial runs on a worker that already told one,
    that worker's array task is scancelled. Returns (cwd, sweep, driver log, cancelled job)."""
    cwd = tmp_path_factory.mktemp("pool")
    sweep = f"ci_pool_{os.getpid()}"
    driver = start_driver([*POOL, f"sweep.name={sweep}", "sweep.n_trials=6"], cwd)
    victim: list[str] = []
    try:
        def mid_trial() -> bool:
            """A RUNNING trial, started (its progress file), on a worker that told a trial."""
            driver_alive(driver, cwd)
            if not (cwd / "sweeps" / sweep / "study.journal").exists():
                return False
            trials = load_study(cwd, sweep).get_trials(deepcopy=False)
            told = {t.user_attrs.get(OWNER_ATTR) for t in trials if t.state.is_finished()}
            for t in trials:
                owner = t.user_attrs.get(OWNER_ATTR)
                now = progress.read(Path(t.user_attrs.get("dir", "/nonexistent")))
                if t.state == TrialState.RUNNING and owner in told and now is not None \
                        and now.stage in ("setup", "train"):   # seconds before its record
                    victim.append(owner)
                    return True
            return False

        wait_until(mid_trial, 400, "a trial running on a worker that already told one")
        subprocess.run(["scancel", victim[0]], check=True, timeout=30)
        driver.wait(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    return cwd, sweep, (cwd / "driver.log").read_text(), victim[0]


@pytest.mark.slurm
def test_pool_sweep_finishes_every_trial_once_despite_a_cancelled_worker(pool_sweep):
    cwd, sweep, out, cancelled = pool_sweep
    study = load_study(cwd, sweep)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    lost = [t for t in trials if t.user_attrs.get(STALE_ATTR)]
    assert f"sweep {sweep}: 6 complete, 1 fail" in out, out[-3000:]
    assert len(complete) == 6 and len(lost) == 1 and len(trials) == 7
    assert lost[0].state == TrialState.FAIL and lost[0].user_attrs[OWNER_ATTR] == cancelled
    # failed by the worker's SIGTERM handler, or by the driver once sacct says CANCELLED
    assert lost[0].user_attrs["error"].startswith((
        f"WorkerLost: worker job {cancelled} got SIGTERM mid-trial",
        f"WorkerLost: worker {cancelled}: cancelled (scancel)")), lost[0].user_attrs["error"]
    assert any(t.params == lost[0].params for t in complete)   # its parameters were re-run
    # every trial told exactly once (one finishing write in the journal), numbers distinct
    journal = cwd / "sweeps" / sweep / "study.journal"
    assert sorted(_finishing_writes(journal).values()) == [1] * 7
    assert len({t.number for t in trials}) == 7
    for t in complete:
        record = read_record(Path(t.user_attrs["dir"]))
        assert record.status == COMPLETE and record.number == t.number, record.error
        assert record.job["job_id"] == t.user_attrs[OWNER_ATTR]   # the worker that ran it
        assert t.intermediate_values        # eval losses reported from the forked trial
        log_text = (Path(t.user_attrs["dir"]) / "trial.log").read_text()
        assert log_text.count("train sft step 10/10 (100%)") == 1, "trial ran twice"
    assert (cwd / "reports" / f"{sweep}.html").is_file()


@pytest.mark.slurm
def test_pool_runs_as_one_array_of_two_workers(pool_sweep):
    cwd, sweep, out, cancelled = pool_sweep
    tasks = sacct_tasks(f"harness-{sweep}")
    arrays = {job_id.split("_")[0] for job_id in tasks if "_" in job_id}
    assert len(arrays) == 1, tasks
    array = arrays.pop()
    assert sorted(j for j in tasks if j.startswith(f"{array}_")) == [f"{array}_0", f"{array}_1"]
    assert tasks[cancelled].startswith("CANCELLED")
    other = f"{array}_{1 - int(cancelled.split('_')[1])}"
    assert tasks[other] == "COMPLETED", tasks
    # besides the array: the base model's job, and at most one replacement for the cancelled
    assert 1 <= len([j for j in tasks if "_" not in j]) <= 2, tasks
    study = load_study(cwd, sweep)
    owners = Counter(t.user_attrs.get(OWNER_ATTR) for t in study.get_trials(deepcopy=False))
    assert owners[f"{array}_0"] >= 1 and owners[f"{array}_1"] >= 1, owners
    # figures, not asserted: per-trial start overhead in the pool vs a job per trial (the base
    # model's job is one: queue wait, then a cold process that imports the stack)
    pool = [r.job_seconds - r.wall_seconds for r in
            (read_record(Path(t.user_attrs["dir"])) for t in study.get_trials(deepcopy=False)
             if t.state == TrialState.COMPLETE)]
    base_dir = next((cwd / "sweeps" / sweep / "baseline").iterdir())
    base = read_record(base_dir)
    wait, elapsed = sacct_times(str(base.job["job_id"]))
    print(f"per-trial overhead: pool median {statistics.median(pool):.2f} s "
          f"(fork to tell minus the trial's own wall time, {len(pool)} trials); a job per "
          f"trial: {wait:.0f} s queue wait + {elapsed - base.wall_seconds:.0f} s start "
          f"(the base model's job: sacct elapsed minus its wall time)")
    assert trial_dirs(cwd, sweep)
