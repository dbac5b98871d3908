"""Calibration of the memory estimator (harness.estimate) on CPU: full, LoRA and QLoRA at three
random-weight shapes (~20M Qwen2, ~100M Llama, ~300M Qwen2), predicted vs measured peak.

    python benchmarks/memory_calibration.py            # all 9 cases, one process each
    python benchmarks/memory_calibration.py --shapes s20 --methods lora

Measurement: torch.profiler's memory timeline (profile_memory + record_shapes + with_stack,
`torch.profiler._memory_profiler.MemoryProfileTimeline`) over two training steps, the peak of
the summed live tensor bytes on the CPU device. Why this and not RSS: the timeline counts
tensors only (parameters, gradients, optimizer states, activations, temporaries, including
the ones alive before profiling started), so the process's baseline (Python, libraries,
allocator caches, the profiler's own records) is excluded; the steady state is the second step
(optimizer states exist). CPU has no allocator hook like torch.cuda.memory's.

The model goes through the trial's own loading path (harness.train.modeling: bitsandbytes
NF4 with double quantization, prepare_model_for_kbit_training, peft LoRA with the trial's
defaults) and the step is Trainer's: forward with labels (padded batch, attention mask),
backward, clip_grad_norm_, torch AdamW (adamw_torch), zero_grad(set_to_none=True); LoRA
weights of the quantized model are cast to bf16 as trl's SFTTrainer does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from harness.estimate.memory import Setup, train_parts
from harness.estimate.shapes import shape_from_config
from harness.train.modeling import disable_bnb_cpu_inference_repack, load_base_model, lora_config

SHAPES = {   # transformers config fields (random weights)
    "s20": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=256,
                intermediate_size=1024, num_hidden_layers=12, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=32000, tie_word_embeddings=True),
    "s100": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=640,
                 intermediate_size=1792, num_hidden_layers=12, num_attention_heads=10,
                 num_key_value_heads=2, vocab_size=32000, tie_word_embeddings=False),
    "s300": dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=1024,
                 intermediate_size=2816, num_hidden_layers=22, num_attention_heads=16,
                 num_key_value_heads=4, vocab_size=64000, tie_word_embeddings=True),
}
METHODS = {   # the harness's method settings (conf/method/*.yaml)
    "full": dict(peft="none", bits=None),
    "lora": dict(peft="lora", bits=None),
    "qlora": dict(peft="lora", bits=4),
}
BATCH, SEQ, PAD, RANK, DROPOUT = 2, 128, 16, 16, 0.05
TARGET = 0.15


def setup_for(method: str) -> Setup:
    return Setup(dtype="float32", optim="adamw_torch", batch=BATCH, seq=SEQ, device="cpu",
                 rank=RANK, dropout=DROPOUT, padded=True, **METHODS[method])


def build(shape: str, out: Path) -> None:
    """Save a random-weight model of `shape` in `out` (save_pretrained)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(SHAPES[shape])
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)


def measure(model_dir: Path, method: str) -> dict:
    """Peak live tensor bytes of two training steps (torch.profiler memory timeline)."""
    import numpy as np
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline


    torch.set_num_threads(2)
    spec = METHODS[method]
    model_cfg = OmegaConf.create({"path": str(model_dir), "source": "local", "dtype": "float32",
                                  "trust_remote_code": False, "attn_implementation": "sdpa"})
    quant = OmegaConf.create({"bits": spec["bits"], "quant_type": "nf4", "double_quant": True,
                              "compute_dtype": "float32"})
    model = load_base_model(model_cfg, quant)
    if spec["bits"] is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if spec["peft"] == "lora":
        model = get_peft_model(model, lora_config(OmegaConf.create(
            {"rank": RANK, "alpha": 2 * RANK, "dropout": DROPOUT, "target_modules": "all-linear"})))
        if spec["bits"] is not None:   # trl SFTTrainer: LoRA weights of a k-bit model in bf16
            for param in model.parameters():
                if param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)
        disable_bnb_cpu_inference_repack(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (BATCH, SEQ))
    mask = torch.ones_like(ids)
    mask[-1, -PAD:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        for _ in range(2):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            del loss
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(
        torch.device("cpu"))
    return {"peak": float(np.asarray(sizes).sum(axis=1).max())}


def predict(shape: str, method: str) -> float:
    return train_parts(shape_from_config(SHAPES[shape], shape), setup_for(method)).peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--build", nargs=2, metavar=("SHAPE", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("DIR", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        build(args.build[0], Path(args.build[1]))
        return 0
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1])))
        return 0
    print(f"batch {BATCH} x {SEQ} tokens ({PAD} padded), LoRA r={RANK} all-linear dropout "
          f"{DROPOUT}, AdamW, fp32 on CPU; MiB = 2^20 bytes")
    print(f"{'shape':6} {'params':>8} {'method':6} {'predicted':>10} {'measured':>10} {'error':>7}")
    worst = 0.0
    for shape in args.shapes:
        params = shape_from_config(SHAPES[shape], shape).total_params()
        with tempfile.TemporaryDirectory(prefix=f"calib-{shape}-") as tmp:
            subprocess.run([sys.executable, __file__, "--build", shape, tmp], check=True)
            for method in args.methods:   # one process per case: memory returns to the OS
                done = subprocess.run([sys.executable, __file__, "--measure", tmp, method],
                                      check=True, capture_output=True, text=True)
                measured = json.loads(done.stdout.strip().splitlines()[-1])["peak"]
                predicted = predict(shape, method)
                error = (predicted - measured) / measured
                worst = max(worst, abs(error))
                print(f"{shape:6} {params / 1e6:7.1f}M {method:6} {predicted / 2**20:9.1f}M "
                      f"{measured / 2**20:9.1f}M {100 * error:+6.1f}%", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"worst |error| {100 * worst:.1f}% (target {100 * TARGET:.0f}%): "
          f"{'within' if worst <= TARGET else 'OUTSIDE'} target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
