"""PPO (trl.experimental.ppo, trl <= 1.12) from the SFT policy against a reward model."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from harness.train.arguments import preference_args
from harness.train.callbacks import LossHistory, Reporter, stage_callbacks
from harness.train.checkpoints import resumable_train
from harness.train.dpo import frozen_copy
from harness.train.modeling import load_base_model, lora_config, model_source
from harness.train.ppo_resume import ppo_trainer_class, run_ppo
from harness.train.results import TrainResult
from harness.train.reward import load_reward_model, load_value_model, reward_quantization

PRUNE_KEY = "objective/scores"   # mean reward-model score of the rollouts: higher is better


def _prompt_dataset(tokenizer, prompts: list[str]):
    """input_ids of chat-rendered prompts with a generation prompt (PPOTrainer's input)."""
    from datasets import Dataset

    ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=True,
                                         add_generation_prompt=True, return_dict=False)
           for p in prompts]
    return Dataset.from_dict({"input_ids": [list(map(int, x)) for x in ids]})


def total_episodes(method: DictConfig) -> int:
    """Prompts rolled out: `ppo.total_episodes`, or train.max_steps rollout batches when set
    (a sweep's max_steps then bounds PPO as it bounds every other trainer)."""
    steps = method.train.get("max_steps")
    if steps:
        train = method.train
        return int(steps) * int(train.per_device_train_batch_size) * \
            int(train.gradient_accumulation_steps)
    return int(method.ppo.total_episodes)


def ppo_args(method: DictConfig, model_cfg: DictConfig, output_dir: Path, seed: int):
    """trl.experimental.ppo PPOConfig from `method.ppo` and `method.train`."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.ppo import PPOConfig

    ppo = method.ppo
    return PPOConfig(**preference_args(method, output_dir, seed, model_cfg),
                     kl_coef=float(ppo.kl_coef), cliprange=float(ppo.cliprange),
                     vf_coef=float(ppo.vf_coef), response_length=int(ppo.response_length),
                     num_ppo_epochs=int(ppo.num_ppo_epochs),
                     num_mini_batches=int(ppo.num_mini_batches),
                     temperature=float(ppo.temperature),
                     missing_eos_penalty=ppo.get("missing_eos_penalty"),
                     total_episodes=total_episodes(method), stop_token="eos",
                     local_rollout_forward_batch_size=int(method.train.per_device_train_batch_size),
                     num_sample_generations=0,
                     gradient_checkpointing=bool(method.train.get("gradient_checkpointing",
                                                                  False)))


def train_ppo(sft_dir: str | Path, reward_dir: str | Path, method: DictConfig,
              model_cfg: DictConfig, prompts: list[str], output_dir: Path,
              seed: int, reporter: Reporter | None = None,
              minimize: bool = False) -> tuple[object, object, TrainResult]:
    """PPO (trl.experimental.ppo) from the SFT policy against the reward stage; value model
    initialized from the reward model (LoRA on it with a LoRA policy: load_value_model). Every
    model on this process's device with the model options. Returns (policy, tokenizer,
    result). `reporter`: the rollouts' mean score goes to the study for pruning."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(**model_source(model_cfg, sft_dir),
                                              padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # every model on this process's device with the model options (modeling.model_kwargs)
    policy = load_base_model(model_cfg, path=sft_dir)
    lora = method.peft == "lora"
    ref = None if lora else frozen_copy(policy)   # LoRA: the adapter-disabled policy
    reward, _ = load_reward_model(reward_dir, model_cfg, reward_quantization(method))
    value = load_value_model(reward_dir, model_cfg, method)   # LoRA on the reward model
    args = ppo_args(method, model_cfg, output_dir, seed)
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    PPOTrainer = ppo_trainer_class()   # trl's, with the value model in its checkpoints
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref,
                         reward_model=reward, value_model=value,
                         train_dataset=_prompt_dataset(tokenizer, prompts),
                         peft_config=lora_config(method.lora) if lora else None,
                         callbacks=stage_callbacks(history, reporter, PRUNE_KEY, minimize))
    result = resumable_train(trainer, history, run=run_ppo)   # trl's loop cannot resume
    trained = getattr(trainer.model, "policy", policy)
    if hasattr(trained, "merge_and_unload"):
        trained = trained.merge_and_unload()
    trained.generation_config = GenerationConfig.from_pretrained(str(sft_dir))  # PPO clears eos
    tokenizer.padding_side = "right"
    return trained, tokenizer, result
