"""What a trial saved, loaded back the way a researcher would, and whether it does anything.

- `load_saved`: (model, tokenizer) from a trial's `model/` folder: its LoRA adapter on the
  base it was trained from (the base model, or a chained method's SFT stage), quantized as in
  training; or the saved full model. The trial evaluates this reloaded model, not the one in
  memory after training, so every recorded number comes from the files it leaves behind (trl's
  SFTTrainer casts a k-bit model's LoRA weights to bfloat16, which a reload does not repeat).
- `adapter_effect`: does the trained model differ from what it started from? For an adapter:
  nonzero LoRA deltas and logits that differ from the adapter-disabled model (the same,
  possibly quantized, base) on a probe batch; for full weights: logits against the start model.
- `SavedModelError`: the trial's saved model is missing or has no effect (a dead adapter).
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.data.sft import perplexity_texts
from harness.errors import DataError
from harness.layout import MODEL_DIR
from harness.records import TrialSpec
from harness.train.modeling import load_base_model, load_tokenizer

log = logging.getLogger(__name__)

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
FULL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
PROBE_TEXTS, PROBE_TOKENS = 4, 64
FALLBACK_PROBE = ("The quick brown fox jumps over the lazy dog.",
                  "Summarize: the meeting moved to Tuesday because the room was booked.")


class SavedModelError(RuntimeError):
    """A trial's saved model cannot stand for its results: missing files or no effect."""


def start_model_cfg(cfg: DictConfig, stages: list[dict]) -> DictConfig:
    """cfg.model of the model the trial's own training started from: a chained method's SFT
    stage (its `model/` folder), else the base model."""
    for stage in stages or []:
        if stage.get("role", "chain") == "chain" and stage.get("name") == "sft":
            out = OmegaConf.create(OmegaConf.to_container(cfg.model, resolve=True))
            out.source, out.path = "local", str(Path(stage["dir"]) / MODEL_DIR)
            return out
    return cfg.model


def check_saved(cfg: DictConfig, spec: TrialSpec, saved: Path) -> None:
    """SavedModelError naming the missing file when `saved` lacks the trial's weights."""
    name = f"trial {spec.number:04d}"
    if not saved.is_dir():
        raise SavedModelError(f"{name}: no saved model folder {saved}")
    if cfg.method.get("peft") not in (None, "none"):   # any peft adapter (lora, ia3, prefix...)
        if not (saved / "adapter_config.json").is_file():
            raise SavedModelError(f"{name}: adapter_config.json missing in {saved}")
        if not any((saved / f).is_file() for f in ADAPTER_WEIGHTS):
            raise SavedModelError(f"{name}: {ADAPTER_WEIGHTS[0]} missing in {saved}")
    elif not any((saved / f).is_file() for f in FULL_WEIGHTS):
        raise SavedModelError(f"{name}: {FULL_WEIGHTS[0]} missing in {saved}")


def load_saved(cfg: DictConfig, spec: TrialSpec, trial_dir: Path, stages: list[dict]):
    """(model, tokenizer) of a finished trial as saved (see the module doc); the base model
    for the base record. `stages`: the record's stages (a chained method's SFT stage)."""
    if spec.baseline:
        return load_base_model(cfg.model), load_tokenizer(cfg.model)
    saved = Path(trial_dir) / MODEL_DIR
    check_saved(cfg, spec, saved)
    local = OmegaConf.merge(cfg.model, {"path": str(saved), "source": "local"})
    tokenizer = load_tokenizer(local)
    if cfg.method.get("peft") not in (None, "none"):
        from peft import PeftModel

        base = load_base_model(start_model_cfg(cfg, stages), cfg.method.get("quantization"))
        return PeftModel.from_pretrained(base, str(saved)), tokenizer
    return load_base_model(local), tokenizer


def release_memory() -> None:
    """Give back the memory of models no longer referenced (before loading another one)."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- dtypes


def lora_dtypes(model) -> list[str]:
    """The dtypes of a model's LoRA weights (empty for a model without an adapter)."""
    return sorted({str(p.dtype).removeprefix("torch.") for n, p in model.named_parameters()
                   if "lora_" in n})


def saved_dtypes(saved: Path) -> list[str]:
    """The dtypes of the tensors in a saved adapter / model safetensors file."""
    from safetensors import safe_open

    for name in (ADAPTER_WEIGHTS[0], FULL_WEIGHTS[0]):
        if (saved / name).is_file():
            with safe_open(str(saved / name), framework="pt") as handle:
                found = {str(handle.get_slice(k).get_dtype()) for k in handle.keys()}
            return sorted(SAFETENSORS_DTYPES.get(d, d.lower()) for d in found)
    return []


SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}


def artifact_info(trained_lora: list[str], model, saved: Path, cfg: DictConfig) -> dict:
    """What was evaluated (the reloaded saved model) and its dtypes, with a note when training
    ran the LoRA weights in another dtype than the configured compute dtype (trl's SFTTrainer
    casts a k-bit model's LoRA weights to bfloat16)."""
    quant = cfg.method.get("quantization") or {}
    compute = str(quant.get("compute_dtype") or cfg.model.dtype) if quant.get("bits") \
        else str(cfg.model.dtype)
    info = {"evaluated": f"{MODEL_DIR}/ reloaded from disk", "compute_dtype": compute,
            "lora_dtype_trained": trained_lora, "saved_dtype": saved_dtypes(saved),
            "lora_dtype_evaluated": lora_dtypes(model)}
    changed = [d for d in trained_lora if d != compute]
    if changed:
        info["note"] = (f"training ran the LoRA weights in {', '.join(changed)} (trl), not the "
                        f"configured {compute}; the numbers are of the saved weights, "
                        f"evaluated in {', '.join(info['lora_dtype_evaluated']) or compute}")
    return info


# ----------------------------------------------------------------------------- effect


def probe_batch(cfg: DictConfig, tokenizer, device) -> dict:
    """A few held-out perplexity texts, cut to PROBE_TOKENS tokens, as one padded batch."""
    try:
        texts = perplexity_texts(cfg.data.perplexity, PROBE_TEXTS)
    except (DataError, AttributeError, KeyError):   # no perplexity set configured
        texts = list(FALLBACK_PROBE)
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                      max_length=PROBE_TOKENS)
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def _logits(model, batch: dict):
    import torch

    with torch.inference_mode():
        out = model(**batch, use_cache=False).logits.float()
    out = out[:, -batch["input_ids"].shape[1]:]   # prompt tuning prepends virtual positions
    return out * batch["attention_mask"].unsqueeze(-1)


def lora_deltas(model) -> tuple[int, int]:
    """(LoRA layers, layers whose delta B @ A is nonzero) of a PeftModel's active adapter."""
    layers = nonzero = 0
    for module in model.modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if not lora_a or not lora_b:
            continue
        for name in lora_b:
            if name not in lora_a:
                continue
            layers += 1
            b, a = lora_b[name].weight, lora_a[name].weight
            nonzero += int(bool(b.detach().abs().sum() > 0) and bool(a.detach().abs().sum() > 0))
    return layers, nonzero


def adapter_effect(model, tokenizer, cfg: DictConfig, stages: list[dict]) -> dict:
    """Whether the trained model differs from its start (see the module doc); `dead` is true
    when it does not (zero LoRA deltas, or logits identical to the start model's)."""
    from peft import PeftModel

    batch = probe_batch(cfg, tokenizer, next(model.parameters()).device)
    trained = _logits(model, batch)
    if isinstance(model, PeftModel):
        layers, nonzero = lora_deltas(model)
        with model.disable_adapter():
            start = _logits(model, batch)
        check = "logits vs the adapter-disabled model (same base, same quantization)"
    else:
        layers = nonzero = 0
        reference = load_base_model(start_model_cfg(cfg, stages))
        start = _logits(reference, batch)
        del reference
        release_memory()
        check = "logits vs the model the training started from"
    diff = float((trained - start).abs().max())
    dead = diff == 0.0 or (layers > 0 and nonzero == 0)
    return {"check": check, "probe_tokens": int(batch["attention_mask"].sum()),
            "max_logit_diff": diff, "lora_layers": layers, "nonzero_lora_layers": nonzero,
            "dead": dead}


def dead_message(spec: TrialSpec, effect: dict) -> str:
    return (f"trial {spec.number:04d}: the trained model has no effect (dead adapter): "
            f"max |logit change| {effect['max_logit_diff']:.3g} on "
            f"{effect['probe_tokens']} probe tokens, {effect['nonzero_lora_layers']} of "
            f"{effect['lora_layers']} LoRA deltas nonzero; its numbers are the start model's")
