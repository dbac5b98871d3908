"""Train one SFT stage with trl's SFTTrainer (full weights, LoRA or QLoRA)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from transformers import TrainerCallback

from harness.train.adapters import loraplus_optimizers
from harness.train.arguments import sft_config
from harness.train.callbacks import CheckpointOnRequest, LossHistory, PruningCallback, Reporter
from harness.train.checkpoints import resumable_train
from harness.train.dataset_cache import rows_dataset
from harness.train.fsdp import gather_trained, require_sharded
from harness.train.progress_log import StepLog
from harness.train.results import TrainResult

log = logging.getLogger(__name__)


def train_sft(model, tokenizer, method: DictConfig, model_cfg: DictConfig, train_rows: list,
              eval_rows: list | None, output_dir: Path, seed: int,
              reporter: Reporter | None = None, log_dir: Path | None = None) -> TrainResult:
    """Run SFT on prompt/completion rows; resumes from the last checkpoint in output_dir."""
    from trl import SFTTrainer

    history = LossHistory(Path(log_dir or output_dir) / "loss.jsonl")
    callbacks: list[TrainerCallback] = [history, CheckpointOnRequest(), StepLog()]
    if reporter is not None and eval_rows:
        callbacks.append(PruningCallback(reporter))
    args = sft_config(method, model_cfg, output_dir, seed, has_eval=bool(eval_rows),
                      model=model)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=rows_dataset(train_rows),   # on disk: trl's tokenization is cached
        eval_dataset=rows_dataset(eval_rows) if eval_rows else None,
        processing_class=tokenizer,
        callbacks=callbacks,
        optimizers=loraplus_optimizers(model, method),   # LoRA+ when lora.loraplus_lr_ratio
    )
    require_sharded(trainer, method.train)   # method.train.fsdp: FSDP or a one-line error
    if args.world_size > 1:
        log.info("data-parallel training on %d processes%s", args.world_size,
                 f" (FSDP {method.train.fsdp})" if trainer.is_fsdp_enabled else "")
    result = resumable_train(trainer, history,
                             tokens=lambda t: int(t.state.num_input_tokens_seen) or None)
    result.model = gather_trained(trainer, method.train)   # FSDP: rank 0's unsharded model
    return result
