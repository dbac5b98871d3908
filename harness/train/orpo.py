"""ORPO (Hong et al. 2024) with trl.experimental.orpo.ORPOTrainer (experimental in trl 1.12;
pinned with trl): SFT loss plus an odds-ratio preference term, from the base model, with no
reference model and no SFT stage."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from harness.train.arguments import preference_args, step_args
from harness.train.callbacks import Reporter
from harness.train.dpo import offline_train
from harness.train.results import TrainResult


def orpo_args(method: DictConfig, model_cfg: DictConfig, output_dir: Path, seed: int):
    """trl ORPOConfig from `method.orpo` and `method.train`."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOConfig

    orpo = method.orpo
    return ORPOConfig(**preference_args(method, output_dir, seed, model_cfg),
                      **step_args(method.train), beta=float(orpo.beta),
                      max_length=int(orpo.max_length),
                      max_completion_length=int(orpo.max_completion_length))


def train_orpo(model, tokenizer, method: DictConfig, model_cfg: DictConfig, rows: list[dict],
               output_dir: Path, seed: int, reporter: Reporter | None = None,
               minimize: bool = False) -> TrainResult:
    """ORPO on a (PEFT or full) policy straight from the base."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOTrainer

    return offline_train(ORPOTrainer, orpo_args(method, model_cfg, output_dir, seed), model,
                         tokenizer, method, rows, output_dir, reporter, minimize)
