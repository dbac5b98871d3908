"""Time harness.report.write_report on synthetic sweeps of N trials (target at 5,000 trials:
< 10 s and < 20 MB), against another revision of the harness measured in the same run.

    python benchmarks/report_scale.py [--trials 500 5000] [--against HEAD] [--repeat 3]
                                      [--history 200] [--storage sqlite|journal]
                                      [--extra-metrics 0] [--replicated 3] [--keep DIR]

Each sweep folder is what the harness writes, made through its own APIs (tests.test_report's
make_sweep: a real Optuna study, sqlite by default, result.json records by
harness.records.write_record, some FAILED and PRUNED, one without a record, lm-eval and
MT-Bench metrics, loss histories of `--history` rows, and the best configurations replicated
with 3 more seeds). It is built under /dev/shm when there is one (sqlite's per-trial commits
are slow on some disks), or in `--keep DIR`, where a sweep built before with the same
settings is reused.

Each measurement is one fresh Python process that imports the harness (not timed), then times
one write_report: what `action=report` spends after start-up, scipy/sklearn's first imports
included. The best of `--repeat` processes is printed, with the time load_sweep took in it and
the file size, and `--against`'s figures (that revision's harness/ from `git archive`, read-
only; the two take turns) as ratios. The machine's load average is printed beside them: on a
shared machine the figures are noisy. Asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.records import FAILED, PRUNED  # noqa: E402
from harness.sweep.results import load_sweep  # noqa: E402
from tests.test_report import make_replicates, make_sweep  # noqa: E402

TARGET_TRIALS, TARGET_SECONDS, TARGET_MB = 5000, 10.0, 20.0

# Run in a child process with PYTHONPATH set to the tree measured; prints one JSON line.
CHILD = """
import json, sys, time
from pathlib import Path
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
import harness
from harness.report import page
from harness.sweep import results
loaded = []
def timed_load(*args, **kwargs):
    start = time.perf_counter()
    out = load(*args, **kwargs)
    loaded.append(time.perf_counter() - start)
    return out
load, page.load_sweep = page.load_sweep, timed_load
sweep, out = Path(sys.argv[1]), Path(sys.argv[2])
start = time.perf_counter()
page.write_report(sweep, out)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "load": loaded[0], "mb": out.stat().st_size / 2**20,
                  "harness": harness.__file__}))
"""


def build(root: Path, n: int, args: argparse.Namespace) -> Path:
    """The synthetic sweep: every 10th trial FAILED, every 15th PRUNED, the last unfinished."""
    statuses = {i: FAILED for i in range(3, n, 10)}
    statuses.update({i: PRUNED for i in range(7, n, 15)})
    sweep = make_sweep(root, n, statuses=statuses, history=args.history, no_result=(n - 1,),
                       storage=args.storage, extra_metrics=args.extra_metrics, evals=True)
    best = [r.number for r in load_sweep(sweep).ranked[:args.replicated]]
    make_replicates(sweep, dict.fromkeys(best, 0.02))
    return sweep


def sweep_for(base: Path, n: int, args: argparse.Namespace) -> Path:
    """The sweep of n trials under `base`: reused when one was built with these settings."""
    settings = json.dumps({"trials": n, "history": args.history, "storage": args.storage,
                           "extra_metrics": args.extra_metrics, "replicated": args.replicated})
    root = base / f"trials-{n}"
    done = root / "built.json"
    if done.is_file() and done.read_text() == settings:
        print(f"reusing the {n}-trial sweep in {root}", flush=True)
        return root / "sweeps" / "synthetic"
    if root.exists():
        raise SystemExit(f"{root} holds another sweep: remove it or use another --keep")
    root.mkdir(parents=True)
    print(f"building {n} trials in {root} ...", flush=True)
    sweep = build(root, n, args)
    done.write_text(settings)
    return sweep


def tree_of(rev: str, into: Path) -> Path:
    """`rev`'s harness/ package (git archive: reads the repository, changes nothing)."""
    blob = subprocess.run(["git", "archive", rev, "harness"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_once(tree: Path, sweep: Path, out: Path) -> dict:
    """One fresh process writing the report with `tree`'s harness: its figures."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(sweep), str(out)], env=env,
                          cwd=tree, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"report with {tree} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if not figures["harness"].startswith(str(tree)):
        raise SystemExit(f"the child imported {figures['harness']}, not {tree}")
    return figures


def measure(trees: dict[str, Path], sweep: Path, out: Path, repeat: int) -> dict[str, dict]:
    """The best of `repeat` runs per tree, the trees taking turns (a load that changes during
    the measurement falls on each of them alike)."""
    runs: dict[str, list[dict]] = {label: [] for label in trees}
    for _ in range(repeat):
        for label, tree in trees.items():
            runs[label].append(run_once(tree, sweep, out))
    return {label: {**min(mine, key=lambda r: r["seconds"]),
                    "all": [r["seconds"] for r in mine]} for label, mine in runs.items()}


def scratch_root() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def row(label: str, n: int, m: dict) -> str:
    runs = ", ".join(f"{s:.2f}" for s in m["all"])
    return (f"{n:>6}  {label:<14} {m['seconds']:8.2f} s  {m['load']:6.2f} s  "
            f"{m['mb']:7.2f} MB   (runs: {runs})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[500, TARGET_TRIALS])
    parser.add_argument("--against", metavar="REV",
                        help="also time this git revision's harness (e.g. HEAD) on each sweep")
    parser.add_argument("--repeat", type=int, default=3, help="processes per measurement")
    parser.add_argument("--history", type=int, default=200, help="loss rows per trial")
    parser.add_argument("--storage", choices=["sqlite", "journal"], default="sqlite")
    parser.add_argument("--extra-metrics", type=int, default=0,
                        help="lm-eval style tasks added to each record (acc + acc_stderr)")
    parser.add_argument("--replicated", type=int, default=3,
                        help="best configurations rerun with 3 more seeds (sweep.replicate)")
    parser.add_argument("--keep", type=Path, help="build the sweeps here, keep and reuse them")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(dir=scratch_root()) as tmp:
        base = args.keep.resolve() if args.keep else Path(tmp)
        sweeps = {n: sweep_for(base, n, args) for n in args.trials}
        trees = {"working tree": ROOT}
        if args.against:
            trees = {args.against: tree_of(args.against, Path(tmp) / "against"), **trees}
        print(f"\n{load_average()} (before)")
        print(f"{'trials':>6}  {'harness':<14} {'report':>10}  {'load':>8}  {'size':>10}")
        figures: dict[tuple[int, str], dict] = {}
        for n, sweep in sweeps.items():
            best = measure(trees, sweep, Path(tmp) / f"report-{n}.html", args.repeat)
            for label, m in best.items():
                figures[n, label] = m
                print(row(label, n, m), flush=True)
        print(f"{load_average()} (after)\n")
        for n in sweeps:
            now = figures[n, "working tree"]
            if args.against:
                then = figures[n, args.against]
                print(f"{n} trials: {then['seconds'] / now['seconds']:.1f}x faster "
                      f"({then['seconds']:.2f} s -> {now['seconds']:.2f} s), file "
                      f"{now['mb'] / then['mb']:.2f}x ({then['mb']:.2f} -> {now['mb']:.2f} MB)")
            if n == TARGET_TRIALS:
                met = now["seconds"] < TARGET_SECONDS and now["mb"] < TARGET_MB
                print(f"target at {n} trials (< {TARGET_SECONDS:.0f} s, < {TARGET_MB:.0f} MB): "
                      f"{'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
