"""A composed trial config -> its Prediction (what plan, the driver's pre-flight, SLURM sizing
and the trial record use). Reads config.json as JSON; imports no torch."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from omegaconf import DictConfig, OmegaConf

from harness.estimate import hardware
from harness.estimate.kinds import Trainee
from harness.estimate.memory import ALL_LINEAR, Parts, Setup, dtype_bytes
from harness.estimate.shapes import read_model_config, shape_from_config
from harness.registry import ESTIMATE_KINDS

log = logging.getLogger(__name__)
GIB = 2**30
PREFLIGHT_MODES = ("refuse", "warn", "off")
# online kinds -> their method block's generated-tokens key (rollouts: KV cache, reward model)
ONLINE = {"ppo": "response_length", "grpo": "max_completion_length",
          "rloo": "max_completion_length"}


@dataclass(frozen=True)
class Prediction:
    """A trial's predicted peak memory per device (GiB) by part, and its step time."""

    peak_gb: float                  # allocated + CUDA context + allocator overhead: must fit
    allocated_gb: float             # comparable to torch.cuda.max_memory_allocated
    parts_gb: dict[str, float]
    phase: str                      # where the peak falls: backward | optimizer step | ...
    trainable_params: int
    total_params: int
    device: str                     # cuda | cpu
    step_seconds: float | None
    steps: int
    gpu: str | None = None          # the smallest known GPU type that holds peak_gb
    note: str = ""
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def device_for(cfg: DictConfig) -> str:
    """The device the prediction is for: estimate.device, or auto (a GPU when the launcher
    says the trial gets one or a local GPU is visible)."""
    wanted = str(cfg.estimate.get("device", "auto"))
    if wanted != "auto":
        return wanted
    launcher = cfg.launcher
    if launcher.get("gpu_memory_gb") or launcher.get("gpu_type") \
            or int(launcher.get("gpus_per_node") or 0) > 0:
        return "cuda"
    if launcher.get("name") == "local" and hardware.visible_gpu_memory_gib():
        return "cuda"
    return "cpu"


def gpu_memory_limit(cfg: DictConfig) -> float | None:
    """GiB of the GPU a trial gets: launcher.gpu_memory_gb, gpu_type's, the local GPU's."""
    launcher = cfg.launcher
    if launcher.get("gpu_memory_gb") is not None:
        return float(launcher.gpu_memory_gb)
    if launcher.get("gpu_type"):
        return hardware.gpu(str(launcher.gpu_type))[0]
    if launcher.get("name") == "local":
        return hardware.visible_gpu_memory_gib()
    return None


def optimizer_for(name: str, device: str) -> str:
    """`auto` as harness.train.arguments resolves it: paged AdamW on CUDA, AdamW elsewhere."""
    if name != "auto":
        return name
    return "paged_adamw_32bit" if device == "cuda" else "adamw_torch"


def resolved_dtype(name: str, device: str) -> str:
    """model.dtype `auto` as a trial resolves it (harness.train.placement.resolve_dtype):
    a 2-byte dtype (bfloat16 or float16) on a GPU, float32 on CPU."""
    if name != "auto":
        return name
    return "bfloat16" if device == "cuda" else "float32"


def trainee(cfg: DictConfig, device: str) -> Trainee:
    """The policy's Setup and the kind's numbers from the method config."""
    method, model = cfg.method, cfg.model
    train, kind = method.train, str(method.get("kind", "sft"))
    seq = int(model.max_seq_length)
    block = method.get(kind) if kind != "sft" else None   # method.dpo, method.kto, ...
    if kind in ("dpo", "kto", "orpo") and block is not None and block.get("max_length"):
        seq = int(block.max_length)
    elif kind in ONLINE and method.get("reward"):
        seq = min(seq, int(method.reward.max_length))
    lora = method.get("lora") or {}
    targets = lora.get("target_modules", "all-linear")
    if not isinstance(targets, str):
        targets = tuple(OmegaConf.to_container(targets))
    elif targets == "all-linear":
        targets = ALL_LINEAR
    quant = method.get("quantization") or {}
    adapter = method.get(str(method.get("peft"))) if method.get("peft") in ("prefix", "prompt") \
        else None
    # processes of a data-parallel trial (harness.config.distributed.trial_processes: SLURM
    # nodes x nproc_per_node or gpus_per_node; local gpus_per_trial)
    world = int(cfg.launcher.get("nodes") or 1) * int(cfg.launcher.get("nproc_per_node")
                                                      or cfg.launcher.get("gpus_per_node")
                                                      or cfg.launcher.get("gpus_per_trial") or 1)
    setup = Setup(
        dtype=resolved_dtype(str(model.dtype), device), peft=str(method.get("peft", "none")),
        rank=int(lora.get("rank", 16)), targets=targets, dropout=float(lora.get("dropout", 0.0)),
        dora=bool(lora.get("use_dora", False)), bits=quant.get("bits"),
        double_quant=bool(quant.get("double_quant", True)),
        optim=optimizer_for(str(train.get("optim", "auto")), device),
        batch=int(train.per_device_train_batch_size), seq=seq,
        checkpointing=bool(train.get("gradient_checkpointing", False)),
        attn=str(model.get("attn_implementation", "sdpa")), device=device,
        replicas=max(1, world),
        shards=max(1, world) if train.get("fsdp") else 1,   # method.train.fsdp
        virtual_tokens=int(adapter.get("num_virtual_tokens", 0)) if adapter else 0)
    dtype_bytes(setup.dtype)
    reward = method.get("reward") or {}
    block = block or {}
    return Trainee(setup=setup,
                   beta=float(block.get("beta", 0.0)) if kind in ONLINE else 0.0,
                   response_tokens=int(block.get(ONLINE.get(kind, ""), 0) or 0),
                   reward_full=str(reward.get("peft", "none")) == "none",
                   reward_bits=(reward.get("quantization") or {}).get("bits"),
                   precompute_ref=bool(method.dpo.get("precompute_ref_log_probs", False))
                   if kind == "dpo" else False)


def predict(cfg: DictConfig) -> Prediction:
    """The trial's prediction; ConfigError (one line naming the field) on bad input."""
    raw, where = read_model_config(cfg.model)
    shape = shape_from_config(raw, where)
    device = device_for(cfg)
    kind = str(cfg.method.get("kind", "sft"))
    note = ""
    if ESTIMATE_KINDS.check(kind) is not None:   # a kind with no memory model yet: the policy
        note = f"method.kind {kind!r} has no memory model: policy-only estimate (a lower bound)"
        kind = "sft"
    t = trainee(cfg, device)
    parts, flops = ESTIMATE_KINDS.load(kind)(shape, t)
    est = cfg.estimate
    allocated = parts.peak
    overhead = 0.0
    if device == "cuda":
        overhead = float(est.cuda_context_gb) * GIB + float(est.allocator_fraction) * allocated
    peak_gb = (allocated + overhead) / GIB
    train = cfg.method.train
    steps = int(train.get("max_steps") or 0) * int(train.get("gradient_accumulation_steps", 1))
    return Prediction(
        peak_gb=peak_gb, allocated_gb=allocated / GIB, parts_gb=_parts_gb(parts, overhead),
        phase=parts.peak_phase, trainable_params=parts.trainable_params,
        total_params=parts.total_params, device=device,
        step_seconds=hardware.step_seconds(flops, _tflops(cfg, device), float(est.mfu)),
        steps=steps, gpu=hardware.smallest_fitting(peak_gb) if device == "cuda" else None,
        note=note, settings={"batch": t.setup.batch, "seq": t.setup.seq,
                             "optim": t.setup.optim, "checkpointing": t.setup.checkpointing})


def _parts_gb(parts: Parts, overhead: float) -> dict[str, float]:
    out = {"weights": parts.weights + parts.quant_constants, "grads": parts.grads,
           "optimizer": parts.optimizer + parts.optimizer_temp,
           "activations": parts.activations, "logits": parts.logits,
           "extras": sum(parts.extras.values()), "generation": parts.generation,
           "overhead": overhead}
    out.update({f"extra:{k}": v for k, v in parts.extras.items()})
    return {k: round(v / GIB, 4) for k, v in out.items()}


def _tflops(cfg: DictConfig, device: str) -> float:
    est = cfg.estimate
    if device == "cpu":
        return float(est.cpu_tflops)
    if est.get("accelerator_tflops"):
        return float(est.accelerator_tflops)
    if cfg.launcher.get("gpu_type"):
        return hardware.gpu(str(cfg.launcher.gpu_type))[1]
    return hardware.GPUS[str(est.default_gpu)][1]


def check_estimate_config(cfg: DictConfig, add: Callable[[str], None]) -> None:
    """Add one line per bad estimator / pre-flight setting (launcher.gpu_type, ...)."""
    launcher, est = cfg.launcher, cfg.get("estimate")
    if est is None:
        add("estimate: the config has no estimate block (conf/config.yaml)")
        return
    if launcher.get("gpu_type") and launcher.gpu_type not in hardware.GPUS:
        add(f"launcher.gpu_type: unknown GPU type {launcher.gpu_type!r} (known: "
            f"{', '.join(hardware.GPUS)})")
    if str(est.get("default_gpu")) not in hardware.GPUS:
        add(f"estimate.default_gpu: unknown GPU type {est.get('default_gpu')!r}")
    if launcher.get("preflight", "refuse") not in PREFLIGHT_MODES:
        add(f"launcher.preflight must be one of {list(PREFLIGHT_MODES)}, "
            f"got {launcher.get('preflight')!r}")
    if est.get("device", "auto") not in ("auto", "cuda", "cpu"):
        add(f"estimate.device must be auto, cuda or cpu, got {est.get('device')!r}")
    for node, prefix, keys in ((launcher, "launcher", ("gpu_memory_gb",)),
                               (est, "estimate", ("accelerator_tflops",))):
        for key in keys:
            value = node.get(key)
            if value is not None and not _positive(value):
                add(f"{prefix}.{key} must be a positive number or null, got {value!r}")
    for key in ("cuda_context_gb", "allocator_fraction"):
        if not (_number(est.get(key)) and est.get(key) >= 0):
            add(f"estimate.{key} must be a number >= 0, got {est.get(key)!r}")
    for key in ("mfu", "cpu_tflops"):
        if not _positive(est.get(key)):
            add(f"estimate.{key} must be a positive number, got {est.get(key)!r}")
    margin = launcher.get("estimate_margin", 1.0)
    if not (_number(margin) and margin >= 1):
        add(f"launcher.estimate_margin must be a number >= 1, got {margin!r}")


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value) -> bool:
    return _number(value) and value > 0
