"""Local trials on a multi-GPU machine: each running trial gets its own GPUs (its
CUDA_VISIBLE_DEVICES), released when it ends, also when it crashes; no GPU is needed to test it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.errors import ConfigError
from harness.launch.base import trial_threads
from harness.launch.devices import device_plan, visible_gpus
from harness.launch.local import LocalLauncher

# Stands in for `python -m harness.trial DIR`: writes the devices it was given, then runs for
# the time in DIR/run_s (a crash exits 1 at once).
FAKE_TRIAL = """
import os, sys, time
from pathlib import Path
d = Path(sys.argv[1])
(d / "devices").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
if (d / "crash").exists():
    sys.exit(1)
time.sleep(float((d / "run_s").read_text()))
"""


class FakeTrialLauncher(LocalLauncher):
    def command(self, trial_dir: Path) -> list[str]:
        return [sys.executable, "-c", FAKE_TRIAL, str(trial_dir)]


def _launcher_cfg(**launcher):
    return OmegaConf.create({"launcher": {"name": "local", "parallel": None, "devices": None,
                                          "gpus_per_trial": None, "timeout_min": 5,
                                          **launcher}})


def test_visible_gpus_prefers_cuda_visible_devices():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3, 5"}) == ["3", "5"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


@pytest.mark.parametrize(("launcher", "devices", "per_trial", "parallel"), [
    ({"devices": [0, 1, 2, 3]}, ("0", "1", "2", "3"), 1, 4),          # 4 GPUs: 4 trials
    ({"devices": [0, 1, 2, 3], "gpus_per_trial": 2}, ("0", "1", "2", "3"), 2, 2),
    ({"devices": [0, 1, 2, 3], "parallel": 3}, ("0", "1", "2", "3"), 1, 3),
    ({"devices": []}, (), 0, 1),                                       # CPU
    ({"devices": [], "parallel": 2}, (), 0, 2),
])
def test_device_plan_defaults(launcher, devices, per_trial, parallel):
    plan = device_plan(_launcher_cfg(**launcher).launcher)
    assert (plan.devices, plan.per_trial, plan.parallel) == (devices, per_trial, parallel)


@pytest.mark.parametrize(("launcher", "message"), [
    ({"devices": [0, 1], "parallel": 3}, "launcher.parallel=3 trials x 1 GPU"),
    ({"devices": [0], "gpus_per_trial": 2}, "launcher.gpus_per_trial=2 but launcher.devices"),
    ({"devices": [], "gpus_per_trial": 1}, "launcher.gpus_per_trial=1 but launcher.devices"),
    ({"devices": [0, 0]}, "launcher.devices lists a GPU twice"),
    ({"devices": "0,1"}, "launcher.devices must be a list"),
])
def test_impossible_device_requests_name_the_field(launcher, message):
    with pytest.raises(ConfigError, match=message):
        LocalLauncher(_launcher_cfg(**launcher))


def test_threads_follow_the_automatic_parallelism(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert trial_threads(_launcher_cfg(devices=[0, 1, 2, 3]).launcher) == 4


def test_each_running_trial_gets_its_own_gpu_and_gives_it_back(tmp_path):
    """4 GPUs, 1 per trial: 4 trials at once on 4 different devices; a crashed trial's and a
    finished trial's GPU go to the next trials; a CPU-only trial on a GPU machine sees none."""
    launcher = FakeTrialLauncher(_launcher_cfg(devices=[0, 1, 2, 3]))
    assert launcher.parallel == 4
    dirs = []
    for i, run_s in enumerate([30, 30, 0.1, 30, 30, 30]):
        d = tmp_path / f"{i:04d}"
        d.mkdir()
        (d / "run_s").write_text(str(run_s))
        dirs.append(d)
    (dirs[3] / "crash").touch()
    jobs = launcher.submit_many(dirs[:4])
    try:
        _wait(lambda: all((d / "devices").exists() for d in dirs[:4]))
        seen = [(d / "devices").read_text() for d in dirs[:4]]
        assert seen == ["0", "1", "2", "3"]                # no two running trials share a GPU
        with pytest.raises(RuntimeError):
            launcher.submit(dirs[4])                       # all 4 held: never a fifth
        _wait(lambda: jobs[2].done() and jobs[3].done())   # one finished, one crashed
        assert launcher.pool.free == ("2", "3")
        jobs += launcher.submit_many(dirs[4:6])
        _wait(lambda: all((d / "devices").exists() for d in dirs[4:6]))
        assert [(d / "devices").read_text() for d in dirs[4:6]] == ["2", "3"]
        assert launcher.pool.free == ()
        jobs[0].cancel()                                   # a cancelled (killed) trial, too
        assert launcher.pool.free == ("0",)
    finally:
        for job in jobs:
            job.cancel()
    assert launcher.pool.free == ("0", "1", "2", "3")

    cpu = FakeTrialLauncher(_launcher_cfg(devices=[0, 1], gpus_per_trial=0, parallel=1))
    cpu_dir = tmp_path / "cpu"
    cpu_dir.mkdir()
    (cpu_dir / "run_s").write_text("0")
    job = cpu.submit(cpu_dir)
    _wait(job.done)
    assert (cpu_dir / "devices").read_text() == ""


def _wait(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
