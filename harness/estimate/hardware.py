"""GPU types (memory, dense bf16 rate) and step time from FLOPs.

Rates are the vendors' dense (no sparsity) bf16/fp16 tensor-core peaks from their data sheets
(NVIDIA A100, H100 SXM, H200, L40S, A10G, L4, RTX 4090, V100). Memory in GiB as torch and
nvidia-smi report it (an "80 GB" H100 has 79.6 GiB usable; we round to the marketed figure).
"""

from __future__ import annotations

import shutil
import subprocess

from harness.errors import ConfigError

GPUS: dict[str, tuple[float, float]] = {   # name -> (memory GiB, dense bf16 TFLOP/s)
    "v100-16gb": (16, 125), "v100-32gb": (32, 125), "t4": (16, 65), "a10g": (24, 125),
    "l4": (24, 121), "rtx4090": (24, 165), "l40s": (48, 362), "a6000": (48, 155),
    "a100-40gb": (40, 312), "a100-80gb": (80, 312), "h100-80gb": (80, 989),
    "h100-94gb": (94, 989), "h200": (141, 989), "b200": (180, 2250),
}


def gpu(name: str) -> tuple[float, float]:
    """(memory GiB, TFLOP/s) of a GPU type; ConfigError naming launcher.gpu_type if unknown."""
    if name not in GPUS:
        raise ConfigError(f"launcher.gpu_type: unknown GPU type {name!r} (known: "
                          f"{', '.join(GPUS)})")
    return GPUS[name]


def smallest_fitting(peak_gib: float) -> str | None:
    """The GPU type with the least memory that holds `peak_gib` (None: none does)."""
    fits = [(mem, name) for name, (mem, _) in GPUS.items() if mem >= peak_gib]
    return min(fits)[1] if fits else None


def visible_gpu_memory_gib() -> float | None:
    """Memory of this machine's first GPU from nvidia-smi (no torch import), or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.split()
        return float(out[0]) / 1024 if out else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def train_flops(matmul_params: int, trainable_matmul: int, tokens: int, full: bool,
                checkpointing: bool, attention: float) -> float:
    """FLOPs of one training step (Kaplan et al. 2020: 6 N per token for full training = 2 N
    forward + 4 N backward). LoRA: 2 N forward + 2 N for activation gradients + 6 N_lora (the
    frozen weights get no weight gradients); gradient checkpointing recomputes the forward
    (+2 N). `attention`: forward attention-score FLOPs per token (QK^T and AV), x3 with
    backward."""
    per_token = 6 * matmul_params if full else 4 * matmul_params + 6 * trainable_matmul
    if checkpointing:
        per_token += 2 * matmul_params
    return float(tokens * (per_token + 3 * attention))


def step_seconds(flops: float, tflops: float, mfu: float) -> float:
    """Seconds at `tflops` peak and `mfu` achieved fraction (model FLOPs utilization)."""
    return flops / (tflops * 1e12 * mfu)
