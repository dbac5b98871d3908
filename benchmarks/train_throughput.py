"""Training throughput and peak memory of full, LoRA and QLoRA, and the harness's step overhead.

A real architecture's config with random weights stands in for downloaded weights, so this
runs anywhere: small shapes on CPU, the real shapes on a GPU (`--shape real`).

    python benchmarks/train_throughput.py                      # llama-3.2-1b family, small shapes
    python benchmarks/train_throughput.py --arch llama-3.1-8b --shape real   # on a GPU

Each method runs in its own process (peak memory is per process). For every method it prints
tokens/s and peak memory through the harness (train.modeling + train.sft) and through a
plain trl + peft script doing the same steps, and their ratio (harness / plain).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.train.modeling import load_trial_model
from harness.train.sft import train_sft

ARCHS = {  # transformers LlamaConfig fields of the real models
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         tie_word_embeddings=True, rope_theta=500000.0),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                         tie_word_embeddings=False, rope_theta=500000.0),
}
SMALL = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
             num_attention_heads=8, num_key_value_heads=2, vocab_size=8192)
METHODS = {
    "full": {"peft": "none", "bits": None, "lr": 2e-5},
    "lora": {"peft": "lora", "bits": None, "lr": 2e-4},
    "qlora": {"peft": "lora", "bits": 4, "lr": 2e-4},
}


def make_model_dir(arch: str, shape: str, out: Path) -> Path:
    """Save a random-weight model of the architecture (scaled down for --shape small)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    fields = {**ARCHS[arch], **(SMALL if shape == "small" else {})}
    vocab = {f"t{i}": i for i in range(fields["vocab_size"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    template = ("{% for m in messages %}{{ m['content'] }} {% endfor %}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t1", pad_token="t2",
                                   bos_token="t3", chat_template=template)
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(**fields, max_position_embeddings=4096, pad_token_id=2,
                         bos_token_id=3, eos_token_id=1)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    LlamaForCausalLM(config).to(dtype).save_pretrained(out)
    return out


def synthetic_rows(n: int, seq: int, vocab: int) -> list[dict]:
    """Prompt/completion chat rows of `seq` tokens (word-level tokenizer: one word, one token)."""
    import random

    rng = random.Random(0)
    half = seq // 2

    def words(k: int) -> str:
        return " ".join(f"t{rng.randrange(4, vocab)}" for _ in range(k))

    return [{"prompt": [{"role": "user", "content": words(half)}],
             "completion": [{"role": "assistant", "content": words(seq - half - 2)}]}
            for _ in range(n)]


def method_cfg(name: str, steps: int, batch: int):
    from omegaconf import OmegaConf

    spec = METHODS[name]
    return OmegaConf.create({
        "name": name, "peft": spec["peft"],
        "lora": {"rank": 16, "alpha": 32, "alpha_ratio": None, "dropout": 0.05,
                 "target_modules": "all-linear", "use_rslora": False, "use_dora": False},
        "quantization": {"bits": spec["bits"], "quant_type": "nf4", "double_quant": True,
                         "compute_dtype": "bfloat16" if _cuda() else "float32"},
        "train": {"learning_rate": spec["lr"], "lr_scheduler_type": "constant",
                  "warmup_ratio": 0.0, "max_steps": steps, "num_train_epochs": 1,
                  "per_device_train_batch_size": batch, "gradient_accumulation_steps": 1,
                  "max_grad_norm": 1.0, "weight_decay": 0.0, "optim": "auto",
                  "gradient_checkpointing": False, "completion_only_loss": True,
                  "logging_steps": steps, "eval_steps": 0, "save_steps": 0,
                  "report_to": "none"},
    })


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_harness(model_dir: Path, method: str, rows: list, steps: int, batch: int, seq: int,
                out: Path) -> float:
    """Train through harness.train.modeling + harness.train.sft; returns train seconds."""
    from omegaconf import OmegaConf

    model_cfg = OmegaConf.create({"source": "local", "path": str(model_dir),
                                  "dtype": "bfloat16" if _cuda() else "float32",
                                  "attn_implementation": "sdpa", "trust_remote_code": False,
                                  "max_seq_length": seq})
    cfg = method_cfg(method, steps, batch)
    model, tok = load_trial_model(model_cfg, cfg)
    result = train_sft(model, tok, cfg, model_cfg, rows, None, out, seed=0)
    return result.seconds


def run_plain(model_dir: Path, method: str, rows: list, steps: int, batch: int, seq: int,
              out: Path) -> float:
    """The same steps through trl + peft + bitsandbytes directly, no harness code."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    spec = METHODS[method]
    dtype = torch.bfloat16 if _cuda() else torch.float32
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                             bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=dtype) if spec["bits"] else None
    device = "cuda" if _cuda() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, quantization_config=bnb,
                                                 device_map={"": device})
    if bnb is not None:
        import bitsandbytes

        for module in model.modules():  # the same CPU fix the harness applies
            if isinstance(module, bitsandbytes.nn.Linear4bit):
                module.support_avx512bf16_for_cpu = False
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if spec["peft"] == "lora":
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                 target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    args = SFTConfig(output_dir=str(out), learning_rate=spec["lr"], max_steps=steps,
                     per_device_train_batch_size=batch, lr_scheduler_type="constant",
                     optim="paged_adamw_32bit" if _cuda() else "adamw_torch",
                     max_length=seq, logging_steps=steps, save_strategy="no", report_to=[],
                     bf16=_cuda(), disable_tqdm=True, seed=0,
                     max_grad_norm=1.0,
                     # trl's SFTConfig turns activation checkpointing on by default; the
                     # harness run above has it off (method.train.gradient_checkpointing=false)
                     gradient_checkpointing=False)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=AutoTokenizer.from_pretrained(model_dir))
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> None:
    """One (method, runner) measurement in this process; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    vocab = (SMALL if args.shape == "small" else ARCHS[args.arch])["vocab_size"]
    rows = synthetic_rows(args.batch * (args.steps + args.warmup), args.seq, vocab)
    runner = run_harness if args.runner == "harness" else run_plain
    with tempfile.TemporaryDirectory() as tmp:
        if args.warmup:
            runner(Path(args.model_dir), args.method, rows[: args.batch * args.warmup],
                   args.warmup, args.batch, args.seq, Path(tmp) / "warm")
        seconds = runner(Path(args.model_dir), args.method, rows, args.steps, args.batch,
                         args.seq, Path(tmp) / "run")
    tokens = args.steps * args.batch * args.seq
    peak = (torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    print(json.dumps({"method": args.method, "runner": args.runner, "seconds": seconds,
                      "tokens_per_s": tokens / seconds, "peak_gb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="llama-3.2-1b")
    parser.add_argument("--shape", choices=["small", "real"], default="small")
    parser.add_argument("--methods", default="full,lora,qlora")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, default=None,
                        help="also write one row per method (tokens/s, ratio, peak) here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runner", default="harness", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="lora", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model_dir(args.arch, args.shape, Path(tmp) / "model")
        results = []
        for method in args.methods.split(","):
            for runner in ("plain", "harness"):
                cmd = [sys.executable, __file__, "--child", "--runner", runner, "--method",
                       method, "--model-dir", str(model_dir), "--arch", args.arch, "--shape",
                       args.shape, "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--batch", str(args.batch), "--seq", str(args.seq), "--threads",
                       str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
    print_table(args, results)
    if args.json:
        args.json.write_text(json.dumps(method_rows(args, results), indent=2))


def method_rows(args: argparse.Namespace, results: list[dict]) -> list[dict]:
    """Per method: plain and harness tokens/s, their ratio, and both peaks (GB)."""
    by = {(r["method"], r["runner"]): r for r in results}
    return [{"method": m, "plain_tokens_per_s": by[(m, "plain")]["tokens_per_s"],
             "harness_tokens_per_s": by[(m, "harness")]["tokens_per_s"],
             "ratio": by[(m, "harness")]["tokens_per_s"] / by[(m, "plain")]["tokens_per_s"],
             "plain_peak_gb": by[(m, "plain")]["peak_gb"],
             "harness_peak_gb": by[(m, "harness")]["peak_gb"]}
            for m in args.methods.split(",")]


def print_table(args: argparse.Namespace, results: list[dict]) -> None:
    device = "GPU" if _cuda() else f"CPU x{args.threads} threads"
    print(f"\n{args.arch} ({args.shape} shapes), batch {args.batch} x seq {args.seq}, "
          f"{args.steps} steps, {device}")
    print(f"{'method':<8}{'plain tok/s':>13}{'harness tok/s':>15}{'ratio':>8}"
          f"{'plain GB':>10}{'harness GB':>12}")
    by = {(r["method"], r["runner"]): r for r in results}
    for method in args.methods.split(","):
        plain, ours = by[(method, "plain")], by[(method, "harness")]
        print(f"{method:<8}{plain['tokens_per_s']:>13.0f}{ours['tokens_per_s']:>15.0f}"
              f"{ours['tokens_per_s'] / plain['tokens_per_s']:>8.3f}"
              f"{plain['peak_gb']:>10.2f}{ours['peak_gb']:>12.2f}")
    print("ratio = harness tokens/s / plain trl+peft tokens/s (1.0 = no overhead)")


if __name__ == "__main__":
    main()
