"""peft adapters by `method.peft` (harness.registry.PEFT_METHODS): LoRA, IA3, prefix tuning,
prompt tuning, or none (full weights); and LoRA+ (peft's create_loraplus_optimizer).

Each `<name>_adapter(method, model_cfg)` returns the peft config that `get_peft_model` applies
(harness.train.modeling.load_trial_model), or None for full fine-tuning.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from harness.train.modeling import lora_config

# Adapters that add virtual tokens instead of weight deltas: nothing to merge into the base.
NOT_MERGEABLE = ("PREFIX_TUNING", "PROMPT_TUNING")


def _modules(value) -> list[str] | str:
    return value if isinstance(value, str) else list(OmegaConf.to_container(value))


def no_adapter(method: DictConfig, model_cfg: DictConfig):
    """Full fine-tuning: every weight trained, no adapter."""
    return None


def lora_adapter(method: DictConfig, model_cfg: DictConfig):
    """LoRA (Hu et al. 2021) with `method.lora` (init: default | gaussian | pissa | olora)."""
    return lora_config(method.lora)


def ia3_adapter(method: DictConfig, model_cfg: DictConfig):
    """IA3 (Liu et al. 2022): learned scaling vectors on keys, values and the FFN input."""
    from peft import IA3Config

    ia3 = method.ia3
    return IA3Config(target_modules=_modules(ia3.target_modules),
                     feedforward_modules=_modules(ia3.feedforward_modules),
                     init_ia3_weights=bool(ia3.init_ia3_weights), task_type="CAUSAL_LM")


def prefix_adapter(method: DictConfig, model_cfg: DictConfig):
    """Prefix tuning (Li & Liang 2021): trained key/value prefixes in every layer."""
    from peft import PrefixTuningConfig

    prefix = method.prefix
    hidden = prefix.get("encoder_hidden_size")
    extra = {"encoder_hidden_size": int(hidden)} if hidden else {}
    return PrefixTuningConfig(num_virtual_tokens=int(prefix.num_virtual_tokens),
                              prefix_projection=bool(prefix.prefix_projection),
                              task_type="CAUSAL_LM", **extra)


def prompt_adapter(method: DictConfig, model_cfg: DictConfig):
    """Prompt tuning (Lester et al. 2021): trained soft-prompt embeddings before the input,
    initialised from `init_text`'s token embeddings (init: text) or at random."""
    from peft import PromptTuningConfig, PromptTuningInit

    prompt = method.prompt
    from_text = str(prompt.init) == "text"
    text = {"prompt_tuning_init_text": str(prompt.init_text),
            "tokenizer_name_or_path": str(model_cfg.path)} if from_text else {}
    return PromptTuningConfig(num_virtual_tokens=int(prompt.num_virtual_tokens),
                              prompt_tuning_init=PromptTuningInit.TEXT if from_text
                              else PromptTuningInit.RANDOM,
                              task_type="CAUSAL_LM", **text)


def loraplus_optimizers(model, method: DictConfig) -> tuple:
    """(optimizer, None) for LoRA+ (Hayou et al. 2024: B matrices at lr x ratio) when
    `method.lora.loraplus_lr_ratio` is set, else (None, None): the trainer builds its own.
    peft's create_loraplus_optimizer takes an optimizer class; AdamW as in the paper."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    lora = method.get("lora") or {}
    ratio = lora.get("loraplus_lr_ratio") if method.get("peft") == "lora" else None
    if ratio is None:
        return None, None
    train = method.train
    optimizer = create_loraplus_optimizer(model=model, optimizer_cls=torch.optim.AdamW,
                                          lr=float(train.learning_rate),
                                          loraplus_lr_ratio=float(ratio),
                                          weight_decay=float(train.weight_decay))
    return optimizer, None
