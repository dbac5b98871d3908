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


def gp(sampler: DictConfig, space: list[Param]) -> optuna.samplers.BaseSampler:
    """Gaussian-process Bayesian optimization (Optuna GPSampler): log expected improvement,
    its batch form (qLogEI) over the running trials for parallel asks. `deterministic_objective`
    fixes the surrogate's noise at its minimum (seeded training). It models complete trials
    only: pruned ones teach it nothing (benchmarks/search_efficiency.py runs it unpruned)."""
    return SingleThreadGPSampler(
        seed=sampler.get("seed"), n_startup_trials=sampler.get("n_startup_trials", 10),
        deterministic_objective=bool(sampler.get("deterministic_objective", False)))


class SingleThreadGPSampler(optuna.samplers.GPSampler):
    """GPSampler that fits and searches with one torch thread.

    GPSampler runs torch on the CPU in the process that asks. A SLURM pool worker asks and
    then forks the trial (harness.launch.warm.fork_child): once torch has run an OpenMP
    parallel region, libgomp's thread team does not survive the fork and the child's first
    multi-threaded op hangs (reproduced with torch 2 and Optuna 5). With one thread torch never
    starts the team; a GP over tens of trials does not need more.
    """

    def sample_relative(self, study, trial, search_space):  # noqa: D102
        import torch  # GPSampler's own dependency; TPE sweeps never import it in the driver

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return super().sample_relative(study, trial, search_space)
        finally:
            torch.set_num_threads(threads)


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
