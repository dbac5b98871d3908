"""eval.judge.serve.where=slurm: the sweep's judge as its own SLURM job (issue 10, defects 5/10).

Unit: a loopback judge with launcher=slurm is refused before anything is written. Cluster
(marked `slurm`, on the single-node cluster): a sweep grades its trials through the judge job
(no judge errors, a URL that is not loopback), and a SIGKILLed driver's judge job ends by itself
(heartbeat watchdog); a resumed driver cancels a recorded judge job that still runs.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from openai import OpenAI

from harness.config.compose import compose_config, resolve_paths
from harness.config.judge_reach import is_loopback
from harness.config.validate import Problems, validate_sweep
from harness.errors import ConfigError
from harness.eval.judge_server import SERVER_FILE, stop_stale_server
from harness.records import COMPLETE, read_record, read_trial_config
from harness.sweep.driver import prepare
from harness.sweep.judge_job import ENDPOINT_FILE
from harness.sweep.judge_service import JudgeJobError, judge_service
from tests.test_slurm import cluster, driver_alive, start_driver, trial_dirs, wait_until

__all__ = ["cluster"]   # the module-scoped fixture of tests/test_slurm.py

STALE_S = 8   # the judge job's heartbeat bound in the cluster test (conf default: 60)
# One trial graded by MT-Bench (one question, the embedded judge), everything else small or off.
TINY = [
    "launcher=slurm", "sweep=lora_lr", "sweep.n_trials=2", "launcher.parallel=1",
    "launcher.array_parallelism=1", "launcher.poll_seconds=1", "launcher.timeout_min=15",
    "sweep.pruner.name=none", "method.train.max_steps=2", "method.train.eval_steps=2",
    "method.train.logging_steps=1", "data.max_train_samples=50",
    "eval.rouge.enabled=false", "eval.perplexity.max_texts=8", "eval.lm_eval.enabled=false",
    "data.preference.metrics.enabled=false", "eval.mt_bench.limit=1",
    "eval.mt_bench.max_new_tokens=8",
    "eval.judge.serve.slurm.heartbeat_s=1", f"eval.judge.serve.slurm.stale_s={STALE_S}",
]


@pytest.mark.parametrize("overrides, field", [
    (["eval.judge.base_url=http://127.0.0.1:8000/v1", "eval.judge.model=judge"],
     "eval.judge.base_url"),
    (["eval.judge.base_url=http://localhost:8000/v1", "eval.judge.model=judge"],
     "eval.judge.base_url"),
    (["eval.judge.serve.where=local"], "eval.judge.serve.where"),
])
def test_loopback_judge_with_slurm_launcher_is_refused(overrides, field):
    problems = Problems()
    validate_sweep(compose_config(["launcher=slurm", *overrides]), 1, problems)
    assert len(problems.lines) == 1 and problems.lines[0].startswith(field), problems.lines
    assert "cannot reach" in problems.lines[0]
    problems = Problems()
    validate_sweep(compose_config(["launcher=local", *overrides]), 1, problems)
    assert problems.lines == []        # trials on the driver host reach its 127.0.0.1


def test_loopback_judge_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"eval.judge.base_url=http://127.0.0.1:8000/v1 is a "
                                          r"loopback address"):
        prepare(["launcher=slurm", "eval.judge.base_url=http://127.0.0.1:8000/v1",
                 "eval.judge.model=judge", f"paths.sweeps={tmp_path}"])
    assert list(tmp_path.iterdir()) == []


def squeue_has(job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True,
                         timeout=30)
    return job in out.stdout.split()


def sacct_state(job: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


@pytest.mark.slurm
def test_trials_are_graded_through_the_judge_job_which_dies_with_its_driver(cluster, tmp_path):
    """The base model and trial 0 run as SLURM jobs and are graded by the judge job (it shows
    in sacct; the trial spec's URL names its node, not a loopback address; no judge errors).
    Then the driver is SIGKILLed while trial 1 runs: the judge job ends by itself within
    STALE_S + 15 s (its log says why) and leaves SLURM's queue."""
    sweep = f"ci_judge_{tmp_path.name[-12:]}".replace("-", "_")
    driver = start_driver([*TINY, f"sweep.name={sweep}"], tmp_path)
    folder = tmp_path / "sweeps" / sweep
    try:
        def first_trial_done() -> bool:
            driver_alive(driver, tmp_path)
            dirs = trial_dirs(tmp_path, sweep)
            return bool(dirs) and (dirs[0] / "result.json").exists() and len(dirs) == 2
        wait_until(first_trial_done, 420, "the base model and trial 0 graded")
        record = json.loads((folder / SERVER_FILE).read_text())
        job = record["slurm_job_id"]
        assert squeue_has(job), "the judge job is not running"
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        killed = time.monotonic()
        wait_until(lambda: not squeue_has(job), STALE_S + 15, "the judge job to leave squeue")
        gone_s = time.monotonic() - killed
    finally:
        driver.kill()
        subprocess.run(["scancel", "--name", f"harness-{sweep}"], timeout=30)
        subprocess.run(["scancel", "--name", f"harness-judge-{sweep}"], timeout=30)
    print(f"judge job {job} left squeue {gone_s:.1f} s after the driver's SIGKILL")
    log = (tmp_path / "driver.log").read_text()
    assert f"judge: SLURM job {job} serving on" in log, log[-2000:]
    # slurmdbd can still say RUNNING a moment after the job left squeue (seen in CI, 8.6 s)
    wait_until(lambda: sacct_state(job) != "RUNNING", 30, "sacct to record the judge job's end")
    assert sacct_state(job) == "COMPLETED"   # ended by its own watchdog, not scancel'ed
    job_log = next((folder / "judge_slurm").glob(f"{job}_*_log.out")).read_text()
    assert "the driver is gone" in job_log
    endpoint = json.loads((folder / ENDPOINT_FILE).read_text())   # what the job published
    graded = [*sorted((folder / "baseline").iterdir()), trial_dirs(tmp_path, sweep)[0]]
    for trial_dir in graded:
        _, spec = read_trial_config(trial_dir)
        host = urlsplit(spec.judge_url).hostname
        assert not is_loopback(spec.judge_url)
        assert (host, urlsplit(spec.judge_url).port) == (endpoint["host"], endpoint["port"])
        result = read_record(trial_dir)
        assert result.status == COMPLETE, result.error
        assert result.job["launcher"] == "slurm"
        metrics = result.metrics
        assert metrics["mt_bench/judge_errors"] == 0, metrics
        assert metrics["mt_bench/judged"] >= 1 and "mt_bench/score" in metrics, metrics


def sbatch_sleep(name: str) -> str:
    """A held job (queued, holding no CPU) standing in for a recorded job."""
    out = subprocess.run(["sbatch", "--parsable", "--hold", f"--job-name={name}", "--time=5",
                          "--output=/dev/null", "--wrap", "sleep 120"], capture_output=True,
                         text=True, timeout=30, check=True)
    return out.stdout.strip().split(";")[0]


@pytest.mark.slurm
def test_resumed_driver_cancels_the_recorded_judge_job_and_its_own_at_the_end(cluster,
                                                                             tmp_path: Path):
    """stop_stale_server leaves a recorded job id that now names another job alone; the judge
    service cancels a recorded judge job that still runs (a killed driver's) before submitting
    its own; a judge job that does not answer in time is one error line and is cancelled; one
    that does serves gradings and is cancelled when the block ends."""
    sweep = "ci_judge_resume"
    folder = tmp_path / "sweeps" / sweep
    folder.mkdir(parents=True)
    record = folder / SERVER_FILE
    stale, other = sbatch_sleep(f"harness-judge-{sweep}"), sbatch_sleep("someone-else")
    try:
        record.write_text(json.dumps({"slurm_job_id": other,
                                      "job_name": f"harness-judge-{sweep}"}))
        assert stop_stale_server(record) is None and not record.exists()
        assert squeue_has(other)
        record.write_text(json.dumps({"slurm_job_id": stale,
                                      "job_name": f"harness-judge-{sweep}"}))
        cfg = resolve_paths(compose_config([
            "launcher=slurm", f"sweep.name={sweep}", f"paths.sweeps={tmp_path / 'sweeps'}"]))
        cfg.eval.judge.serve.startup_timeout_s = 1     # a judge too slow to start: one line
        with pytest.raises(JudgeJobError, match="startup_timeout_s") as caught:
            judge_service(cfg, folder).__enter__()
        assert "\n" not in str(caught.value)
        failed = re.search(r"\(job (\d+),", str(caught.value)).group(1)
        assert not squeue_has(stale), "the stale judge job was not cancelled"
        assert not record.exists()
        wait_until(lambda: not squeue_has(failed), 30, "the failed judge job to be cancelled")
        cfg.eval.judge.serve.startup_timeout_s = 300
        with judge_service(cfg, folder) as judge:
            assert judge.job_id != stale and squeue_has(judge.job_id)
            assert json.loads(record.read_text())["slurm_job_id"] == judge.job_id
            reply = OpenAI(base_url=judge.base_url, api_key="EMPTY").chat.completions.create(
                model=judge.model, max_tokens=16,
                messages=[{"role": "user", "content": "[Question]\nHi\n[The End]"}])
            assert "Rating" in reply.choices[0].message.content
        wait_until(lambda: not squeue_has(judge.job_id), 30, "the judge job to be cancelled")
        assert sacct_state(judge.job_id).startswith("CANCELLED")
        assert not record.exists()
    finally:
        subprocess.run(["scancel", stale, other], timeout=30)
