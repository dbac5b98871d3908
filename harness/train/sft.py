"""Train one SFT stage with trl's SFTTrainer (full weights, LoRA or QLoRA)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig
from transformers import TrainerCallback

from harness.train.adapters import loraplus_optimizers
from harness.train.arguments import sft_config
from harness.train.callbacks import CheckpointOnRequest, LossHistory, PruningCallback, Reporter
from harness.train.results import TrainResult

log = logging.getLogger(__name__)


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
        optimizers=loraplus_optimizers(model, method),   # LoRA+ when lora.loraplus_lr_ratio
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
                       resumed_from_step=resumed, loss_history=history.rows,
                       tokens=int(trainer.state.num_input_tokens_seen) or None)
