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

METHODS_WITH_PEFT = {"lora", "none"}
TRIAL_KINDS = {"sft", "dpo", "ppo", "grpo"}   # dpo/ppo/grpo chain stages (harness.stages)
QUANT_BITS = {None, 4, 8}


class ConfigError(ValueError):
    """A bad config value, file or override; the message is one line naming it."""


def conf_dir() -> Path:
    """The `conf/` directory: $HARNESS_CONF, else the one beside the harness package."""
    env = os.environ.get("HARNESS_CONF")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "conf"


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


def validate_trial_config(cfg: DictConfig) -> None:
    """Check one composed trial config; raise ConfigError naming the first bad field."""
    _check_method(cfg.method)
    _check_model(cfg.model)
    _check_data(cfg.data)
    _check_positive(cfg, ["eval.perplexity.max_length", "eval.perplexity.stride",
                          "eval.perplexity.batch_size", "eval.rouge.max_new_tokens",
                          "eval.rouge.batch_size"])
    if cfg.eval.perplexity.stride > cfg.eval.perplexity.max_length:
        raise ConfigError("eval.perplexity.stride must be <= eval.perplexity.max_length")
    from harness.cascade import check_eval_config

    check_eval_config(cfg)


def _check_method(method: DictConfig) -> None:
    name = method.get("name")
    if not name or str(name).startswith("_"):
        raise ConfigError(f"method: '{name}' is not a method config")
    kind = method.get("kind", "sft")
    if kind not in TRIAL_KINDS:
        raise ConfigError(f"method.kind must be one of {sorted(TRIAL_KINDS)}, got {kind!r}")
    if kind != "sft":
        _check_sft_stage(method)
    if method.get("peft") not in METHODS_WITH_PEFT:
        raise ConfigError(f"method.peft must be one of {sorted(METHODS_WITH_PEFT)}, "
                          f"got {method.get('peft')!r}")
    bits = method.quantization.get("bits")
    if bits not in QUANT_BITS:
        raise ConfigError(f"method.quantization.bits must be null, 4 or 8, got {bits!r}")
    if bits is not None and method.peft != "lora":
        raise ConfigError("method.quantization.bits needs method.peft=lora "
                          "(a quantized base cannot be fully fine-tuned)")
    if method.peft == "lora":
        _check_lora(method.lora)
    _check_positive(method, ["train.learning_rate", "train.per_device_train_batch_size",
                             "train.gradient_accumulation_steps"], prefix="method.")


def _check_sft_stage(method: DictConfig) -> None:
    """dpo/ppo/grpo: `method.sft` is a whole SFT method config (harness.stages)."""
    if method.get("sft") is None or method.sft.get("kind", "sft") != "sft":
        raise ConfigError("method.sft must be an SFT method config (kind: sft)")
    try:
        _check_method(method.sft)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("method", "method.sft", 1)) from None


def _check_lora(lora: DictConfig) -> None:
    rank = lora.rank
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ConfigError(f"method.lora.rank must be a positive integer, got {rank!r}")
    ratio = lora.get("alpha_ratio")
    if ratio is not None and not _positive_number(ratio):
        raise ConfigError(f"method.lora.alpha_ratio must be > 0, got {ratio!r}")
    if ratio is None and not _positive_number(lora.alpha):
        raise ConfigError(f"method.lora.alpha must be > 0, got {lora.alpha!r}")
    if not 0 <= float(lora.dropout) < 1:
        raise ConfigError(f"method.lora.dropout must be in [0, 1), got {lora.dropout!r}")


def _check_model(model: DictConfig) -> None:
    source = model.source
    if source not in {"embedded", "hub", "local"}:
        raise ConfigError(f"model.source must be embedded, hub or local, got {source!r}")
    if source == "local" and not Path(str(model.path)).is_dir():
        raise ConfigError(f"model.path: no model directory at {model.path}")
    if model.dtype not in {"float32", "bfloat16", "float16"}:
        raise ConfigError(f"model.dtype must be float32, bfloat16 or float16, got {model.dtype!r}")


def _check_data(data: DictConfig) -> None:
    if data.source not in {"embedded", "hub", "local"}:
        raise ConfigError(f"data.source must be embedded, hub or local, got {data.source!r}")


def _check_positive(cfg: DictConfig, keys: list[str], prefix: str = "") -> None:
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if not _positive_number(value):
            raise ConfigError(f"{prefix}{key} must be > 0, got {value!r}")


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
