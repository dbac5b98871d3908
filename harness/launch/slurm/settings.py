"""The `launcher=slurm` settings (conf/launcher/slurm.yaml) as submitit / sbatch options."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def nproc_per_node(launcher: DictConfig) -> int:
    """Processes per node of one trial: nproc_per_node, else one per GPU, else 1."""
    if launcher.get("nproc_per_node"):
        return int(launcher.nproc_per_node)
    return max(1, int(launcher.get("gpus_per_node") or 0))


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
