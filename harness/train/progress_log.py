"""Training progress in the trial's log and progress file (every trainer here).

The trainers run with `disable_tqdm=True` (harness.train.arguments): a trial's log is a file,
and tqdm's bar redraws itself with carriage returns. `StepLog` says the same in whole lines:

    train sft step 120/400 (30%) 2.10 step/s elapsed 00:57 ETA 02:13, loss 1.830

one per logging step (`train.logging_steps`, with the loss just logged) and at least one per
`HEARTBEAT_S` when logging steps are far apart, and it keeps the trial's progress.json
(harness.progress: stage `train`, part the trainer's kind) current at every step.
"""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback

from harness import progress

log = logging.getLogger(__name__)

HEARTBEAT_S = 60.0   # a line at least this often, even between logging steps
LOSS_KEYS = ("loss", "loss/policy_avg")   # the trainers' logged loss (PPO: the policy's)


def trainer_kind(args) -> str:
    """sft, dpo, reward, ppo, grpo, kto, orpo, rloo: from the trainer's config class name."""
    name = type(args).__name__.removesuffix("Config").removesuffix("TrainingArguments")
    return name.lower() or "train"


class StepLog(TrainerCallback):
    """Step lines (rate, loss, ETA) in the log and the step in progress.json; rank 0 only."""

    def __init__(self, part: str | None = None, heartbeat_s: float = HEARTBEAT_S):
        self.part, self.heartbeat_s = part, heartbeat_s
        self.started = self.last_line = 0.0
        self.first_step = 0
        self.loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.part = self.part or trainer_kind(args)
        self.started = self.last_line = time.time()
        self.first_step = state.global_step     # resumed runs start past 0
        if state.is_world_process_zero:
            progress.report("train", self.part, state.global_step, state.max_steps or None,
                            force=True)
            log.info("train %s: %d steps%s", self.part, state.max_steps,
                     f", resuming at step {state.global_step}" if state.global_step else "")

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        rate, eta = self._rate(state)
        progress.report("train", self.part or "", state.global_step, state.max_steps or None,
                        unit="step", rate=rate, eta_s=eta, loss=self.loss)
        if time.time() - self.last_line >= self.heartbeat_s:
            self._line(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        logs = logs or {}
        for key in LOSS_KEYS:
            if key in logs:
                self.loss = float(logs[key])
                break
        else:
            if any(key.startswith(("eval_", "train_")) for key in logs):
                return   # an evaluation's or the run's summary: no step line
        self._line(state)

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        rate, _ = self._rate(state)
        progress.report("train", self.part or "", state.global_step, state.max_steps or None,
                        force=True, unit="step", rate=rate, eta_s=0.0, loss=self.loss)
        log.info("train %s: done at step %d in %.0f s", self.part, state.global_step,
                 time.time() - self.started)

    def _rate(self, state) -> tuple[float | None, float | None]:
        elapsed = time.time() - self.started
        done = state.global_step - self.first_step
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        return rate, progress.eta_seconds(state.global_step, state.max_steps, rate)

    def _line(self, state) -> None:
        self.last_line = time.time()
        rate, _ = self._rate(state)   # over this run's steps (a resumed run skipped the first)
        loss = f"loss {self.loss:.4g}" if self.loss is not None else ""
        log.info(progress.progress_line(f"train {self.part} step", state.global_step,
                                        state.max_steps or None, self.last_line - self.started,
                                        "step", loss, rate=rate))
