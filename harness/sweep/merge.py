"""Merge a trial's LoRA adapter into its base model and save a standalone model.

    python -m harness action=merge sweep=default                 the best trial
    python -m harness action=merge sweep=default merge.trial=3 merge.out=/models/merged

The base is loaded unquantized in the compute dtype (for QLoRA: its 4-bit base is reloaded
from the original weights in `method.quantization.compute_dtype`; merging into 4-bit weights
would round the update away), the adapter from `<trial>/model/` is applied with peft, then
`merge_and_unload()` folds it into the weights. The result (safetensors, config, tokenizer
and merge_info.json) loads with AutoModelForCausalLM alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError
from harness.layout import CONFIG_FILE, merged_dir
from harness.records import COMPLETE, read_trial_config
from harness.sweep.results import load_sweep
from harness.train.adapters import NOT_MERGEABLE
from harness.train.modeling import DTYPES, load_base_model, load_tokenizer

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter_config.json"
INFO_FILE = "merge_info.json"


def merge_dtype(cfg: DictConfig, override: str | None = None) -> str:
    """The dtype to merge in: the override, else QLoRA's compute dtype, else model.dtype."""
    if override:
        return str(override)
    quant = cfg.method.get("quantization") or {}
    if quant.get("bits") is not None and quant.get("compute_dtype"):
        name = str(quant.compute_dtype)
    else:
        name = str(cfg.model.dtype)
    return "bfloat16" if name == "auto" else name   # auto: the hub checkpoints' own dtype


def merge_trial(trial_dir: Path, out_dir: Path, dtype: str | None = None) -> Path:
    """Merge `trial_dir/model` (a LoRA adapter) into the trial's base; save it to out_dir."""
    import torch
    from peft import PeftModel

    trial_dir, out_dir = Path(trial_dir), Path(out_dir)
    adapter = trial_dir / "model"
    if not (trial_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"merge: no {CONFIG_FILE} in {trial_dir}")
    if not (adapter / ADAPTER_FILE).is_file():
        raise ConfigError(f"merge: {adapter} holds no LoRA adapter ({ADAPTER_FILE}); a full "
                          "fine-tune's model/ is already a standalone model")
    peft_type = json.loads((adapter / ADAPTER_FILE).read_text()).get("peft_type")
    if peft_type in NOT_MERGEABLE:   # prefix / prompt tuning (harness.train.adapters)
        raise ConfigError(f"merge: {adapter} is a {peft_type.lower().replace('_', ' ')} "
                          "adapter (virtual tokens, no weight deltas): it cannot be merged; "
                          "load it with peft.PeftModel.from_pretrained on the base")
    cfg, _ = read_trial_config(trial_dir)   # paths resolved against a moved sweep folder
    dtype = merge_dtype(cfg, dtype)
    if dtype not in DTYPES:
        raise ConfigError(f"merge.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    # unquantized (no method.quantization), in the merge dtype
    base = load_base_model(OmegaConf.merge(cfg.model, {"dtype": dtype}))
    with torch.no_grad():
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = _tokenizer(adapter, cfg, load_tokenizer)
    tokenizer.save_pretrained(out_dir)
    info = {"trial_dir": str(trial_dir), "adapter": str(adapter),
            "base": str(cfg.model.path), "method": str(cfg.method.name), "dtype": dtype,
            "quantized_during_training": cfg.method.get("quantization", {}).get("bits")}
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2))
    log.info("merged %s into %s -> %s", adapter, cfg.model.path, out_dir)
    return out_dir


def _tokenizer(adapter: Path, cfg: DictConfig, load_tokenizer):
    """The tokenizer saved beside the adapter, else the base model's."""
    from transformers import AutoTokenizer

    if (adapter / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(adapter))
    return load_tokenizer(cfg.model)


def merge_best(sweep_dir: Path, mcfg: DictConfig | dict | None = None) -> Path:
    """Merge the sweep's best trial (or `merge.trial`) into its base; returns the folder."""
    mcfg = mcfg or {}
    data = load_sweep(Path(sweep_dir))
    number = mcfg.get("trial")
    if number is None:
        if data.best is None:
            raise ConfigError(f"merge: no COMPLETE trial with the objective in {sweep_dir}")
        record = data.best
    else:
        record = next((r for r in data.records if r.number == int(number)), None)
        if record is None or record.status != COMPLETE:
            raise ConfigError(f"merge.trial: no COMPLETE trial {number} in {sweep_dir}")
    trial_dir = data.config_path(record.number).parent
    out = mcfg.get("out") or merged_dir(Path(sweep_dir), record.number)
    return merge_trial(trial_dir, Path(str(out)).expanduser().resolve(), mcfg.get("dtype"))
