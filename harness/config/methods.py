"""Method checks beyond the common ones (harness.config.validate): per-adapter and per-kind
rules that would otherwise be ignored keys or deep library errors. Each problem is one line
naming the key. Core module: no torch / peft / trl imports."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

# method.lora.init names (harness.train.modeling maps them to peft's init_lora_weights).
LORA_INITS = ("default", "gaussian", "pissa", "olora")
# Kinds that train straight from the base model (no `sft:` stage).
NO_SFT_STAGE = {"orpo"}
# Preference / RL kinds take a LoRA adapter or full weights (their references are the
# adapter-disabled policy or a frozen copy; trl's PPO takes a LoRA peft_config only).
CHAINED_PEFT = {"lora", "none"}
PROMPT_INITS = {"text", "random"}


def _names(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in OmegaConf.to_container(value)] if value is not None else []


def check_method_kind(method: DictConfig, where: str, add: Callable[[str], None]) -> None:
    """Adapter and kind rules for `method` (or a nested method block at `where`)."""
    kind, peft = str(method.get("kind", "sft")), method.get("peft")
    bits = (method.get("quantization") or {}).get("bits")
    train = method.get("train") or {}
    if kind != "sft" and peft not in CHAINED_PEFT:
        add(f"{where}.peft={peft}: {kind} trains a LoRA adapter or full weights "
            f"(one of {sorted(CHAINED_PEFT)})")
    if kind == "ppo" and bits is not None:
        add(f"{where}.quantization.bits={bits}: PPO (trl.experimental.ppo) trains an "
            "unquantized policy; use method=grpo or method=rloo for a 4-bit policy + LoRA")
    reward = method.get("reward")
    reward_bits = (reward.get("quantization") or {}).get("bits") if reward is not None else None
    if reward_bits not in (None, 4, 8):
        add(f"{where}.reward.quantization.bits must be null, 4 or 8, got {reward_bits!r}")
    elif reward_bits is not None and reward.get("peft") != "lora":
        add(f"{where}.reward.quantization.bits={reward_bits} needs {where}.reward.peft=lora "
            "(a quantized reward model trains LoRA adapters, QLoRA-style)")
    if peft == "lora":
        _check_lora_extras(method.lora, kind, bits, where, add)
    if peft == "ia3" and method.get("ia3") is not None:
        ia3 = method.ia3
        extra = set(_names(ia3.feedforward_modules)) - set(_names(ia3.target_modules))
        if extra:
            add(f"{where}.ia3.feedforward_modules {sorted(extra)} must be in "
                f"{where}.ia3.target_modules")
    if peft == "prefix" and train.get("gradient_checkpointing"):
        add(f"{where}.train.gradient_checkpointing: prefix tuning fails under activation "
            "checkpointing (transformers 5 cache shapes); set it to false")
    if peft in ("prefix", "prompt", "ia3") and method.get(peft) is None:
        add(f"{where}.{peft}: peft={peft} needs its `{peft}:` block (see conf/method/{peft}.yaml)")
        return
    if peft in ("prefix", "prompt"):
        block = method[peft]
        if not isinstance(block.num_virtual_tokens, int) or block.num_virtual_tokens <= 0:
            add(f"{where}.{peft}.num_virtual_tokens must be a positive integer, "
                f"got {block.num_virtual_tokens!r}")
    if peft == "prompt" and method.prompt.init not in PROMPT_INITS:
        add(f"{where}.prompt.init must be one of {sorted(PROMPT_INITS)}, "
            f"got {method.prompt.init!r}")


def _check_lora_extras(lora: DictConfig, kind: str, bits, where: str,
                       add: Callable[[str], None]) -> None:
    init = lora.get("init", "default")
    if init not in LORA_INITS:
        add(f"{where}.lora.init must be one of {list(LORA_INITS)}, got {init!r}")
    elif init in ("pissa", "olora") and bits is not None:
        add(f"{where}.lora.init={init} rewrites the base weights: it needs an unquantized "
            f"base ({where}.quantization.bits=null)")
    ratio = lora.get("loraplus_lr_ratio")
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or ratio <= 0:
            add(f"{where}.lora.loraplus_lr_ratio must be > 0 or null, got {ratio!r}")
        elif kind == "ppo":
            add(f"{where}.lora.loraplus_lr_ratio: PPO builds its own optimizer; LoRA+ is "
                "for the other trainers (set it to null)")
