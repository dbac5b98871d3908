"""The adapter-effect check a trial runs on its reloaded model: an adapter whose deltas are zero
(what LoRA starts as, and what a training that never updated it leaves) is dead, on a plain
and on a 4-bit quantized base alike; a trained one is not."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from harness.train.modeling import load_tokenizer, load_trial_model
from harness.trial.saved import adapter_effect


def _cfg(tiny_model_dir, tmp_path, bits):
    texts = tmp_path / "ppl.jsonl"
    texts.write_text("".join(json.dumps({"text": f"the cat sat on the mat {i} times"}) + "\n"
                             for i in range(4)))
    model = {"path": str(tiny_model_dir), "source": "local", "dtype": "float32",
             "trust_remote_code": False, "attn_implementation": "sdpa"}
    method = {"peft": "lora", "quantization": {"bits": bits, "quant_type": "nf4",
                                               "double_quant": True, "compute_dtype": "float32"},
              "lora": {"rank": 4, "alpha": 8, "alpha_ratio": None, "dropout": 0.0,
                       "target_modules": "all-linear"}, "train": {}}
    return OmegaConf.create({"model": model, "method": method,
                             "data": {"perplexity": {"path": str(texts), "text_field": "text"}}})


@pytest.mark.parametrize("bits", [None, 4], ids=["lora", "qlora"])
def test_zero_adapter_is_dead_and_a_changed_one_is_not(tiny_model_dir, tmp_path, bits) -> None:
    cfg = _cfg(tiny_model_dir, tmp_path, bits)
    model, _ = load_trial_model(cfg.model, cfg.method)
    tokenizer = load_tokenizer(cfg.model)
    dead = adapter_effect(model, tokenizer, cfg, [])
    assert dead["dead"] is True and dead["max_logit_diff"] == 0.0
    assert dead["lora_layers"] > 0 and dead["nonzero_lora_layers"] == 0
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    alive = adapter_effect(model, tokenizer, cfg, [])
    assert alive["dead"] is False and alive["max_logit_diff"] > 0
    assert alive["nonzero_lora_layers"] == alive["lora_layers"]
