"""TrainingArguments fields shared by every trainer (SFT, DPO, reward, PPO, GRPO)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig


def optimizer_name(name: str) -> str:
    """`auto`: the QLoRA paper's paged AdamW on CUDA, plain AdamW elsewhere."""
    if name != "auto":
        return name
    return "paged_adamw_32bit" if torch.cuda.is_available() else "adamw_torch"


def training_args(train: DictConfig, model_cfg: DictConfig, output_dir: Path,
                  seed: int) -> dict:
    """TrainingArguments fields every trainer here shares (SFT, DPO, reward, PPO, GRPO)."""
    return dict(
        output_dir=str(output_dir),
        learning_rate=float(train.learning_rate),
        lr_scheduler_type=train.lr_scheduler_type,
        warmup_steps=float(train.get("warmup_ratio", 0.0)),  # transformers 5: < 1 is a ratio
        per_device_train_batch_size=int(train.per_device_train_batch_size),
        gradient_accumulation_steps=int(train.gradient_accumulation_steps),
        max_grad_norm=float(train.max_grad_norm),
        weight_decay=float(train.weight_decay),
        optim=optimizer_name(train.optim),
        logging_steps=int(train.logging_steps),
        bf16=model_cfg.dtype == "bfloat16" and torch.cuda.is_available(),
        fp16=model_cfg.dtype == "float16" and torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def step_args(train: DictConfig) -> dict:
    """Training length and activation checkpointing (all trainers but PPO)."""
    return dict(max_steps=int(train.max_steps) if train.get("max_steps") else -1,
                num_train_epochs=float(train.get("num_train_epochs", 1)),
                gradient_checkpointing=bool(train.get("gradient_checkpointing", False)))


def preference_args(method: DictConfig, output_dir: Path, seed: int,
                    model_cfg: DictConfig) -> dict:
    """TrainingArguments shared by the preference and RL configs (DPO, KTO, ORPO, reward, PPO,
    GRPO, RLOO): the SFT trainer's common fields and trackers (`train.report_to`), no
    checkpoints."""
    return {**training_args(method.train, model_cfg, output_dir, seed),
            "save_strategy": "no", "report_to": _report_to(method.train.get("report_to"))}


def sft_config(method: DictConfig, model_cfg: DictConfig, output_dir: Path, seed: int,
               has_eval: bool, max_length: int | None = None):
    """trl SFTConfig from `method.train` (names match TrainingArguments)."""
    from trl import SFTConfig

    train = method.train
    eval_steps = int(train.get("eval_steps") or 0)
    save_steps = int(train.get("save_steps") or 0)
    return SFTConfig(
        **training_args(train, model_cfg, output_dir, seed),
        **step_args(train),
        per_device_eval_batch_size=int(train.per_device_train_batch_size),
        completion_only_loss=bool(train.completion_only_loss),
        max_length=int(max_length or model_cfg.max_seq_length),
        eval_strategy="steps" if (has_eval and eval_steps > 0) else "no",
        eval_steps=eval_steps or None,
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=save_steps or 500,
        save_total_limit=2,
        report_to=_report_to(train.report_to),
        # Tokens trained on (attention-mask sum), for tokens/s in the record; only SFT
        # batches carry the `input_ids` + `attention_mask` the Trainer counts.
        include_num_input_tokens_seen="non_padding",
    )


def _report_to(value) -> list[str]:
    if value in (None, "none", "None"):
        return []
    return [value] if isinstance(value, str) else list(value)
