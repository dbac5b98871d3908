"""The trial process itself: threads and seed, data-parallel ranks (torchrun), and the
machine it ran on (peak memory, device) for the record."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path

from harness.records import TrialRecord, TrialSpec

# Processes of a data-parallel (torchrun) trial; read at start, before rank 0 goes on alone.
_WORLD_SIZE = int(os.environ.get("WORLD_SIZE", "1"))


def setup_process(spec: TrialSpec) -> None:
    """torch threads (shared by the ranks of a data-parallel trial) and every seed."""
    import torch
    from transformers import set_seed

    if spec.threads:
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, int(spec.threads) // local_ranks))
    set_seed(spec.seed)


def rank() -> int:
    """This process's rank in a data-parallel (torchrun) trial; 0 when not distributed."""
    return int(os.environ.get("RANK", "0"))


def leave_data_parallel() -> bool:
    """After data-parallel training: True for ranks > 0 (done); rank 0 leaves the process
    group and goes on as a single process (evaluation and later stages are not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return rank() != 0
    current = dist.get_rank()
    dist.barrier()
    dist.destroy_process_group()
    if current != 0:
        return True
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    for name in ("LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(name, None)
    return False


def record_machine(record: TrialRecord) -> None:
    """Peak RSS, GPU max allocated memory and the device into the record."""
    record.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        import torch

        if torch.cuda.is_available():
            record.gpu_max_allocated_mb = torch.cuda.max_memory_allocated() / 2**20
        record.device = _device(torch)
    except ImportError:
        pass


def _device(torch) -> dict:
    """The GPU (name, count) or CPU (name, torch threads) the trial ran on, for the report's
    environment and GPU-/CPU-hours."""
    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": _WORLD_SIZE,
                "visible": torch.cuda.device_count(), "processes": _WORLD_SIZE}
    return {"type": "cpu", "name": _cpu_name(), "threads": torch.get_num_threads(),
            "processes": _WORLD_SIZE}   # ranks of a data-parallel (torchrun) trial


def _cpu_name() -> str:
    """The CPU model (/proc/cpuinfo on Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
