"""The search space of a sweep: parse `sweep.params`, suggest values, turn them into overrides.

A parameter's value becomes a Hydra override of its `key` (a config path such as
`method.lora.rank`, or `method` to pick the method config group), so a trial's config is
composed exactly like a command line with those overrides added.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError

TYPES = {"categorical", "int", "float"}


@dataclass(frozen=True)
class Param:
    """One searchable parameter."""

    name: str
    key: str
    type: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    when: dict = field(default_factory=dict)
    ordered: bool = False   # categorical: the choices are in order (searched by position)


def parse_space(params: DictConfig | dict | None) -> list[Param]:
    """Validated parameters, in declaration order; ConfigError names the bad field."""
    raw = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) \
        else dict(params or {})
    space = [_parse_param(name, spec) for name, spec in raw.items()]
    names = {p.name for p in space}
    for param in space:
        for other in param.when:
            if other not in names:
                raise ConfigError(f"sweep.params.{param.name}.when: unknown parameter '{other}'")
    return space


def _parse_param(name: str, spec: dict) -> Param:
    where = f"sweep.params.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with a 'type'")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"{where}.type must be one of {sorted(TYPES)}, got {kind!r}")
    when = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in
            (spec.get("when") or {}).items()}
    key = str(spec.get("key", name))
    if kind == "categorical":
        choices = spec.get("choices")
        if not choices:
            raise ConfigError(f"{where}.choices is empty")
        ordered = spec.get("ordered", False)
        if not isinstance(ordered, bool):
            raise ConfigError(f"{where}.ordered must be true or false, got {ordered!r}")
        return Param(name, key, kind, choices=tuple(choices), when=when, ordered=ordered)
    if "ordered" in spec:
        raise ConfigError(f"{where}.ordered applies to categorical choices only ({kind} "
                          "values are ordered already)")
    low, high = spec.get("low"), spec.get("high")
    if low is None or high is None or not low < high:
        raise ConfigError(f"{where}: needs low < high, got low={low!r} high={high!r}")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{where}.low must be > 0 on a log scale, got {low!r}")
    return Param(name, key, kind, low=low, high=high, log=bool(spec.get("log", False)),
                 step=spec.get("step"), when=when)


def is_active(param: Param, values: dict) -> bool:
    """A conditional parameter is active when every `when` parameter has an allowed value."""
    return all(values.get(other) in allowed for other, allowed in param.when.items())


def suggest(trial: optuna.Trial, space: list[Param]) -> dict:
    """Ask the trial for each active parameter, in order (define-by-run, so conditions work).

    An ordered categorical is asked as its position among the choices (an Optuna int 0..n-1,
    which TPE models with a kernel over neighbouring positions, where a plain categorical's
    labels share nothing), and the value returned is the choice at that position: the study
    stores positions (study_params), the trial's config and record the values."""
    values: dict = {}
    for param in space:
        if not is_active(param, values):
            continue
        if param.ordered:
            index = trial.suggest_int(param.name, 0, len(param.choices) - 1)
            values[param.name] = param.choices[index]
        elif param.type == "categorical":
            values[param.name] = trial.suggest_categorical(param.name, list(param.choices))
        elif param.type == "int":
            values[param.name] = trial.suggest_int(param.name, int(param.low), int(param.high),
                                                   step=int(param.step or 1), log=param.log)
        else:
            values[param.name] = trial.suggest_float(param.name, float(param.low),
                                                     float(param.high), step=param.step,
                                                     log=param.log)
    return values


def grid(space: list[Param]) -> dict[str, list]:
    """Optuna GridSampler search space: every parameter must have a finite list of values."""
    out = {}
    for param in space:
        if param.when:
            raise ConfigError(f"sweep.params.{param.name}: grid sampler cannot take a "
                              "conditional parameter")
        if param.type == "categorical":
            out[param.name] = list(param.choices)
        elif param.type == "int":
            out[param.name] = list(range(int(param.low), int(param.high) + 1,
                                         int(param.step or 1)))
        else:
            raise ConfigError(f"sweep.params.{param.name}: grid sampler needs categorical or "
                              "int values, not a float range")
    return out


def study_grid(space: list[Param]) -> dict[str, list]:
    """grid() as Optuna's GridSampler must see it: ordered choices by position (suggest)."""
    ordered = {p.name: len(p.choices) for p in space if p.ordered}
    return {name: list(range(ordered[name])) if name in ordered else values
            for name, values in grid(space).items()}


def study_params(space: list[Param], values: dict) -> dict:
    """Parameter values as the study stores them (enqueue_trial): an ordered choice becomes
    its position; ConfigError when it is not one of the choices."""
    ordered = {p.name: p for p in space if p.ordered}
    out = dict(values)
    for name, value in values.items():
        if name in ordered:
            if value not in ordered[name].choices:
                raise ConfigError(f"sweep.enqueue: {name}={value!r} is not one of "
                                  f"sweep.params.{name}.choices {list(ordered[name].choices)}")
            out[name] = ordered[name].choices.index(value)
    return out


def grid_size(space: list[Param]) -> int:
    size = 1
    for values in grid(space).values():
        size *= len(values)
    return size


def format_value(value) -> str:
    """A value as Hydra override syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def to_overrides(space: list[Param], values: dict) -> list[str]:
    """Hydra overrides for suggested values (group choices such as `method` first)."""
    keyed = {p.name: p.key for p in space}
    items = [(keyed.get(name, name), value) for name, value in values.items()]
    items.sort(key=lambda kv: "." in kv[0])
    return [f"{key}={format_value(value)}" for key, value in items]


def drop_fixed(space: list[Param], cli_overrides: list[str]) -> tuple[list[Param], list[str]]:
    """Remove parameters the command line fixes (e.g. method.lora.rank=32); return them too."""
    fixed_keys = {o.split("=", 1)[0].lstrip("+~") for o in cli_overrides if "=" in o}
    kept = [p for p in space if p.key not in fixed_keys]
    return kept, [p.name for p in space if p.key in fixed_keys]
