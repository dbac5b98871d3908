"""Reward models: a one-label sequence classifier trained with trl's RewardTrainer."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from harness.data.preference import prompt_text, reward_text, text_of
from harness.train.arguments import preference_args, step_args
from harness.train.callbacks import LossHistory
from harness.train.modeling import lora_config, torch_dtype
from harness.train.results import TrainResult, timed_train


def load_reward_model(path: str | Path, model_cfg: DictConfig):
    """(sequence classifier with one label, tokenizer) from a model dir; pad id set."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=1, dtype=torch_dtype(model_cfg.dtype))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def reward_args(method: DictConfig, model_cfg: DictConfig, output_dir: Path, seed: int):
    """trl RewardConfig from the reward method block."""
    from trl import RewardConfig

    return RewardConfig(**preference_args(method, output_dir, seed, model_cfg),
                        **step_args(method.train), max_length=int(method.max_length),
                        center_rewards_coefficient=method.get("center_rewards_coefficient"))


def train_reward(init_dir: str | Path, method: DictConfig, model_cfg: DictConfig,
                 rows: list[dict], output_dir: Path, seed: int) -> tuple[object, TrainResult]:
    """Train a reward model (full or LoRA) from `init_dir`; returns (merged model, result)."""
    from datasets import Dataset
    from trl import RewardTrainer

    model, tokenizer = load_reward_model(init_dir, model_cfg)
    peft_config = None
    if method.peft == "lora":
        peft_config = lora_config(method.lora)
        peft_config.task_type, peft_config.modules_to_save = "SEQ_CLS", ["score"]
    rows = [{"chosen": reward_text(tokenizer, prompt_text(r), text_of(r["chosen"])),
             "rejected": reward_text(tokenizer, prompt_text(r), text_of(r["rejected"]))}
            for r in rows]
    args = reward_args(method, model_cfg, output_dir, seed)
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer, peft_config=peft_config,
                            callbacks=[history])
    result = timed_train(trainer, history)
    trained = trainer.model
    if hasattr(trained, "merge_and_unload"):
        trained = trained.merge_and_unload()
    return trained, result
