"""Optuna study plumbing: storage, sampler and pruner from config, and the trial-side reporter."""

from __future__ import annotations

from pathlib import Path

import optuna
from omegaconf import DictConfig

from harness.config import ConfigError
from harness.space import Param, grid

SAMPLERS = {"tpe", "random", "grid", "cmaes", "nsgaii"}
PRUNERS = {"none", "median", "hyperband"}


def make_storage(storage: DictConfig) -> optuna.storages.BaseStorage | str:
    """The study storage for `conf/storage/*`: SQLite file, journal file, or an RDB URL."""
    kind = storage.kind
    if kind == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(str(storage.path))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if kind == "sqlite":
        url = str(storage.url)
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    if kind == "rdb":
        return optuna.storages.RDBStorage(str(storage.url))
    raise ConfigError(f"storage.kind must be sqlite, journal or rdb, got {kind!r}")


def make_sampler(sampler: DictConfig, space: list[Param], n_objectives: int):
    """Optuna sampler named by `sweep.sampler.name`."""
    name, seed = sampler.get("name", "tpe"), sampler.get("seed")
    if name not in SAMPLERS:
        raise ConfigError(f"sweep.sampler.name must be one of {sorted(SAMPLERS)}, got {name!r}")
    if n_objectives > 1 and name == "cmaes":
        raise ConfigError("sweep.sampler.name=cmaes cannot optimize several objectives")
    if name == "grid":
        return AskTellGridSampler(grid(space), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed,
                                             population_size=sampler.get("population_size", 50))
    return optuna.samplers.TPESampler(seed=seed,
                                      n_startup_trials=sampler.get("n_startup_trials", 10))


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell loops.

    Optuna's GridSampler calls `study.stop()` once the grid is used up, which raises outside
    `study.optimize` and would abort `study.tell` before the trial's state is stored. The
    driver caps the trial count at the grid size itself, so the stop is not needed.
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D102
        return None


def make_pruner(pruner: DictConfig) -> optuna.pruners.BasePruner:
    """Optuna pruner named by `sweep.pruner.name` (steps are training steps)."""
    name = pruner.get("name", "none")
    if name not in PRUNERS:
        raise ConfigError(f"sweep.pruner.name must be one of {sorted(PRUNERS)}, got {name!r}")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.get("n_startup_trials", 2),
                                           n_warmup_steps=pruner.get("n_warmup_steps", 0))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=pruner.get("min_resource", 1),
                                              max_resource=pruner.get("max_resource", "auto"),
                                              reduction_factor=pruner.get("reduction_factor", 3))
    return optuna.pruners.NopPruner()


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
