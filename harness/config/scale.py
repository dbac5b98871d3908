"""The sweep's scoring reward model, outside the composed method block.

Methods with a `reward:` block (ppo, grpo, rloo) get the scale's reward settings from Hydra
(conf/scale_defaults/real_<method>.yaml) for the reward model they train against. The sweep's
scoring reward model, which scores every trial's generations whatever its method, is built from
conf/method/_reward.yaml plus the same scale pieces, named by the scale's `scoring_reward`
({file: place in the block}), plus the user's `data.preference.metrics.scorer` overrides, so
with no overrides a PPO trial's reward stage and the sweep's scorer stay one cached stage.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from harness.config.compose import conf_dir
from harness.errors import ConfigError

SCORER_KEY = "data.preference.metrics.scorer"


def reward_block(cfg: DictConfig) -> DictConfig:
    """conf/method/_reward.yaml merged with the scale's pieces and the scorer overrides
    (unresolved: its interpolations, e.g. ${model.lora_target_modules}, resolve against
    `cfg`)."""
    block = OmegaConf.load(conf_dir() / "method" / "_reward.yaml")
    pieces = (cfg.get("scale") or {}).get("scoring_reward") or {}
    for name, where in pieces.items():
        piece = OmegaConf.load(conf_dir() / "scale_defaults" / f"{name}.yaml")
        block = OmegaConf.merge(block, {where: piece} if where else piece)
    return OmegaConf.merge(block, _overrides(cfg))


def _scorer_node(cfg: DictConfig):
    """data.preference.metrics.scorer as given (None when unset or without preference data)."""
    pref = (cfg.get("data") or {}).get("preference") or {}
    return (pref.get("metrics") or {}).get("scorer")


def _overrides(cfg: DictConfig) -> dict:
    node = _scorer_node(cfg)
    return {} if node is None else OmegaConf.to_container(node, resolve=False)


def check_scorer(cfg: DictConfig) -> None:
    """ConfigError with a line per scorer override that is not a mapping or names a key
    conf/method/_reward.yaml does not have (it would be silently ignored)."""
    node = _scorer_node(cfg)
    if node is None:
        return
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{SCORER_KEY} must be a mapping of conf/method/_reward.yaml keys, "
                          f"got {node!r}")
    known = OmegaConf.load(conf_dir() / "method" / "_reward.yaml")
    lines = []

    def walk(given: DictConfig, have: DictConfig, prefix: str) -> None:
        for key in given:
            where = f"{prefix}.{key}"
            if key not in have:
                lines.append(f"{where} is not a key of the reward model config "
                             f"(conf/method/_reward.yaml: {', '.join(map(str, have))})")
            elif isinstance(given[key], DictConfig) and isinstance(have[key], DictConfig):
                walk(given[key], have[key], where)

    walk(node, known, SCORER_KEY)
    if lines:
        raise ConfigError(problems=lines)
