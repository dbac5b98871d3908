"""Harness overhead per trial: the trial job's wall time minus its training and evaluation time.

    python benchmarks/trial_overhead.py [--trials 3] [--steps 100] [overrides...]

Runs a small sweep on the embedded model in a temporary folder and prints, per trial, the job's
wall seconds (driver submit to driver seeing it end), train and eval seconds, and the rest
(process start and imports, model load, saving, bookkeeping) as a share of the wall time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.records import read_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    args, overrides = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "harness", "sweep.name=overhead",
               f"sweep.n_trials={args.trials}", f"method.train.max_steps={args.steps}",
               *overrides]
        subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        trials = sorted((Path(tmp) / "sweeps" / "overhead" / "trials").iterdir())
        records = [read_record(t) for t in trials]
    print(f"{'trial':>5} {'method':<6}{'job s':>8}{'train s':>9}{'eval s':>8}{'other s':>9}"
          f"{'overhead':>10}")
    shares = []
    for r in records:
        job = r.job_seconds if r.job_seconds is not None else r.wall_seconds
        other = job - r.train_seconds - r.eval_seconds
        shares.append(other / job)
        print(f"{r.number:>5} {r.method:<6}{job:>8.1f}{r.train_seconds:>9.1f}"
              f"{r.eval_seconds:>8.1f}{other:>9.1f}{other / job:>10.1%}")
    print(f"mean overhead share: {sum(shares) / len(shares):.1%} of each trial's wall time")


if __name__ == "__main__":
    main()
