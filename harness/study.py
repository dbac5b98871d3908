"""Optuna storage and pruner from config, and the trial-side reporter (for pruning).

These sit below every stage: the driver opens the study with them, a trial process reports
its eval loss through them, and the results reader opens a finished study. Samplers are the
driver's alone (harness.sweep.samplers). Names are looked up in harness.registry.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from omegaconf import DictConfig

from harness.registry import PRUNERS, STORAGES


def sqlite_storage(storage: DictConfig) -> optuna.storages.BaseStorage:
    """SQLite file (one node: its locking breaks on shared file systems)."""
    url = str(storage.url)
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})


def journal_storage(storage: DictConfig) -> optuna.storages.BaseStorage:
    """Journal file (safe on shared file systems: the SLURM default)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(str(storage.path))
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def rdb_storage(storage: DictConfig) -> optuna.storages.BaseStorage:
    """Any SQLAlchemy URL (PostgreSQL, MySQL)."""
    return optuna.storages.RDBStorage(str(storage.url))


def make_storage(storage: DictConfig) -> optuna.storages.BaseStorage:
    """The study storage for `conf/storage/*` (storage.kind picks it)."""
    return STORAGES.load(storage.kind)(storage)


def no_pruner(pruner: DictConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


def median_pruner(pruner: DictConfig) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=pruner.get("n_startup_trials", 2),
                                       n_warmup_steps=pruner.get("n_warmup_steps", 0))


def hyperband_pruner(pruner: DictConfig) -> optuna.pruners.BasePruner:
    """Hyperband: several successive-halving brackets, each starting at a larger resource."""
    return optuna.pruners.HyperbandPruner(min_resource=pruner.get("min_resource", 1),
                                          max_resource=pruner.get("max_resource", "auto"),
                                          reduction_factor=pruner.get("reduction_factor", 3),
                                          bootstrap_count=pruner.get("bootstrap_count", 0))


def successive_halving_pruner(pruner: DictConfig) -> optuna.pruners.BasePruner:
    """Asynchronous successive halving (ASHA): rungs at min_resource x reduction_factor^k
    training steps; a trial continues past a rung only in the top 1/reduction_factor there."""
    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=pruner.get("min_resource", "auto"),
        reduction_factor=pruner.get("reduction_factor", 4),
        min_early_stopping_rate=pruner.get("min_early_stopping_rate", 0),
        bootstrap_count=pruner.get("bootstrap_count", 0))


def make_pruner(pruner: DictConfig) -> optuna.pruners.BasePruner:
    """Optuna pruner named by `sweep.pruner.name` (steps are training steps)."""
    return PRUNERS.load(pruner.get("name", "none"))(pruner)


class TrialReporter:
    """Reports a running trial's intermediate values to its study (from the trial's process)."""

    def __init__(self, storage: DictConfig, pruner: DictConfig, study_name: str, trial_id: int):
        study = optuna.load_study(study_name=study_name, storage=make_storage(storage),
                                  pruner=make_pruner(pruner))
        self.trial = optuna.Trial(study, trial_id)

    def report(self, value: float, step: int) -> None:
        self.trial.report(value, step)

    def should_prune(self) -> bool:
        return self.trial.should_prune()
