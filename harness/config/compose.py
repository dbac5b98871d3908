"""Compose and validate configs: the interface between a researcher and the harness.

Hydra composes `conf/` with command-line overrides. The driver and every trial compose through
the same function, so a trial's config is exactly the sweep's config plus its suggested values.
Validation raises ConfigError with one line naming the bad field or file, before any job runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.errors import ConfigError

METHODS_WITH_PEFT = {"lora", "none"}
TRIAL_KINDS = {"sft", "dpo", "ppo", "grpo"}   # dpo/ppo/grpo chain stages (harness.trial.stages)
QUANT_BITS = {None, 4, 8}



def conf_dir() -> Path:
    """The `conf/` directory: $HARNESS_CONF, else the one beside the harness package."""
    env = os.environ.get("HARNESS_CONF")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "conf"


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides; turn Hydra's errors into one line."""
    try:
        with initialize_config_dir(str(conf_dir()), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
    except MissingConfigException as exc:
        raise ConfigError(_missing_config_line(exc)) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_first_line(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}:{mark.line + 1}: " if mark else ""
        raise ConfigError(f"{where}invalid YAML ({getattr(exc, 'problem', exc)})") from None
    _apply_alpha_ratio(cfg)
    return cfg


def _apply_alpha_ratio(cfg: DictConfig) -> None:
    """Write alpha = rank * alpha_ratio into every LoRA block that sets a ratio, so the saved
    trial config shows the alpha that trained (a ratio <= 0 is left for validation to name)."""
    method = cfg.get("method")
    for block in (method, method.get("sft") if method else None):
        lora = block.get("lora") if block is not None else None
        ratio = lora.get("alpha_ratio") if lora is not None else None
        if isinstance(ratio, int | float) and not isinstance(ratio, bool) and ratio > 0 \
                and isinstance(lora.get("rank"), int):
            lora.alpha = float(lora.rank) * float(ratio)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if exc.__cause__ is not None and str(exc.__cause__).strip():
        text = f"{text.splitlines()[0]} {str(exc.__cause__).strip().splitlines()[0]}"
    return text.splitlines()[0]


def _missing_config_line(exc: MissingConfigException) -> str:
    """'Could not find method/foo' + the options Hydra lists, on one line."""
    lines = str(exc).splitlines()
    head = lines[0].replace("In 'config': ", "")
    options = [ln.strip() for ln in lines if ln.startswith("\t") and "provider=" not in ln]
    group = head.split("'")[1].split("/")[0] if "'" in head else ""
    options = [o for o in options if not o.startswith("_")]
    if options:
        return f"unknown {group} config: {head.split('Could not find ')[-1]} " \
               f"(available: {', '.join(options)})"
    return head


def resolve_paths(cfg: DictConfig) -> DictConfig:
    """Make `paths.*` absolute (against the current directory), then resolve every
    interpolation, so a trial's config means the same thing in any process or folder."""
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    for key in ("sweeps", "reports", "cache", "embedded"):
        value = str(cfg.paths[key])
        cfg.paths[key] = str(Path(value).expanduser().resolve())
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(_first_line(exc)) from None
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    """The fully resolved config as YAML (what is saved next to every trial's results)."""
    return OmegaConf.to_yaml(cfg, resolve=True)
