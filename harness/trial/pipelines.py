"""One pipeline per method kind (harness.registry.METHOD_KINDS): how a trial gets its model.

Every pipeline has the same shape, `Pipeline().train(ctx) -> Trained`: the trained model and
tokenizer, the TrainResult, the stages it went through and notes for the record. The trial
(harness.trial.run) then saves, evaluates and records it the same way whatever the kind.

- SftPipeline: the method's model (full, LoRA, QLoRA, IA3, prefix or prompt tuning) trained
  with SFT on data.train.
- DpoPipeline / KtoPipeline: the cached SFT stage, then DPO or KTO on data.preference.train.
- OrpoPipeline: ORPO on data.preference.train straight from the base (no SFT stage).
- PpoPipeline / GrpoPipeline / RlooPipeline: the cached SFT and reward stages, then PPO, GRPO
  or RLOO; these online methods also record KL to the SFT policy, generation length and
  distinct-n (harness.eval.online).
- BasePipeline: the untrained base model (the sweep's baseline; spec.baseline).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from harness.data.preference import (
    check_preference_data,
    metric_rows,
    preference_rows,
    prompt_text,
)
from harness.data.sft import sft_rows
from harness.errors import DataError
from harness.eval.online import online_metrics
from harness.layout import CHECKPOINTS_DIR, MODEL_DIR
from harness.records import TrialSpec
from harness.study import TrialReporter
from harness.train.dpo import dpo_reference, frozen_copy, train_dpo
from harness.train.grpo import train_grpo
from harness.train.kto import train_kto
from harness.train.modeling import (
    count_parameters,
    load_base_model,
    load_tokenizer,
    load_trial_model,
)
from harness.train.orpo import train_orpo
from harness.train.ppo import train_ppo
from harness.train.results import TrainResult
from harness.train.rloo import train_rloo
from harness.train.sft import train_sft
from harness.trial import prune_signal
from harness.trial.stages import (
    Stage,
    base_hash,
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
    the base model); metrics: the pipeline's own figures (online methods' KL, diversity)."""

    model: object
    tokenizer: object
    result: TrainResult | None
    params: tuple[int, int]
    stages: list[Stage] = field(default_factory=list)
    notes: dict = field(default_factory=dict)
    reference: Stage | None = None
    metrics: dict = field(default_factory=dict)


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
        eval_rows = prune_signal.eval_rows(cfg)   # sweep.pruner.signal
        result = train_sft(model, tokenizer, cfg.method, cfg.model, train_rows, eval_rows,
                           output_dir=ctx.trial_dir / CHECKPOINTS_DIR, seed=ctx.seed,
                           reporter=reporter(ctx), log_dir=ctx.trial_dir)
        if result.model is not None:   # FSDP: rank 0's gathered copy of the sharded model
            model, result.model = result.model, None
        return Trained(model, tokenizer, result, params)


def reporter(ctx: TrialContext) -> TrialReporter | None:
    """An Optuna reporter for pruning, when the sweep has a pruner and a study to report to."""
    if ctx.spec.trial_id is None or ctx.cfg.sweep.pruner.get("name", "none") == "none":
        return None
    return TrialReporter(ctx.cfg.storage, ctx.cfg.sweep.pruner, ctx.spec.study_name,
                         int(ctx.spec.trial_id))


def minimizes(ctx: TrialContext) -> bool:
    """Whether the study minimizes its first objective (stage values are then negated)."""
    objectives = ctx.cfg.sweep.get("objectives") or []
    return bool(objectives) and str(objectives[0].get("direction", "minimize")) == "minimize"


def pruning(ctx: TrialContext) -> dict:
    """reporter/minimize keyword arguments of a preference or RL trainer."""
    return {"reporter": reporter(ctx), "minimize": minimizes(ctx)}


class ChainedPipeline:
    """Cached SFT (and reward) stages, then the trial's own stage (`train_policy`).
    sft_first: the method starts from the SFT stage (all but ORPO); needs_reward: it
    optimizes against the reward stage; online: it generates while training (its KL to the
    SFT policy, generation length and distinct-n are recorded)."""

    sft_first = True
    needs_reward = False
    online = False

    def train(self, ctx: TrialContext) -> Trained:
        cfg = ctx.cfg
        kind = str(cfg.method.kind)
        if cfg.data.get("preference") is None:
            raise DataError(f"method {kind} needs data.preference (train/test preference pairs)")
        check_preference_data(cfg.data)
        chain = [sft_stage(cfg, ctx.stages_root)] if self.sft_first else []
        if self.needs_reward:
            chain.append(reward_stage(cfg, ctx.stages_root, chain[0]))
        model, tokenizer, result, notes = self.train_policy(ctx, chain)
        final = Stage(kind, str(ctx.trial_dir / MODEL_DIR),
                      stage_hash(plain(cfg.method), chain[-1].hash if chain else base_hash(cfg)),
                      False, result.seconds, resumed_from_step=result.resumed_from_step)
        notes["stages_reused"] = [s.name for s in chain if s.reused]
        reference = chain[0] if chain else None
        trained = Trained(model, tokenizer, result, count_parameters(model), [*chain, final],
                          notes, reference=reference)
        if self.online:
            trained.metrics, notes["online"] = _online(ctx, trained, reference)
        return trained

    def train_policy(self, ctx: TrialContext, chain: list[Stage]):
        """(model, tokenizer, TrainResult, notes) of the trial's own stage."""
        raise NotImplementedError


def _online(ctx: TrialContext, trained: Trained, reference: Stage) -> tuple[dict, dict]:
    """KL to the SFT policy, generation length and distinct-n of the trained policy."""
    cfg = ctx.cfg
    _, prompts = metric_rows(cfg.data)
    ref = load_base_model(stage_model_cfg(cfg.model, reference))
    return online_metrics(trained.model, ref, trained.tokenizer, prompts, cfg.eval.online)


def _train_pairs(cfg: DictConfig) -> list[dict]:
    return preference_rows(cfg.data.preference.train, cfg.data.preference.get("max_train_samples"))


class DpoPipeline(ChainedPipeline):
    """DPO from the SFT stage; reference: the adapter-disabled policy or a frozen copy."""

    trainer = staticmethod(train_dpo)

    def train_policy(self, ctx: TrialContext, chain: list[Stage]):
        cfg, method = ctx.cfg, ctx.cfg.method
        model, tokenizer = load_trial_model(stage_model_cfg(cfg.model, chain[0]), method)
        ref = None if method.peft != "none" else frozen_copy(model)
        rows = _train_pairs(cfg)
        kind = str(method.kind)
        log.info("%s on %d preference pairs, reference: %s", kind.upper(), len(rows),
                 dpo_reference(method))
        result = self.trainer(model, tokenizer, method, cfg.model, rows, ctx.trial_dir / kind,
                              ctx.seed, ref_model=ref, **pruning(ctx))
        return model, tokenizer, result, {f"{kind}_reference": dpo_reference(method),
                                          "train_pairs": len(rows)}


class KtoPipeline(DpoPipeline):
    """KTO from the SFT stage (pairs unpaired into desirable / undesirable answers)."""

    trainer = staticmethod(train_kto)


class OrpoPipeline(ChainedPipeline):
    """ORPO straight from the base model: no SFT stage, no reference model."""

    sft_first = False

    def train_policy(self, ctx: TrialContext, chain: list[Stage]):
        cfg, method = ctx.cfg, ctx.cfg.method
        model, tokenizer = load_trial_model(cfg.model, method)
        rows = _train_pairs(cfg)
        log.info("ORPO on %d preference pairs from the base model", len(rows))
        result = train_orpo(model, tokenizer, method, cfg.model, rows, ctx.trial_dir / "orpo",
                            ctx.seed, **pruning(ctx))
        return model, tokenizer, result, {"orpo_reference": "none (odds ratio, no reference)",
                                          "train_pairs": len(rows)}


def _online_reference(method: DictConfig) -> str:
    return "adapter-disabled policy (PEFT)" if method.peft == "lora" \
        else "frozen copy of the SFT model"


def _prompts(cfg: DictConfig, cap=None) -> list[str]:
    prompts = [prompt_text(r) for r in _train_pairs(cfg)]
    return prompts[: int(cap)] if cap else prompts


class PpoPipeline(ChainedPipeline):
    """PPO from the SFT stage against the reward stage (value model from the reward model)."""

    needs_reward = online = True

    def train_policy(self, ctx: TrialContext, chain: list[Stage]):
        cfg, method = ctx.cfg, ctx.cfg.method
        sft_dir, reward_dir = Path(chain[0].dir) / "model", Path(chain[1].dir) / "model"
        prompts = _prompts(cfg, method.ppo.get("max_prompts"))
        model, tokenizer, result = train_ppo(sft_dir, reward_dir, method, cfg.model, prompts,
                                             ctx.trial_dir / "ppo", ctx.seed, **pruning(ctx))
        return model, tokenizer, result, {"ppo_reference": _online_reference(method),
                                          "value_model_init": str(reward_dir),
                                          "value_model": "LoRA + score head on the reward "
                                          "model" if method.peft == "lora" else "full copy"}


class GrpoPipeline(ChainedPipeline):
    """GRPO from the SFT stage with the reward stage as the reward function."""

    needs_reward = online = True
    trainer = staticmethod(train_grpo)

    def train_policy(self, ctx: TrialContext, chain: list[Stage]):
        cfg, method = ctx.cfg, ctx.cfg.method
        kind = str(method.kind)
        reward_dir = Path(chain[1].dir) / "model"
        model, tokenizer = load_trial_model(stage_model_cfg(cfg.model, chain[0]), method)
        result = self.trainer(model, tokenizer, reward_dir, method, cfg.model,
                              _prompts(cfg, method[kind].get("max_prompts")),
                              ctx.trial_dir / kind, ctx.seed, **pruning(ctx))
        return model, tokenizer, result, {f"{kind}_reference": _online_reference(method)}


class RlooPipeline(GrpoPipeline):
    """RLOO from the SFT stage with the reward stage as the reward function."""

    trainer = staticmethod(train_rloo)
