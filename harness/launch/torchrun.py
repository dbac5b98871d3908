"""Which trials run as several processes, and the torchrun command that starts them.

Used by both launchers: `launcher=local` (one node, `--standalone`, one rank per GPU of
`gpus_per_trial`) and the SLURM job side (one torchrun agent per task, one task per node).
Across nodes the agents meet in torchrun's static TCP rendezvous on the job's first node
(`--master-addr`, a port derived from the job id), each agent's node rank being its SLURM task
index: with one task per node that is the node's index, and the job's first task always holds
global rank 0, which evaluates and writes the record while submitit reads the first task's
result. (The c10d backend would rank the agents by sorted host name and pid, so rank 0 could
land in any task.) No torch here: the driver imports this module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig

from harness.records import TrialSpec


def data_parallel(cfg: DictConfig, spec: TrialSpec, processes: int) -> bool:
    """True when the trial runs as `processes` (> 1) torchrun ranks: SFT trials only (DDP, or
    FSDP with method.train.fsdp); the base model's evaluation and the chained methods'
    stages (dpo, ppo, grpo, ...) run as one process."""
    if processes <= 1 or spec.baseline:
        return False
    return str(cfg.method.get("kind", "sft")) == "sft"


def torchrun_command(trial_dir: str | Path, nproc: int, job_info: dict | None = None,
                     nodes: int = 1, node_rank: int = 0, master: str = "127.0.0.1",
                     port: int = 29500) -> list[str]:
    """One node's (one agent's) command: torchrun with `nproc` ranks of
    `python -m harness.trial TRIAL_DIR [--job-info JSON]` (the ranks copy `job_info` into
    the record). nodes > 1: the static rendezvous at master:port, as agent `node_rank`."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nodes == 1:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={nodes}", f"--node-rank={node_rank}", f"--master-addr={master}",
                f"--master-port={port}"]
    cmd += ["-m", "harness.trial", str(trial_dir)]
    return cmd + (["--job-info", json.dumps(job_info)] if job_info is not None else [])
