"""How many processes a trial runs as, and the checks of `method.train.fsdp` (no torch here).

A trial runs as one process, or, for SFT trials given several GPUs or processes, under
torchrun: `launcher=slurm` with `nodes` x `nproc_per_node` (null: `gpus_per_node`, at least 1)
processes, `launcher=local` with one process per GPU of `gpus_per_trial`. FSDP
(`method.train.fsdp`) shards a full fine-tune over those processes; it is refused with one
line where it could not take effect (one process, a PEFT or quantized model, a chained
method's SFT stage, which runs as one process), never silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from harness.config.methods import NO_SFT_STAGE

# method.train.fsdp -> FSDP2's reshard_after_forward (transformers' fsdp_config): full_shard
# frees the gathered parameters after each layer's forward (ZeRO-3), shard_grad_op keeps them
# until backward (ZeRO-2: more memory, one all-gather less).
FSDP_MODES = {"full_shard": True, "shard_grad_op": False}


def nproc_per_node(launcher: DictConfig) -> int:
    """Processes per node of one trial: SLURM `nproc_per_node`, else one per GPU
    (`gpus_per_node`), else 1; local: one per GPU of `gpus_per_trial` (at least 1)."""
    if launcher.get("name") == "local":
        return max(1, int(launcher.get("gpus_per_trial") or 0))
    if launcher.get("nproc_per_node"):
        return int(launcher.nproc_per_node)
    return max(1, int(launcher.get("gpus_per_node") or 0))


def trial_processes(launcher: DictConfig) -> int:
    """Processes of one data-parallel trial: nodes x processes per node."""
    nodes = int(launcher.get("nodes") or 1) if launcher.get("name") != "local" else 1
    return nodes * nproc_per_node(launcher)


def fsdp_mode(train: DictConfig) -> str | None:
    """`train.fsdp` (None when off)."""
    mode = train.get("fsdp")
    return None if mode in (None, False, "none") else str(mode)


def check_fsdp(cfg: DictConfig, add: Callable[[str], None]) -> None:
    """One line per reason `method.train.fsdp` (or `method.sft.train.fsdp`) cannot apply."""
    method = cfg.method
    kind = str(method.get("kind", "sft"))
    sft = method.get("sft") if kind != "sft" and kind not in NO_SFT_STAGE else None
    if sft is not None and fsdp_mode(sft.get("train") or {}):
        add(f"method.sft.train.fsdp={fsdp_mode(sft.train)}: the SFT stage of method {kind} "
            "runs as one process (stages are not distributed); set it to null")
    mode = fsdp_mode(method.get("train") or {})
    if mode is None:
        return
    where = f"method.train.fsdp={mode}"
    if mode not in FSDP_MODES:
        add(f"method.train.fsdp must be null or one of {sorted(FSDP_MODES)}, got {mode!r}")
        return
    if kind != "sft":
        add(f"{where}: method {method.get('name')} (kind {kind}) runs as one process; FSDP "
            "applies to SFT trials only (method=full)")
    if method.get("peft") != "none" or (method.get("quantization") or {}).get("bits"):
        add(f"{where} needs method.peft=none without quantization (method=full): a LoRA or "
            f"QLoRA model fits on one GPU per rank (got method.peft={method.get('peft')})")
    if cfg.launcher.get("name") == "slurm" and not int(method.train.get("save_steps") or 0):
        add(f"{where} with method.train.save_steps=0: torchrun ranks take no on-signal "
            "checkpoint, so a requeued trial would start again from step 0; set "
            "method.train.save_steps > 0 (sharded checkpoints every N steps)")
    processes = trial_processes(cfg.launcher)
    if processes < 2:
        hint = ("launcher.gpus_per_trial >= 2" if cfg.launcher.get("name") == "local"
                else "launcher.gpus_per_node (or nproc_per_node) >= 2, or launcher.nodes >= 2")
        add(f"{where} needs more than one process per trial, got {processes}: set {hint}")

