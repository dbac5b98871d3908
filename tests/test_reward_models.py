"""Reward, value and reference models load like the policy: on the trial's device, with the
model options, truncated at the configured length, quantized when asked (never ignored)."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from harness.config.methods import check_method_kind
from harness.eval import preference as pref_eval
from harness.train import ppo, reward

MODEL = OmegaConf.create({"path": "org/base", "source": "hub", "revision": "r1",
                          "trust_remote_code": True, "dtype": "float32",
                          "attn_implementation": "eager"})
FOUR_BIT = OmegaConf.create({"bits": 4, "quant_type": "nf4", "double_quant": True,
                             "compute_dtype": "float32"})
ROWS = [{"prompt": [{"role": "user", "content": f"report {w}"}],
         "chosen": [{"role": "assistant", "content": f"the {w} sat on a mat"}],
         "rejected": [{"role": "assistant", "content": "red blue dog fox ran"}]}
        for w in ("cat", "dog", "fox", "mat", "red", "blue", "sat", "ran")]


class _Captured(Exception):
    pass


def _capture(monkeypatch) -> dict:
    """from_pretrained kwargs of the reward model and its tokenizer (nothing loaded)."""
    import transformers

    seen: dict = {}

    def tokenizer(**kwargs):
        seen["tokenizer"] = kwargs
        return type("Tok", (), {"pad_token": "<pad>", "pad_token_id": 0})()

    def model(**kwargs):
        seen["model"] = kwargs
        raise _Captured

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained",
                        model)
    return seen


@pytest.mark.parametrize("rank", [0, 3])
def test_reward_model_loads_on_the_ranks_gpu_with_the_model_options(monkeypatch, rank):
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    seen = _capture(monkeypatch)
    with pytest.raises(_Captured):   # the base (init: base): hub id with its revision
        reward.load_reward_model("org/base", MODEL, FOUR_BIT)
    kwargs = seen["model"]
    assert kwargs["device_map"] == {"": rank}
    assert kwargs["revision"] == "r1" and kwargs["trust_remote_code"] is True
    assert kwargs["attn_implementation"] == "eager" and kwargs["num_labels"] == 1
    assert kwargs["quantization_config"].load_in_4bit
    assert seen["tokenizer"]["revision"] == "r1"
    with pytest.raises(_Captured):   # a stage's saved model: no hub revision, no bits
        reward.load_reward_model("/stages/reward-1/model", MODEL)
    assert "revision" not in seen["model"] and seen["model"]["quantization_config"] is None
    assert seen["model"]["trust_remote_code"] is True


def test_reward_scores_truncate_at_the_configured_length(tiny_model_dir):
    """The reward model sees at most max_length tokens (the reward block's), not 512."""
    model, tok = reward.load_reward_model(tiny_model_dir, OmegaConf.create({"dtype": "float32"}))
    lengths = []
    model.register_forward_pre_hook(lambda m, a, k: lengths.append(k["input_ids"].shape[1]),
                                    with_kwargs=True)
    long_answer = " ".join(["the cat sat on a mat"] * 200)
    pref_eval.reward_scores(model, tok, ["report"], [long_answer], max_length=24)
    pref_eval.reward_scores(model, tok, ["report"], [long_answer], max_length=700)
    assert lengths[0] == 24 and lengths[1] == 700


def _method(peft: str, bits=None, **train) -> OmegaConf:
    return OmegaConf.create({
        "kind": "reward", "peft": peft, "max_length": 64, "center_rewards_coefficient": None,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "quantization": {**FOUR_BIT, "bits": bits},
        "train": {"learning_rate": 1e-3, "lr_scheduler_type": "constant", "warmup_ratio": 0.0,
                  "max_steps": 4, "num_train_epochs": 1, "per_device_train_batch_size": 8,
                  "gradient_accumulation_steps": 1, "max_grad_norm": 1.0, "weight_decay": 0.0,
                  "optim": "adamw_torch", "gradient_checkpointing": False, "logging_steps": 2,
                  "report_to": "none", **train}})


def test_4bit_lora_reward_model_trains_and_is_saved_unquantized(tiny_model_dir, tmp_path):
    """method.reward.quantization.bits=4 is applied (bitsandbytes NF4 base + LoRA, QLoRA
    style); the stage keeps the adapter merged into the unquantized base."""
    import bitsandbytes as bnb

    cfg = OmegaConf.create({"dtype": "float32"})
    torch.set_num_threads(1)
    model, result = reward.train_reward(tiny_model_dir, _method("lora", bits=4), cfg, ROWS,
                                        tmp_path / "train", seed=0)
    assert result.steps == 4
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    model.save_pretrained(tmp_path / "model")
    reward.load_reward_model(tiny_model_dir, cfg)[1].save_pretrained(tmp_path / "model")
    loaded, _ = reward.load_reward_model(tmp_path / "model", cfg, FOUR_BIT)   # scoring: 4-bit
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.modules())


def test_quantized_reward_needs_lora_one_line():
    lines: list[str] = []
    lora = _method("lora").lora
    method = OmegaConf.create({"kind": "ppo", "peft": "lora", "lora": lora,
                               "reward": _method("none", bits=4)})
    check_method_kind(method, "method", lines.append)
    assert lines == ["method.reward.quantization.bits=4 needs method.reward.peft=lora "
                     "(a quantized reward model trains LoRA adapters, QLoRA-style)"]
    ok: list[str] = []
    check_method_kind(OmegaConf.create({"kind": "ppo", "peft": "lora", "lora": lora,
                                        "reward": _method("lora", bits=4)}), "method", ok.append)
    assert ok == []


def test_ppo_value_model_is_lora_on_the_reward_model(tiny_model_dir):
    """With a LoRA policy the value model trains LoRA + the score head over the frozen reward
    model (not a full copy), and trl's PPO wrapper reads its values through it."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.ppo.ppo_trainer import PolicyAndValueWrapper

    cfg = OmegaConf.create({"dtype": "float32"})
    method = OmegaConf.create({"peft": "lora", "lora": _method("lora").lora,
                               "reward": _method("none")})
    value = reward.load_value_model(tiny_model_dir, cfg, method)
    trainable = {n for n, p in value.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "score" in n for n in trainable)
    policy, _ = ppo.load_base_model(cfg, path=tiny_model_dir), None
    wrapper = PolicyAndValueWrapper(policy, value)
    ids = torch.tensor([[5, 6, 7, 8]])
    _, values = wrapper(input_ids=ids, attention_mask=torch.ones_like(ids),
                        output_hidden_states=True, return_dict=True, use_cache=False)
    assert values.shape == (1, 4, 1)
    full = reward.load_value_model(tiny_model_dir, cfg, OmegaConf.merge(method, {"peft": "none"}))
    assert all(p.requires_grad for p in full.parameters())   # full PPO: trl's full copy


def test_ppo_trains_a_lora_policy_with_a_lora_value_model(tiny_model_dir, tmp_path):
    """trl.experimental.ppo.PPOTrainer runs the real-scale PPO setup end to end: LoRA policy
    (adapter-disabled reference), LoRA value model over the reward model."""
    cfg = OmegaConf.create({"dtype": "float32"})
    torch.set_num_threads(1)
    rm, _ = reward.train_reward(tiny_model_dir, _method("none"), cfg, ROWS,
                                tmp_path / "rtrain", seed=0)
    rm.save_pretrained(tmp_path / "rm")
    reward.load_reward_model(tiny_model_dir, cfg)[1].save_pretrained(tmp_path / "rm")
    method = OmegaConf.create({
        "kind": "ppo", "peft": "lora", "lora": _method("lora").lora, "reward": _method("none"),
        "ppo": {"kl_coef": 0.05, "cliprange": 0.2, "vf_coef": 0.1, "response_length": 6,
                "num_ppo_epochs": 1, "num_mini_batches": 1, "temperature": 0.7,
                "missing_eos_penalty": None, "total_episodes": 16},
        "train": {**_method("none").train, "max_steps": None}})
    policy, _, result = ppo.train_ppo(tiny_model_dir, tmp_path / "rm", method, cfg,
                                      [f"report {r['prompt'][0]['content']}" for r in ROWS],
                                      tmp_path / "ppo", seed=0)
    assert result.steps == 2 and not hasattr(policy, "peft_config")   # merged LoRA policy
    assert all("objective/scores" in row for row in result.loss_history)
