"""Harness overhead per trial: the trial job's wall time minus its training and evaluation time.

    python benchmarks/trial_overhead.py [--trials 4] [--modes cold warm] [--base-tree DIR]
                                        [overrides...]

Runs the default sweep (`python -m harness`, conf/sweep/default.yaml: LoRA vs QLoRA, 120 steps,
full battery, two trials at once) once per mode, one after the other in this run, each in its
own temporary folder with its own empty datasets cache, and prints per trial the job's wall
seconds (driver submit to driver seeing it end), train and eval seconds, and the rest (process
start and imports, model and data load, saving, bookkeeping, the driver noticing the end), then
per mode the median overhead in seconds and as a share of the job's wall time, and the ratio of
each mode's median overhead to warm's. Modes: `cold` and `warm` are
launcher.processes; `base` runs `cold` with PYTHONPATH=--base-tree (e.g. a `git worktree` of
the commit before), i.e. the code as it was. The machine's load (`uptime`) is printed around
each run: the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.records import TrialRecord, read_record

REPO = Path(__file__).resolve().parents[1]


def run_sweep(mode: str, trials: int, overrides: list[str], base_tree: str | None
              ) -> tuple[list[TrialRecord], float, str]:
    """One default sweep in `mode`; its trial records, its wall seconds, the worker's log."""
    env = {**os.environ, "HARNESS_CACHE": os.environ.get("HARNESS_CACHE",
                                                         str(REPO / ".cache" / "harness"))}
    processes = [] if mode == "base" else [f"launcher.processes={mode}"]
    if mode == "base":
        env["PYTHONPATH"] = base_tree
    with tempfile.TemporaryDirectory() as tmp:
        env["HF_DATASETS_CACHE"] = str(Path(tmp) / "datasets")   # every mode starts empty
        cmd = [sys.executable, "-m", "harness", "sweep.name=overhead",
               f"sweep.n_trials={trials}", *processes, *overrides]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, check=True, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        sweep = Path(tmp) / "sweeps" / "overhead"
        records = [read_record(t) for t in sorted((sweep / "trials").iterdir())]
        worker = sweep / "warm_worker.log"
        preload = next((line.split(": ", 1)[1] for line in worker.read_text().splitlines()
                        if "preloaded" in line), "") if worker.exists() else ""
    return [r for r in records if r is not None], seconds, preload


def overhead(record: TrialRecord) -> tuple[float, float]:
    """(job seconds, overhead seconds) of one trial."""
    job = record.job_seconds if record.job_seconds is not None else record.wall_seconds
    return job, job - record.train_seconds - record.eval_seconds


def report(mode: str, records: list[TrialRecord]) -> tuple[float, float]:
    """Print the trials of one mode; returns (median overhead s, median share)."""
    print(f"{'mode':<5}{'trial':>6} {'method':<6}{'job s':>8}{'train s':>9}{'eval s':>8}"
          f"{'other s':>9}{'overhead':>10}")
    seconds, shares = [], []
    for r in records:
        job, other = overhead(r)
        seconds.append(other)
        shares.append(other / job)
        print(f"{mode:<5}{r.number:>6} {r.method:<6}{job:>8.1f}{r.train_seconds:>9.1f}"
              f"{r.eval_seconds:>8.1f}{other:>9.2f}{other / job:>10.1%}")
    return statistics.median(seconds), statistics.median(shares)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--modes", nargs="+", default=["cold", "warm"],
                        choices=["base", "cold", "warm"])
    parser.add_argument("--base-tree", help="PYTHONPATH of the code to compare (mode base)")
    args, overrides = parser.parse_known_args()
    if "base" in args.modes and not args.base_tree:
        parser.error("--modes base needs --base-tree")
    medians: dict[str, tuple[float, float]] = {}
    for mode in args.modes:
        print(f"[{mode}] before: {uptime()}", flush=True)
        records, seconds, preload = run_sweep(mode, args.trials, overrides, args.base_tree)
        print(f"[{mode}] after:  {uptime()}")
        print(f"[{mode}] sweep wall {seconds:.0f} s" + (f"; warm worker: {preload}"
                                                         if preload else ""))
        medians[mode] = report(mode, records)
        print(f"[{mode}] median overhead {medians[mode][0]:.2f} s per trial, "
              f"{medians[mode][1]:.1%} of the trial's wall time", flush=True)
    if "warm" in medians:   # every other mode against warm, whatever the order they ran in
        warm = medians["warm"]
        for mode, (seconds, share) in medians.items():
            if mode != "warm":
                print(f"median overhead {mode} / warm: {seconds / max(warm[0], 1e-9):.1f}x "
                      f"({seconds:.2f} s -> {warm[0]:.2f} s; share {share:.1%} -> "
                      f"{warm[1]:.1%})")


if __name__ == "__main__":
    main()
