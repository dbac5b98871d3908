"""Replay a search strategy on a finished grid run: a tabular benchmark.

With the training seed fixed, a trial's eval-loss curve and final perplexity depend only on
its parameters, so the grid run (every configuration trained to the end, the eval loss logged
at every `eval_steps`) holds what any trial over the same points would report. The replay
drives a real Optuna study, with the sampler and pruner the harness builds from the config
(harness.sweep.samplers.make_sampler, harness.study.make_pruner), through the driver's loop
(`launcher.parallel` trials at once, ask when one ends while `sweep.n_trials` and
`sweep.max_train_steps` allow, harness.sweep.budget; report each eval loss, stop when
pruned), but looks each trial's numbers up in the grid instead of training. Trials overlap on a
clock modelled from the grid's own records (start-up, seconds per step, final evaluation), so
parallel asks see running trials as they would live (constant liar). Tabular benchmarks are
the standard way to compare HPO methods cheaply (HPOBench, NAS-Bench-201, YAHPO Gym).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from harness.records import COMPLETE, read_record
from harness.study import make_pruner
from harness.sweep.budget import planned_steps, trials_that_fit
from harness.sweep.samplers import make_sampler
from harness.sweep.space import parse_space, study_params, suggest


@dataclass(frozen=True)
class Measured:
    """One grid configuration as it ran: what a trial with its parameters reports."""

    evals: tuple[tuple[int, float], ...]   # (step, eval loss) in step order
    objective: float                       # the trial's perplexity after all its steps


@dataclass(frozen=True)
class Clock:
    """Seconds a trial takes, from the grid records (medians): start-up (job wall minus train
    and eval), per training step (mid-training evals included), the final evaluation."""

    startup_s: float
    step_s: float
    final_eval_s: float


@dataclass
class Finished:
    """A replayed trial, in the order trials ended."""

    number: int
    params: dict
    state: str            # COMPLETE | PRUNED
    steps: int            # training steps it ran
    value: float | None   # the objective (complete trials)
    end_s: float          # clock time it ended


def key(values: dict) -> tuple:
    """A configuration's lookup key (parameter name -> float value)."""
    return tuple(sorted((name, float(value)) for name, value in values.items()))


def load_grid(trials_dir: Path) -> tuple[dict[tuple, Measured], Clock]:
    """The grid's complete trials by configuration, and the clock they imply."""
    table: dict[tuple, Measured] = {}
    startup, per_step, final = [], [], []
    for trial_dir in sorted(p for p in trials_dir.iterdir() if p.is_dir()):
        record = read_record(trial_dir)
        if record is None or record.status != COMPLETE:
            continue
        rows = [json.loads(line) for line in (trial_dir / "loss.jsonl").read_text().splitlines()]
        evals = tuple(sorted((int(r["step"]), float(r["eval_loss"])) for r in rows
                             if "eval_loss" in r))
        table[key(record.params)] = Measured(evals, float(record.metrics["perplexity"]))
        if record.job_seconds and record.train_seconds and record.train_steps:
            startup.append(record.job_seconds - record.train_seconds - (record.eval_seconds or 0))
            per_step.append(record.train_seconds / record.train_steps)
            final.append(record.eval_seconds or 0.0)
    clock = Clock(*(statistics.median(v) if v else 0.0 for v in (startup, per_step, final)))
    return table, clock


@dataclass(order=True)
class _Running:
    next_s: float
    number: int
    trial: optuna.Trial = field(compare=False)
    point: Measured = field(compare=False)
    start_s: float = field(compare=False)
    index: int = field(default=0, compare=False)


def replay(cfg: DictConfig, table: dict[tuple, Measured], clock: Clock,
           study_name: str) -> list[Finished]:
    """Run the sweep `cfg` describes against the grid table; the trials in the order they end.

    `study_name` matters: Optuna's Hyperband assigns brackets by a hash of it."""
    space = parse_space(cfg.sweep.params)
    study = optuna.create_study(
        study_name=study_name, direction=str(cfg.sweep.objectives[0].direction),
        sampler=make_sampler(cfg.sweep.sampler, space, 1), pruner=make_pruner(cfg.sweep.pruner))
    for params in cfg.sweep.get("enqueue") or []:
        study.enqueue_trial(study_params(space, OmegaConf.to_container(params)),
                            skip_if_exists=True)
    n_trials, parallel = int(cfg.sweep.n_trials), int(cfg.launcher.parallel)
    limit = cfg.sweep.get("max_train_steps")   # the driver's step budget, counted the same way
    planned = planned_steps(cfg)
    if cfg.sweep.sampler.get("name") == "grid":
        n_trials = min(n_trials, len(table))
    running: list[_Running] = []
    done: list[Finished] = []
    now = 0.0
    while True:
        while len(running) < parallel and len(done) + len(running) < n_trials and (
                limit is None or trials_that_fit(int(limit), sum(d.steps for d in done),
                                                 planned * len(running), planned)):
            trial = study.ask()
            point = table[key(suggest(trial, space))]
            running.append(_Running(_event_s(now, point, 0, clock), trial.number, trial, point,
                                    now))
        if not running:
            return done
        run = min(running)
        now = run.next_s
        step, value = run.point.evals[run.index]
        run.trial.report(value, step)
        last = run.index == len(run.point.evals) - 1
        pruned = run.trial.should_prune()   # live, the last eval can prune too
        if pruned or last:
            state = TrialState.PRUNED if pruned else TrialState.COMPLETE
            objective = None if pruned else run.point.objective
            study.tell(run.trial, objective, state=state)
            done.append(Finished(run.number, dict(run.trial.params), state.name, step,
                                 objective, now))
            running.remove(run)
        else:
            run.index += 1
            run.next_s = _event_s(run.start_s, run.point, run.index, clock)


def _event_s(start_s: float, point: Measured, index: int, clock: Clock) -> float:
    """When a trial started at `start_s` reports its `index`-th eval (the last one after the
    final evaluation: it is told then)."""
    last = index == len(point.evals) - 1
    return (start_s + clock.startup_s + point.evals[index][0] * clock.step_s
            + (clock.final_eval_s if last else 0.0))
