"""The evaluation battery of one trained trial, part by part: today's code against this tree.

    python benchmarks/battery.py [--rounds 3] [--against HEAD] [--workdir DIR] [--sweeps N]

Trains one small trial of the default sweep on the embedded model (`python -m harness
sweep.n_trials=1 method.train.max_steps=40` in `--workdir`, reused when it is already there),
then evaluates that trial's saved model with the harness of `--against` (a `git worktree` of
that revision, read-only) and with this tree, taking turns, `--rounds` times each. Each
battery runs in a fresh process, as a trial does (its imports count, as in a trial): it
composes the default sweep's evaluation config from its own tree's `conf/` (what `python -m
harness` evaluates), loads the saved model and serves the embedded judge (neither timed), and
runs the trial's battery (`run_battery`, then `score_preferences` as `harness.trial.run` does).

Round 0 is the sweep's first trial with an empty stage cache (a scoring reward model the
battery needs is trained then: what a trial paid before the base-model job built it for the
sweep, and still pays when that job did not); later rounds are the other trials (best of the
rounds is shown). The
per-trial figure is (first + (N-1) x later) / N for an N-trial sweep (`--sweeps`, default 6:
the default sweep). Judgments are never served from the judge cache (a fresh cache per round).

Prints seconds per part (perplexity, ROUGE generation and scoring, lm-eval, MT-Bench answers
and judging, preference metrics, the scoring reward model), the totals and ratios, `uptime`,
and every metric of both side by side; exits 1 unless every metric both compute agrees
(perplexity to 1e-6 relative, everything else exactly) and the ROUGE generations, lm-eval
output fingerprints and MT-Bench answers are identical. Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = ("perplexity", "rouge_generate", "rouge_score", "lm_eval", "mt_bench_answers",
         "mt_bench_judging", "preference", "reward_model")
PPL_RTOL = 1e-6
TAG = "BATTERY_JSON "   # result lines of a worker (libraries print to stdout too)


# ----------------------------------------------------------------------------- worker side


def _timed(store: dict, name: str, fn, keep=None):
    """`fn` wrapped: its seconds added to store[name]; its return value kept if `keep`."""
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        store[name] = store.get(name, 0.0) + time.perf_counter() - start
        if keep is not None:
            keep.setdefault(name, []).append(out)
        return out
    return wrapper


def _worker_config(trial_dir: Path):
    """The trial's config with the eval settings of this tree's default sweep."""
    from omegaconf import OmegaConf

    from harness.config.compose import compose_config, resolve_paths
    from harness.records import read_trial_config

    cfg, spec = read_trial_config(trial_dir)
    default = resolve_paths(compose_config([]))
    OmegaConf.set_struct(cfg, False)
    cfg.eval = default.eval
    cfg.data.preference.metrics = default.data.preference.metrics
    return cfg, spec


def worker(trial_dir: Path, n: int, stages: Path, out_dir: Path, warm: bool) -> int:
    """One trial's battery in this fresh process (a trial is one process): load the saved
    model, serve the judge (neither timed), run the battery, print one result line. `warm`:
    the libraries a warm trial worker imports beforehand are imported first (untimed)."""
    import dataclasses

    import harness.eval.metrics as metrics_mod
    import harness.eval.mt_bench as mt_bench_mod
    import harness.trial.stages as stages_mod
    from harness.eval.battery import run_battery
    from harness.eval.judge_server import serve_model
    from harness.records import read_record
    from harness.trial import run as trial_run
    from harness.trial.pipelines import Trained, TrialContext
    from harness.trial.process import setup_process
    from harness.trial.saved import load_saved

    if warm:
        _preload()
    cfg, spec = _worker_config(trial_dir)
    setup_process(spec)
    model, tokenizer = load_saved(cfg, spec, trial_dir, read_record(trial_dir).stages)
    times: dict = {}
    kept: dict = {}
    metrics_mod.perplexity = _timed(times, "perplexity", metrics_mod.perplexity)
    metrics_mod.generate = _timed(times, "rouge_generate", metrics_mod.generate, kept)
    metrics_mod.rouge = _timed(times, "rouge_score", metrics_mod.rouge)
    mt_bench_mod.answer_questions = _timed(times, "mt_bench_answers",
                                           mt_bench_mod.answer_questions, kept)
    stages_mod.train_reward = _timed(times, "reward_model", stages_mod.train_reward)
    serve = cfg.eval.judge.serve
    out_dir.mkdir(parents=True, exist_ok=True)
    with serve_model(str(serve.model_path), log_path=out_dir / "judge.log",
                     threads=serve.get("threads")) as server:
        spec = dataclasses.replace(spec, dir=str(out_dir), judge_url=server.base_url,
                                   judge_model=server.model, stages_dir=str(stages))
        cfg.eval.judge.cache_dir = str(out_dir / "judge_cache")   # judged afresh
        start = time.perf_counter()
        battery = run_battery(model, tokenizer, cfg, progress=False, spec=spec)
        battery_s = time.perf_counter() - start
        record = trial_run.new_record(cfg, spec, out_dir)
        battery.fill(record)
        start = time.perf_counter()
        trial_run.score_preferences(TrialContext(cfg, spec, out_dir),
                                    Trained(model, tokenizer, None, (0, 0)), record)
        pref_s = time.perf_counter() - start
    parts = {k: times.get(k, 0.0) for k in PARTS}
    parts["lm_eval"] = float(battery.extra.get("lm_eval", {}).get("seconds", 0.0))
    mt_s = float(battery.extra.get("mt_bench", {}).get("seconds", 0.0))
    parts["mt_bench_judging"] = max(0.0, mt_s - parts["mt_bench_answers"])
    parts["preference"] = pref_s - parts["reward_model"]
    answers = [a[1].answers for a in kept.get("mt_bench_answers", [])]
    print(TAG + json.dumps({
        "round": n, "parts": parts, "total": battery_s + pref_s, "metrics": record.metrics,
        "rouge_generations": kept.get("rouge_generate", []),
        "mt_bench_answers": [[(a["question_id"], a["choices"][0]["turns"]) for a in rows]
                             for rows in answers],
        "lm_eval_fingerprints": battery.extra.get("lm_eval", {}).get("fingerprints"),
        "note": record.extra.get("preference_metrics"), "threads": _threads()},
        default=str), flush=True)
    return 0


def _preload() -> None:
    """What the local launcher's warm worker imports before forking a trial
    (harness.launch.warm.PRELOAD, read from this script's tree so both sides get the same)."""
    import importlib
    import re

    text = (REPO / "harness" / "launch" / "warm.py").read_text()
    block = re.search(r"PRELOAD = \(([^)]*)\)", text)
    for name in re.findall(r'"([^"]+)"', block.group(1) if block else ""):
        importlib.import_module(name)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ----------------------------------------------------------------------------- parent side


def ensure_trial(workdir: Path) -> Path:
    """The trained trial of a 1-trial default sweep in `workdir` (run here when missing)."""
    trial = workdir / "sweeps" / "default" / "trials" / "0000"
    if (trial / "result.json").exists():
        return trial
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("HARNESS_CACHE", str(REPO / ".cache" / "harness"))
    print(f"training one trial of the default sweep in {workdir} ...", flush=True)
    subprocess.run([sys.executable, "-m", "harness", "sweep.n_trials=1",
                    "method.train.max_steps=40"], cwd=workdir, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return trial


def ensure_worktree(rev: str, path: Path) -> Path:
    """A read-only checkout of `rev` at `path` (git worktree), made once."""
    if not (path / "harness").is_dir():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), rev],
                       check=True, stdout=subprocess.DEVNULL)
    return path


def run_worker(name: str, tree: Path, trial_dir: Path, workdir: Path, n: int,
               warm: bool) -> dict:
    """One battery in a fresh process on the harness `tree`; its result line."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("HARNESS_CACHE", str(REPO / ".cache" / "harness"))
    out = workdir / "bench" / name
    log = out / f"round{n}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(trial_dir),
             "--round", str(n), "--stages", str(out / "stages"), "--out", str(out / f"r{n}"),
             *(["--warm"] if warm else [])],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=handle, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(TAG):
            return json.loads(line[len(TAG):])
    raise RuntimeError(f"worker {name} round {n} failed (exit {done.returncode}); see {log}")


def per_trial(first: dict, later: dict, n: int) -> dict:
    """Seconds per part averaged over an n-trial sweep (the first pays the sweep's stages)."""
    return {k: (first[k] + (n - 1) * later[k]) / n for k in first}


def best(rounds: list[dict]) -> dict:
    """Per part, the fastest of the later rounds (all parts and the total)."""
    keys = [*PARTS, "total"]
    return {k: min((r["parts"] | {"total": r["total"]})[k] for r in rounds) for k in keys}


def compare_metrics(old: dict, new: dict) -> tuple[list[str], bool]:
    """Side-by-side lines of every metric and whether all shared ones agree."""
    lines, ok = [], True
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            where = "old" if b is None else "new"
            lines.append(f"  {key:<44} {a!s:>22} {b!s:>22}  only in {where}")
            continue
        if key in ("perplexity", "eval_nll"):
            same = abs(a - b) <= PPL_RTOL * abs(a)
        else:
            same = a == b
        ok &= same
        lines.append(f"  {key:<44} {a!r:>22} {b!r:>22}  {'same' if same else 'DIFFERENT'}")
    return lines, ok


def _ratio(value: float) -> str:
    return "only old" if value == float("inf") else f"{value:.2f}x"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=3, help="batteries per tree (round 0: first)")
    p.add_argument("--against", default="HEAD", help="revision of today's code")
    p.add_argument("--workdir", default="/tmp/battery_bench", help="the trained trial's sweep")
    p.add_argument("--sweeps", type=int, default=6, help="trials of the sweep (per-trial mean)")
    p.add_argument("--cold", action="store_true",
                   help="no preloaded libraries (a cold trial process; default: as the warm "
                        "worker of the local launcher preloads them)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--stages", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(Path(args.worker), args.round, Path(args.stages), Path(args.out),
                      args.warm)
    workdir = Path(args.workdir).resolve()
    trial = ensure_trial(workdir)
    base = ensure_worktree(args.against, Path(f"/tmp/base_battery_{args.against}"))
    print(f"uptime: {os.getloadavg()} (load 1/5/15 min) on {os.cpu_count()} CPUs")
    shutil.rmtree(workdir / "bench", ignore_errors=True)   # an empty stage cache for round 0
    trees = {"old": base, "new": REPO}
    results: dict = {"old": [], "new": []}
    for n in range(args.rounds):
        for name in (("old", "new") if n % 2 == 0 else ("new", "old")):
            results[name].append(run_worker(name, trees[name], trial, workdir, n,
                                            not args.cold))
            print(f"round {n} {name}: {results[name][-1]['total']:.2f} s", flush=True)
    print(f"uptime after: {os.getloadavg()}; torch threads per worker: "
          f"{results['new'][0]['threads']}; libraries "
          f"{'imported in the battery (cold)' if args.cold else 'preloaded (warm worker)'}")
    return report(results, args)


def report(results: dict, args) -> int:
    """Print the tables; 0 when every shared metric and generation agrees."""
    first = {k: results[k][0]["parts"] | {"total": results[k][0]["total"]} for k in results}
    later = {k: best(results[k][1:] or results[k][:1]) for k in results}
    mean = {k: per_trial(first[k], later[k], args.sweeps) for k in results}
    print(f"\nseconds per part (against {args.against}; later trials: best of "
          f"{max(1, args.rounds - 1)})")
    print(f"{'part':<18}{'first old':>10}{'first new':>10}{'later old':>10}{'later new':>10}"
          f"{f'per-trial old (N={args.sweeps})':>24}{'new':>8}{'ratio':>8}")
    for key in [*PARTS, "total"]:
        ratio = mean["old"][key] / mean["new"][key] if mean["new"][key] > 1e-3 else float("inf")
        print(f"{key:<18}{first['old'][key]:>10.2f}{first['new'][key]:>10.2f}"
              f"{later['old'][key]:>10.2f}{later['new'][key]:>10.2f}"
              f"{mean['old'][key]:>24.2f}{mean['new'][key]:>8.2f}{_ratio(ratio):>8}")
    for name in ("old", "new"):
        print(f"{name}: preference metrics: {results[name][0]['note'] or 'computed'}")
    lines, ok = compare_metrics(results["old"][0]["metrics"], results["new"][0]["metrics"])
    print(f"\nmetrics, first round ({'old':>22} {'new':>22})")
    print("\n".join(lines))
    checks = {"rouge generations": "rouge_generations", "lm-eval fingerprints":
              "lm_eval_fingerprints", "MT-Bench answers": "mt_bench_answers"}
    for label, key in checks.items():
        rows = [r[key] for name in results for r in results[name]]
        same = all(x == rows[0] for x in rows)
        ok &= same
        print(f"{label}: {'identical' if same else 'DIFFERENT'} in all "
              f"{len(rows)} batteries")
    for name in results:   # every round of a tree gives the same metrics
        ok &= all(r["metrics"] == results[name][0]["metrics"] for r in results[name][1:])
    print("OK: identical metrics" if ok else "FAIL: metrics differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
