"""Checks of `launcher.mode` and `launcher.pool.*` (conf/launcher/slurm.yaml; the pool itself is
harness.sweep.pool): one line per bad field, before anything is written."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from harness.config.distributed import nproc_per_node
from harness.errors import ConfigError
from harness.registry import LAUNCH_MODES


def check_launch_mode(cfg: DictConfig) -> None:
    """launcher.mode, and for `pool` the pool's settings and what a pool cannot run."""
    launcher = cfg.launcher
    mode = launcher.get("mode", "job_per_trial")
    problem = LAUNCH_MODES.check(mode)
    if problem:
        raise ConfigError(problem)
    if mode != "pool":
        return
    if launcher.get("name") != "slurm":
        raise ConfigError(f"launcher.mode=pool needs launcher=slurm, got "
                          f"launcher={launcher.get('name')!r}")
    pool = launcher.get("pool")
    if not OmegaConf.is_dict(pool):
        raise ConfigError(f"launcher.pool must be a mapping (workers, max_trials_per_worker, "
                          f"...), got {pool!r}")
    problems: list[str] = []
    for key, minimum, optional in (("workers", 1, False), ("max_trials_per_worker", 1, True),
                                   ("max_lost_workers", 1, False)):
        value = pool.get(key)
        if optional and value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            problems.append(f"launcher.pool.{key} must be an integer >= {minimum}"
                            f"{' or null' if optional else ''}, got {value!r}")
    timeout, margin = pool.get("timeout_min"), pool.get("time_margin")
    if not _number(timeout) or timeout <= 0:
        problems.append(f"launcher.pool.timeout_min must be > 0, got {timeout!r}")
    elif _number(launcher.get("signal_delay_s")) and launcher.signal_delay_s >= timeout * 60:
        problems.append(f"launcher.signal_delay_s must be below launcher.pool.timeout_min * 60 "
                        f"(the workers' time limit), got {launcher.signal_delay_s!r}")
    if not _number(margin) or margin < 1:
        problems.append(f"launcher.pool.time_margin must be a number >= 1, got {margin!r}")
    problems += _unsupported(cfg)
    if problems:
        raise ConfigError(problems=problems)


def _unsupported(cfg: DictConfig) -> list[str]:
    """What a pool worker cannot run: one process per trial on the worker's one node."""
    launcher, out = cfg.launcher, []
    if cfg.storage.get("kind") == "sqlite":
        out.append("launcher.mode=pool: storage=sqlite cannot be shared by worker jobs (SQLite "
                   "locking breaks on shared file systems): use storage=journal or storage=rdb")
    if isinstance(launcher.get("nodes"), int) and launcher.nodes > 1:
        out.append(f"launcher.mode=pool runs each trial as one process on its worker's node: "
                   f"launcher.nodes={launcher.nodes} needs launcher.mode=job_per_trial")
    elif nproc_per_node(launcher) > 1:
        out.append(f"launcher.mode=pool runs each trial as one process: "
                   f"{nproc_per_node(launcher)} processes per node (launcher.nproc_per_node / "
                   "gpus_per_node) need launcher.mode=job_per_trial")
    if cfg.sweep.get("max_train_steps") is not None:
        out.append("sweep.max_train_steps is counted by the job_per_trial driver only: set it "
                   "null with launcher.mode=pool (workers ask trials on their own)")
    if launcher.get("size_from_estimate"):
        out.append("launcher.size_from_estimate sizes each trial's job, but pool workers are "
                   "sized once for all their trials: set it false with launcher.mode=pool")
    return out


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
