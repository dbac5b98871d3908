"""Preference metrics of a trained policy against its reference, scored by the sweep's reward
model: `scoring_stage` (the cached reward stage), then `preference_metrics` (pref_accuracy,
reward_mean, win_rate_vs_sft). In a sweep that computes them, the job that evaluates the base
model builds the scoring stage first (`base_preference`, spec.build_scorer), so no trial pays
for training it; a trial builds it only when that job did not (a base record cached before the
sweep asked for preference metrics)."""

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
    reward_stage,
    scorer_method,
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


def scoring_stage(ctx: TrialContext, every_method: bool = False) -> Stage | None:
    """The sweep's scoring reward model (role "scoring"), built once and cached; None when
    the trial computes no preference metrics (so an SFT trial of a sweep that does not ask
    for them never trains one). every_method: the base-model job of a sweep where some trial
    computes them (the driver decided: spec.build_scorer); None there when the scorer starts
    from an SFT stage (`init: sft`), which only a trial's own chain has."""
    if every_method:
        if ctx.cfg.data.get("preference") is None \
                or scorer_method(ctx.cfg).get("init", "base") != "base":
            return None
    elif not preference_enabled(ctx):
        return None
    return replace(reward_stage(ctx.cfg, ctx.stages_root, method=scorer_method(ctx.cfg)),
                   role="scoring")


def preference_metrics(ctx: TrialContext, trained: Trained, scorer: Stage) -> PreferenceResult:
    """pref_accuracy, reward_mean and win_rate_vs_sft of the trained policy; the reference
    (the SFT stage of a chained method, else the base model) figures go to `extra`."""
    cfg, reference = ctx.cfg, trained.reference
    rows, prompts, rm, length = _scorer_inputs(ctx, scorer)
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


def base_preference(ctx: TrialContext, trained: Trained, scorer: Stage) -> PreferenceResult:
    """The untrained base model's pref_accuracy and reward_mean under the sweep's scorer (the
    base-model job, after building the scorer): the base values the trials' deltas compare
    against, cached where SFT-only trials read them as their reference."""
    rows, prompts, rm, length = _scorer_inputs(ctx, scorer)
    ref = _reference_eval(ctx, None, scorer, rows, prompts, rm, length,
                          loaded=(trained.model, trained.tokenizer))
    return PreferenceResult(metrics={"pref_accuracy": ref["pref_accuracy"],
                                     "reward_mean": ref["reward_mean"]})


def _scorer_inputs(ctx: TrialContext, scorer: Stage) -> tuple[list[dict], list[str], tuple, int]:
    """The held-out pairs and prompts, the scoring reward model (on the trial's device,
    quantized as set) and its truncation length."""
    rows, prompts = metric_rows(ctx.cfg.data)
    block = scorer_method(ctx.cfg)
    rm = load_reward_model(Path(scorer.dir) / "model", ctx.cfg.model, block.get("quantization"))
    return rows, prompts, rm, int(block.max_length)


def _reference_eval(ctx: TrialContext, reference: Stage | None, scorer: Stage,
                    rows: list[dict], prompts: list[str], rm, max_length: int,
                    loaded: tuple | None = None) -> dict:
    """The reference policy's preference eval, cached in its stage dir per scorer/settings;
    `loaded`: the reference (model, tokenizer) already in memory (the base-model job)."""
    cfg = ctx.cfg
    settings = stage_hash({"metrics": plain(cfg.data.preference.metrics),
                           "test": plain(cfg.data.preference.test)}, scorer.hash)
    folder = Path(reference.dir) if reference else ctx.stages_root / f"base-{base_hash(cfg)}"
    folder.mkdir(parents=True, exist_ok=True)

    def build() -> dict:
        if loaded is not None:
            model, tok = loaded
        else:
            model_cfg = stage_model_cfg(cfg.model, reference) if reference else cfg.model
            model, tok = load_base_model(model_cfg), load_tokenizer(model_cfg)
        return policy_eval(model, tok, rows, prompts, rm, cfg.data.preference.metrics,
                           max_length=max_length)

    return cached_json(folder / f"pref_eval-{settings}.json", build)
