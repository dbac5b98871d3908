"""Trainer callbacks: the loss log, pruning reports, and checkpoints on request (preemption).

The SLURM job side (harness.launch.slurm) finds this module as
`sys.modules["harness.train.callbacks"]` and calls `request_checkpoint` from a signal handler.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from transformers import TrainerCallback

from harness.train.progress_log import StepLog

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Where intermediate eval values go (an Optuna trial, for pruning)."""

    def report(self, value: float, step: int) -> None: ...

    def should_prune(self) -> bool: ...


# The values preference / RL stages report for pruning (LogPruningCallback), kept in the loss
# history too: DPO/KTO/ORPO reward margin, GRPO/RLOO mean reward, PPO mean rollout score.
STAGE_VALUES = ("rewards/margins", "reward", "objective/scores")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss."""


class LossHistory(TrainerCallback):
    """Keeps every logged train/eval loss, appends it to a JSONL file, stops on NaN loss."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []

    def resume(self, step: int, write: bool = True) -> None:
        """Training (re)starts at `step`: keep the file's rows up to it, drop the later ones
        (logged after the checkpoint a requeued stage resumes from). `write`: rewrite the file
        (rank 0 of a data-parallel run)."""
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        self.rows = [row for row in map(json.loads, filter(str.strip, lines))
                     if row.get("step", 0) <= step]
        if lines and write:
            self.path.write_text("".join(json.dumps(row) + "\n" for row in self.rows))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:   # data-parallel: rank 0 keeps the history
            return
        logs = logs or {}
        row = {"step": state.global_step}
        for key in ("loss", "eval_loss", "learning_rate", "grad_norm", *STAGE_VALUES):
            if key in logs:
                row[key] = float(logs[key])
        if len(row) == 1:
            return
        self.rows.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if "loss" in row and not math.isfinite(row["loss"]):
            raise NonFiniteLoss(f"training loss became {row['loss']} at step {row['step']}")


class PruningCallback(TrainerCallback):
    """Reports eval loss to the study after each evaluation; stops the trial if pruned.

    Data-parallel (torchrun): rank 0 reports and decides, every rank follows its decision.
    """

    def __init__(self, reporter: Reporter):
        self.reporter = reporter

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        import optuna

        value = (metrics or {}).get("eval_loss")
        if value is None:
            return
        if _rank0_decides(lambda: self._report(float(value), state.global_step)):
            raise optuna.TrialPruned(f"pruned at step {state.global_step} "
                                     f"(eval_loss {value:.4f})")

    def _report(self, value: float, step: int) -> bool:
        self.reporter.report(value, step)
        return self.reporter.should_prune()


def _rank0_decides(decide: Callable[[], bool]) -> bool:
    """decide() on rank 0 of a torch.distributed run, broadcast to all ranks (else just call)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return decide()
    box = [decide() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


_checkpoint_requests: list[Callable[[], None]] = []
_training = [False]


def request_checkpoint(then: Callable[[], None]) -> bool:
    """Preemption (called from a signal handler): save a checkpoint at the end of the current
    training step, then call `then` (e.g. exit or requeue). False when no training runs."""
    if not _training[0]:
        return False
    _checkpoint_requests.append(then)
    return True


def training_stopped() -> None:
    """Training left (ended, raised or was pruned): later requests are served at once, and a
    request still pending (training raised before its step ended) is followed up unsaved."""
    _training[0] = False
    if _checkpoint_requests:
        log.warning("training stopped before the requested checkpoint was saved")
    while _checkpoint_requests:
        _checkpoint_requests.pop(0)()


class CheckpointOnRequest(TrainerCallback):
    """Serves request_checkpoint(): a checkpoint at the next step end, then the follow-ups."""

    def on_train_begin(self, args, state, control, **kwargs):
        _training[0] = True

    def on_step_end(self, args, state, control, **kwargs):
        if _checkpoint_requests:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self._follow_up(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        _training[0] = False
        self._follow_up(state.global_step)

    @staticmethod
    def _follow_up(step: int) -> None:
        if _checkpoint_requests:
            log.warning("checkpoint at step %d saved on request", step)
        while _checkpoint_requests:
            _checkpoint_requests.pop(0)()


class LogPruningCallback(TrainerCallback):
    """Preference and RL stages (no eval loss): reports a logged training value (DPO/KTO/ORPO
    `rewards/margins`, GRPO/RLOO `reward`, PPO `objective/scores`: higher is better) to the
    study at each log step, negated when the study minimizes; stops the trial if pruned."""

    def __init__(self, reporter: Reporter, key: str, minimize: bool = False):
        self.reporter, self.key, self.sign = reporter, key, -1.0 if minimize else 1.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        import optuna

        value = (logs or {}).get(self.key)
        if value is None or not math.isfinite(float(value)):
            return
        reported = self.sign * float(value)
        step = state.global_step

        def decide() -> bool:
            self.reporter.report(reported, step)
            return self.reporter.should_prune()

        if _rank0_decides(decide):
            raise optuna.TrialPruned(f"pruned at step {step} ({self.key} {float(value):.4f})")


def stage_callbacks(history: LossHistory, reporter: Reporter | None, key: str,
                    minimize: bool = False) -> list[TrainerCallback]:
    """The loss history, checkpoints on request (preemption), step lines and progress
    (harness.train.progress_log), plus pruning on `key` when a reporter is given."""
    return [history, CheckpointOnRequest(), StepLog()] + \
        ([LogPruningCallback(reporter, key, minimize)] if reporter else [])
