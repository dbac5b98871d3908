"""Search efficiency: how close each search strategy gets to the grid's best, for how many steps.

    python benchmarks/search_efficiency.py [--mode live|replay] [--seeds 0 1 2] [--out DIR]
        [--grid-from DIR...] [--strategies random tpe tpe+hyperband tpe+asha gp+asha gp]
        [overrides...]

The grid is conf/sweep/search_bench.yaml: LoRA rank x alpha x learning rate (3 x 3 x 3 = 27
configurations) on the embedded tiny model, each trained `method.train.max_steps` (30) steps
with an eval loss logged every `method.train.eval_steps` (5) steps. The objective is the
trial's held-out perplexity after all its steps (lower is better); a pruned trial counts the
steps it ran. Strategies (STRATEGIES below), each once per seed (the sampler's seed), all but
the grid under search_bench's step budget (sweep.max_train_steps=243, 30% of the grid's):

  grid           every configuration, no pruning: the reference best and steps (runs once:
                 with the training seed fixed its result does not depend on the sampler seed)
  random         random search, no pruning, 8 full trials
  tpe            TPE as tuned (1 startup trial, multivariate, constant liar), no pruning
  tpe+hyperband  the pruning settings before tuning: TPE (3 startup trials) + Hyperband (min 5
                 steps, factor 3) on the SFT eval loss (sweep.pruner.signal=eval_loss), 9
                 trials, no step budget (the parameters ordered as in search_bench.yaml)
  tpe+asha       the best TPE found: + ASHA with one rung at step 20 on the loss of the
                 objective's texts (signal=perplexity_text); pruned steps buy more trials
  gp+asha        the Gaussian-process sampler with that ASHA
  gp             search_bench.yaml as it stands, the tuned settings (TUNED): Gaussian-process
                 Bayesian optimization (Optuna GPSampler, 1 startup trial, noise-free:
                 the trials are seeded), no pruning

--mode live (default) runs every sweep through the real driver (`python -m harness`,
launcher=local, parallel 2). --mode replay replays them on grid runs' records instead
(benchmarks/search_replay.py: the real Optuna sampler and pruner the harness builds, the
trials' numbers looked up in the grid; seconds instead of minutes; used for tuning on seeds
10-59, not the reported ones). Replay needs a grid run per pruning signal the strategies use
(the grid logs its sweep's signal); grids are reused from --grid-from (sweep folders or --out
folders of earlier runs) when they hold all 27 trials, else search_bench's is run under --out.
Prints, per strategy, the curve (best value vs training steps spent, trials in the order they
ended), the median best at shares of the grid's steps, and the median over seeds of the best
value and steps as % of the grid's; then whether the target holds: the tuned strategy's median best
within 1% of the grid's best with median steps <= 30% of the grid's (exit status 1 if not).
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

import optuna
from omegaconf import OmegaConf
from search_replay import Finished, load_grid, replay

from harness.config.compose import compose_config
from harness.layout import SWEEP_FILE
from harness.records import COMPLETE, PRUNED, read_record
from harness.sweep.budget import trial_steps  # the driver's step count (max_train_steps)

GRID_SIZE = 27
GRID_NAME = "bench_grid"
TARGET_GAP, TARGET_STEPS = 0.01, 0.30   # within 1% of the grid's best, at <= 30% of its steps
COMMON = ["sweep=search_bench", "launcher=local", "launcher.parallel=2", "storage=journal"]
TUNED = "gp"   # the strategy the target is checked on: search_bench.yaml as it stands
TPE_ASHA = ["sweep.sampler.name=tpe", "sweep.pruner.name=asha", "+sweep.pruner.min_resource=20",
            "+sweep.pruner.reduction_factor=2"]
STRATEGIES: dict[str, list[str]] = {
    "grid": ["sweep.sampler.name=grid", "sweep.pruner.name=none",
             f"sweep.n_trials={GRID_SIZE}", "sweep.max_train_steps=null"],
    "random": ["sweep.sampler.name=random", "sweep.pruner.name=none",
               f"sweep.n_trials={int(GRID_SIZE * TARGET_STEPS)}"],
    "tpe": ["sweep.sampler.name=tpe", "sweep.pruner.name=none",   # TPE alone, no pruning
            f"sweep.n_trials={int(GRID_SIZE * TARGET_STEPS)}"],
    "tpe+hyperband": ["sweep.sampler.name=tpe", "sweep.sampler.n_startup_trials=3",
                      "sweep.pruner.name=hyperband", "+sweep.pruner.min_resource=5",
                      "+sweep.pruner.max_resource=30", "+sweep.pruner.reduction_factor=3",
                      "sweep.pruner.signal=eval_loss", "sweep.n_trials=9",
                      "sweep.max_train_steps=null"],
    "tpe+asha": TPE_ASHA,
    "gp+asha": ["sweep.pruner.name=asha", "+sweep.pruner.min_resource=20",
                "+sweep.pruner.reduction_factor=2"],
    TUNED: [],   # search_bench.yaml as it stands: the tuned settings
}
CHECKPOINTS = (0.1, 0.2, 0.3, 0.5, 1.0)   # shares of the grid's steps the curve table shows


@dataclass
class RunResult:
    """One sweep's outcome; `curve` is (steps spent, best so far) after each trial ended."""

    name: str
    best: float
    steps: int
    complete: int
    pruned: int
    failed: int
    seconds: float
    curve: list[tuple[int, float]]


def summarize(name: str, ended: list[Finished], failed: int, seconds: float) -> RunResult:
    """Best objective, steps and curve of trials listed in the order they ended."""
    curve, spent, best = [], 0, float("inf")
    for trial in ended:
        spent += trial.steps
        if trial.state == COMPLETE and trial.value is not None:
            best = min(best, trial.value)
        curve.append((spent, best))
    count = {s: sum(t.state == s for t in ended) for s in (COMPLETE, PRUNED)}
    return RunResult(name, best if best < float("inf") else float("nan"), spent, count[COMPLETE],
                     count[PRUNED], failed, seconds, curve)


# -- live: the real driver ---------------------------------------------------------------------
def run_live(name: str, overrides: list[str], cwd: Path) -> RunResult:
    """Run one sweep with the CLI in `cwd`; summarize its trial records."""
    cmd = [sys.executable, "-m", "harness", *overrides, f"sweep.name={name}"]
    start = time.time()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"sweep {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return read_live(name, cwd / "sweeps" / name, time.time() - start)


def read_live(name: str, sweep_dir: Path, seconds: float) -> RunResult:
    """A finished sweep's trials in the order the study saw them end."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(sweep_dir / "study.journal")))
    study = optuna.load_study(study_name=name, storage=storage)
    ended, failed = [], 0
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.datetime_complete):
        record = read_record(sweep_dir / "trials" / f"{trial.number:04d}")
        if record is None or record.status not in (COMPLETE, PRUNED):
            failed += 1
            continue
        value = record.metrics.get("perplexity") if record.status == COMPLETE else None
        ended.append(Finished(trial.number, record.params, record.status,
                              trial_steps(sweep_dir / "trials" / f"{trial.number:04d}", record),
                              value, trial.datetime_complete.timestamp()))
    return summarize(name, ended, failed, seconds)


def grid_runs(grid_from: list[Path], out: Path, overrides: list[str]) -> dict[str, Path]:
    """Finished grid sweeps by the pruning signal they logged (sweep.pruner.signal): those
    under --grid-from holding every configuration, plus (run now when missing) the grid of
    search_bench's own signal."""
    found: dict[str, Path] = {}
    for folder in [p for g in grid_from for p in (g, g / "sweeps" / GRID_NAME)] + [
            out / "sweeps" / GRID_NAME]:
        if (folder / "trials").is_dir() and complete_count(folder / "trials") >= GRID_SIZE:
            found.setdefault(grid_signal(folder), folder)
    own = str(compose_config(COMMON).sweep.pruner.signal)
    if own not in found:
        run_live(GRID_NAME, [*COMMON, *STRATEGIES["grid"], *overrides], out)
        found[own] = out / "sweeps" / GRID_NAME
    return {own: found.pop(own), **found}   # the reference grid first


def complete_count(trials_dir: Path) -> int:
    return sum((r := read_record(p)) is not None and r.status == COMPLETE
               for p in trials_dir.iterdir())


def grid_signal(sweep_dir: Path) -> str:
    """The pruning signal a finished sweep logged (absent: eval_loss, the older default)."""
    cfg = OmegaConf.load(sweep_dir / SWEEP_FILE)
    return str(OmegaConf.select(cfg, "sweep.pruner.signal", default="eval_loss"))


# -- the comparison ----------------------------------------------------------------------------
def median_result(name: str, runs: list[RunResult]) -> RunResult:
    """Field-wise median over seeds (the curve: the first seed's)."""
    def med(attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs)

    return RunResult(name, med("best"), int(med("steps")), int(med("complete")),
                     int(med("pruned")), int(med("failed")), med("seconds"), runs[0].curve)


def best_at(curve: list[tuple[int, float]], steps: float) -> float:
    """Best value found within `steps` training steps (nan before any complete trial)."""
    values = [best for spent, best in curve if spent <= steps and best < float("inf")]
    return values[-1] if values else float("nan")


def print_report(grid: RunResult, results: dict[str, list[RunResult]], seeds: list[int]) -> bool:
    """Curves, the table and the verdict; True when the tuned strategy meets the target."""
    print("curves: steps spent:best perplexity so far, one entry per ended trial")
    print(f"  grid: {curve_text(grid.curve)}")
    for label, runs in results.items():
        for seed, r in zip(seeds, runs, strict=True):
            print(f"  {label} s{seed}: {curve_text(r.curve)}")
    header = "".join(f"{f'@{c:.0%}':>9}" for c in CHECKPOINTS)
    print(f"\nmedian best perplexity within a share of the grid's {grid.steps} steps\n"
          f"{'strategy':<16}{header}")
    for label, runs in [("grid", [grid]), *results.items()]:
        cells = "".join(f"{statistics.median(best_at(r.curve, c * grid.steps) for r in runs):>9.3f}"
                        for c in CHECKPOINTS)
        print(f"{label:<16}{cells}")
    print(f"\n{'strategy':<16}{'trials':>7}{'pruned':>7}{'best ppl':>10}{'% of best':>10}"
          f"{'steps':>7}{'% steps':>8}{'wall s':>8}  seeds")
    verdict = False
    for label, runs in [("grid", [grid]), *results.items()]:
        r = median_result(label, runs)
        gap, share = r.best / grid.best - 1, r.steps / grid.steps
        print(f"{label:<16}{r.complete + r.pruned + r.failed:>7}{r.pruned:>7}{r.best:>10.4f}"
              f"{gap:>+10.2%}{r.steps:>7}{share:>8.0%}{r.seconds:>8.0f}  "
              f"{'-' if label == 'grid' else 'median of ' + ','.join(map(str, seeds))}")
        if label == TUNED:
            verdict = gap <= TARGET_GAP and share <= TARGET_STEPS
    for label, runs in results.items():
        for seed, r in zip(seeds, runs, strict=True):
            print(f"  {label} s{seed}: best {r.best:.4f} ({r.best / grid.best - 1:+.2%}), "
                  f"{r.steps} steps ({r.steps / grid.steps:.0%}), {r.pruned} pruned, "
                  f"{r.complete} complete, {r.failed} failed")
    print(f"\nseeds within {TARGET_GAP:.0%} of the grid's best at <= {TARGET_STEPS:.0%} of its "
          "steps: " + ", ".join(f"{label} {sum(hits(grid, r) for r in runs)}/{len(runs)}"
                                for label, runs in results.items()))
    if TUNED in results:
        print(f"\ntarget ({TUNED} median best within {TARGET_GAP:.0%} of the grid's "
              f"{grid.best:.4f} at <= {TARGET_STEPS:.0%} of its {grid.steps} steps): "
              f"{'MET' if verdict else 'NOT MET'}")
    return verdict


def hits(grid: RunResult, run: RunResult) -> bool:
    """One seed's run meets the target on its own."""
    return run.best / grid.best - 1 <= TARGET_GAP and run.steps / grid.steps <= TARGET_STEPS


def objective_spread(tables: dict) -> float:
    """Largest relative difference of a configuration's objective between the grid runs (the
    signal logged must not change training: 0 expected)."""
    first = next(iter(tables.values()))[0]
    return max((abs(t[0][k].objective / m.objective - 1) for t in tables.values()
                for k, m in first.items() if k in t[0]), default=0.0)


def curve_text(curve: list[tuple[int, float]]) -> str:
    return " ".join(f"{spent}:{best:.2f}" if best < float("inf") else f"{spent}:-"
                    for spent, best in curve)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["live", "replay"], default="live")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=[s for s in STRATEGIES if s != "grid"],
                        choices=[s for s in STRATEGIES if s != "grid"])
    parser.add_argument("--out", type=Path, default=None, help="keep sweeps here (default: tmp)")
    parser.add_argument("--grid-from", type=Path, nargs="+", default=[],
                        help="finished grid runs (sweep folders, or the --out of a run); "
                             "replay needs one per pruning signal the strategies use")
    args, overrides = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = (args.out or Path(tmp)).resolve()
        out.mkdir(parents=True, exist_ok=True)
        grids = grid_runs(args.grid_from, out, [*overrides])
        reference = next(iter(grids.values()))
        grid = read_live(GRID_NAME, reference, 0.0)
        tables = {signal: load_grid(folder / "trials") for signal, folder in grids.items()}
        print(f"grids: {', '.join(f'{s}: {f}' for s, f in grids.items())}; objective "
              f"differences between them: {objective_spread(tables):.1e} (relative, max)")
        results: dict[str, list[RunResult]] = {}
        for label in args.strategies:
            results[label] = []
            for seed in args.seeds:
                name = f"bench_{label.replace('+', '_')}_s{seed}"
                sweep = [*COMMON, *STRATEGIES[label], f"sweep.sampler.seed={seed}", *overrides]
                if args.mode == "live":
                    results[label].append(run_live(name, sweep, out))
                    continue
                start = time.time()
                cfg = compose_config([*sweep, f"sweep.name={name}"])
                signal = str(cfg.sweep.pruner.signal)
                if signal not in tables:
                    sys.exit(f"{label}: no grid run logged sweep.pruner.signal={signal} "
                             "(give one with --grid-from)")
                results[label].append(summarize(name, replay(cfg, *tables[signal], name), 0,
                                                time.time() - start))
        (out / f"search_efficiency_{args.mode}.json").write_text(json.dumps(
            {"grid": asdict(grid), "grids": {k: str(v) for k, v in grids.items()},
             **{label: [asdict(r) for r in runs] for label, runs in results.items()}}, indent=1))
    met = print_report(grid, results, args.seeds)
    sys.exit(0 if met or TUNED not in results else 1)


if __name__ == "__main__":
    main()
