"""Checkpoints and resume for trl.experimental.ppo.PPOTrainer (trl <= 1.12).

Written here because trl does not do it: PPOTrainer.train() is a custom loop that takes no
`resume_from_checkpoint`, starts at global_step 0 with the optimizer it was built with, and
its checkpoints (Trainer._save_checkpoint -> PPOTrainer.save_model) hold the policy alone, not
the value model it trains beside it. The smallest correct resume: a checkpoint holds the
trainable weights of the policy and the value model (one safetensors file; LoRA: the adapter
only), plus Trainer's own optimizer, scheduler, RNG and trainer-state files; resuming loads
them and runs the loop for the remaining updates from the checkpoint's step. Each update
draws a fresh shuffled batch of prompts and samples new rollouts, so the resumed run sees
the prompt order afresh (nothing of a rollout outlives its update).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from transformers import TrainerCallback

STATE_FILE = "policy_and_value.safetensors"


def trainable_state(model) -> dict:
    """{name: tensor} of the trainable parameters (policy and value model of the wrapper)."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters()
            if p.requires_grad}


@functools.cache
def ppo_trainer_class():
    """trl's PPOTrainer whose checkpoints hold the policy and the value model (STATE_FILE)."""
    from safetensors.torch import save_file
    from trl.experimental.ppo import PPOTrainer

    class ResumablePPOTrainer(PPOTrainer):
        """PPOTrainer whose checkpoint weights are the trainable policy + value weights."""

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
            if not _internal_call:   # an explicit save: trl's (the policy only)
                return super().save_model(output_dir, _internal_call)
            if self.args.should_save:   # inside _save_checkpoint, before its optimizer files
                folder = Path(output_dir)
                folder.mkdir(parents=True, exist_ok=True)
                save_file(trainable_state(self.accelerator.unwrap_model(self.model)),
                          str(folder / STATE_FILE))
            return None

    return ResumablePPOTrainer


class _StartAt(TrainerCallback):
    """Puts the restarted loop's counters at the checkpoint (train() zeroes them first)."""

    def __init__(self, step: int, max_steps: int):
        self.step, self.max_steps = step, max_steps

    def on_train_begin(self, args, state, control, **kwargs):
        state.global_step, state.max_steps = self.step, self.max_steps
        state.episode = self.step * args.batch_size


def load_checkpoint(trainer, checkpoint: Path) -> int:
    """Policy + value weights, optimizer, scheduler and RNG states from `checkpoint` into
    `trainer`; returns the checkpoint's step."""
    import torch
    from safetensors.torch import load_file
    from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME

    model = trainer.accelerator.unwrap_model(trainer.model)
    state = load_file(str(checkpoint / STATE_FILE))
    expected = set(trainable_state(model))
    if set(state) != expected:
        raise RuntimeError(f"PPO checkpoint {checkpoint} does not match the model: "
                           f"{len(set(state) ^ expected)} trainable tensors differ")
    model.load_state_dict(state, strict=False)
    device = trainer.accelerator.device
    trainer.optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER_NAME,
                                                 map_location=device, weights_only=True))
    trainer.lr_scheduler.load_state_dict(torch.load(checkpoint / SCHEDULER_NAME,
                                                    weights_only=True))
    trainer._load_rng_state(str(checkpoint))   # transformers' own RNG restore
    return int(json.loads((checkpoint / TRAINER_STATE_NAME).read_text())["global_step"])


def run_ppo(trainer, checkpoint: Path | None) -> None:
    """trainer.train(), from `checkpoint` when given (harness.train.checkpoints.resumable_train)."""
    if checkpoint is not None:
        step = load_checkpoint(trainer, Path(checkpoint))
        total = int(trainer.args.num_total_batches)
        trainer.args.num_total_batches = total - step   # the loop runs the remaining updates
        trainer.add_callback(_StartAt(step, total))
    trainer.train()
