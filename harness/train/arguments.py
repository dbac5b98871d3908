"""TrainingArguments fields shared by every trainer (SFT, DPO, reward, PPO, GRPO)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from harness.train.checkpoints import checkpoint_args
from harness.train.fsdp import fsdp_arguments
from harness.train.placement import detect, resolve_dtype


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
        bf16=_dtype(model_cfg) == "bfloat16" and torch.cuda.is_available(),
        fp16=_dtype(model_cfg) == "float16" and torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=True,   # a bar redraws with \r in a log file: StepLog logs steps instead
    )


def step_args(train: DictConfig) -> dict:
    """Training length and activation checkpointing (all trainers but PPO)."""
    return dict(max_steps=int(train.max_steps) if train.get("max_steps") else -1,
                num_train_epochs=float(train.get("num_train_epochs", 1)),
                gradient_checkpointing=bool(train.get("gradient_checkpointing", False)))


def preference_args(method: DictConfig, output_dir: Path, seed: int,
                    model_cfg: DictConfig) -> dict:
    """TrainingArguments shared by the preference and RL configs (DPO, KTO, ORPO, reward, PPO,
    GRPO, RLOO): the SFT trainer's common fields, trackers (`train.report_to`) and
    checkpoints (`train.save_steps`; harness.train.checkpoints)."""
    return {**training_args(method.train, model_cfg, output_dir, seed),
            **checkpoint_args(method.train),
            "report_to": _report_to(method.train.get("report_to"))}


def sft_config(method: DictConfig, model_cfg: DictConfig, output_dir: Path, seed: int,
               has_eval: bool, max_length: int | None = None, model=None):
    """trl SFTConfig from `method.train` (names match TrainingArguments); `model`: the model
    to train, whose decoder layers FSDP wraps when `train.fsdp` is set."""
    from trl import SFTConfig

    train = method.train
    eval_steps = int(train.get("eval_steps") or 0)
    return SFTConfig(
        **training_args(train, model_cfg, output_dir, seed),
        **{**step_args(train), **fsdp_arguments(train, model)},   # FSDP: harness.train.fsdp
        per_device_eval_batch_size=int(train.per_device_train_batch_size),
        completion_only_loss=bool(train.completion_only_loss),
        max_length=int(max_length or model_cfg.max_seq_length),
        eval_strategy="steps" if (has_eval and eval_steps > 0) else "no",
        eval_steps=eval_steps or None,
        **checkpoint_args(train),
        report_to=_report_to(train.report_to),
        # Tokens trained on (attention-mask sum), for tokens/s in the record; only SFT
        # batches carry the `input_ids` + `attention_mask` the Trainer counts.
        include_num_input_tokens_seen="non_padding",
    )


def _report_to(value) -> list[str]:
    if value in (None, "none", "None"):
        return []
    return [value] if isinstance(value, str) else list(value)


def _dtype(model_cfg: DictConfig) -> str:
    """model.dtype as loaded (`auto` resolved for this process: harness.train.placement)."""
    return resolve_dtype(str(model_cfg.dtype), detect())
