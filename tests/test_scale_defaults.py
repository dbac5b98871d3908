"""Real model configs bring real-scale training defaults (conf/scale/real.yaml,
conf/scale_defaults/real_<method>.yaml); model=tiny keeps today's tuned values; command-line
overrides win; a sweep that picks the method per trial gets each method's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.config.compose import compose_config, resolve_paths
from harness.config.validate import Problems, validate_trial_config
from harness.sweep.driver import Sweep, trial_config
from harness.sweep.space import parse_space
from harness.trial.stages import reward_method, scorer_method

CONF = Path(__file__).resolve().parents[1] / "conf"
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml") if not p.stem.startswith("_"))
CHAINED = {"dpo", "kto", "ppo", "grpo", "rloo"}          # an SFT stage first
WITH_REWARD = {"ppo", "grpo", "rloo"}
REAL_MODELS = ["llama3_1_8b", "llama3_2_1b", "mistral_7b", "qwen2_5_0_5b", "local"]
# the real-scale learning rate of each method with its default peft (conf/scale/real.yaml)
REAL_LR = {"dpo": 5.0e-6, "kto": 5.0e-6, "orpo": 5.0e-6, "ppo": 1.41e-5, "grpo": 1.0e-5,
           "rloo": 1.0e-5, "lora": 2.0e-4, "qlora": 2.0e-4, "full": 2.0e-5}


def _cfg(*overrides: str):
    return resolve_paths(compose_config(["model.path=/models/x", *overrides]))


def _effective(train) -> int:
    return int(train.per_device_train_batch_size) * int(train.gradient_accumulation_steps)


def _assert_real_train(train, where: str, checkpointing: bool = True) -> None:
    assert bool(train.gradient_checkpointing) is checkpointing, where
    assert 16 <= _effective(train) <= 32, f"{where}: effective batch {_effective(train)}"


@pytest.mark.parametrize("method", METHODS)
def test_llama3_8b_gets_real_scale_defaults(method):
    cfg = _cfg("model=llama3_1_8b", f"method={method}", "sweep=lora_lr")
    assert cfg.scale.name == "real"
    assert cfg.model.dtype == "auto" and cfg.model.max_seq_length == 2048
    assert cfg.launcher.timeout_min >= 12 * 60          # hours, not the tiny 60 minutes
    assert cfg.eval.perplexity.max_length == 2048 and cfg.eval.mt_bench.max_new_tokens == 1024
    _assert_real_train(cfg.method.train, method, checkpointing=method != "prefix")
    assert cfg.method.train.max_steps is None           # one epoch (lora_lr sets no steps)
    if method in CHAINED:
        _assert_real_train(cfg.method.sft.train, f"{method}.sft")
    if method in REAL_LR:
        assert cfg.method.train.learning_rate == pytest.approx(REAL_LR[method])
    if method == "qlora":
        assert cfg.method.train.optim == "paged_adamw_32bit"
    for block in ("dpo", "kto", "orpo"):
        if method == block:
            assert cfg.method[block].max_length == 2048
    if method in WITH_REWARD:
        reward = cfg.method.reward
        assert reward.peft == "lora" and reward.max_length == 2048
        _assert_real_train(reward.train, f"{method}.reward")
    if method == "ppo":   # LoRA policy: adapter-disabled reference, LoRA value model
        assert cfg.method.peft == "lora" and cfg.method.ppo.total_episodes == 10000
    collected = Problems()
    validate_trial_config(cfg, collected)   # the real-scale values pass every config check
    assert not collected.lines


def test_full_weights_preference_learning_rates():
    """DPO/KTO: 5e-7 for full weights, 5e-6 for LoRA (alignment-handbook zephyr recipes)."""
    for method in ("dpo", "kto"):
        full = _cfg("model=llama3_1_8b", f"method={method}", "method.peft=none")
        assert full.method.train.learning_rate == pytest.approx(5.0e-7)
    assert _cfg("model=mistral_7b", "method=ppo", "method.peft=none").method.train \
        .learning_rate == pytest.approx(3.0e-6)


@pytest.mark.parametrize("model", REAL_MODELS)
def test_every_real_model_config_picks_the_real_scale(model):
    cfg = _cfg(f"model={model}", "method=dpo")
    assert cfg.scale.name == "real" and cfg.method.train.learning_rate == pytest.approx(5e-6)


# Today's tuned tiny values (conf/method/*.yaml as of issue 10), per method:
# (learning rate, per-device batch, accumulation, checkpointing, max_steps with sweep=default).
TINY = {"lora": (2.0e-4, 8, 1, False, 120), "qlora": (2.0e-4, 8, 1, False, 120),
        "full": (2.0e-5, 8, 1, False, 120), "ia3": (3.0e-3, 8, 1, False, 120),
        "prefix": (1.0e-2, 8, 1, False, 120), "prompt": (1.0e-1, 8, 1, False, 120),
        "dpo": (1.2e-4, 8, 1, False, 120), "kto": (1.2e-4, 8, 1, False, 120),
        "orpo": (2.0e-4, 8, 1, False, 120), "ppo": (3.0e-5, 16, 1, False, 120),
        "grpo": (1.0e-4, 8, 1, False, 120), "rloo": (1.0e-4, 8, 1, False, 120)}


@pytest.mark.parametrize("method", METHODS)
def test_tiny_keeps_its_tuned_values(method):
    cfg = _cfg(f"method={method}")
    train = cfg.method.train
    assert cfg.scale.name == "tiny" and cfg.model.dtype == "float32"
    assert (train.learning_rate, train.per_device_train_batch_size,
            train.gradient_accumulation_steps, train.gradient_checkpointing,
            train.max_steps) == pytest.approx(TINY[method])
    assert cfg.model.max_seq_length == 256 and cfg.launcher.timeout_min == 60
    assert cfg.eval.perplexity.max_length == 256 and cfg.eval.mt_bench.max_new_tokens == 48
    if method in CHAINED:
        assert cfg.method.sft.train.per_device_train_batch_size == 8
    if method in WITH_REWARD:
        assert cfg.method.reward.peft == "none" and cfg.method.reward.max_length == 256
        assert cfg.method.reward.train.max_steps == 150
    if method == "ppo":
        assert cfg.method.peft == "none" and cfg.method.ppo.total_episodes == 256


def test_command_line_wins_over_the_scale():
    cfg = _cfg("model=llama3_1_8b", "method=dpo", "method.train.learning_rate=1e-6",
               "method.train.gradient_checkpointing=false", "launcher.timeout_min=90")
    assert cfg.method.train.learning_rate == 1e-6 and cfg.launcher.timeout_min == 90
    assert not cfg.method.train.gradient_checkpointing
    tiny_scale = _cfg("model=llama3_1_8b", "method=dpo", "scale=tiny")
    assert tiny_scale.method.train.learning_rate == pytest.approx(1.2e-4)
    assert tiny_scale.method.train.per_device_train_batch_size == 8
    sweep = _cfg("model=llama3_1_8b", "method=lora")       # sweep=default: max_steps 120 wins
    assert sweep.method.train.max_steps == 120


def test_method_compare_trials_get_their_own_methods_scale():
    """The driver recomposes each trial with method=<its choice>: each gets its defaults."""
    overrides = ["model=llama3_1_8b", "model.path=/models/x", "sweep=method_compare"]
    cfg = resolve_paths(compose_config(overrides))
    sweep = Sweep(cfg=cfg, cli_overrides=overrides, space=parse_space(cfg.sweep.params))
    choices = next(p.choices for p in sweep.space if p.name == "method")
    assert set(choices) == set(METHODS)
    for method in choices:
        trial = trial_config(sweep, {"method": method})
        assert trial.method.name == method
        _assert_real_train(trial.method.train, method, checkpointing=method != "prefix")
        if method in REAL_LR:
            assert trial.method.train.learning_rate == pytest.approx(REAL_LR[method])


def test_scoring_reward_model_matches_ppo_reward_stage():
    """The sweep's scoring reward model (methods without a reward block) gets the same
    real-scale settings as method=ppo's reward stage: one cached stage, LoRA at 2048."""
    dpo = OmegaConf.to_container(reward_method(_cfg("model=llama3_1_8b", "method=dpo")),
                                 resolve=True)
    ppo = OmegaConf.to_container(_cfg("model=llama3_1_8b", "method=ppo").method.reward,
                                 resolve=True)
    assert dpo == ppo and dpo["peft"] == "lora" and dpo["max_length"] == 2048
    tiny = OmegaConf.to_container(reward_method(_cfg("method=dpo")), resolve=True)
    assert tiny["peft"] == "none" and tiny["max_length"] == 256
    assert tiny["train"]["per_device_train_batch_size"] == 8


def test_scorer_overrides_change_the_scorer_of_every_method_not_ppos_reward():
    """data.preference.metrics.scorer sizes the one scoring reward model of a sweep, PPO
    trials' included; the reward PPO trains against stays method.reward."""
    plain = {m: _cfg(f"method={m}") for m in ("dpo", "ppo")}
    assert OmegaConf.to_container(scorer_method(plain["ppo"]), resolve=True) \
        == OmegaConf.to_container(plain["ppo"].method.reward, resolve=True)
    sized = {m: _cfg(f"method={m}", "+data.preference.metrics.scorer.train.max_steps=7")
             for m in ("dpo", "ppo")}
    for cfg in sized.values():
        assert scorer_method(cfg).train.max_steps == 7
        assert scorer_method(cfg).train.learning_rate == 1.0e-4   # the rest as in _reward
    assert sized["ppo"].method.reward.train.max_steps == reward_method(sized["ppo"]).train \
        .max_steps == 150


def test_cfg_job_prints_the_real_scale_ppo_config(capsys):
    """`python -m harness --cfg job model=llama3_1_8b method=ppo` (Hydra's spelling) shows the
    real-scale PPO defaults."""
    from harness.cli import main

    assert main(["--cfg", "job", "model=llama3_1_8b", "method=ppo"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.scale.name == "real" and printed.method.peft == "lora"
    assert printed.method.reward.peft == "lora" and printed.method.train.gradient_checkpointing
