"""Reload a trial's saved model with plain transformers/peft and compute its perplexity.

    python tests/independent_reload.py JOB.json

Imports nothing from the harness (an independent check of what a trial saved and recorded).
JOB.json: {"texts": [...], "max_length": N, "stride": N, "models": [{"dir": ..., "quant":
null | {"quant_type", "double_quant", "compute_dtype"}, "dtype": "float32"}]}. Prints one JSON
list of perplexities. An adapter folder is loaded onto the base its adapter_config.json names
(peft's AutoPeftModelForCausalLM); the sliding-window loop is the one of the transformers
"perplexity of fixed-length models" guide, one text at a time.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig


def load(entry: dict):
    """The saved model (a full model folder, or an adapter on its recorded base)."""
    folder, dtype = Path(entry["dir"]), getattr(torch, entry.get("dtype", "float32"))
    quant = entry.get("quant")
    bnb = None if not quant else BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=quant["quant_type"],
        bnb_4bit_use_double_quant=quant["double_quant"],
        bnb_4bit_compute_dtype=getattr(torch, quant["compute_dtype"]))
    if (folder / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=dtype,
                                                         quantization_config=bnb)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    if bnb is not None:   # bitsandbytes' CPU inference repack (reference README: a trap)
        import bitsandbytes as bnb_lib

        for module in model.modules():
            if isinstance(module, bnb_lib.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = False
    return model.eval(), AutoTokenizer.from_pretrained(str(folder))


@torch.inference_mode()
def perplexity(model, tokenizer, texts: list[str], max_length: int, stride: int) -> float:
    nll_sum, n_tokens = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        if ids.size(1) < 2:
            continue
        begin = prev_end = 0
        while prev_end < ids.size(1):
            end = min(begin + max_length, ids.size(1))
            window = ids[:, begin:end]
            target = window.clone()
            target[:, : prev_end - begin] = -100
            n_valid = int((target[:, 1:] != -100).sum())
            nll_sum += model(input_ids=window, labels=target).loss.item() * n_valid
            n_tokens += n_valid
            prev_end = end
            begin = min(begin + stride, end - 1)
    return math.exp(nll_sum / n_tokens)


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = []
    for entry in job["models"]:
        model, tokenizer = load(entry)
        out.append(perplexity(model, tokenizer, job["texts"], job["max_length"], job["stride"]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
