"""End-to-end sweeps on the embedded model: records, failures, resume after SIGKILL, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from harness.records import read_record
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

# Small trials: enough steps to move the metrics, small evaluation sets.
FAST = ["method.train.max_steps=30", "method.train.eval_steps=15", "method.train.logging_steps=5",
        "eval.rouge.max_samples=8", "eval.perplexity.max_texts=24", "launcher.parallel=1",
        "eval.lm_eval.limit=8", "eval.mt_bench.limit=2", "data.preference.metrics.max_pairs=16",
        "data.preference.metrics.max_prompts=8"]
# The failure and resume tests check the driver, not the metrics: the cheap battery only.
DRIVER_ONLY = [*FAST, "eval.lm_eval.enabled=false", "eval.mt_bench.enabled=false",
               "data.preference.metrics.enabled=false"]


def _study(root: Path, name: str) -> optuna.Study:
    storage = f"sqlite:///{root}/sweeps/{name}/study.db"
    return optuna.load_study(study_name=name, storage=storage)


def _records(root: Path, name: str) -> list:
    trials = sorted((root / "sweeps" / name / "trials").iterdir())
    return [read_record(t) for t in trials]


SENTINEL = "sk-SENTINEL-judge-key-never-on-disk-7731"


def _files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_default_sweep_end_to_end(tmp_path):
    # The judge is the embedded model served locally; the key is a sentinel read from the env.
    key = ["eval.judge.api_key_env=HARNESS_TEST_JUDGE_KEY"]
    env = {"HARNESS_TEST_JUDGE_KEY": SENTINEL}
    result = run_cli(["sweep.n_trials=3", *FAST, *key], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = _records(tmp_path, "default")
    assert [r.status for r in records] == ["COMPLETE"] * 3
    assert {r.method for r in records} >= {"lora", "qlora"}  # enqueued one of each
    for record in records:
        assert record.metrics["perplexity"] > 1 and 0 <= record.metrics["rougeL"] <= 1
        assert set(record.delta_vs_base) >= {"perplexity", "rougeL"}
        assert record.train_seconds > 0 and record.peak_rss_mb > 0
        assert 0 < record.trainable_params < record.total_params
        assert record.versions["torch"] and record.loss_history
        assert "lm_eval/embedded_facts_mc/acc" in record.metrics
        assert record.metrics["mt_bench/judged"] > 0 and "mt_bench/score" in record.metrics
        # an SFT sweep on perplexity does not ask for preference metrics: no reward model
        assert "pref_accuracy" not in record.metrics
        assert record.extra["preference_metrics"].startswith("skipped: not asked for")
        cfg = Path(record.config_path).read_text()
        assert f"number: {record.number}" in cfg and "learning_rate" in cfg
        assert (Path(record.output_dir) / "adapter_config.json").exists()
    # fine-tuning really adapts the pretrained base: held-out perplexity falls by > 30%
    best = min(records, key=lambda r: r.metrics["perplexity"])
    assert best.delta_vs_base["perplexity"] < -0.3 * (best.metrics["perplexity"]
                                                      - best.delta_vs_base["perplexity"])
    study = _study(tmp_path, "default")
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == 3
    assert (tmp_path / "reports" / "default.html").exists()
    # the data card (harness.data.prepare): in the sweep folder and on the report page
    card = json.loads((tmp_path / "sweeps" / "default" / "data" / "card.json").read_text())
    assert card["contamination"] and all(f["flagged"] == 0 for f in card["contamination"])
    page = (tmp_path / "reports" / "default.html").read_text()
    assert '<section id="data-card">' in page and "length per row (tokens)" in page
    assert "data preparation: " in result.stdout

    # re-scoring the finished sweep sends no judge request twice: every judgment is cached
    again = subprocess.run([sys.executable, "-m", "harness.cascade", "reeval",
                            str(tmp_path / "sweeps" / "default")], cwd=tmp_path,
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    counts = [json.loads(line.split(" ", 1)[1])
              for line in again.stdout.splitlines() if "judge_requests" in line]
    assert len(counts) == 4                                 # the base model and three trials
    assert all(c["judge_requests"] == 0 and c["judge_cache_hits"] > 0 for c in counts)
    for folder in ("sweeps", "reports"):
        assert _files_containing(tmp_path / folder, SENTINEL) == []


def test_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    space = "+sweep.params.targets={type:categorical,key:method.lora.target_modules," \
            "choices:[all-linear,no_such_module]}"
    result = run_cli(["sweep=qlora_rank", "sweep.name=failing", space, "method.lora.rank=4",
                      *DRIVER_ONLY], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = {r.params["targets"]: r for r in _records(tmp_path, "failing")}
    assert records["all-linear"].status == "COMPLETE"
    failed = records["no_such_module"]
    assert failed.status == "FAILED"
    assert failed.error.type in {"ValueError", "NoMatchingPeftModuleError"}
    assert "no_such_module" in failed.error.message
    assert Path(failed.error.log).exists()
    states = sorted(t.state.name for t in _study(tmp_path, "failing").trials)
    assert states == ["COMPLETE", "FAIL"]


def test_sft_sweep_that_asks_for_preference_metrics_trains_its_scorer_before_any_trial(tmp_path):
    # issue 13: the scoring reward model is built by the base-model job, never inside a trial
    smallest = ["eval.rouge.max_samples=2", "eval.perplexity.max_texts=4",
                "eval.lm_eval.enabled=false", "eval.mt_bench.enabled=false",
                "data.preference.metrics.max_pairs=8", "data.preference.metrics.max_prompts=4",
                "data.preference.metrics.max_new_tokens=8", "launcher.parallel=1"]
    result = run_cli(["sweep.name=scorer", "sweep.n_trials=1", "method.train.max_steps=2",
                      "method.train.eval_steps=0", "data.preference.metrics.enabled=true",
                      "+data.preference.metrics.scorer.train.max_steps=3", *smallest],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    base_dir, = (tmp_path / "sweeps" / "scorer" / "baseline").iterdir()
    base = read_record(base_dir)
    built, = [s for s in base.stages if s["role"] == "scoring"]
    assert not built["reused"] and base.extra["scorer_train_seconds"] > 0
    assert built["extra"]["steps"] == 3                        # the scorer override applies
    assert 0 <= base.metrics["pref_accuracy"] <= 1 and "reward_mean" in base.metrics
    trial, = _records(tmp_path, "scorer")
    assert trial.status == "COMPLETE" and trial.method == "lora"
    used, = [s for s in trial.stages if s["role"] == "scoring"]
    assert used["reused"] and used["hash"] == built["hash"]   # the trial trained no scorer
    assert {"pref_accuracy", "reward_mean", "win_rate_vs_sft"} <= set(trial.metrics)
    assert trial.delta_vs_base["reward_mean"] == pytest.approx(
        trial.metrics["reward_mean"] - base.metrics["reward_mean"])
    assert trial.extra["base_reward_mean"] == base.metrics["reward_mean"]


def test_sigkill_then_rerun_resumes_without_rerunning(tmp_path):
    args = ["sweep.name=resume", "sweep.n_trials=3", *DRIVER_ONLY]
    env = {**os.environ, "HARNESS_CACHE": str(REPO / ".cache" / "harness")}
    driver = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "sweeps" / "resume" / "trials" / "0000" / "result.json"
    deadline = time.time() + 400
    while not first.exists() and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
    assert first.exists(), "first trial did not complete"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    first_record = first.read_text()

    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path, "resume")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3
    assert json.loads(first.read_text())["status"] == "COMPLETE"
    assert json.loads(first.read_text())["metrics"] == json.loads(first_record)["metrics"]
    for trial in complete:
        log = (Path(trial.user_attrs["dir"]) / "trial.log").read_text()
        assert log.count("COMPLETE") == 1, f"trial {trial.number} ran more than once"
