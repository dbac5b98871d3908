"""Replicates: rerun a sweep's top configurations with other seeds, through the same launcher
and trial process (`python -m harness.trial DIR`) as the sweep's own trials.

    python -m harness action=replicate sweep=default replicate.top_k=2 replicate.seeds=[1,2,3]

Each replicate is a folder sweeps/<sweep>/replicates/<NNNN>-seed<S>/ holding the source trial's
config.yaml with `seed` set to S (everything else as the trial ran), then trial.log,
result.json and model/ as for any trial. The record keeps the source trial's number, so the
report groups a configuration's runs: the trial itself plus its replicates. Rerunning skips
replicates that have a COMPLETE record, re-attaches to ones still running, and runs the rest
(including FAILED ones) again.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig

from harness import layout
from harness.errors import ConfigError
from harness.launch.base import make_launcher, wait_for_jobs
from harness.layout import CONFIG_FILE, RESULT_FILE
from harness.records import (
    COMPLETE,
    TrialRecord,
    TrialSpec,
    read_trial_config,
    write_trial_config,
)
from harness.sweep.driver import shared_spec
from harness.sweep.judge_service import judge_service
from harness.sweep.results import load_sweep
from harness.sweep.results_records import read_or_none

log = logging.getLogger(__name__)


@dataclass
class Planned:
    """One replicate to have: source trial, seed, folder."""

    number: int
    seed: int
    dir: Path

    def done(self) -> bool:
        record = read_or_none(self.dir)
        return record is not None and record.status == COMPLETE



# -- choosing what to replicate ---------------------------------------------------------------
def choose_trials(sweep_dir: Path, rcfg: DictConfig) -> list[TrialRecord]:
    """The configurations to replicate: `trials` if given, else the top_k by the first objective
    plus (per_method) each method's best; COMPLETE trials only."""
    data = load_sweep(sweep_dir)
    done = {r.number: r for r in data.records if r.status == COMPLETE}
    wanted = rcfg.get("trials")
    if wanted:
        missing = [int(n) for n in wanted if int(n) not in done]
        if missing:
            raise ConfigError(f"replicate.trials: no COMPLETE trial {missing} in {sweep_dir}")
        return [done[int(n)] for n in wanted]
    top_k = int(rcfg.get("top_k") or 0)
    chosen = list(data.ranked[:top_k])
    if rcfg.get("per_method"):
        for record in data.ranked:
            if all(c.method != record.method for c in chosen):
                chosen.append(record)
    if not chosen:
        raise ConfigError(f"replicate: no COMPLETE trial with the objective in {sweep_dir}")
    return chosen


def plan(sweep_dir: Path, rcfg: DictConfig) -> list[Planned]:
    """Every (trial, seed) replicate wanted; a trial's own seed is not run again."""
    seeds = [int(s) for s in (rcfg.get("seeds") or [])]
    if not seeds:
        raise ConfigError("replicate.seeds is empty: give seeds, e.g. replicate.seeds=[1,2,3]")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"replicate.seeds has repeated seeds: {seeds}")
    return [Planned(r.number, seed, layout.replicate_dir(sweep_dir, r.number, seed))
            for r in choose_trials(sweep_dir, rcfg) for seed in seeds if seed != r.seed]


# -- running -----------------------------------------------------------------------------------
def write_config(sweep_dir: Path, item: Planned, shared: TrialSpec) -> None:
    """The source trial's resolved config with the replicate's seed and spec."""
    source = layout.trial_dir(sweep_dir, item.number) / CONFIG_FILE
    if not source.is_file():
        raise ConfigError(f"replicate: trial {item.number} has no {source}")
    cfg, spec = read_trial_config(source.parent)
    write_trial_config(item.dir, cfg, replace(
        shared, number=item.number, replicate_of=item.number, params=spec.params,
        seed=item.seed, study_name=spec.study_name or shared.study_name, dir=str(item.dir),
        baseline_dir=spec.baseline_dir))


def run_replicates(sweep, items: list[Planned] | None = None) -> list[TrialRecord]:
    """Run the missing replicates of a prepared harness.sweep.driver.Sweep; returns every planned
    replicate's record (COMPLETE ones from earlier runs included)."""
    if not (sweep.dir / "trials").is_dir():
        raise ConfigError(f"sweep.name: no trials at {sweep.dir} to replicate")
    items = plan(sweep.dir, sweep.cfg.replicate) if items is None else items
    todo = [item for item in items if not item.done()]
    print(f"replicates of {sweep.name}: {len(items)} planned, {len(items) - len(todo)} done, "
          f"{len(todo)} to run", flush=True)
    launcher = make_launcher(sweep.cfg)
    try:
        with judge_service(sweep.cfg, sweep.dir) as judge:
            _run_all(sweep, launcher, todo, shared_spec(sweep, judge))
    finally:
        launcher.close()
    return [r for r in (read_or_none(item.dir) for item in items) if r is not None]


def _run_all(sweep, launcher, todo: list[Planned], shared: TrialSpec) -> None:
    """Submit up to launcher.parallel replicates at a time until all have ended."""
    poll = float(sweep.cfg.launcher.get("poll_seconds", 1.0))
    running: dict[int, tuple[Planned, object]] = {}
    queue = list(todo)
    while queue or running:
        while queue and len(running) < launcher.parallel:
            item = queue.pop(0)
            running[id(item)] = (item, _start(sweep, launcher, item, shared))
        ended = [key for key, (_, job) in running.items() if job.done()]
        for key in ended:
            item, job = running.pop(key)
            record = read_or_none(item.dir)
            status = record.status if record else f"no record ({job.failure_reason()})"
            print(f"replicate trial {item.number} seed {item.seed}: {status}", flush=True)
        if not ended:
            wait_for_jobs(launcher, poll)   # a warm local job says at once


def _start(sweep, launcher, item: Planned, shared: TrialSpec):
    """Re-attach to a replicate still running, else (re)write its folder and submit it."""
    job = launcher.reattach(item.dir) if item.dir.is_dir() else None
    if job is not None:
        log.info("replicate %s still running: re-attached", item.dir.name)
        return job
    if item.dir.is_dir():  # a FAILED or lost earlier attempt: start clean, keep its log
        for name in (RESULT_FILE, "model", "checkpoints"):
            path = item.dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    write_config(sweep.dir, item, shared)
    return launcher.submit(item.dir)
