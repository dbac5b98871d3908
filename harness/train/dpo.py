"""DPO (Rafailov et al. 2023) with trl's DPOTrainer, on a PEFT or full-weights policy."""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig

from harness.train.arguments import preference_args, step_args
from harness.train.callbacks import LossHistory
from harness.train.results import TrainResult, timed_train


def dpo_reference(method: DictConfig) -> str:
    """Which reference model DPO uses for this method (recorded in the trial record)."""
    return "adapter-disabled policy (PEFT, ref_model=None)" if method.peft == "lora" \
        else "frozen copy of the SFT model"


def frozen_copy(model):
    """A frozen, eval-mode deep copy (the full-weights DPO/PPO reference)."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


def train_dpo(model, tokenizer, method: DictConfig, model_cfg: DictConfig, rows: list[dict],
              output_dir: Path, seed: int, ref_model=None) -> TrainResult:
    """DPO on a (PEFT or full) policy; full runs pass a frozen `ref_model` copy."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    dpo = method.dpo
    args = DPOConfig(**preference_args(method, output_dir, seed, model_cfg),
                     **step_args(method.train),
                     beta=float(dpo.beta), loss_type=str(dpo.loss_type),
                     max_length=int(dpo.max_length),
                     precompute_ref_log_probs=bool(dpo.get("precompute_ref_log_probs", False)))
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[history])
    return timed_train(trainer, history)
