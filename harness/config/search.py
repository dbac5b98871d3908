"""Checks of the search settings: `sweep.sampler` and `sweep.pruner` values (their names are
checked against harness.registry in validate.py) and the step budget `sweep.max_train_steps`.
One line per bad field, before anything runs: Optuna would otherwise raise only when the driver
builds the sampler or a trial its pruner."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from harness.registry import PRUNE_SIGNALS

_UNSET = object()
RUNGS = ("hyperband", "asha")   # pruners with rungs (harness.study)


def check_search(sweep: DictConfig, add: Callable[[str], None]) -> None:
    """Add one line per bad sampler or pruner setting."""
    sampler, pruner = sweep.sampler, sweep.pruner
    if PRUNE_SIGNALS.check(pruner.get("signal", "eval_loss")):
        add(PRUNE_SIGNALS.check(pruner.get("signal", "eval_loss")))
    for key, allow_null in (("multivariate", True), ("group", False), ("constant_liar", False),
                            ("deterministic_objective", False)):
        value = sampler.get(key, _UNSET)
        if value is not _UNSET and not (isinstance(value, bool) or (allow_null and value is None)):
            add(f"sweep.sampler.{key} must be true or false{' or null' if allow_null else ''}, "
                f"got {value!r}")
    if sampler.get("group") is True and sampler.get("multivariate") is False:
        add("sweep.sampler.group=true needs sweep.sampler.multivariate true or null "
            "(Optuna groups only the multivariate TPE)")
    _integer(sampler, "sweep.sampler.n_startup_trials", 0, add)
    name = pruner.get("name", "none")
    if name == "median":
        for key in ("n_startup_trials", "n_warmup_steps"):
            _integer(pruner, f"sweep.pruner.{key}", 0, add)
    if name not in RUNGS:   # the rung settings below are hyperband's and asha's
        return
    for key, low in (("reduction_factor", 2), ("bootstrap_count", 0),
                     ("min_early_stopping_rate", 0)):
        _integer(pruner, f"sweep.pruner.{key}", low, add)
    for key in ("min_resource", "max_resource"):
        if pruner.get(key, "auto") != "auto":
            _integer(pruner, f"sweep.pruner.{key}", 1, add, "or auto")
    low, high = pruner.get("min_resource"), pruner.get("max_resource")
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) and low > high:
        add(f"sweep.pruner.min_resource ({low}) must be <= sweep.pruner.max_resource ({high})")


def check_step_budget(cfg: DictConfig, add: Callable[[str], None]) -> None:
    """sweep.max_train_steps: null or a positive integer, counted against each trial's planned
    method.train.max_steps (harness.sweep.budget), which must then be a positive integer."""
    limit = cfg.sweep.get("max_train_steps")
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        add(f"sweep.max_train_steps must be a positive integer or null, got {limit!r}")
        return
    planned = cfg.method.train.get("max_steps")
    if isinstance(planned, bool) or not isinstance(planned, int) or planned < 1:
        add(f"sweep.max_train_steps needs method.train.max_steps a positive integer (a trial's "
            f"planned steps), got {planned!r}")


def _integer(cfg: DictConfig, path: str, low: int, add: Callable[[str], None],
             also: str = "") -> None:
    """`path` (its last part a key of `cfg`), when given, must be an integer >= low."""
    value = cfg.get(path.rsplit(".", 1)[1], _UNSET)
    if value is _UNSET:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        add(f"{path} must be an integer >= {low}{' ' + also if also else ''}, got {value!r}")
