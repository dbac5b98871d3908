"""Re-scoring a saved model (the top-k pass, `reeval`) runs as a launcher job, never inside the
driver process: a child process with launcher=local, a SLURM job with launcher=slurm.

Both re-score the saved trial of tests/test_progress.py (one tiny LoRA trial, shared fixture).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import tasks
from harness.launch.base import make_launcher
from harness.records import read_record
from harness.sweep.cascade import rescore_jobs, task_launcher_config
from tests.conftest import REPO
from tests.test_slurm import cluster  # noqa: F401 - skips without a SLURM cluster

pytestmark = pytest.mark.slow

# The driver side of a re-scoring, in a fresh process: what the top-k pass and `reeval` run.
DRIVER = """
import json, os, sys
from pathlib import Path
from omegaconf import OmegaConf
from harness.launch.base import make_launcher
from harness.sweep.cascade import rescore_jobs
folder = Path(sys.argv[1])
launcher = make_launcher(OmegaConf.load(folder / "config.yaml"))
outcome = rescore_jobs([(folder, "rank 1 of 1: test")], launcher, None, ["lm_eval"], poll_s=0.2)
print(json.dumps({"pid": os.getpid(), "loaded": sorted(m for m in ("torch", "transformers",
      "peft") if m in sys.modules), "outcome": outcome[folder]}))
"""


def test_rescoring_runs_in_a_child_process_not_in_the_driver(tiny_trial) -> None:
    folder = tiny_trial["dir"]
    assert "lm_eval/embedded_facts_mc/acc" not in read_record(folder).metrics
    out = subprocess.run([sys.executable, "-c", DRIVER, str(folder)], capture_output=True,
                         text=True, timeout=900, cwd=REPO,
                         env={**os.environ, "HARNESS_CACHE": str(REPO / ".cache" / "harness")})
    assert out.returncode == 0, out.stderr[-3000:]
    driver = json.loads(out.stdout.strip().splitlines()[-1])
    outcome = driver["outcome"]
    assert outcome["status"] == tasks.DONE, outcome
    assert outcome["pid"] != driver["pid"]        # the model was loaded by the job ...
    assert driver["loaded"] == []                 # ... and the driver never imported torch
    record = read_record(folder)                  # results written back as before
    assert "lm_eval/embedded_facts_mc/acc" in record.metrics
    assert record.cascade == {"judged": True, "reason": "rank 1 of 1: test", "deferred": False}
    assert "lm_eval" in tasks.log_path(folder, tasks.RESCORE).read_text()


@pytest.mark.slurm
def test_rescoring_job_on_the_slurm_cluster(tiny_trial, cluster) -> None:  # noqa: F811 - cluster
    """The same saved trial re-scored as a SLURM job (`reeval --launcher slurm` composes this
    launcher for a sweep that ran locally)."""
    folder, cfg = tiny_trial["dir"], tiny_trial["cfg"]
    slurm_cfg = task_launcher_config(cfg, folder.parent.parent, "slurm", [
        "launcher.cpus_per_task=1", "launcher.timeout_min=15", "launcher.poll_seconds=1"])
    launcher = make_launcher(slurm_cfg)
    outcome = rescore_jobs([(folder, None)], launcher, None, ["lm_eval"], poll_s=1.0)[folder]
    assert outcome["status"] == tasks.DONE, outcome
    assert outcome["slurm_job_id"] and outcome["pid"] != os.getpid()
    log = tasks.log_path(folder, tasks.RESCORE)
    assert log.is_symlink() and Path(os.readlink(log)).parent == Path(slurm_cfg.launcher.folder)
    assert "lm_eval" in log.read_text()
    assert "lm_eval/embedded_facts_mc/acc" in read_record(folder).metrics
