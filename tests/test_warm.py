"""Warm trial processes (harness.launch.warm): a trial forked from the warm worker is still a
process of its own. A SIGKILL ends only that trial, which is recorded FAILED with the signal,
and the sweep goes on; the cold path stays selectable; a forked child runs with its own
environment, log and exit code; a restarted driver finds a warm child by its start time."""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from harness import progress
from harness.config.compose import compose_config
from harness.config.validate import Problems, validate_sweep
from harness.errors import ConfigError
from harness.launch.local import LocalLauncher
from harness.launch.warm import fork_child, start_ticks
from harness.launch.warm_client import WarmProcess
from harness.records import read_record
from tests.conftest import REPO

# The smallest sweep that trains: two 10-step trials one at a time, the cheap battery only.
TINY = ["sweep.n_trials=2", "launcher.parallel=1", "launcher.processes=warm",
        "method.train.max_steps=4", "method.train.eval_steps=0", "method.train.logging_steps=2",
        "data.max_train_samples=32", "eval.rouge.max_samples=2", "eval.rouge.max_new_tokens=4",
        "eval.perplexity.max_texts=4", "eval.lm_eval.enabled=false",
        "eval.mt_bench.enabled=false", "data.preference.metrics.enabled=false"]


def _cfg(**launcher) -> OmegaConf:
    return OmegaConf.create({"launcher": {"name": "local", "devices": [], "timeout_min": 5,
                                          **launcher}})


def test_processes_picks_warm_or_cold_and_refuses_anything_else():
    assert LocalLauncher(_cfg(processes="warm")).mode == "warm"
    cold = LocalLauncher(_cfg(processes="cold"))
    assert cold.mode == "cold"
    assert cold.command(Path("/x/trials/0001"))[1:] == ["-m", "harness.trial", "/x/trials/0001"]
    with pytest.raises(ConfigError, match="launcher.processes must be one of"):
        LocalLauncher(_cfg(processes="lukewarm"))
    problems = Problems()   # the sweep's checks (driver.prepare), before anything is written
    validate_sweep(compose_config(["launcher.processes=lukewarm"]), 1, problems)
    assert problems.lines == ["launcher.processes must be one of ['warm', 'cold'], "
                              "got 'lukewarm'"]


_ATEXIT_MARK = "worker atexit ran in the child\n"


def test_forked_child_has_its_env_log_and_exit_code(tmp_path):
    """The child applies its env, writes to its log, exits with the target's code (1 and a
    traceback for an exception) and never runs the parent's atexit handlers."""
    log_path = tmp_path / "child.log"
    atexit.register(print, _ATEXIT_MARK, end="")   # the parent's: must not run in the child

    def target() -> int:
        print("env", os.environ["WARM_TEST"], os.getpgrp() == os.getpid())
        return 7

    try:
        pid = fork_child(target, log_path, {"WARM_TEST": "yes"})
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
        pid = fork_child(lambda: 1 / 0, log_path)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 1
    finally:
        atexit.unregister(print)
    text = log_path.read_text()
    assert "env yes True" in text and "ZeroDivisionError" in text
    assert _ATEXIT_MARK not in text
    assert "WARM_TEST" not in os.environ


def test_reattach_knows_a_warm_child_by_its_start_time(tmp_path):
    """A warm child's command line is the worker's: job.json's start time identifies it, and
    a pid with another start time (reused) is not re-attached."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        launcher = LocalLauncher(_cfg(processes="warm"))
        info = {"launcher": "local", "pid": child.pid, "started": time.time(), "devices": [],
                "warm": True}
        (tmp_path / "job.json").write_text(json.dumps({**info, "start_ticks": 1}))
        assert launcher.reattach(tmp_path) is None
        (tmp_path / "job.json").write_text(json.dumps({**info,
                                                       "start_ticks": start_ticks(child.pid)}))
        job = launcher.reattach(tmp_path)
        assert job is not None and not job.done()
        job.cancel()
        assert job.done()
    finally:
        child.kill()
        child.wait()


# The real worker loop (harness.launch.warm._Worker) with no preload and a stand-in trial:
# sleeps DIR/run_s seconds, then exits with the code in DIR/code.
FAKE_WORKER = """
import os, time
from pathlib import Path
from harness.launch import warm

def target(request):
    folder = Path(request["args"][0])
    def run():
        time.sleep(float((folder / "run_s").read_text()))
        return int((folder / "code").read_text())
    return run

warm._target = target
warm._emit({"event": "ready", "pid": os.getpid(), "seconds": 0.0, "modules": 0})
warm._Worker().serve()
"""


class FakeWarmLauncher(LocalLauncher):
    worker_command = [sys.executable, "-c", FAKE_WORKER]


def _trial(root: Path, name: str, run_s: float, code: int = 0) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "run_s").write_text(str(run_s))
    (folder / "code").write_text(str(code))
    return folder


def _ended(job, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while not job.done():
        assert time.time() < deadline, "the job did not end"
        time.sleep(0.05)


def test_warm_children_report_their_end_and_survive_their_worker(tmp_path):
    """Each child's exit code or signal comes back from the worker; the launcher's wait wakes
    when a child ends; a child whose worker died runs on and ends with a clear reason; the
    next trial gets a new worker."""
    launcher = FakeWarmLauncher(_cfg(processes="warm"))
    try:
        quick = launcher.submit(_trial(tmp_path, "quick", 0.2, code=3))
        assert isinstance(quick.process, WarmProcess)
        launcher.wait(60)   # wakes when `quick` ends, long before 60 s
        _ended(quick, timeout=5)
        assert quick.failure_reason() == "trial process exited with code 3 without a result"

        killed = launcher.submit(_trial(tmp_path, "killed", 60))
        job = json.loads((killed.trial_dir / "job.json").read_text())
        assert job["warm"] and job["start_ticks"] == start_ticks(killed.pid)
        os.kill(killed.pid, signal.SIGKILL)
        _ended(killed)
        assert killed.failure_reason() == "trial process killed by SIGKILL (out of memory?)"

        orphan = launcher.submit(_trial(tmp_path, "orphan", 60))
        first_worker = launcher.worker
        first_worker.process.kill()   # the worker dies; its child runs on
        first_worker.process.wait()
        time.sleep(0.3)
        assert not orphan.done()
        orphan.cancel()
        _ended(orphan)
        assert "the warm worker exited with code -9 while the trial ran" in \
            orphan.failure_reason()

        after = launcher.submit(_trial(tmp_path, "after", 0.1))
        _ended(after)
        assert launcher.worker is not first_worker and after.process.returncode == 0
    finally:
        launcher.close()


@pytest.mark.slow
def test_sigkilled_warm_trial_is_failed_and_the_sweep_completes(tmp_path):
    """Trial 0 is SIGKILLed while it trains inside the warm worker: its record says FAILED
    with SIGKILL, trial 1 runs in the same worker and completes, and the driver never
    imported torch."""
    env = {**os.environ, "HARNESS_CACHE": str(REPO / ".cache" / "harness")}
    driver = subprocess.Popen([sys.executable, "-m", "harness", "sweep.name=warm_kill", *TINY],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    sweep = tmp_path / "sweeps" / "warm_kill"
    first = sweep / "trials" / "0000"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None:
            snap = progress.read(first)
            if snap is not None and snap.stage == "train":
                break
            time.sleep(0.2)
        job = json.loads((first / "job.json").read_text())
        assert job["warm"] and job["start_ticks"] == start_ticks(job["pid"])
        ppid = int(Path(f"/proc/{job['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert ppid != driver.pid    # a child of the warm worker, not of the driver
        assert "libtorch" not in Path(f"/proc/{driver.pid}/maps").read_text()
        os.kill(job["pid"], signal.SIGKILL)
        _, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-3000:]
    killed, second = read_record(first), read_record(sweep / "trials" / "0001")
    assert killed.status == "FAILED" and killed.error.type == "JobLost"
    assert "SIGKILL" in killed.error.message
    assert second.status == "COMPLETE"
    assert json.loads((sweep / "trials" / "0001" / "job.json").read_text())["warm"]
    study = optuna.load_study(study_name="warm_kill", storage=f"sqlite:///{sweep}/study.db")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL"]
    assert "modules preloaded" in (sweep / "warm_worker.log").read_text()


def _upper(row: dict) -> dict:
    return {"prompt": row["prompt"].upper()}


def test_training_rows_are_saved_once_so_their_tokenization_is_cached(tmp_path):
    """The same rows give the same on-disk dataset in every trial, and a `map` over it (trl's
    tokenization) is read from the cache the second time; other rows get their own."""
    from harness.train.dataset_cache import rows_dataset

    rows = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(20)]
    first = rows_dataset(rows, tmp_path).map(_upper)
    again = rows_dataset(rows, tmp_path).map(_upper)
    assert first.cache_files and again.cache_files == first.cache_files
    assert again[3]["prompt"] == "QUESTION 3" and again.to_list() == first.to_list()
    other = rows_dataset(rows[:10], tmp_path)
    assert other.cache_files[0]["filename"] != first.cache_files[0]["filename"]
    assert len(other) == 10
