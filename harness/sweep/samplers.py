"""The driver's Optuna samplers, named by `sweep.sampler.name` (see harness.registry)."""

from __future__ import annotations

import optuna
from omegaconf import DictConfig

from harness.errors import ConfigError
from harness.registry import SAMPLERS
from harness.sweep.space import Param
from harness.sweep.space import study_grid as grid_space


def make_sampler(sampler: DictConfig, space: list[Param], n_objectives: int):
    """Optuna sampler named by `sweep.sampler.name`."""
    name = sampler.get("name", "tpe")
    factory = SAMPLERS.load(name)
    if n_objectives > 1 and name == "cmaes":
        raise ConfigError("sweep.sampler.name=cmaes cannot optimize several objectives")
    return factory(sampler, space)


def tpe(sampler: DictConfig, space: list[Param]) -> optuna.samplers.BaseSampler:
    """TPE; `multivariate`, `group` and `constant_liar` go to Optuna as given (null: Optuna's
    default, multivariate for one objective; conf/sweep/default.yaml says what each does)."""
    return optuna.samplers.TPESampler(
        seed=sampler.get("seed"), n_startup_trials=sampler.get("n_startup_trials", 10),
        multivariate=sampler.get("multivariate"), group=bool(sampler.get("group", False)),
        constant_liar=bool(sampler.get("constant_liar", True)))


def random(sampler: DictConfig, space: list[Param]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=sampler.get("seed"))


def grid(sampler: DictConfig, space: list[Param]) -> optuna.samplers.BaseSampler:
    return AskTellGridSampler(grid_space(space), seed=sampler.get("seed"))


def cmaes(sampler: DictConfig, space: list[Param]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=sampler.get("seed"))


def nsgaii(sampler: DictConfig, space: list[Param]) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=sampler.get("seed"),
                                         population_size=sampler.get("population_size", 50))


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell loops.

    Optuna's GridSampler calls `study.stop()` once the grid is used up, which raises outside
    `study.optimize` and would abort `study.tell` before the trial's state is stored. The
    driver caps the trial count at the grid size itself, so the stop is not needed.
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D102
        return None
