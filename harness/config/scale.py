"""Scale defaults outside the composed method block: the sweep's scoring reward model.

Methods with a `reward:` block (ppo, grpo, rloo) get the scale's reward settings from Hydra
(conf/scale_defaults/real_<method>.yaml). The scoring reward model of the other methods is
built from conf/method/_reward.yaml by harness.trial.stages.reward_method; this module adds
the same scale pieces to it, named by the scale's `scoring_reward` ({file: place in the
block}), so a DPO trial's scorer and a PPO trial's reward stage stay one cached stage.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from harness.config.compose import conf_dir


def reward_block(cfg: DictConfig) -> DictConfig:
    """conf/method/_reward.yaml merged with the scale's pieces (unresolved: its
    interpolations, e.g. ${model.lora_target_modules}, resolve against `cfg`)."""
    block = OmegaConf.load(conf_dir() / "method" / "_reward.yaml")
    pieces = (cfg.get("scale") or {}).get("scoring_reward") or {}
    for name, where in pieces.items():
        piece = OmegaConf.load(conf_dir() / "scale_defaults" / f"{name}.yaml")
        block = OmegaConf.merge(block, {where: piece} if where else piece)
    return block
