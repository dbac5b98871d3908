"""Reward models: a one-label sequence classifier trained with trl's RewardTrainer."""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import DictConfig

from harness.data.preference import prompt_text, reward_text, text_of
from harness.train.arguments import preference_args, step_args
from harness.train.callbacks import CheckpointOnRequest, LossHistory
from harness.train.checkpoints import resumable_train
from harness.train.modeling import (
    disable_bnb_cpu_inference_repack,
    lora_config,
    model_kwargs,
    model_source,
)
from harness.train.progress_log import StepLog
from harness.train.results import TrainResult


def load_reward_model(path: str | Path, model_cfg: DictConfig,
                      quant: DictConfig | None = None, on_cpu: bool = False):
    """(sequence classifier with one label, tokenizer) from `path` (the base model, an SFT
    stage or a reward stage's model/) with the model's options (hub revision for the base,
    trust_remote_code, dtype, attention; harness.train.modeling.model_kwargs), on this
    process's device (`on_cpu`: in host memory, for merging), 4/8-bit when `quant.bits`
    (the reward block's quantization) is set; pad id set."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(**model_source(model_cfg, path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = model_kwargs(model_cfg, quant, path=path)
    if on_cpu:
        kwargs["device_map"] = {"": "cpu"}
    model = AutoModelForSequenceClassification.from_pretrained(num_labels=1, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    if kwargs["quantization_config"] is not None:
        disable_bnb_cpu_inference_repack(model)
    return model, tokenizer


def reward_quantization(method: DictConfig) -> DictConfig | None:
    """The quantization of a method's reward block (ppo / grpo / rloo `reward:`), if any."""
    return (method.get("reward") or {}).get("quantization")


def classifier_lora_config(lora: DictConfig):
    """peft LoraConfig for a one-label classifier: LoRA on the backbone, score head trained
    in full (trl reward docs: modules_to_save=["score"])."""
    config = lora_config(lora)
    config.task_type, config.modules_to_save = "SEQ_CLS", ["score"]
    return config


def load_value_model(reward_dir: str | Path, model_cfg: DictConfig, method: DictConfig):
    """PPO's value model, initialized from the reward model (trl's PPO example). With a LoRA
    policy (method.peft=lora) it trains LoRA on the reward model's backbone and its score
    head instead of a full copy (loaded 4/8-bit as the reward block says); trl's
    PolicyAndValueWrapper reads `value.base_model_prefix` and `value.score`, which a peft
    SEQ_CLS model forwards to the wrapped classifier."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    quant = reward_quantization(method)
    value, _ = load_reward_model(reward_dir, model_cfg, quant)
    if method.peft != "lora":
        return value
    if (quant or {}).get("bits") is not None:
        value = prepare_model_for_kbit_training(value, use_gradient_checkpointing=False)
    return get_peft_model(value, classifier_lora_config(method.lora))


def reward_args(method: DictConfig, model_cfg: DictConfig, output_dir: Path, seed: int):
    """trl RewardConfig from the reward method block."""
    from trl import RewardConfig

    return RewardConfig(**preference_args(method, output_dir, seed, model_cfg),
                        **step_args(method.train), max_length=int(method.max_length),
                        center_rewards_coefficient=method.get("center_rewards_coefficient"))


def train_reward(init_dir: str | Path, method: DictConfig, model_cfg: DictConfig,
                 rows: list[dict], output_dir: Path, seed: int) -> tuple[object, TrainResult]:
    """Train a reward model (full, LoRA, or LoRA on a 4/8-bit base) from `init_dir`; returns
    (merged unquantized model, result)."""
    from datasets import Dataset
    from peft import prepare_model_for_kbit_training
    from trl import RewardTrainer

    quant = method.get("quantization")
    quantized = (quant or {}).get("bits") is not None
    model, tokenizer = load_reward_model(init_dir, model_cfg, quant)
    if quantized:   # QLoRA recipe (peft): fp32 norms/head, input grads for checkpointing
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(method.train.get("gradient_checkpointing")))
    peft_config = classifier_lora_config(method.lora) if method.peft == "lora" else None
    rows = [{"chosen": reward_text(tokenizer, prompt_text(r), text_of(r["chosen"])),
             "rejected": reward_text(tokenizer, prompt_text(r), text_of(r["rejected"]))}
            for r in rows]
    args = reward_args(method, model_cfg, output_dir, seed)
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer, peft_config=peft_config,
                            callbacks=[history, CheckpointOnRequest(), StepLog()])
    if quantized:
        _score_head_in_fp32(trainer.model)
    result = resumable_train(trainer, history)   # from output_dir's last checkpoint
    trained = trainer.model
    if quantized:
        return _merged_unquantized(trained, init_dir, model_cfg, Path(output_dir)), result
    if hasattr(trained, "merge_and_unload"):
        trained = trained.merge_and_unload()
    return trained, result


def _score_head_in_fp32(model) -> None:
    """trl's RewardTrainer casts every trainable parameter of a quantized model to bfloat16
    (QLoRA adapters); LoRA layers cast their input, but the trained score head (a plain
    Linear in modules_to_save) receives the fp32 hidden states prepare_model_for_kbit_training
    leaves (its norms in fp32) and fails without autocast (CPU). The head goes back to fp32."""
    import torch

    for name, param in model.named_parameters():
        if param.requires_grad and "score" in name:
            param.data = param.data.to(torch.float32)


def _merged_unquantized(trained, init_dir: str | Path, model_cfg: DictConfig, work: Path):
    """The adapter of a reward model trained on a 4/8-bit base, merged into the base reloaded
    unquantized in host memory (not into the 4-bit weights: that would round it again);
    scoring loads it quantized again as the reward block says."""
    from peft import PeftModel

    trained.save_pretrained(work / "adapter")
    base, _ = load_reward_model(init_dir, model_cfg, on_cpu=True)
    merged = PeftModel.from_pretrained(base, str(work / "adapter")).merge_and_unload()
    shutil.rmtree(work / "adapter", ignore_errors=True)
    return merged
