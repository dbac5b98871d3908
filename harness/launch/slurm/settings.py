"""The `launcher=slurm` settings (conf/launcher/slurm.yaml) as submitit / sbatch options."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.config import distributed


def nproc_per_node(launcher: DictConfig) -> int:
    """Processes per node of one trial: nproc_per_node, else one per GPU, else 1 (the rule
    the config checks use too: harness.config.distributed)."""
    return distributed.nproc_per_node(launcher)


def sbatch_parameters(launcher: DictConfig) -> dict:
    """submitit SlurmExecutor parameters (sbatch options) from `conf/launcher/slurm.yaml`."""
    params = {
        "job_name": str(launcher.job_name),
        "time": int(math.ceil(float(launcher.timeout_min))),
        "nodes": int(launcher.nodes),
        "ntasks_per_node": 1,       # one trial process per node (it starts torchrun if needed)
        "cpus_per_task": int(launcher.cpus_per_task),
        "signal_delay_s": int(launcher.signal_delay_s),
        "array_parallelism": int(launcher.array_parallelism),
        "stderr_to_stdout": True,   # one log per job: trial.log links to it
        "setup": [_pythonpath_line(), *[str(line) for line in launcher.setup]],
        "additional_parameters": _additional(launcher),
    }
    for key in ("partition", "account", "qos", "constraint"):
        if launcher.get(key):
            params[key] = str(launcher[key])
    if launcher.get("gpus_per_node"):
        params["gpus_per_node"] = int(launcher.gpus_per_node)
    if launcher.get("mem_gb"):
        mem = float(launcher.mem_gb)
        params["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    return params


def pool_parameters(launcher: DictConfig) -> dict:
    """sbatch options of a pool worker (launcher.mode=pool): a trial's options, with the
    worker's --time (pool.timeout_min) and every worker of the array running at once."""
    pool = launcher.pool
    return {**sbatch_parameters(launcher), "time": int(math.ceil(float(pool.timeout_min))),
            "array_parallelism": int(pool.workers)}


def request_text(params: dict) -> str:
    """What a trial job asks for (its sbatch options), for error messages."""
    keys = ("partition", "nodes", "cpus_per_task", "gpus_per_node", "mem", "constraint", "qos",
            "account")
    shown = [f"{key}={params[key]}" for key in keys if params.get(key)]
    return "asked: " + ", ".join(shown)


def _additional(launcher: DictConfig) -> dict:
    extra = dict(OmegaConf.to_container(launcher.additional, resolve=True) or {})
    if launcher.get("requeue", True):
        extra.setdefault("requeue", True)
    return extra


def _pythonpath_line() -> str:
    """Make this checkout's harness importable in the job whatever the job's directory."""
    root = shlex.quote(str(Path(__file__).resolve().parents[3]))   # harness/launch/slurm/..
    return f'export PYTHONPATH={root}"${{PYTHONPATH:+:$PYTHONPATH}}"'


def sized_parameters(launcher: DictConfig, predictions: list[dict | None]) -> dict:
    """sbatch options from the trials' predictions (`launcher.size_from_estimate`): one GPU per
    node when the trial runs on a GPU (the trainers replicate the model on every GPU, so more
    GPUs never lower the per-GPU peak), --mem from the host side of the peak and --time from
    the predicted training time, each x `estimate_margin`; the largest over the trials of one
    job array. {} when no trial has a prediction or sizing is off."""
    known = [p for p in predictions if p]
    if not launcher.get("size_from_estimate") or not known:
        return {}
    margin = float(launcher.get("estimate_margin", 1.25))
    on_gpu = any(p["device"] == "cuda" for p in known)
    # host memory: the weights pass through RAM while loading; CPU trials hold the whole peak
    host_gb = max((p["parts_gb"].get("weights", 0.0) if p["device"] == "cuda" else p["peak_gb"])
                  for p in known) + HOST_BASE_GB
    minutes = max((p["steps"] * (p["step_seconds"] or 0.0)) / 60 for p in known)
    out = {"mem": f"{int(math.ceil(margin * host_gb))}GB",
           "time": int(math.ceil(margin * minutes + float(launcher.get("estimate_fixed_min", 10))))}
    if on_gpu:
        out["gpus_per_node"] = max(1, int(launcher.get("gpus_per_node") or 0))
    return out


# Host RAM of a trial process before its model: Python, torch, transformers, trl, the data
# (measured on the CPU machine: ~1.5-2.5 GB peak RSS for the embedded model).
HOST_BASE_GB = 4.0
