"""launcher=slurm: unit tests of the plumbing, and sweeps on a real SLURM cluster.

The cluster tests (marked `slurm`) need a running cluster (`bash slurm/cluster.sh start`, which
CI runs first). They skip where `sinfo` is missing (a developer's machine) but fail under
CI=true if the cluster does not answer. They assume a small cluster: 2 one-CPU jobs at once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import slurm
from harness.config import ConfigError, compose_config
from harness.records import COMPLETE, FAILED, read_record
from tests.conftest import REPO, run_cli

IN_CI = os.environ.get("CI") == "true"
# Trials small enough for a 2-CPU cluster: a few steps, a small eval, no lm-eval/MT-Bench.
FAST = [
    "launcher=slurm", "storage=journal", "sweep=lora_lr",
    "launcher.parallel=2", "launcher.array_parallelism=2", "launcher.poll_seconds=1",
    "launcher.timeout_min=15", "launcher.signal_delay_s=60",
    "sweep.pruner.n_warmup_steps=1000",          # report eval loss to the study, never prune
    "method.train.max_steps=10", "method.train.eval_steps=5", "method.train.logging_steps=5",
    "eval.rouge.max_samples=8", "eval.perplexity.max_texts=20",
    "eval.lm_eval.enabled=false", "eval.mt_bench.enabled=false",
    "data.preference.metrics.enabled=false",
]


# -- unit tests (no cluster) ------------------------------------------------------------------
def _cfg(*overrides: str):
    return compose_config(["launcher=slurm", *overrides])


def test_slurm_launcher_defaults_to_journal_storage():
    assert _cfg().storage.kind == "journal"
    assert _cfg("storage=sqlite").storage.kind == "sqlite"


def test_sqlite_is_refused_for_multi_node_trials():
    slurm.check_slurm_config(_cfg("storage=sqlite"))           # one node: allowed
    with pytest.raises(ConfigError, match="storage=sqlite cannot be shared.*journal"):
        slurm.check_slurm_config(_cfg("storage=sqlite", "launcher.nodes=2"))
    slurm.check_slurm_config(_cfg("launcher.nodes=2"))         # journal: fine


@pytest.mark.parametrize("override, field", [
    ("launcher.gpus_per_node=-1", "gpus_per_node"),
    ("launcher.cpus_per_task=0", "cpus_per_task"),
    ("launcher.signal_delay_s=7200", "signal_delay_s"),
    ("launcher.setup=oops", "setup"),
])
def test_bad_launcher_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=f"launcher.{field}"):
        slurm.check_slurm_config(_cfg(override))


def test_sbatch_parameters_pass_every_option():
    cfg = _cfg("launcher.partition=gpu", "launcher.account=lab", "launcher.qos=high",
               "launcher.gpus_per_node=4", "launcher.mem_gb=64", "launcher.constraint=a100",
               "launcher.timeout_min=90", "+launcher.additional.exclude=node01",
               "launcher.setup=[module load cuda]")
    params = slurm.sbatch_parameters(cfg.launcher)
    assert params | {"partition": "gpu", "account": "lab", "qos": "high", "gpus_per_node": 4,
                     "mem": "64GB", "constraint": "a100", "time": 90} == params
    assert params["additional_parameters"] == {"exclude": "node01", "requeue": True}
    assert params["setup"][0].startswith("export PYTHONPATH=")
    assert params["setup"][1] == "module load cuda"
    assert slurm.nproc_per_node(cfg.launcher) == 4
    assert slurm.nproc_per_node(_cfg().launcher) == 1


def test_torchrun_command_lines():
    one = slurm.torchrun_command("/s/trials/0001", nproc=2)
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone",
                       "-m", "harness.trial", "/s/trials/0001"]
    many = slurm.torchrun_command("/t", nproc=8, nodes=2, node_rank=1, master="n01", port=23456)
    assert many[4:8] == ["--nnodes=2", "--node-rank=1", "--master-addr=n01",
                         "--master-port=23456"]


def test_sacct_output_expands_job_arrays(monkeypatch):
    out = "7_[2-3%2]|PENDING||||\n7_0|CANCELLED by 0|vm|0:15|None\n7_1|COMPLETED|vm|0:0|None\n"
    monkeypatch.setattr(slurm, "_run", lambda cmd, timeout=0: out.replace("||||", "||0:0|"))
    found = slurm.sacct_status(["7_0", "7_3"])
    assert {k: v.state for k, v in found.items()} == {
        "7_0": "CANCELLED", "7_1": "COMPLETED", "7_2": "PENDING", "7_3": "PENDING"}


def test_failure_reasons_name_state_job_and_log(tmp_path):
    queue = slurm.SlurmQueue(max_age_s=3600)
    queue.refreshed = time.time()
    job = slurm.SlurmTrialJob(tmp_path, "12_3", tmp_path / "slurm", queue, timeout_min=5)
    for state, text in [("CANCELLED", "cancelled (scancel)"), ("TIMEOUT", "timed out"),
                        ("NODE_FAIL", "node failure"), ("OUT_OF_MEMORY", "out of memory")]:
        queue.status["12_3"] = slurm.JobStatus(state)
        job.last = None
        assert job.done()
        reason = job.failure_reason()
        assert reason.startswith(text) and "job 12_3" in reason and "12_3_0_log.out" in reason
    queue.status["12_3"] = slurm.JobStatus("RUNNING")
    assert not job.done()
    queue.status["12_3"] = slurm.JobStatus("PENDING", reason="BadConstraints")
    cancelled = []
    job.cancel = lambda: cancelled.append(True)
    assert job.done() and cancelled and "can never start" in job.failure_reason()


def test_remote_traceback_is_the_failure_reason(tmp_path):
    from submitit.core.utils import cloudpickle_dump

    queue = slurm.SlurmQueue(max_age_s=3600)
    job = slurm.SlurmTrialJob(tmp_path, "41", tmp_path, queue, timeout_min=5)
    trace = "Traceback (most recent call last):\n  File x\nValueError: boom\n"
    cloudpickle_dump(("error", trace), job.paths.result_pickle)
    assert job.done()
    assert job.failure_reason().startswith("ValueError: boom (job 41, log ")


def test_sbatch_error_keeps_one_line():
    text = ("sbatch: error: invalid partition specified: nope\n"
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert slurm.sbatch_error(text) == "Batch job submission failed: Invalid partition name " \
                                       "specified"


def test_checkpoint_request_needs_running_training():
    from harness.train import request_checkpoint

    assert request_checkpoint(lambda: None) is False


# -- the real cluster -------------------------------------------------------------------------
def _cluster_answers() -> bool:
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "alloc"))


@pytest.fixture(scope="module")
def cluster() -> None:
    """A cluster that answers; skip without SLURM, fail in CI (after one start attempt)."""
    if shutil.which("sinfo") is None and not IN_CI:
        pytest.skip("no SLURM on this machine (sinfo missing)")
    if _cluster_answers():
        return
    if IN_CI and os.geteuid() == 0:
        subprocess.run(["bash", str(REPO / "slurm" / "cluster.sh"), "start"], timeout=600)
    if _cluster_answers():
        return
    if IN_CI:
        pytest.fail("CI=true but the SLURM cluster does not answer (bash slurm/cluster.sh start)")
    pytest.skip("SLURM cluster not answering (bash slurm/cluster.sh start)")


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll check() every 0.5 s; fail the test after `timeout` seconds."""
    end = time.time() + timeout
    while not check():
        assert time.time() < end, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.5)


def start_driver(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m harness ARGS` in the background, output in cwd/driver.log."""
    env = {**os.environ}
    env.setdefault("HARNESS_CACHE", str(REPO / ".cache" / "harness"))
    with (cwd / "driver.log").open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def driver_alive(driver: subprocess.Popen, cwd: Path) -> None:
    assert driver.poll() is None, (cwd / "driver.log").read_text()[-3000:]


def trial_dirs(cwd: Path, sweep: str) -> list[Path]:
    root = cwd / "sweeps" / sweep / "trials"
    return sorted(root.iterdir()) if root.is_dir() else []


def job_id(trial_dir: Path) -> str | None:
    path = trial_dir / "job.json"
    return json.loads(path.read_text())["job_id"] if path.exists() else None


def trained_steps(trial_dir: Path) -> int:
    path = trial_dir / "loss.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return max((json.loads(line)["step"] for line in lines if line.strip()), default=0)


def load_study(cwd: Path, sweep: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = cwd / "sweeps" / sweep / "study.journal"
    return optuna.load_study(study_name=sweep,
                             storage=JournalStorage(JournalFileBackend(str(path))))


def sacct_jobs(name: str) -> list[str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID", "--name", name,
                          "-S", "now-1hour"], capture_output=True, text=True, timeout=30)
    return out.stdout.split()


@pytest.mark.slurm
def test_sweep_on_slurm_resumes_after_driver_kill(cluster, tmp_path):
    """4 trials through SLURM; the driver is killed mid-sweep and re-run: the study completes,
    every record names its job, node and log, and no trial job ran twice."""
    sweep = f"ci_slurm_{os.getpid()}"
    args = [*FAST, f"sweep.name={sweep}", "sweep.n_trials=4"]
    driver = start_driver(args, tmp_path)
    try:
        def one_done_one_running() -> bool:
            driver_alive(driver, tmp_path)
            dirs = trial_dirs(tmp_path, sweep)
            done = [d for d in dirs if (d / "result.json").exists()]
            live = [d for d in dirs if job_id(d) and not (d / "result.json").exists()]
            submitted = all(job_id(d) for d in dirs)   # not between asking and submitting
            return bool(done) and bool(live) and submitted

        wait_until(one_done_one_running, 400, "one trial done and one in flight")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    rerun = run_cli(args, tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "4 complete" in rerun.stdout, rerun.stdout

    study = load_study(tmp_path, sweep)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert all(t.intermediate_values for t in study.trials)    # eval loss reported from jobs
    for trial_dir in trial_dirs(tmp_path, sweep):
        record = read_record(trial_dir)
        assert record.status == COMPLETE, record.error
        assert record.job["job_id"] == job_id(trial_dir)
        assert record.job["node"] and Path(record.job["stdout"]).is_file()
        assert (trial_dir / "trial.log").resolve() == Path(record.job["stdout"])
        log_text = Path(record.job["stdout"]).read_text()
        assert log_text.count("Starting with JobEnvironment") == 1, "trial ran twice"
    # every trial job was submitted once (+1: the base model's job)
    assert len(sacct_jobs(f"harness-{sweep}")) == len(trial_dirs(tmp_path, sweep)) + 1
    assert (tmp_path / "reports" / f"{sweep}.html").is_file()


@pytest.fixture(scope="module")
def faults_sweep(cluster, tmp_path_factory) -> tuple[Path, str, subprocess.CompletedProcess]:
    """3 trials, 2 at a time: trial 0 is scancel'ed and trial 1 requeued mid-training."""
    cwd = tmp_path_factory.mktemp("faults")
    sweep = f"ci_faults_{os.getpid()}"
    args = [*FAST, f"sweep.name={sweep}", "sweep.n_trials=3", "method.train.max_steps=80",
            "method.train.eval_steps=40", "method.train.save_steps=0"]   # on-signal save only
    driver = start_driver(args, cwd)
    try:
        def both_training() -> bool:
            driver_alive(driver, cwd)
            dirs = trial_dirs(cwd, sweep)[:2]
            return len(dirs) == 2 and all(trained_steps(d) >= 5 for d in dirs)

        wait_until(both_training, 400, "trials 0 and 1 training")
        first, second = trial_dirs(cwd, sweep)[:2]
        subprocess.run(["scancel", job_id(first)], check=True, timeout=30)
        subprocess.run(["scontrol", "requeue", job_id(second)], check=True, timeout=30)
        driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    out = (cwd / "driver.log").read_text()
    return cwd, sweep, subprocess.CompletedProcess(driver.args, driver.returncode, out)


@pytest.mark.slurm
def test_cancelled_trial_is_failed_with_reason_and_sweep_goes_on(faults_sweep):
    cwd, sweep, done = faults_sweep
    assert done.returncode == 0, done.stdout[-3000:]
    dirs = trial_dirs(cwd, sweep)
    cancelled = read_record(dirs[0])
    assert cancelled.status == FAILED
    assert "cancelled (scancel)" in cancelled.error.message
    assert job_id(dirs[0]) in cancelled.error.message
    assert read_record(dirs[2]).status == COMPLETE     # the sweep went on after the cancel


@pytest.mark.slurm
def test_requeued_trial_resumes_from_its_checkpoint(faults_sweep):
    cwd, sweep, _ = faults_sweep
    requeued = read_record(trial_dirs(cwd, sweep)[1])
    assert requeued.status == COMPLETE, requeued.error
    assert requeued.job["restart_count"] >= 1
    assert requeued.extra["resumed_from_step"] > 0
    assert requeued.extra["train_steps"] == 80


@pytest.mark.slurm
@pytest.mark.parametrize("override, message", [
    ("launcher.cpus_per_task=64", "More processors requested than permitted"),
    ("launcher.partition=no_such_partition", "invalid partition"),
    ("launcher.gpus_per_node=2", "Invalid generic resource"),
])
def test_impossible_request_fails_at_submit(cluster, tmp_path, override, message):
    sweep = f"ci_impossible_{os.getpid()}"
    start = time.time()
    done = run_cli([*FAST, f"sweep.name={sweep}", "sweep.n_trials=1", override], tmp_path,
                   timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("harness: error: sbatch refused the trial job:")
    assert message.lower() in lines[-1].lower()
    assert time.time() - start < 120
    assert sacct_jobs(f"harness-{sweep}") == []          # nothing was queued


@pytest.mark.slurm
def test_submit_error_is_raised_not_waited_on(cluster, tmp_path):
    cfg = compose_config([*FAST, "sweep.name=ci_submit", f"paths.sweeps={tmp_path}"])
    launcher = slurm.SlurmLauncher(cfg)
    launcher.executor.update_parameters(cpus_per_task=64)
    (tmp_path / "t").mkdir()
    with pytest.raises(slurm.SubmitError, match="More processors requested than permitted"):
        launcher.submit(tmp_path / "t")


@pytest.mark.slurm
def test_job_that_raises_returns_its_traceback(cluster, tmp_path):
    """A job whose function raises (here: no config.yaml) is done, with the remote error."""
    cfg = compose_config([*FAST, "sweep.name=ci_raise", f"paths.sweeps={tmp_path}"])
    launcher = slurm.SlurmLauncher(cfg)
    (tmp_path / "empty").mkdir()
    job = launcher.submit(tmp_path / "empty")
    wait_until(job.done, 180, "the job to fail")
    reason = job.failure_reason()
    assert reason.startswith("FileNotFoundError") and "config.yaml" in reason, reason
    assert f"job {job.job_id}" in reason


@pytest.mark.slurm
def test_data_parallel_trial_under_torchrun(cluster, tmp_path):
    """nproc_per_node=2: the trial trains with 2 gloo ranks inside one 2-CPU job."""
    sweep = f"ci_ddp_{os.getpid()}"
    done = run_cli([*FAST, f"sweep.name={sweep}", "sweep.n_trials=1",
                    "launcher.nproc_per_node=2", "launcher.cpus_per_task=2"], tmp_path,
                   timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_record(trial_dirs(tmp_path, sweep)[0])
    assert record.status == COMPLETE, record.error
    log_text = Path(record.job["stdout"]).read_text()
    assert "torch.distributed.run --nproc-per-node=2 --standalone" in log_text
    assert "data-parallel training on 2 processes" in log_text
