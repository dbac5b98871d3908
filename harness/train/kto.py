"""KTO (Ethayarajh et al. 2024) with trl's KTOTrainer (stable in trl 1.12): the SFT policy
learns from desirable / undesirable answers; paired rows are unpaired by trl (chosen ->
label True, rejected -> label False)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from harness.train.arguments import preference_args, step_args
from harness.train.callbacks import Reporter
from harness.train.dpo import offline_train
from harness.train.results import TrainResult


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
    from trl import KTOTrainer

    return offline_train(KTOTrainer, kto_args(method, model_cfg, output_dir, seed), model,
                         tokenizer, method, rows, output_dir, reporter, minimize,
                         ref_model=ref_model)
