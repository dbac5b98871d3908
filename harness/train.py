"""Train one SFT stage with trl's SFTTrainer (full weights, LoRA or QLoRA)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from omegaconf import DictConfig
from transformers import TrainerCallback

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Where intermediate eval values go (an Optuna trial, for pruning)."""

    def report(self, value: float, step: int) -> None: ...

    def should_prune(self) -> bool: ...


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss."""


@dataclass
class TrainResult:
    """What a training stage reports back to the trial."""

    seconds: float
    steps: int
    resumed_from_step: int = 0
    loss_history: list = field(default_factory=list)


class LossHistory(TrainerCallback):
    """Keeps every logged train/eval loss, appends it to a JSONL file, stops on NaN loss."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:   # data-parallel: rank 0 keeps the history
            return
        logs = logs or {}
        row = {"step": state.global_step}
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm"):
            if key in logs:
                row[key] = float(logs[key])
        if len(row) == 1:
            return
        self.rows.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if "loss" in row and not math.isfinite(row["loss"]):
            raise NonFiniteLoss(f"training loss became {row['loss']} at step {row['step']}")


class PruningCallback(TrainerCallback):
    """Reports eval loss to the study after each evaluation; stops the trial if pruned.

    Data-parallel (torchrun): rank 0 reports and decides, every rank follows its decision.
    """

    def __init__(self, reporter: Reporter):
        self.reporter = reporter

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        import optuna

        value = (metrics or {}).get("eval_loss")
        if value is None:
            return
        if _rank0_decides(lambda: self._report(float(value), state.global_step)):
            raise optuna.TrialPruned(f"pruned at step {state.global_step} "
                                     f"(eval_loss {value:.4f})")

    def _report(self, value: float, step: int) -> bool:
        self.reporter.report(value, step)
        return self.reporter.should_prune()


def _rank0_decides(decide: Callable[[], bool]) -> bool:
    """decide() on rank 0 of a torch.distributed run, broadcast to all ranks (else just call)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return decide()
    box = [decide() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


_checkpoint_requests: list[Callable[[], None]] = []
_training = [False]


def request_checkpoint(then: Callable[[], None]) -> bool:
    """Preemption (called from a signal handler): save a checkpoint at the end of the current
    training step, then call `then` (e.g. exit or requeue). False when no training runs."""
    if not _training[0]:
        return False
    _checkpoint_requests.append(then)
    return True


class CheckpointOnRequest(TrainerCallback):
    """Serves request_checkpoint(): a checkpoint at the next step end, then the follow-ups."""

    def on_train_begin(self, args, state, control, **kwargs):
        _training[0] = True

    def on_step_end(self, args, state, control, **kwargs):
        if _checkpoint_requests:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self._follow_up(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        _training[0] = False
        self._follow_up(state.global_step)

    @staticmethod
    def _follow_up(step: int) -> None:
        if _checkpoint_requests:
            log.warning("checkpoint at step %d saved on request", step)
        while _checkpoint_requests:
            _checkpoint_requests.pop(0)()


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
    )


def _report_to(value) -> list[str]:
    if value in (None, "none", "None"):
        return []
    return [value] if isinstance(value, str) else list(value)


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest `checkpoint-N` folder under output_dir (for preemption resume)."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if Path(output_dir).is_dir() else None


def train_sft(model, tokenizer, method: DictConfig, model_cfg: DictConfig, train_rows: list,
              eval_rows: list | None, output_dir: Path, seed: int,
              reporter: Reporter | None = None, log_dir: Path | None = None) -> TrainResult:
    """Run SFT on prompt/completion rows; resumes from the last checkpoint in output_dir."""
    from datasets import Dataset
    from trl import SFTTrainer

    history = LossHistory(Path(log_dir or output_dir) / "loss.jsonl")
    callbacks: list[TrainerCallback] = [history, CheckpointOnRequest()]
    if reporter is not None and eval_rows:
        callbacks.append(PruningCallback(reporter))
    args = sft_config(method, model_cfg, output_dir, seed, has_eval=bool(eval_rows))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    checkpoint = last_checkpoint(output_dir)
    resumed = int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    if args.world_size > 1:
        log.info("data-parallel training on %d processes", args.world_size)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    return TrainResult(seconds=seconds, steps=trainer.state.global_step,
                       resumed_from_step=resumed, loss_history=history.rows)
