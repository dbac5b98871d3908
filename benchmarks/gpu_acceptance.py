"""GPU acceptance run: a short real sweep at a real model's shapes with random weights (no hub).

    python benchmarks/gpu_acceptance.py --shape real --out /tmp/acc      # on one GPU
    python benchmarks/gpu_acceptance.py --shape small --steps 2          # CPU-sized variant

It writes a random-weight model of the architecture's real shapes (Llama-3.2-1B by default;
Qwen2.5-0.5B with --arch) with the embedded default's tokenizer (so the embedded data tokenizes
into real words; the model's vocabulary keeps the architecture's size), runs
`python -m harness sweep=gpu_acceptance` on it (one trial each of LoRA, QLoRA, full and DPO,
the whole battery on), then `benchmarks/train_throughput.py` for the harness vs plain
trl+peft step-time ratio at the same shapes, and prints one table per trial: status,
tokens/s, peak GPU memory, train / eval / overhead seconds. Results also go to
OUT/acceptance.json and OUT/acceptance.md. Needs the project installed (on the GPU machine:
the wheels carried as DEVELOPERS.md and benchmarks/gpu_wheels.sh describe).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from train_throughput import ARCHS, SMALL

from harness.embedded.build import build_embedded
from harness.layout import trial_dirs
from harness.records import read_record

ARCHS = {**ARCHS,
         "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                              num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                              tie_word_embeddings=True, rope_theta=1000000.0)}
FAMILY = {"llama-3.2-1b": "llama", "llama-3.1-8b": "llama", "qwen2.5-0.5b": "qwen2"}
REPO = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja")


def make_model(arch: str, shape: str, embedded: Path, out: Path) -> Path:
    """A random-weight model of `arch` (its real shapes, or SMALL ones) with the embedded
    tokenizer, saved with save_pretrained (bf16 on a GPU, fp32 on CPU)."""
    import torch
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tok = AutoTokenizer.from_pretrained(embedded / "model")
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    fields = {**ARCHS[arch], **(SMALL if shape == "small" else {})}
    fields["vocab_size"] = max(fields["vocab_size"], len(tok))
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                             "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[FAMILY[arch]]
    config = config_cls(**fields, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = model_cls(config).to(dtype)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    return out


def run_sweep(model_dir: Path, out: Path, steps: int, extra: list[str]) -> tuple[int, float]:
    """`python -m harness sweep=gpu_acceptance` on the model; (exit code, seconds)."""
    cmd = [sys.executable, "-m", "harness", "sweep=gpu_acceptance", "model=local",
           f"model.path={model_dir}", f"paths.sweeps={out / 'sweeps'}",
           f"paths.reports={out / 'reports'}", f"method.train.max_steps={steps}",
           f"sweep.params.sft_steps.choices=[{steps}]", *extra]
    start = time.perf_counter()
    with (out / "sweep.log").open("w") as log:
        code = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    return code, time.perf_counter() - start


def trial_rows(sweep_dir: Path) -> list[dict]:
    """One row per trial record: status, tokens/s, peak memory, seconds."""
    rows = []
    for folder in trial_dirs(sweep_dir):
        record = read_record(folder)
        if record is None:
            rows.append({"trial": folder.name, "status": "NO RECORD"})
            continue
        wall = record.job_seconds or record.wall_seconds
        tokens = record.train_tokens
        rows.append({
            "trial": record.number, "method": record.method, "status": record.status,
            "steps": record.train_steps,
            "tokens_per_s": tokens / record.train_seconds if tokens and record.train_seconds
            else None,
            "peak_gpu_gb": (record.gpu_max_allocated_mb or 0) / 1024 or None,
            "peak_rss_gb": record.peak_rss_mb / 1024,
            "train_s": record.train_seconds, "eval_s": record.eval_seconds,
            "overhead_s": wall - record.train_seconds - record.eval_seconds if wall else None,
            "error": f"{record.error.type}: {record.error.message}"[:120] if record.error
            else "",
        })
    return rows


def step_ratio(arch: str, shape: str, steps: int, out: Path) -> list[dict]:
    """benchmarks/train_throughput.py for LoRA and QLoRA: harness vs plain trl+peft."""
    cmd = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--arch",
           arch if arch in ("llama-3.2-1b", "llama-3.1-8b") else "llama-3.2-1b", "--shape",
           shape, "--methods", "lora,qlora", "--steps", str(steps), "--json",
           str(out / "throughput.json")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    (out / "throughput.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        return [{"error": done.stderr.strip().splitlines()[-1:]}]
    return json.loads((out / "throughput.json").read_text())


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table (readable in a terminal too)."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="llama-3.2-1b")
    parser.add_argument("--shape", choices=["small", "real"], default="real")
    parser.add_argument("--steps", type=int, default=20, help="training steps per trial")
    parser.add_argument("--out", type=Path, default=Path("acceptance-out"))
    parser.add_argument("--no-ratio", action="store_true",
                        help="skip the harness vs plain trl+peft step-time measurement")
    parser.add_argument("overrides", nargs="*", help="extra `python -m harness` overrides")
    args = parser.parse_args()
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    start = time.perf_counter()
    cache = Path(os.environ.get("HARNESS_CACHE", REPO / ".cache" / "harness"))
    embedded = build_embedded(cache / "embedded-v2", progress=False)
    model_dir = make_model(args.arch, args.shape, embedded, out / "model")
    code, sweep_s = run_sweep(model_dir, out, args.steps, args.overrides)
    rows = trial_rows(out / "sweeps" / "gpu_acceptance")
    ratios = [] if args.no_ratio else step_ratio(args.arch, args.shape, args.steps, out)
    shutil.rmtree(model_dir)                          # GBs of random weights: not worth keeping
    summary = {"arch": args.arch, "shape": args.shape, "steps": args.steps,
               "sweep_exit": code, "sweep_seconds": sweep_s, "trials": rows,
               "throughput": ratios, "total_seconds": time.perf_counter() - start,
               "device": _device()}
    (out / "acceptance.json").write_text(json.dumps(summary, indent=2, default=str))
    text = (f"{args.arch} ({args.shape} shapes, random weights), {args.steps} steps per trial, "
            f"{summary['device']}; sweep exit {code} in {sweep_s:.0f} s, total "
            f"{summary['total_seconds']:.0f} s\n\n"
            + table(rows, ["trial", "method", "status", "steps", "tokens_per_s", "peak_gpu_gb",
                           "peak_rss_gb", "train_s", "eval_s", "overhead_s", "error"]))
    if ratios:
        text += "\n\nharness vs plain trl+peft (benchmarks/train_throughput.py)\n\n" + table(
            ratios, ["method", "plain_tokens_per_s", "harness_tokens_per_s", "ratio",
                     "plain_peak_gb", "harness_peak_gb", "error"])
    (out / "acceptance.md").write_text(text + "\n")
    print(text)
    ok = code == 0 and rows and all(r.get("status") == "COMPLETE" for r in rows)
    return 0 if ok else 1


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"CPU x{os.cpu_count()} (torch {torch.__version__})"


if __name__ == "__main__":
    sys.exit(main())
