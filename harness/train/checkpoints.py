"""Periodic and on-signal checkpoints of every training stage, and the resume from the last one.

One helper for every trainer (SFT, DPO/KTO/ORPO, reward, GRPO/RLOO, PPO): `checkpoint_args`
(the TrainingArguments fields: every `train.save_steps` steps, 0 = only when the SLURM job side
asks for one on SIGTERM / SIGUSR2, through harness.train.callbacks.CheckpointOnRequest), and
`resumable_train`, which resumes from the newest complete `checkpoint-N` under the trainer's
output_dir, truncates the loss log to that step and records the step in the TrainResult.
A stage's checkpoints stay until the stage's trained weights are saved elsewhere
(`remove_checkpoints`: the stage cache after writing the stage's model, the trial after
writing its record).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from harness.train.callbacks import LossHistory, training_stopped
from harness.train.results import TrainResult

log = logging.getLogger(__name__)

PREFIX = "checkpoint-"
_STEP = re.compile(rf"^{PREFIX}(\d+)$")
# Written last by Trainer._save_checkpoint (after the weights, optimizer, scheduler and RNG
# states): a folder without it is a save cut short (SIGKILL after KillWait), never resumed from.
COMPLETE_MARKER = "trainer_state.json"
KEEP = 2   # save_total_limit: the newest checkpoint and the one before it


def checkpoint_args(train: DictConfig) -> dict:
    """TrainingArguments save fields from `train.save_steps` (0: on-signal checkpoints only)."""
    save_steps = int(train.get("save_steps") or 0)
    return {"save_strategy": "steps" if save_steps > 0 else "no",
            "save_steps": save_steps or 500, "save_total_limit": KEEP}


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step of a `checkpoint-N` folder."""
    match = _STEP.match(Path(path).name)
    return int(match.group(1)) if match else 0


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete `checkpoint-N` folder under output_dir (None: none yet)."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if p.is_dir() and _STEP.match(p.name)
            and (p / COMPLETE_MARKER).is_file()]
    return max(done, key=checkpoint_step, default=None)


def resumable_train(trainer, history: LossHistory,
                    run: Callable[[object, Path | None], None] | None = None,
                    tokens: Callable[[object], int | None] | None = None) -> TrainResult:
    """Train `trainer` from the newest complete checkpoint in its output_dir (from step 0 when
    there is none), timed. `run(trainer, checkpoint)`: a trainer whose train() cannot resume
    (trl's PPO) loads the checkpoint itself; default trainer.train(resume_from_checkpoint=).
    `tokens(trainer)`: tokens trained on, when the trainer counts them."""
    checkpoint = last_checkpoint(trainer.args.output_dir)
    resumed = checkpoint_step(checkpoint) if checkpoint else 0
    # the loss log goes on from the checkpoint's step (rank 0 keeps the file)
    history.resume(resumed, write=trainer.is_world_process_zero())
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    start = time.perf_counter()
    try:
        if run is not None:
            run(trainer, checkpoint)
        else:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        training_stopped()
    return TrainResult(seconds=time.perf_counter() - start, steps=trainer.state.global_step,
                       resumed_from_step=resumed, loss_history=history.rows,
                       tokens=tokens(trainer) if tokens else None)


def remove_checkpoints(folder: str | Path, depth: int = 2) -> list[Path]:
    """Delete every `checkpoint-N` folder at most `depth` levels below `folder` (the stage's
    weights are saved elsewhere); returns what was removed."""
    root = Path(folder)
    found: list[Path] = []
    level = [root] if root.is_dir() else []
    for _ in range(depth):
        below = [p for parent in level for p in parent.iterdir() if p.is_dir()]
        found += [p for p in below if _STEP.match(p.name)]
        level = [p for p in below if not _STEP.match(p.name)]
    for path in found:
        shutil.rmtree(path, ignore_errors=True)
    return found
