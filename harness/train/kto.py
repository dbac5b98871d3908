"""KTO (Ethayarajh et al. 2024) with trl's KTOTrainer (stable in trl 1.12): the SFT policy
learns from desirable / undesirable answers; paired rows are unpaired by trl (chosen ->
label True, rejected -> label False)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from harness.train.adapters import loraplus_optimizers
from harness.train.arguments import preference_args, step_args
from harness.train.callbacks import LossHistory, Reporter, stage_callbacks
from harness.train.dpo import PRUNE_KEY
from harness.train.results import TrainResult, timed_train


def kto_args(method: DictConfig, model_cfg: DictConfig, output_dir: Path, seed: int):
    """trl KTOConfig from `method.kto` and `method.train`."""
    from trl import KTOConfig

    kto = method.kto
    return KTOConfig(**preference_args(method, output_dir, seed, model_cfg),
                     **step_args(method.train), beta=float(kto.beta),
                     loss_type=str(kto.loss_type),
                     desirable_weight=float(kto.desirable_weight),
                     undesirable_weight=float(kto.undesirable_weight),
                     max_length=int(kto.max_length))


def train_kto(model, tokenizer, method: DictConfig, model_cfg: DictConfig, rows: list[dict],
              output_dir: Path, seed: int, ref_model=None, reporter: Reporter | None = None,
              minimize: bool = False) -> TrainResult:
    """KTO on a (PEFT or full) policy; full runs pass a frozen `ref_model` copy."""
    from datasets import Dataset
    from trl import KTOTrainer

    args = kto_args(method, model_cfg, output_dir, seed)
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    trainer = KTOTrainer(model=model, ref_model=ref_model, args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=stage_callbacks(history, reporter, PRUNE_KEY, minimize),
                         optimizers=loraplus_optimizers(model, method))
    return timed_train(trainer, history)
