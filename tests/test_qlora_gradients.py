"""QLoRA on CPU: gradients through a 4-bit base must not change after an eval-mode pass.

bitsandbytes repacks 4-bit weights into an inference-only layout on CPUs with avx512_bf16 the
first time a Linear4bit runs a no-grad eval forward; without harness's fix, gradients through
the base are silently wrong afterwards (see train.modeling.disable_bnb_cpu_inference_repack).
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from harness.train.modeling import load_trial_model


def _method(bits: int = 4):
    return OmegaConf.create({
        "name": "qlora", "peft": "lora",
        "lora": {"rank": 8, "alpha": 16, "alpha_ratio": None, "dropout": 0.0,
                 "target_modules": "all-linear", "use_rslora": False, "use_dora": False},
        "quantization": {"bits": bits, "quant_type": "nf4", "double_quant": True,
                         "compute_dtype": "float32"},
        "train": {"gradient_checkpointing": False},
    })


def _model_cfg(path):
    return OmegaConf.create({"source": "local", "path": str(path), "dtype": "float32",
                             "attn_implementation": "sdpa", "trust_remote_code": False})


def _lora_grads(model, batch) -> list[torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    model(**batch, labels=batch["input_ids"]).loss.backward()
    return [p.grad.detach().clone() for n, p in model.named_parameters()
            if p.requires_grad and "lora_" in n]


def _randomize_lora_b(model) -> None:
    """lora_B starts at zero, which zeroes lora_A's gradient: give it values so gradients
    flow through every base layer."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)


@pytest.mark.parametrize("bits", [4, 8])
def test_gradients_match_after_an_eval_pass(tiny_model_dir, bits):
    torch.manual_seed(0)
    model, tok = load_trial_model(_model_cfg(tiny_model_dir), _method(bits))
    _randomize_lora_b(model)
    batch = tok(["the cat sat on a mat", "a red fox ran to the dog"], return_tensors="pt",
                padding=True)
    before = _lora_grads(model, batch)
    model.eval()
    with torch.no_grad():
        model(**batch)
        model.generate(**batch, max_new_tokens=4, do_sample=False)
    after = _lora_grads(model, batch)
    assert len(before) > 0 and all(g.abs().sum() > 0 for g in before)
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_4bit_base_really_is_quantized(tiny_model_dir):
    import bitsandbytes as bnb

    model, _ = load_trial_model(_model_cfg(tiny_model_dir), _method(4))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.quant_state.quant_type == "nf4" for m in layers)
    assert all(not m.support_avx512bf16_for_cpu for m in layers)
