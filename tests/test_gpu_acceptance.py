"""The GPU acceptance script's CPU-sized variant: the same four methods through `python -m
harness` at small shapes of a real architecture, battery on, and the table it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

SMALLEST = ["eval.perplexity.max_texts=4", "eval.rouge.max_samples=2",
            "eval.rouge.max_new_tokens=8", "eval.lm_eval.limit=2", "eval.mt_bench.limit=1",
            "eval.mt_bench.max_new_tokens=8", "data.preference.metrics.enabled=false",
            "launcher.parallel=2"]


def test_cpu_sized_acceptance_run(tmp_path):
    env = {**os.environ, "HARNESS_CACHE": os.environ.get(
        "HARNESS_CACHE", str(REPO / ".cache" / "harness"))}
    out = tmp_path / "acc"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_acceptance.py"), "--shape", "small",
         "--steps", "2", "--no-ratio", "--out", str(out), *SMALLEST],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "acceptance.json").read_text())
    trials = summary["trials"]
    assert sorted(t["method"] for t in trials) == ["dpo", "full", "lora", "qlora"]
    assert all(t["status"] == "COMPLETE" for t in trials), trials
    for t in trials:
        assert t["steps"] == 2 and t["train_s"] > 0 and t["eval_s"] > 0 and t["overhead_s"] >= 0
        if t["method"] != "dpo":          # the Trainer counts tokens of SFT batches only
            assert t["tokens_per_s"] > 0, t
    assert "| trial | method | status |" in done.stdout
    assert not (out / "model").exists()        # the random weights are not kept
