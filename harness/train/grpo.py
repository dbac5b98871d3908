"""GRPO (trl GRPOTrainer) on the SFT policy, with a reward model as the reward function."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from harness.train.adapters import loraplus_optimizers
from harness.train.arguments import preference_args, step_args
from harness.train.callbacks import LossHistory, Reporter, stage_callbacks
from harness.train.checkpoints import resumable_train
from harness.train.results import TrainResult
from harness.train.reward import load_reward_model, reward_quantization

PRUNE_KEY = "reward"   # mean reward of the step's completions (GRPO and RLOO): higher is better


def grpo_args(method: DictConfig, model_cfg: DictConfig, output_dir: Path, seed: int):
    """trl GRPOConfig from `method.grpo` and `method.train`."""
    from trl import GRPOConfig

    grpo = method.grpo
    return GRPOConfig(**preference_args(method, output_dir, seed, model_cfg),
                      **step_args(method.train), beta=float(grpo.beta),
                      epsilon=float(grpo.epsilon), num_generations=int(grpo.num_generations),
                      max_completion_length=int(grpo.max_completion_length),
                      temperature=float(grpo.temperature), loss_type=str(grpo.loss_type))


def prompt_dataset(prompts: list[str]):
    """Conversational prompt rows (GRPO / RLOO input)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])


def online_train(trainer_cls, args, model, tokenizer, reward_dir: str | Path,
                 model_cfg: DictConfig, method: DictConfig, prompts: list[str],
                 output_dir: Path, reporter: Reporter | None, minimize: bool) -> TrainResult:
    """GRPO/RLOO: `trainer_cls` with the reward stage's model as the reward function; resumes
    from the last checkpoint in output_dir."""
    reward, reward_tok = load_reward_model(reward_dir, model_cfg, reward_quantization(method))
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    trainer = trainer_cls(model=model, reward_funcs=reward, args=args,
                          train_dataset=prompt_dataset(prompts), processing_class=tokenizer,
                          reward_processing_classes=reward_tok,
                          callbacks=stage_callbacks(history, reporter, PRUNE_KEY, minimize),
                          optimizers=loraplus_optimizers(model, method))
    return resumable_train(trainer, history)


def train_grpo(model, tokenizer, reward_dir: str | Path, method: DictConfig,
               model_cfg: DictConfig, prompts: list[str], output_dir: Path,
               seed: int, reporter: Reporter | None = None,
               minimize: bool = False) -> TrainResult:
    """GRPO (trl GRPOTrainer) on the SFT policy with the reward stage as reward function."""
    from trl import GRPOTrainer

    return online_train(GRPOTrainer, grpo_args(method, model_cfg, output_dir, seed), model,
                        tokenizer, reward_dir, model_cfg, method, prompts, output_dir,
                        reporter, minimize)
