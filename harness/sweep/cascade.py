"""The cost cascade after a sweep: the top-k pass and re-scoring of a finished sweep.

- `top_k_pass`: complete trials are ranked by `eval.cascade.metric`; the top k not yet scored
  are scored from their saved model (`trial_dir/model`), and every other trial's record says
  its rank and why it was not judged (`record.cascade`);
- `reevaluate`: re-run the expensive stages of a finished sweep from saved models, the base
  record(s) included (judgments come from the cache: a re-run sends no request twice).

Scoring loads a saved model, so every re-scoring is a job submitted through the sweep's
launcher (`rescore_jobs`: harness.trial.rescore.rescore_task by name, registry.TASKS; a child
process with `launcher=local`, a SLURM job with `launcher=slurm`), at most `launcher.parallel`
at once: this process, often a login node, never loads a model. The job updates the folder's
result.json as before and leaves its outcome beside it (harness.tasks).

    python -m harness.cascade top-k sweeps/default
    python -m harness.cascade reeval sweeps/default [--stages mt_bench]
        [--launcher slurm] [launcher.KEY=VALUE ...]   # where the jobs run (default: the sweep's)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from harness import layout, progress, tasks
from harness.config.compose import compose_config, resolve_paths
from harness.eval.cascade import EXPENSIVE_PREFIXES, STAGES, Decision, enabled_stages
from harness.eval.judge_server import ServedModel
from harness.launch.base import Job, Launcher, make_launcher, wait_for_jobs
from harness.records import COMPLETE, TrialRecord, read_record, write_record
from harness.sweep.judge_service import judge_service

log = logging.getLogger(__name__)


def is_judged(record: TrialRecord) -> bool:
    """Whether a record got (or was already decided to get) the expensive stages."""
    cascade = record.cascade
    if isinstance(cascade, dict) and "judged" in cascade:
        return bool(cascade["judged"])
    return any(k.startswith(EXPENSIVE_PREFIXES) for k in record.metrics)


def rank_trials(sweep_dir: Path, metric: str, direction: str) -> list[tuple[Path, TrialRecord]]:
    """Complete trials with `metric`, best first."""
    ranked = []
    for trial_dir in layout.trial_dirs(Path(sweep_dir)):
        record = read_record(trial_dir)
        if record is not None and record.status == COMPLETE and metric in record.metrics:
            ranked.append((trial_dir, record))
    ranked.sort(key=lambda item: float(item[1].metrics[metric]),
                reverse=direction == "maximize")
    return ranked


def rescore_jobs(requests: list[tuple[Path, str | None]], launcher: Launcher,
                 judge: ServedModel | None, stages: list[str] | None = None,
                 poll_s: float = 1.0) -> dict[Path, dict]:
    """Re-score each (folder, reason) as a job through `launcher`, at most `launcher.parallel`
    at once; returns each folder's outcome (harness.tasks: status done | unusable | error and
    a one-line message). A job that ended without an outcome is an error naming why."""
    pending, running, outcomes = list(requests), {}, {}
    judge_fields = {"judge_url": judge.base_url if judge else None,
                    "judge_model": judge.model if judge else None}
    said = time.time()
    try:
        while pending or running:
            if running and time.time() - said >= progress.LOG_INTERVAL_S:
                said = time.time()   # each job's stage and step, from its progress.json
                log.info("re-scoring: %s", " | ".join(
                    f"{Path(f).name} {(progress.read(f) or progress.Progress('queued')).text()}"
                    for f in running))
            while pending and len(running) < max(1, int(launcher.parallel or 1)):
                folder, reason = pending.pop(0)
                tasks.write_request(folder, tasks.RESCORE, stages=stages, reason=reason,
                                    **judge_fields)
                # absolute: a SLURM job need not start in this directory
                running[folder] = launcher.submit_task(tasks.RESCORE, Path(folder).resolve())
            for folder in [f for f, job in running.items() if job.done()]:
                outcomes[folder] = _outcome(folder, running.pop(folder))
            if running:
                wait_for_jobs(launcher, poll_s)   # a warm local job says at once
    finally:
        for job in running.values():   # interrupted: no job outlives the command
            job.cancel()
    return {folder: outcomes[folder] for folder, _ in requests}


def _outcome(folder: Path, job: Job) -> dict:
    found = tasks.read_outcome(folder, tasks.RESCORE)
    if found is not None:
        return found
    return {"status": tasks.ERROR, "message": f"{folder}: re-scoring job ended without an "
            f"outcome: {job.failure_reason()} (log {tasks.log_path(folder, tasks.RESCORE)})"}


def top_k_pass(sweep_dir: str | Path, cfg: DictConfig, judge: ServedModel | None = None,
               launcher: Launcher | None = None) -> list[int]:
    """Score the top `eval.cascade.top_k` trials not yet scored (as launcher jobs); note the
    rank of the others. `judge`: the sweep's live judge, if any; `launcher`: the driver's
    (default: one made from `cfg`). Returns the numbers of the trials scored."""
    casc = cfg.eval.get("cascade") or {}
    if not casc.get("enabled") or not casc.get("top_k") or not enabled_stages(cfg):
        return []
    metric, direction, k = str(casc.metric), str(casc.get("direction", "minimize")), int(
        casc.top_k)
    ranked = rank_trials(Path(sweep_dir), metric, direction)
    wanted: list[tuple[Path, int, str]] = []
    for rank, (trial_dir, record) in enumerate(ranked, start=1):
        where = f"rank {rank} of {len(ranked)} by {metric}"
        if is_judged(record):
            continue
        if rank <= k:
            log.info("cascade: scoring trial %d (%s)", record.number, where)
            wanted.append((trial_dir, record.number, where))
            continue
        before = (record.cascade or {}).get("reason", "")
        record.cascade = asdict(Decision(False, f"not judged: {before.split(';')[0]}"
                                         f"; {where}, not in the top {k}"))
        write_record(record, trial_dir)
    if not wanted:
        return []
    own = launcher is None
    launcher = launcher or make_launcher(cfg)
    try:
        outcomes = rescore_jobs([(d, f"{where}: in the top {k}") for d, _, where in wanted],
                                launcher, judge, poll_s=_poll(cfg))
    finally:
        if own:
            launcher.close()
    scored = []
    for trial_dir, number, where in wanted:
        outcome = outcomes[trial_dir]
        if outcome["status"] == tasks.DONE:
            scored.append(number)
            continue
        record = read_record(trial_dir)   # as the job left it (FAILED: its model unusable)
        record.cascade = asdict(Decision(False, f"{where}: top-{k} scoring failed: "
                                         f"{outcome['message']}"))
        write_record(record, trial_dir)
    return scored


def reevaluate(sweep_dir: str | Path, stages: list[str] | None = None,
               launcher_name: str | None = None,
               launcher_overrides: list[str] | None = None) -> dict[str, dict]:
    """Re-run the expensive stages for the base record(s) and every scored complete trial of a
    finished sweep (one judge for all), each as a launcher job (the sweep's launcher, or
    `launcher=<launcher_name>` with `launcher_overrides`). Returns {folder: outcome}."""
    sweep_dir = Path(sweep_dir)
    cfg = layout.read_sweep_config(sweep_dir)
    base_root = sweep_dir / layout.BASELINE_DIR
    folders = sorted(p for p in base_root.glob("*") if p.is_dir()) + layout.trial_dirs(sweep_dir)
    wanted = []
    for folder in folders:
        record = read_record(folder)
        if record is not None and record.status == COMPLETE and is_judged(record):
            wanted.append((folder, None))
    if not wanted:
        return {}
    launcher = make_launcher(task_launcher_config(cfg, sweep_dir, launcher_name,
                                                  launcher_overrides or []))
    try:
        with judge_service(cfg, sweep_dir) as judge:
            outcomes = rescore_jobs(wanted, launcher, judge, stages, poll_s=_poll(cfg))
    finally:
        launcher.close()
    return {str(folder): outcome for folder, outcome in outcomes.items()}


def task_launcher_config(cfg: DictConfig, sweep_dir: Path, name: str | None,
                         overrides: list[str]) -> DictConfig:
    """The config the re-scoring launcher is made from: the sweep's, or `launcher=<name>` and
    `launcher.*` overrides composed for this sweep (e.g. a local sweep re-scored on SLURM)."""
    if not name and not overrides:
        return cfg
    return resolve_paths(compose_config([
        f"launcher={name or cfg.launcher.name}", f"sweep.name={cfg.sweep.name}",
        f"paths.sweeps={Path(sweep_dir).resolve().parent}", *overrides]))


def _poll(cfg: DictConfig) -> float:
    return float((cfg.get("launcher") or {}).get("poll_seconds", 1.0))


def judge_counts(folder: Path) -> dict:
    """The judge request / cache-hit counts of a folder's last evaluation."""
    record = read_record(folder)
    keys = ("mt_bench/judge_requests", "mt_bench/judge_cache_hits", "mt_bench/judge_errors")
    return {k.split("/")[1]: record.metrics.get(k) for k in keys} if record else {}


def main(argv: list[str] | None = None) -> int:
    """`top-k SWEEP_DIR` or `reeval SWEEP_DIR [--stages ...] [--launcher NAME] [launcher.K=V]`;
    prints each folder's judge request counts (or why it could not be re-scored). Exit 1 when
    a re-scoring job failed."""
    parser = argparse.ArgumentParser(prog="python -m harness.cascade")
    parser.add_argument("action", choices=["top-k", "reeval"])
    parser.add_argument("sweep_dir")
    parser.add_argument("--stages", nargs="*", choices=STAGES, default=None)
    parser.add_argument("--launcher", default=None, help="run the jobs with launcher=NAME")
    parser.add_argument("overrides", nargs="*", help="launcher.KEY=VALUE for those jobs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sweep_dir = Path(args.sweep_dir)
    if args.action == "top-k":
        cfg = layout.read_sweep_config(sweep_dir)
        launcher = make_launcher(task_launcher_config(cfg, sweep_dir, args.launcher,
                                                      args.overrides))
        try:
            with judge_service(cfg, sweep_dir) as judge:
                print("scored:", top_k_pass(sweep_dir, cfg, judge, launcher))
        finally:
            launcher.close()
        return 0
    failed = False
    for folder, outcome in reevaluate(sweep_dir, args.stages, args.launcher,
                                      args.overrides).items():
        if outcome["status"] == tasks.DONE:
            print(folder, json.dumps(judge_counts(Path(folder))))
        else:   # unusable: recorded FAILED in that trial, one line; error: the job's failure
            print(outcome["message"], flush=True)
            failed = failed or outcome["status"] == tasks.ERROR
    return 1 if failed else 0
