"""One pipeline per method kind (harness.registry.METHOD_KINDS): how a trial gets its model.

Every pipeline has the same shape, `Pipeline().train(ctx) -> Trained`: the trained model and
tokenizer, the TrainResult, the stages it went through and notes for the record. The trial
(harness.trial.run) then saves, evaluates and records it the same way whatever the kind.

- SftPipeline: the method's model (full, LoRA or QLoRA) trained with SFT on data.train.
- DpoPipeline: the cached SFT stage, then DPO on data.preference.train.
- PpoPipeline / GrpoPipeline: the cached SFT and reward stages, then PPO or GRPO.
- BasePipeline: the untrained base model (the sweep's baseline; spec.baseline).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from harness.data.preference import check_preference_data, preference_rows, prompt_text
from harness.data.sft import sft_rows
from harness.errors import DataError
from harness.layout import CHECKPOINTS_DIR, MODEL_DIR
from harness.records import TrialSpec
from harness.study import TrialReporter
from harness.train.dpo import dpo_reference, frozen_copy, train_dpo
from harness.train.grpo import train_grpo
from harness.train.modeling import (
    count_parameters,
    load_base_model,
    load_tokenizer,
    load_trial_model,
)
from harness.train.ppo import train_ppo
from harness.train.results import TrainResult
from harness.train.sft import train_sft
from harness.trial.stages import (
    Stage,
    plain,
    reward_stage,
    sft_stage,
    stage_hash,
    stage_model_cfg,
    stages_root,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialContext:
    """What every step of one trial reads: its config, its spec and its folder."""

    cfg: DictConfig
    spec: TrialSpec
    trial_dir: Path

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def stages_root(self) -> Path:
        return stages_root(self.cfg, self.spec)


@dataclass
class Trained:
    """A pipeline's output. result is None for the untrained base model; params =
    (trainable, total); reference: the stage the preference metrics compare against (None:
    the base model)."""

    model: object
    tokenizer: object
    result: TrainResult | None
    params: tuple[int, int]
    stages: list[Stage] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    reference: Stage | None = None


class BasePipeline:
    """The base model, untrained (the sweep's baseline: spec.baseline)."""

    def train(self, ctx: TrialContext) -> Trained:
        tokenizer = load_tokenizer(ctx.cfg.model)
        model = load_base_model(ctx.cfg.model)
        return Trained(model, tokenizer, None, (0, count_parameters(model)[1]))


class SftPipeline:
    """SFT of the method's model on data.train (eval loss on data.eval_loss, for pruning)."""

    def train(self, ctx: TrialContext) -> Trained:
        cfg = ctx.cfg
        model, tokenizer = load_trial_model(cfg.model, cfg.method)
        params = count_parameters(model)
        train_rows = sft_rows(cfg.data.train, cfg.data.get("max_train_samples"))
        eval_spec = cfg.data.get("eval_loss")
        eval_rows = sft_rows(eval_spec) if eval_spec and eval_spec.get("path") else None
        result = train_sft(model, tokenizer, cfg.method, cfg.model, train_rows, eval_rows,
                           output_dir=ctx.trial_dir / CHECKPOINTS_DIR, seed=ctx.seed,
                           reporter=reporter(ctx), log_dir=ctx.trial_dir)
        return Trained(model, tokenizer, result, params)


def reporter(ctx: TrialContext) -> TrialReporter | None:
    """An Optuna reporter for pruning, when the sweep has a pruner and a study to report to."""
    if ctx.spec.trial_id is None or ctx.cfg.sweep.pruner.get("name", "none") == "none":
        return None
    return TrialReporter(ctx.cfg.storage, ctx.cfg.sweep.pruner, ctx.spec.study_name,
                         int(ctx.spec.trial_id))


class ChainedPipeline:
    """Cached SFT (and reward) stages, then the trial's own stage (`train_policy`)."""

    needs_reward = False

    def train(self, ctx: TrialContext) -> Trained:
        cfg = ctx.cfg
        kind = str(cfg.method.kind)
        if cfg.data.get("preference") is None:
            raise DataError(f"method {kind} needs data.preference (train/test preference pairs)")
        check_preference_data(cfg.data)
        chain = [sft_stage(cfg, ctx.stages_root)]
        if self.needs_reward:
            chain.append(reward_stage(cfg, ctx.stages_root, chain[0]))
        model, tokenizer, result, notes = self.train_policy(ctx, chain)
        final = Stage(kind, str(ctx.trial_dir / MODEL_DIR),
                      stage_hash(plain(cfg.method), chain[-1].hash), False, result.seconds)
        notes["stages_reused"] = [s.name for s in chain if s.reused]
        return Trained(model, tokenizer, result, count_parameters(model), [*chain, final],
                       notes, reference=chain[0])

    def train_policy(self, ctx: TrialContext, chain: list[Stage]):
        """(model, tokenizer, TrainResult, notes) of the trial's own stage."""
        raise NotImplementedError


def _train_pairs(cfg: DictConfig) -> list[dict]:
    return preference_rows(cfg.data.preference.train, cfg.data.preference.get("max_train_samples"))


class DpoPipeline(ChainedPipeline):
    """DPO from the SFT stage; reference: the adapter-disabled policy or a frozen copy."""

    def train_policy(self, ctx: TrialContext, chain: list[Stage]):
        cfg, method = ctx.cfg, ctx.cfg.method
        model, tokenizer = load_trial_model(stage_model_cfg(cfg.model, chain[0]), method)
        ref = None if method.peft == "lora" else frozen_copy(model)
        rows = _train_pairs(cfg)
        log.info("DPO on %d preference pairs, reference: %s", len(rows), dpo_reference(method))
        result = train_dpo(model, tokenizer, method, cfg.model, rows, ctx.trial_dir / "dpo",
                           ctx.seed, ref_model=ref)
        return model, tokenizer, result, {"dpo_reference": dpo_reference(method),
                                          "train_pairs": len(rows)}


def _online_reference(method: DictConfig) -> str:
    return "adapter-disabled policy (PEFT)" if method.peft == "lora" \
        else "frozen copy of the SFT model"


class PpoPipeline(ChainedPipeline):
    """PPO from the SFT stage against the reward stage (value model from the reward model)."""

    needs_reward = True

    def train_policy(self, ctx: TrialContext, chain: list[Stage]):
        cfg, method = ctx.cfg, ctx.cfg.method
        prompts = [prompt_text(r) for r in _train_pairs(cfg)]
        sft_dir, reward_dir = Path(chain[0].dir) / "model", Path(chain[1].dir) / "model"
        cap = method.ppo.get("max_prompts")
        prompts = prompts[: int(cap)] if cap else prompts
        model, tokenizer, result = train_ppo(sft_dir, reward_dir, method, cfg.model, prompts,
                                             ctx.trial_dir / "ppo", ctx.seed)
        return model, tokenizer, result, {"ppo_reference": _online_reference(method),
                                          "value_model_init": str(reward_dir)}


class GrpoPipeline(ChainedPipeline):
    """GRPO from the SFT stage with the reward stage as the reward function."""

    needs_reward = True

    def train_policy(self, ctx: TrialContext, chain: list[Stage]):
        cfg, method = ctx.cfg, ctx.cfg.method
        prompts = [prompt_text(r) for r in _train_pairs(cfg)]
        reward_dir = Path(chain[1].dir) / "model"
        model, tokenizer = load_trial_model(stage_model_cfg(cfg.model, chain[0]), method)
        result = train_grpo(model, tokenizer, reward_dir, method, cfg.model, prompts,
                            ctx.trial_dir / "grpo", ctx.seed)
        return model, tokenizer, result, {"grpo_reference": _online_reference(method)}
