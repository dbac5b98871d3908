"""`sweep.max_train_steps`: a search budget in training steps ("spend at most N steps").

The driver asks a new trial only while the steps the ended trials spent, plus the steps the
running trials may still spend (their planned `method.train.max_steps`), plus the new trial's
planned steps fit the budget: the sweep never starts a trial that could overrun it. A pruned
or failed trial counts the steps it ran (its last logged step), so what a pruner saves goes to
more trials; `sweep.n_trials` still caps their count. Every trial folder of the sweep counts,
so a resumed sweep spends what is left of the budget. benchmarks/search_efficiency.py and
benchmarks/search_replay.py count steps with the same functions.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from pathlib import Path

from omegaconf import DictConfig

from harness.layout import trial_dirs
from harness.records import TrialRecord, read_record, read_trial_config


def trial_steps(trial_dir: Path, record: TrialRecord | None) -> int:
    """Training steps a trial consumed: all of them (`train_steps`), or, for a trial stopped
    early (pruned, failed, killed), the last step it logged in loss.jsonl (0: none)."""
    if record is not None and record.train_steps is not None:
        return int(record.train_steps)
    path = trial_dir / "loss.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []
    return max((int(row["step"]) for row in rows if "step" in row), default=0)


def planned_steps(cfg: DictConfig) -> int:
    """The steps a trial of this config may train: `method.train.max_steps` (validated a
    positive integer when a budget is set, harness.config.search.check_step_budget)."""
    return int(cfg.method.train.max_steps)


def trials_that_fit(limit: int, spent: int, committed: int, planned: int) -> int:
    """How many more trials of `planned` steps fit in `limit` after `spent` (ended trials) and
    `committed` (the running trials' planned steps)."""
    return max(0, (limit - spent - committed) // max(planned, 1))


class StepBudget:
    """The driver's view of `sweep.max_train_steps` over a sweep folder's trials."""

    def __init__(self, cfg: DictConfig, sweep_dir: Path):
        limit = cfg.sweep.get("max_train_steps")
        self.limit = None if limit is None else int(limit)
        self.planned = planned_steps(cfg) if self.limit is not None else 0
        self.sweep_dir = Path(sweep_dir)
        self._ended: dict[str, int] = {}     # trial folder name -> steps, once it has a record
        self._running: dict[str, int] = {}   # trial folder name -> planned steps (its config)
        self._stopped = False

    def cap(self, count: int, running: Iterable[Path]) -> int:
        """`count` new trials, fewer when the budget cannot hold them all."""
        if self.limit is None or count <= 0:
            return count
        running = list(running)
        spent = self.spent({p.name for p in running})
        committed = sum(self._planned(p) for p in running)
        fit = trials_that_fit(self.limit, spent, committed, self.planned)
        if fit == 0 and not running and not self._stopped:
            self._stopped = True
            print(f"sweep.max_train_steps={self.limit}: {spent} steps spent, a trial of "
                  f"{self.planned} more would not fit: no more trials", flush=True)
        return min(count, fit)

    def spent(self, running: Collection[str] = ()) -> int:
        """Steps the ended trials (every trial folder not named in `running`) consumed."""
        total = 0
        for folder in (f for f in trial_dirs(self.sweep_dir) if f.name not in running):
            if folder.name not in self._ended:
                record = read_record(folder)
                if record is None:   # a dead driver's trial: what it logged, may not be final
                    total += trial_steps(folder, None)
                    continue
                self._ended[folder.name] = trial_steps(folder, record)   # final: kept
            total += self._ended[folder.name]
        return total

    def _planned(self, trial_dir: Path) -> int:
        """A running trial's planned steps, from its own config (the sweep's if unreadable)."""
        if trial_dir.name not in self._running:
            try:
                self._running[trial_dir.name] = planned_steps(read_trial_config(trial_dir)[0])
            except (OSError, ValueError, TypeError):
                self._running[trial_dir.name] = self.planned
        return self._running[trial_dir.name]
