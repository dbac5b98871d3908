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

from harness import progress
from harness.config.compose import compose_config, resolve_paths, to_yaml
from harness.config.validate import check_slurm_config
from harness.errors import ConfigError
from harness.launch.slurm import job as slurm_job
from harness.launch.slurm import queue as slurm_queue
from harness.launch.slurm import settings, submit
from harness.records import COMPLETE, FAILED, read_record
from harness.sweep.driver import prepare
from harness.train.callbacks import request_checkpoint
from tests.conftest import REPO, run_cli

IN_CI = os.environ.get("CI") == "true"
CACHE = os.environ.get("HARNESS_CACHE", str(REPO / ".cache" / "harness"))
# Trials small enough for a 2-CPU cluster: a few steps, a small eval, no lm-eval/MT-Bench.
FAST = [
    "launcher=slurm", "sweep=lora_lr",             # storage: journal, launcher=slurm's default
    "launcher.parallel=2", "launcher.array_parallelism=2", "launcher.poll_seconds=1",
    "launcher.timeout_min=15", "launcher.signal_delay_s=60",
    "sweep.pruner.n_warmup_steps=1000",          # report eval loss to the study, never prune
    "method.train.max_steps=10", "method.train.eval_steps=5", "method.train.logging_steps=5",
    "data.max_train_samples=200",
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
    check_slurm_config(_cfg("storage=sqlite"))           # one node: allowed
    with pytest.raises(ConfigError, match="storage=sqlite cannot be shared.*journal"):
        check_slurm_config(_cfg("storage=sqlite", "launcher.nodes=2"))
    check_slurm_config(_cfg("launcher.nodes=2"))         # journal: fine


def test_sweep_refuses_sqlite_for_multi_node_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="storage=sqlite cannot be shared by trials running "
                                          "on 2 nodes"):
        prepare(["launcher=slurm", "storage=sqlite", "launcher.nodes=2",
                 f"paths.sweeps={tmp_path}"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override, field", [
    ("launcher.gpus_per_node=-1", "gpus_per_node"),
    ("launcher.cpus_per_task=0", "cpus_per_task"),
    ("launcher.signal_delay_s=7200", "signal_delay_s"),
    ("launcher.setup=oops", "setup"),
])
def test_bad_launcher_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=f"launcher.{field}"):
        check_slurm_config(_cfg(override))


def test_sbatch_parameters_pass_every_option():
    cfg = _cfg("launcher.partition=gpu", "launcher.account=lab", "launcher.qos=high",
               "launcher.gpus_per_node=4", "launcher.mem_gb=64", "launcher.constraint=a100",
               "launcher.timeout_min=90", "+launcher.additional.exclude=node01",
               "launcher.setup=[module load cuda]")
    params = settings.sbatch_parameters(cfg.launcher)
    assert params | {"partition": "gpu", "account": "lab", "qos": "high", "gpus_per_node": 4,
                     "mem": "64GB", "constraint": "a100", "time": 90} == params
    assert params["additional_parameters"] == {"exclude": "node01", "requeue": True}
    assert params["setup"][0].startswith("export PYTHONPATH=")
    assert params["setup"][1] == "module load cuda"
    assert settings.nproc_per_node(cfg.launcher) == 4
    assert settings.nproc_per_node(_cfg().launcher) == 1


def test_torchrun_command_lines():
    info = {"launcher": "slurm", "job_id": "12_3", "node": "n01"}
    one = slurm_job.torchrun_command("/s/trials/0001", nproc=2, job_info=info)
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone",
                       "-m", "harness.trial", "/s/trials/0001", "--job-info", json.dumps(info)]
    many = slurm_job.torchrun_command("/t", nproc=8, job_info=info, nodes=2, node_rank=1,
                                      master="n01", port=23456)
    assert many[4:8] == ["--nnodes=2", "--node-rank=1", "--master-addr=n01",
                         "--master-port=23456"]


def test_sacct_output_expands_job_arrays(monkeypatch):
    out = "7_[2-3%2]|PENDING||||\n7_0|CANCELLED by 0|vm|0:15|None\n7_1|COMPLETED|vm|0:0|None\n"
    monkeypatch.setattr(slurm_queue, "_run", lambda cmd, timeout=0: out.replace("||||", "||0:0|"))
    found = slurm_queue.sacct_status(["7_0", "7_3"])
    assert {k: v.state for k, v in found.items()} == {
        "7_0": "CANCELLED", "7_1": "COMPLETED", "7_2": "PENDING", "7_3": "PENDING"}


def test_failure_reasons_name_state_job_and_log(tmp_path):
    queue = slurm_queue.SlurmQueue(max_age_s=3600)
    queue.refreshed = time.time()
    job = submit.SlurmTrialJob(tmp_path, "12_3", tmp_path / "slurm", queue, timeout_min=5)
    for state, text in [("CANCELLED", "cancelled (scancel)"), ("TIMEOUT", "timed out"),
                        ("NODE_FAIL", "node failure"), ("OUT_OF_MEMORY", "out of memory")]:
        queue.status["12_3"] = slurm_queue.JobStatus(state)
        job.last = None
        assert job.done()
        reason = job.failure_reason()
        assert reason.startswith(text) and "job 12_3" in reason and "12_3_0_log.out" in reason
    queue.status["12_3"] = slurm_queue.JobStatus("RUNNING")
    assert not job.done()
    queue.status["12_3"] = slurm_queue.JobStatus("PENDING", reason="BadConstraints")
    cancelled = []
    job.cancel = lambda: cancelled.append(True)
    assert job.done() and cancelled and "can never start" in job.failure_reason()


def test_remote_traceback_is_the_failure_reason(tmp_path):
    from submitit.core.utils import cloudpickle_dump

    queue = slurm_queue.SlurmQueue(max_age_s=3600)
    job = submit.SlurmTrialJob(tmp_path, "41", tmp_path, queue, timeout_min=5)
    trace = "Traceback (most recent call last):\n  File x\nValueError: boom\n"
    cloudpickle_dump(("error", trace), job.paths.result_pickle)
    assert job.done()
    assert job.failure_reason().startswith("ValueError: boom (job 41, log ")


def test_sbatch_error_keeps_one_line():
    text = ("sbatch: error: invalid partition specified: nope\n"
            "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert submit.sbatch_error(text) == "Batch job submission failed: Invalid partition name " \
                                       "specified"


def test_checkpoint_request_needs_running_training():
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
        def done_and_refilled() -> bool:
            """A trial ended and the driver already submitted its replacement: it is back to
            polling, not between asking a trial and submitting it."""
            driver_alive(driver, tmp_path)
            dirs = trial_dirs(tmp_path, sweep)
            done = [d for d in dirs if (d / "result.json").exists()]
            live = [d for d in dirs if job_id(d) and not (d / "result.json").exists()]
            return len(done) >= 1 and len(live) == 2 and all(job_id(d) for d in dirs)

        wait_until(done_and_refilled, 400, "a finished trial and two in flight")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    in_flight = [d.name for d in trial_dirs(tmp_path, sweep)
                 if job_id(d) and not (d / "result.json").exists()]
    rerun = run_cli(args, tmp_path, timeout=600, env={"HARNESS_LOG": "INFO"})
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "4 complete" in rerun.stdout, rerun.stdout
    # the jobs the killed driver left queued or running were picked up, not submitted again
    reattached = rerun.stderr.count("still running: re-attached")
    assert reattached == len([n for n in in_flight if not _finished_before(tmp_path, sweep, n)])

    study = load_study(tmp_path, sweep)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4
    # anything else is a trial the killed driver had asked but not submitted: retried
    assert all(t.user_attrs.get("retried_as_new_trial") for t in study.trials
               if t.state.name != "COMPLETE")
    assert all(t.intermediate_values for t in complete)    # eval loss reported from the jobs
    # the resumed driver's sampler does not repeat the first driver's suggestions
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 4
    submitted = [d for d in trial_dirs(tmp_path, sweep) if job_id(d)]
    for trial_dir in submitted:
        record = read_record(trial_dir)
        assert record.status == COMPLETE, record.error
        assert record.job["job_id"] == job_id(trial_dir)
        assert record.job["node"] and Path(record.job["stdout"]).is_file()
        assert (trial_dir / "trial.log").resolve() == Path(record.job["stdout"])
        log_text = Path(record.job["stdout"]).read_text()
        assert log_text.count("Starting with JobEnvironment") == 1, "trial ran twice"
        assert "train sft step 10/10 (100%)" in log_text   # step lines from the node's trial
        assert progress.read(trial_dir).text() == "done COMPLETE"   # the driver's bar source
    # every trial job was submitted once (+1: the base model's job)
    assert len(sacct_jobs(f"harness-{sweep}")) == len(submitted) + 1
    assert (tmp_path / "reports" / f"{sweep}.html").is_file()


def _finished_before(cwd: Path, sweep: str, name: str) -> bool:
    """The trial's job ended while no driver ran (the rerun tells its record, no re-attach)."""
    record = read_record(cwd / "sweeps" / sweep / "trials" / name)
    return record is not None and record.job_seconds is None


@pytest.fixture(scope="module")
def faults_sweep(cluster, tmp_path_factory) -> tuple[Path, str, subprocess.CompletedProcess]:
    """3 trials, 2 at a time: trial 0 is scancel'ed, then, mid-training, trial 1 is requeued
    with `scontrol requeue` and trial 2 is sent SIGUSR2 (what SLURM sends launcher.signal_delay_s
    before the time limit) with `scancel --signal=USR2`."""
    cwd = tmp_path_factory.mktemp("faults")
    sweep = f"ci_faults_{os.getpid()}"
    args = [*FAST, f"sweep.name={sweep}", "sweep.n_trials=3", "method.train.max_steps=40",
            "method.train.eval_steps=20", "method.train.save_steps=0"]   # on-signal save only
    driver = start_driver(args, cwd)
    try:
        def started(index: int, min_steps: int) -> Callable[[], bool]:
            """Trial `index` runs in its job (its log names it) with >= min_steps trained."""
            def check() -> bool:
                driver_alive(driver, cwd)
                dirs = trial_dirs(cwd, sweep)
                if len(dirs) <= index or not job_id(dirs[index]):
                    return False
                log = dirs[index] / "trial.log"
                return log.exists() and "in SLURM job" in log.read_text() and \
                    trained_steps(dirs[index]) >= min_steps
            return check

        wait_until(started(0, 0), 300, "trial 0's job to start")
        subprocess.run(["scancel", job_id(trial_dirs(cwd, sweep)[0])], check=True, timeout=30)
        wait_until(started(1, 5), 300, "trial 1 training")
        subprocess.run(["scontrol", "requeue", job_id(trial_dirs(cwd, sweep)[1])], check=True,
                       timeout=30)
        wait_until(started(2, 5), 300, "trial 2 training")
        subprocess.run(["scancel", "--signal=USR2", job_id(trial_dirs(cwd, sweep)[2])],
                       check=True, timeout=30)
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
    assert f"sweep {sweep}: 2 complete, 1 fail" in done.stdout, done.stdout[-3000:]
    dirs = trial_dirs(cwd, sweep)
    cancelled = read_record(dirs[0])
    assert cancelled.status == FAILED
    assert cancelled.error.message.startswith("cancelled (scancel)")
    assert f"job {job_id(dirs[0])}" in cancelled.error.message
    assert cancelled.job["job_id"] == job_id(dirs[0])
    assert read_record(dirs[2]).status == COMPLETE     # the sweep went on after the cancel
    assert (cwd / "reports" / f"{sweep}.html").is_file()


def _check_resumed(trial_dir: Path, signal_line: str) -> None:
    record = read_record(trial_dir)
    assert record.status == COMPLETE, record.error
    assert record.job["restart_count"] >= 1
    assert record.resumed_from_step > 0       # from its checkpoint, not from step 0
    assert record.train_steps == 40
    log_text = Path(record.job["stdout"]).read_text()
    assert signal_line in log_text
    assert f"resuming from {trial_dir}/checkpoints/checkpoint-" in log_text
    # the loss log goes on from the checkpoint: no step trained twice after the resume
    steps = [json.loads(line)["step"] for line in (trial_dir / "loss.jsonl").read_text()
             .splitlines() if "\"loss\"" in line]
    assert steps == sorted(set(steps)) and steps[-1] == 40, steps


@pytest.mark.slurm
def test_requeued_trial_resumes_from_its_checkpoint(faults_sweep):
    cwd, sweep, _ = faults_sweep
    _check_resumed(trial_dirs(cwd, sweep)[1], "SIGTERM: job cancelled, requeued or preempted")


@pytest.mark.slurm
def test_signalled_trial_checkpoints_requeues_and_resumes(faults_sweep):
    cwd, sweep, _ = faults_sweep
    _check_resumed(trial_dirs(cwd, sweep)[2], "SIGUSR2: time limit ahead")


@pytest.mark.slurm
def test_impossible_request_fails_at_submit(cluster, tmp_path):
    """The CLI: exit 2, one line with sbatch's reason, nothing queued and nothing written."""
    sweep = f"ci_impossible_{os.getpid()}"
    done = run_cli([*FAST, f"sweep.name={sweep}", "sweep.n_trials=1",
                    "launcher.cpus_per_task=64"], tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line == ("harness: error: sbatch refused the trial job: allocation failure: More "
                    "processors requested than permitted (asked: nodes=1, cpus_per_task=64)")
    assert sacct_jobs(f"harness-{sweep}") == []          # nothing was queued
    assert not (tmp_path / "sweeps").exists()             # nor written


@pytest.mark.slurm
@pytest.mark.parametrize("override, message", [
    ("launcher.partition=no_such_partition", "invalid partition specified: no_such_partition"),
    ("launcher.gpus_per_node=2", "Invalid generic resource (gres) specification"),
    ("launcher.mem_gb=100000", "Requested node configuration is not available"),
    ("launcher.constraint=a100", "Invalid feature specification"),
])
def test_impossible_requests_are_refused_by_the_launcher(cluster, tmp_path, override, message):
    cfg = compose_config([*FAST, "sweep.name=ci_refused", f"paths.sweeps={tmp_path}", override])
    with pytest.raises(submit.SubmitError, match="sbatch refused the trial job") as info:
        submit.SlurmLauncher(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slurm
def test_submit_error_is_raised_not_waited_on(cluster, tmp_path):
    cfg = compose_config([*FAST, "sweep.name=ci_submit", f"paths.sweeps={tmp_path}"])
    launcher = submit.SlurmLauncher(cfg)
    launcher.executor.update_parameters(cpus_per_task=64)
    (tmp_path / "t").mkdir()
    with pytest.raises(submit.SubmitError, match="More processors requested than permitted"):
        launcher.submit(tmp_path / "t")


@pytest.mark.slurm
def test_job_that_raises_returns_its_traceback(cluster, tmp_path):
    """A job whose function raises (here: no config.yaml) is done, with the remote error."""
    cfg = compose_config([*FAST, "sweep.name=ci_raise", f"paths.sweeps={tmp_path}"])
    launcher = submit.SlurmLauncher(cfg)
    (tmp_path / "empty").mkdir()
    job = launcher.submit(tmp_path / "empty")
    wait_until(job.done, 180, "the job to fail")
    reason = job.failure_reason()
    assert reason.startswith("FileNotFoundError") and "config.yaml" in reason, reason
    assert f"job {job.job_id}" in reason


@pytest.mark.slurm
def test_data_parallel_trial_under_torchrun(cluster, tmp_path):
    """nproc_per_node=2: one trial's job trains with 2 gloo ranks under torchrun (what
    gpus_per_node=2 runs on a GPU node); rank 0 then evaluates and writes the record."""
    cfg = resolve_paths(compose_config([
        *FAST, "sweep.name=ci_ddp", f"paths.sweeps={tmp_path}", f"paths.cache={CACHE}",
        "launcher.nproc_per_node=2", "launcher.cpus_per_task=2", "method.train.max_steps=6",
        "method.train.eval_steps=3", "method.train.logging_steps=3"]))
    trial_dir = tmp_path / "ci_ddp" / "trials" / "0000"
    trial_dir.mkdir(parents=True)
    cfg.trial = {"number": 0, "params": {}, "threads": 2, "dir": str(trial_dir)}
    (trial_dir / "config.yaml").write_text(to_yaml(cfg))
    job = submit.SlurmLauncher(cfg).submit(trial_dir)
    wait_until(job.done, 300, "the data-parallel trial")
    record = read_record(trial_dir)
    assert record is not None, job.failure_reason()
    assert record.status == COMPLETE, record.error
    assert record.train_steps == 6 and record.metrics["perplexity"] > 1
    assert record.job["job_id"] == job.job_id
    log_text = Path(record.job["stdout"]).read_text()
    assert "torch.distributed.run --nproc-per-node=2 --standalone" in log_text
    assert "data-parallel training on 2 processes" in log_text
