"""Time harness.report.write_report on a synthetic 500-trial sweep (targets: < 10 s, < 10 MB).

    python benchmarks/report_scale.py [--trials 500] [--history 200] [--keep DIR]

Builds the sweep folder (a real sqlite Optuna study plus result.json records, some FAILED
and PRUNED, one without a record) in a temporary folder, then times the report and the
exports. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.records import FAILED, PRUNED  # noqa: E402
from harness.report import load_sweep, write_exports, write_report  # noqa: E402
from tests.test_report import make_sweep  # noqa: E402

TARGET_SECONDS = 10.0
TARGET_MB = 10.0


def build(root: Path, trials: int, history: int) -> Path:
    """The synthetic sweep: every 10th trial FAILED, every 15th PRUNED, the last unfinished."""
    statuses = {n: FAILED for n in range(3, trials, 10)}
    statuses.update({n: PRUNED for n in range(7, trials, 15)})
    return make_sweep(root, trials, statuses=statuses, history=history,
                      no_result=(trials - 1,))


def timed(label: str, fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    print(f"{label:<28} {seconds:7.2f} s")
    return result, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--history", type=int, default=200, help="loss rows per trial")
    parser.add_argument("--keep", type=Path, help="build the sweep here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        sweep, _ = timed(f"build {args.trials} trials", build, root, args.trials, args.history)
        timed("load_sweep", load_sweep, sweep)
        out, seconds = timed("write_report", write_report, sweep, root / "report.html")
        timed("write_exports", write_exports, sweep, root / "exports")
        size_mb = out.stat().st_size / 2**20
    print(f"report: {seconds:.2f} s (target < {TARGET_SECONDS:.0f} s), "
          f"{size_mb:.2f} MB (target < {TARGET_MB:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
