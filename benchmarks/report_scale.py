"""Time harness.report.write_report on a synthetic 500-trial sweep (targets: < 10 s, < 10 MB).

    python benchmarks/report_scale.py [--trials 500] [--history 200] [--storage journal]
                                      [--extra-metrics 10] [--replicated 3] [--keep DIR]

Builds the sweep folder (a real Optuna study, sqlite by default, plus result.json records,
some FAILED and PRUNED, one without a record, lm-eval and MT-Bench metrics, and the best
configurations replicated with 3 more seeds) in a temporary folder (under /dev/shm when there
is one: sqlite's per-trial commits are slow on some disks), then times loading, the report
and the exports, wall clock and CPU. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.records import FAILED, PRUNED  # noqa: E402
from harness.report.exports import write_exports  # noqa: E402
from harness.report.page import write_report  # noqa: E402
from harness.sweep.results import load_sweep  # noqa: E402
from tests.test_report import make_replicates, make_sweep  # noqa: E402

TARGET_SECONDS = 10.0
TARGET_MB = 10.0


def build(root: Path, args: argparse.Namespace) -> Path:
    """The synthetic sweep: every 10th trial FAILED, every 15th PRUNED, the last unfinished."""
    n = args.trials
    statuses = {i: FAILED for i in range(3, n, 10)}
    statuses.update({i: PRUNED for i in range(7, n, 15)})
    sweep = make_sweep(root, n, statuses=statuses, history=args.history, no_result=(n - 1,),
                       storage=args.storage, extra_metrics=args.extra_metrics, evals=True)
    best = [r.number for r in load_sweep(sweep).ranked[:args.replicated]]
    make_replicates(sweep, dict.fromkeys(best, 0.02))
    return sweep


def timed(label: str, fn, *args):
    """Run fn(*args); print and return its wall-clock seconds (and CPU seconds)."""
    start, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{label:<28} {seconds:7.2f} s wall {cpu:7.2f} s cpu")
    return result, seconds


def scratch_root() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--history", type=int, default=200, help="loss rows per trial")
    parser.add_argument("--storage", choices=["sqlite", "journal"], default="sqlite")
    parser.add_argument("--extra-metrics", type=int, default=0,
                        help="lm-eval style tasks added to each record (acc + acc_stderr)")
    parser.add_argument("--replicated", type=int, default=3,
                        help="best configurations rerun with 3 more seeds (sweep.replicate)")
    parser.add_argument("--keep", type=Path, help="build the sweep here and keep it")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        root = args.keep or Path(tmp)
        sweep, _ = timed(f"build {args.trials} trials", build, root, args)
        out, seconds = timed("write_report (first)", write_report, sweep, root / "report.html")
        timed("write_report (again)", write_report, sweep, root / "report.html")
        timed("load_sweep", load_sweep, sweep)
        timed("write_exports", write_exports, sweep, root / "exports")
        size_mb = out.stat().st_size / 2**20
    print(f"report: {seconds:.2f} s (target < {TARGET_SECONDS:.0f} s), "
          f"{size_mb:.2f} MB (target < {TARGET_MB:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
