"""What a training stage hands back to the trial."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainResult:
    """Train seconds, optimizer steps, the checkpoint step resumed from (0: trained from the
    start; harness.train.checkpoints.resumable_train), the loss log."""

    seconds: float
    steps: int
    resumed_from_step: int = 0
    loss_history: list = field(default_factory=list)
    tokens: int | None = None   # non-padding input tokens trained on (SFT; None where untracked)
    # the trained model when training leaves the one passed in unusable by one process (FSDP:
    # rank 0's gathered copy, harness.train.fsdp.gather_trained); None: the model passed in
    model: object | None = None
