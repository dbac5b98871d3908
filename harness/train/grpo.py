"""GRPO (trl GRPOTrainer) on the SFT policy, with a reward model as the reward function."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from harness.train.arguments import preference_args, step_args
from harness.train.callbacks import LossHistory
from harness.train.results import TrainResult, timed_train
from harness.train.reward import load_reward_model


def train_grpo(model, tokenizer, reward_dir: str | Path, method: DictConfig,
               model_cfg: DictConfig, prompts: list[str], output_dir: Path,
               seed: int) -> TrainResult:
    """GRPO (trl GRPOTrainer) on the SFT policy with the reward stage as reward function."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    reward, reward_tok = load_reward_model(reward_dir, model_cfg)
    grpo = method.grpo
    args = GRPOConfig(**preference_args(method, output_dir, seed, model_cfg),
                      **step_args(method.train), beta=float(grpo.beta),
                      epsilon=float(grpo.epsilon), num_generations=int(grpo.num_generations),
                      max_completion_length=int(grpo.max_completion_length),
                      temperature=float(grpo.temperature), loss_type=str(grpo.loss_type))
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=tokenizer, reward_processing_classes=reward_tok,
                          callbacks=[history])
    return timed_train(trainer, history)
