"""What a training stage hands back to the trial."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TrainResult:
    """Train seconds, optimizer steps, the checkpoint step resumed from, the loss log."""

    seconds: float
    steps: int
    resumed_from_step: int = 0
    loss_history: list = field(default_factory=list)
    tokens: int | None = None   # non-padding input tokens trained on (SFT; None where untracked)


def timed_train(trainer, history) -> TrainResult:
    """trainer.train(), timed; `history` is the trainer's LossHistory callback."""
    start = time.perf_counter()
    trainer.train()
    return TrainResult(seconds=time.perf_counter() - start, steps=trainer.state.global_step,
                       loss_history=history.rows)
