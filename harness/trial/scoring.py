"""Preference metrics of a trained policy against its reference, scored by the sweep's reward
model: `scoring_stage` (the cached reward stage, trained by the first trial that needs it),
then `preference_metrics` (pref_accuracy, reward_mean, win_rate_vs_sft)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.config.battery import trial_wants_preference
from harness.data.preference import metric_rows
from harness.eval.preference import policy_eval, win_rate
from harness.train.modeling import load_base_model, load_tokenizer
from harness.train.reward import load_reward_model
from harness.trial.pipelines import Trained, TrialContext
from harness.trial.stages import (
    Stage,
    base_hash,
    cached_json,
    plain,
    reward_method,
    reward_stage,
    stage_hash,
    stage_model_cfg,
)

SKIPPED = ("skipped: not asked for (data.preference.metrics.enabled: auto computes them for "
           "preference and RL methods and for sweeps with a preference objective), disabled, "
           "or no data.preference")


@dataclass
class PreferenceResult:
    """Metrics for record.metrics and the reference's figures and samples for record.extra."""

    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def preference_enabled(ctx: TrialContext) -> bool:
    """Whether this trial computes the preference metrics (harness.config.battery)."""
    return trial_wants_preference(ctx.cfg)


def scoring_stage(ctx: TrialContext) -> Stage | None:
    """The sweep's scoring reward model (role "scoring"), built once and cached; None when
    the trial computes no preference metrics (so an SFT trial of a sweep that does not ask
    for them never trains one)."""
    if not preference_enabled(ctx):
        return None
    return replace(reward_stage(ctx.cfg, ctx.stages_root), role="scoring")


def preference_metrics(ctx: TrialContext, trained: Trained, scorer: Stage) -> PreferenceResult:
    """pref_accuracy, reward_mean and win_rate_vs_sft of the trained policy; the reference
    (the SFT stage of a chained method, else the base model) figures go to `extra`."""
    cfg, reference = ctx.cfg, trained.reference
    rows, prompts = metric_rows(cfg.data)
    block = reward_method(cfg)   # on the trial's device, quantized and truncated as set
    rm = load_reward_model(Path(scorer.dir) / "model", cfg.model, block.get("quantization"))
    length = int(block.max_length)
    ours = policy_eval(trained.model, trained.tokenizer, rows, prompts, rm,
                       cfg.data.preference.metrics, max_length=length)
    ref = _reference_eval(ctx, reference, scorer, rows, prompts, rm, length)
    name = "sft" if reference is not None else "base"
    samples = list(zip(prompts, ours["generations"], ours["scores"], ref["scores"],
                       strict=True))[:4]
    return PreferenceResult(
        metrics={"pref_accuracy": ours["pref_accuracy"], "reward_mean": ours["reward_mean"],
                 "win_rate_vs_sft": win_rate(ours["scores"], ref["scores"])},
        extra={f"{name}_pref_accuracy": ref["pref_accuracy"],
               f"{name}_reward_mean": ref["reward_mean"],
               "win_rate_reference": name if reference else "base (SFT-only trial)",
               "preference_samples": [{"prompt": p, "generation": g, "reward": s,
                                       f"{name}_reward": r} for p, g, s, r in samples]})


def _reference_eval(ctx: TrialContext, reference: Stage | None, scorer: Stage,
                    rows: list[dict], prompts: list[str], rm, max_length: int) -> dict:
    """The reference policy's preference eval, cached in its stage dir per scorer/settings."""
    cfg = ctx.cfg
    settings = stage_hash({"metrics": plain(cfg.data.preference.metrics),
                           "test": plain(cfg.data.preference.test)}, scorer.hash)
    folder = Path(reference.dir) if reference else ctx.stages_root / f"base-{base_hash(cfg)}"
    folder.mkdir(parents=True, exist_ok=True)

    def build() -> dict:
        model_cfg = stage_model_cfg(cfg.model, reference) if reference else cfg.model
        model, tok = load_base_model(model_cfg), load_tokenizer(model_cfg)
        return policy_eval(model, tok, rows, prompts, rm, cfg.data.preference.metrics,
                           max_length=max_length)

    return cached_json(folder / f"pref_eval-{settings}.json", build)
