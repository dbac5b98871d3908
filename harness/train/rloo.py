"""RLOO (Ahmadian et al. 2024, REINFORCE leave-one-out; trl RLOOTrainer, stable in trl 1.12)
on the SFT policy, with the reward stage as the reward function (no value model)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from harness.train.arguments import preference_args, step_args
from harness.train.callbacks import Reporter
from harness.train.grpo import online_train
from harness.train.results import TrainResult


def rloo_args(method: DictConfig, model_cfg: DictConfig, output_dir: Path, seed: int):
    """trl RLOOConfig from `method.rloo` and `method.train`."""
    from trl import RLOOConfig

    rloo = method.rloo
    return RLOOConfig(**preference_args(method, output_dir, seed, model_cfg),
                      **step_args(method.train), beta=float(rloo.beta),
                      epsilon=float(rloo.epsilon), num_generations=int(rloo.num_generations),
                      max_completion_length=int(rloo.max_completion_length),
                      temperature=float(rloo.temperature),
                      normalize_advantages=bool(rloo.normalize_advantages))


def train_rloo(model, tokenizer, reward_dir: str | Path, method: DictConfig,
               model_cfg: DictConfig, prompts: list[str], output_dir: Path,
               seed: int, reporter: Reporter | None = None,
               minimize: bool = False) -> TrainResult:
    """RLOO (trl RLOOTrainer) on the SFT policy with the reward stage as reward function."""
    from trl import RLOOTrainer

    return online_train(RLOOTrainer, rloo_args(method, model_cfg, output_dir, seed), model,
                        tokenizer, reward_dir, model_cfg, method, prompts, output_dir,
                        reporter, minimize)
