"""Load a trial's model: tokenizer, base weights (optionally 4/8-bit), and the LoRA adapter."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from harness.config.distributed import fsdp_mode
from harness.config.methods import LORA_INITS as LORA_INIT_NAMES
from harness.registry import PEFT_METHODS
from harness.train import placement

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# model.dtype / compute_dtype names -> torch dtypes. torch is imported when a model is loaded,
# not when this module is (the sweep driver imports it and never loads a model itself).
DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype named `name` (one of DTYPES, or `auto`: bfloat16 / float16 / float32 as
    this process's device supports, harness.train.placement.resolve_dtype)."""
    import torch

    if name == "auto":
        name = placement.resolve_dtype(name, placement.detect())
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)} or auto, got {name!r}")
    return getattr(torch, name)


def device() -> torch.device:
    """This process's device: cuda:<LOCAL_RANK> on a GPU, else cpu (harness.train.placement)."""
    import torch

    return torch.device(placement.device_name(placement.detect()))


def model_source(model_cfg: DictConfig, path: str | Path | None = None) -> dict:
    """from_pretrained kwargs naming where the weights come from (hub id + revision, or a
    local path) and whether the model's own code may run. `path`: a folder saved from this
    model (a stage's model/) to load instead; the hub revision applies to the hub id only."""
    base = model_cfg.get("path")
    where = str(base) if path is None else str(path)
    kwargs = {"pretrained_model_name_or_path": where,
              "trust_remote_code": bool(model_cfg.get("trust_remote_code", False))}
    if model_cfg.get("source") == "hub" and model_cfg.get("revision") and where == str(base):
        kwargs["revision"] = model_cfg.revision
    return kwargs


def model_kwargs(model_cfg: DictConfig, quant: DictConfig | None = None,
                 path: str | Path | None = None, fsdp: bool = False) -> dict:
    """Every from_pretrained kwarg of a model load, the one builder for the policy, the
    reference, the reward and the value model: source (+ revision, trust_remote_code),
    dtype, attn_implementation, bitsandbytes settings (`quant.bits`) and this process's
    device map (harness.train.placement; None under FSDP)."""
    bnb = quantization_config(quant) if quant is not None else None
    return {**model_source(model_cfg, path), "dtype": torch_dtype(str(model_cfg.dtype)),
            "attn_implementation": model_cfg.get("attn_implementation", "sdpa"),
            "quantization_config": bnb,
            "device_map": placement.device_map(placement.detect(), fsdp=fsdp)}


def load_tokenizer(model_cfg: DictConfig):
    """The model's tokenizer with a pad token (eos if the model defines none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(**model_source(model_cfg))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(quant: DictConfig):
    """bitsandbytes settings for `method.quantization` (None when not quantized)."""
    from transformers import BitsAndBytesConfig

    bits = quant.get("bits")
    if bits is None:
        return None
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.get("quant_type", "nf4"),
        bnb_4bit_use_double_quant=bool(quant.get("double_quant", True)),
        bnb_4bit_compute_dtype=torch_dtype(quant.get("compute_dtype", "bfloat16")),
    )


def load_base_model(model_cfg: DictConfig, quant: DictConfig | None = None,
                    fsdp: bool = False, path: str | Path | None = None):
    """The base causal LM (or the model saved at `path`: a stage's model/) on this process's
    device (each data-parallel rank its own GPU; FSDP: left to accelerate), quantized if
    `quant.bits` is set."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(**model_kwargs(model_cfg, quant, path=path,
                                                                fsdp=fsdp))
    if quant is not None and quant.get("bits") is not None:
        disable_bnb_cpu_inference_repack(model)
    return model


def disable_bnb_cpu_inference_repack(model: torch.nn.Module) -> int:
    """Keep bitsandbytes 4-bit layers trainable on CPU after a no-grad forward.

    On CPUs with avx512_bf16, bitsandbytes repacks a Linear4bit weight into an inference-only
    layout on the first eval-mode forward (generate, evaluation); gradients through the base
    are silently wrong from then on. Turning the repack off keeps training correct (and lifts
    the out_features % 32 assertion). Returns the number of layers changed.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    changed = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def lora_alpha(lora: DictConfig) -> float:
    """alpha, or rank * alpha_ratio when the ratio is set."""
    ratio = lora.get("alpha_ratio")
    return float(lora.rank) * float(ratio) if ratio is not None else float(lora.alpha)


# method.lora.init (harness.config.methods.LORA_INITS) -> peft init_lora_weights: default
# (Kaiming A, zero B), gaussian, pissa (principal singular vectors, Meng et al. 2024), olora
# (QR-orthonormal, Büyükakyüz 2024).
LORA_INITS = {name: True if name == "default" else name for name in LORA_INIT_NAMES}


def lora_config(lora: DictConfig):
    """peft LoraConfig for `method.lora`."""
    from peft import LoraConfig

    targets = lora.target_modules
    if not isinstance(targets, str):
        targets = list(OmegaConf.to_container(targets))
    return LoraConfig(
        r=int(lora.rank),
        lora_alpha=lora_alpha(lora),
        lora_dropout=float(lora.dropout),
        target_modules=targets,
        use_rslora=bool(lora.get("use_rslora", False)),
        use_dora=bool(lora.get("use_dora", False)),
        init_lora_weights=LORA_INITS[str(lora.get("init", "default"))],
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_trial_model(model_cfg: DictConfig, method: DictConfig):
    """(model, tokenizer) ready to train for a method: quantized base + LoRA, or full weights."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    tokenizer = load_tokenizer(model_cfg)
    model = load_base_model(model_cfg, method.quantization,
                            fsdp=fsdp_mode(method.train) is not None)   # FSDP: no device map
    checkpointing = bool(method.train.get("gradient_checkpointing", False))
    if method.quantization.get("bits") is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    adapter = PEFT_METHODS.load(str(method.peft))(method, model_cfg)   # None: full weights
    if adapter is not None:
        model = get_peft_model(model, adapter)
    return model, tokenizer


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights counted unpacked."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return int(trainable), int(sum(p.numel() for p in model.parameters()))
