"""DPO (Rafailov et al. 2023) with trl's DPOTrainer, on a PEFT or full-weights policy."""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig

from harness.train.adapters import loraplus_optimizers
from harness.train.arguments import preference_args, step_args
from harness.train.callbacks import LossHistory, Reporter, stage_callbacks
from harness.train.checkpoints import resumable_train
from harness.train.results import TrainResult

PRUNE_KEY = "rewards/margins"   # logged by DPO, KTO and ORPO: higher is better


def dpo_reference(method: DictConfig) -> str:
    """Which reference model DPO uses for this method (recorded in the trial record)."""
    return "adapter-disabled policy (PEFT, ref_model=None)" if method.peft != "none" \
        else "frozen copy of the SFT model"


def frozen_copy(model):
    """A frozen, eval-mode deep copy (the full-weights DPO/PPO reference)."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


def dpo_args(method: DictConfig, model_cfg: DictConfig, output_dir: Path, seed: int):
    """trl DPOConfig from `method.dpo` and `method.train`."""
    from trl import DPOConfig

    dpo = method.dpo
    return DPOConfig(**preference_args(method, output_dir, seed, model_cfg),
                     **step_args(method.train),
                     beta=float(dpo.beta), loss_type=str(dpo.loss_type),
                     max_length=int(dpo.max_length),
                     precompute_ref_log_probs=bool(dpo.get("precompute_ref_log_probs", False)))


def train_dpo(model, tokenizer, method: DictConfig, model_cfg: DictConfig, rows: list[dict],
              output_dir: Path, seed: int, ref_model=None, reporter: Reporter | None = None,
              minimize: bool = False) -> TrainResult:
    """DPO on a (PEFT or full) policy; full runs pass a frozen `ref_model` copy. `reporter`:
    the reward margin goes to the study for pruning (negated when it minimizes)."""
    from trl import DPOTrainer

    return offline_train(DPOTrainer, dpo_args(method, model_cfg, output_dir, seed), model,
                         tokenizer, method, rows, output_dir, reporter, minimize,
                         ref_model=ref_model)


def offline_train(trainer_cls, args, model, tokenizer, method: DictConfig, rows: list[dict],
                  output_dir: Path, reporter: Reporter | None, minimize: bool,
                  **trainer_kwargs) -> TrainResult:
    """One offline preference stage (DPO, KTO, ORPO): the trl trainer on `rows` with the loss
    log, the pruning reporter (reward margin), LoRA+ when configured, and periodic / on-signal
    checkpoints in output_dir (a requeued stage resumes from the last one); timed."""
    from datasets import Dataset

    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    trainer = trainer_cls(model=model, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer,
                          callbacks=stage_callbacks(history, reporter, PRUNE_KEY, minimize),
                          optimizers=loraplus_optimizers(model, method), **trainer_kwargs)
    return resumable_train(trainer, history)
