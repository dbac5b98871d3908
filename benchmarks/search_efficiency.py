"""Search efficiency: exhaustive grid search vs TPE + Hyperband pruning on a fixed grid.

    python benchmarks/search_efficiency.py [--budget 9] [--seeds 0 1 2] [--out DIR] [overrides...]

The grid is conf/sweep/search_bench.yaml: LoRA rank x alpha x learning rate (3 x 3 x 3 = 27
configurations) on the embedded tiny model, each trained `method.train.max_steps` steps with
the eval loss reported every `method.train.eval_steps` steps. It runs

  grid        every configuration, no pruning (sampler=grid, pruner=none)
  tpe+hb      TPE over the same 27 points with Hyperband pruning on the eval loss, limited to
              --budget trials; once per seed (the TPE sampler's seed)

through the real driver (`python -m harness`, launcher=local), and prints the best objective
(held-out perplexity, lower is better) and the training steps consumed (a pruned trial counts
the steps it ran), as the median over the seeds. The grid runs once: with the training seed
fixed its result does not depend on the sampler seed (only the order of the trials does).
Extra arguments are Hydra overrides for every run (e.g. launcher.parallel=1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.records import COMPLETE, PRUNED, read_record

GRID_SIZE = 27


@dataclass
class RunResult:
    """One sweep's outcome."""

    name: str
    best: float
    steps: int
    complete: int
    pruned: int
    failed: int
    seconds: float


def run_sweep(name: str, overrides: list[str], cwd: Path) -> RunResult:
    """Run one sweep with the CLI in `cwd`; summarize its trial records."""
    cmd = [sys.executable, "-m", "harness", "sweep=search_bench", f"sweep.name={name}",
           *overrides]
    start = time.time()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"sweep {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return summarize(name, cwd / "sweeps" / name / "trials", time.time() - start)


def summarize(name: str, trials_dir: Path, seconds: float) -> RunResult:
    """Best perplexity of complete trials and steps consumed by every trial."""
    records = [r for r in map(read_record, sorted(trials_dir.iterdir())) if r is not None]
    best = min((r.metrics["perplexity"] for r in records if r.status == COMPLETE),
               default=float("nan"))
    steps = sum(trial_steps(trials_dir / f"{r.number:04d}", r) for r in records)
    count = {s: sum(r.status == s for r in records) for s in (COMPLETE, PRUNED)}
    return RunResult(name, best, steps, count[COMPLETE], count[PRUNED],
                     len(records) - count[COMPLETE] - count[PRUNED], seconds)


def trial_steps(trial_dir: Path, record) -> int:
    """Training steps a trial consumed: all of them, or up to the eval that pruned it."""
    if record.train_steps is not None:
        return int(record.train_steps)
    path = trial_dir / "loss.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return max((int(row["step"]) for row in rows), default=0)


def median_result(name: str, runs: list[RunResult]) -> RunResult:
    """Field-wise median over seeds."""
    def med(field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs)

    return RunResult(name, med("best"), int(med("steps")), int(med("complete")),
                     int(med("pruned")), int(med("failed")), med("seconds"))


def print_table(rows: list[tuple[str, RunResult, str]]) -> None:
    """The comparison, one line per strategy."""
    print(f"{'strategy':<22}{'trials':>8}{'pruned':>8}{'best ppl':>10}{'steps':>8}"
          f"{'wall s':>8}  seeds")
    for label, r, seeds in rows:
        print(f"{label:<22}{r.complete + r.pruned + r.failed:>8}{r.pruned:>8}{r.best:>10.4f}"
              f"{r.steps:>8}{r.seconds:>8.0f}  {seeds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=9, help="TPE+Hyperband trials per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=None, help="keep sweeps here (default: tmp)")
    args, overrides = parser.parse_known_args()
    common = ["launcher=local", "launcher.parallel=2", "storage=journal", *overrides]
    with tempfile.TemporaryDirectory() as tmp:
        out = (args.out or Path(tmp)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        grid = run_sweep("bench_grid", [*common, f"sweep.n_trials={GRID_SIZE}"], out)
        tpe = [run_sweep(f"bench_tpe_hb_s{seed}", [
            *common, "sweep.sampler.name=tpe", f"sweep.sampler.seed={seed}",
            "sweep.pruner.name=hyperband", f"sweep.n_trials={args.budget}"], out)
            for seed in args.seeds]
        summary = median_result("tpe+hyperband", tpe)
        (out / "search_efficiency.json").write_text(json.dumps(
            {"grid": asdict(grid), "tpe_hyperband": [asdict(r) for r in tpe],
             "tpe_hyperband_median": asdict(summary)}, indent=2))
    seeds = ",".join(map(str, args.seeds))
    print_table([("grid (exhaustive)", grid, "-"),
                 (f"tpe+hyperband ({args.budget})", summary, f"median of {seeds}")])
    for r in tpe:
        print(f"  {r.name}: best {r.best:.4f}, {r.steps} steps, {r.pruned} pruned, "
              f"{r.complete} complete")
    if summary.pruned < 1 or summary.steps >= grid.steps:
        print("warning: expected pruned trials and fewer steps than the grid", file=sys.stderr)


if __name__ == "__main__":
    main()
