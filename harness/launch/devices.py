"""GPUs for local trials: which devices exist, how many each trial gets, and who holds which.

A workstation with 8 GPUs should run 8 one-GPU trials at once, each seeing only its own
device. `launcher.devices` (default: the GPUs this machine shows) and `launcher.gpus_per_trial`
(default 1 where GPUs exist, 0 on CPU) give the plan; `launcher.parallel` defaults to
devices // gpus_per_trial. A `DevicePool` hands each started trial its own devices (as the
trial process's `CUDA_VISIBLE_DEVICES`) and takes them back when the trial ends, however it
ends. No torch here: the driver never initialises CUDA (it would hold memory on GPU 0).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from harness.errors import ConfigError


def visible_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPU ids this process may use: `CUDA_VISIBLE_DEVICES` when set (an empty value means
    none), else the indices `nvidia-smi` lists, else none (a CPU machine)."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


@dataclass(frozen=True)
class DevicePlan:
    """How local trials share this machine's GPUs."""

    devices: tuple[str, ...]   # the GPU ids handed out (empty on CPU)
    per_trial: int             # GPUs each trial gets (0: CPU trials)
    parallel: int              # trials running at once

    def environment(self, ids: tuple[str, ...]) -> dict[str, str]:
        """The variables a trial given `ids` runs with: its own devices only; on a machine with
        GPUs, a CPU trial (gpus_per_trial=0) sees none rather than all of them."""
        if not self.devices:
            return {}
        return {"CUDA_VISIBLE_DEVICES": ",".join(ids)}


def device_plan(launcher: DictConfig, visible: list[str] | None = None) -> DevicePlan:
    """The plan from `launcher.devices`, `gpus_per_trial` and `parallel` (ConfigError naming
    the field when they cannot work together)."""
    configured = launcher.get("devices")
    if configured is None:
        devices = tuple(visible_gpus() if visible is None else visible)
    elif OmegaConf.is_list(configured) or isinstance(configured, (list, tuple)):
        devices = tuple(str(d) for d in configured)
    else:
        raise ConfigError(f"launcher.devices must be a list of GPU ids (or null for every "
                          f"visible GPU), got {configured!r}")
    if len(set(devices)) != len(devices):
        raise ConfigError(f"launcher.devices lists a GPU twice: {list(devices)}")
    per_trial = launcher.get("gpus_per_trial")
    per_trial = (1 if devices else 0) if per_trial is None else per_trial
    if not isinstance(per_trial, int) or isinstance(per_trial, bool) or per_trial < 0:
        raise ConfigError(f"launcher.gpus_per_trial must be an integer >= 0, got {per_trial!r}")
    if per_trial > len(devices):
        raise ConfigError(f"launcher.gpus_per_trial={per_trial} but launcher.devices has "
                          f"{len(devices)} GPU(s): {list(devices)}")
    capacity = len(devices) // per_trial if per_trial else None
    parallel = launcher.get("parallel")
    if parallel is None:
        parallel = capacity or 1
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise ConfigError(f"launcher.parallel must be an integer >= 1, got {parallel!r}")
    if capacity is not None and parallel > capacity:
        raise ConfigError(f"launcher.parallel={parallel} trials x {per_trial} GPU(s) each needs "
                          f"{parallel * per_trial} GPUs; launcher.devices has {len(devices)}")
    return DevicePlan(devices=devices, per_trial=per_trial, parallel=parallel)


class DevicePool:
    """The plan's devices, each held by at most one running trial."""

    def __init__(self, plan: DevicePlan):
        self.plan = plan
        self._free = list(plan.devices)

    def acquire(self) -> tuple[str, ...]:
        """The next `per_trial` free devices (lowest ids first); RuntimeError if too few are
        free (the launcher never starts more than `parallel` trials)."""
        n = self.plan.per_trial
        if len(self._free) < n:
            raise RuntimeError(f"{n} GPU(s) requested, {len(self._free)} free")
        ids, self._free = tuple(self._free[:n]), self._free[n:]
        return ids

    def reserve(self, ids: tuple[str, ...]) -> None:
        """Mark devices a re-attached trial still holds as taken."""
        self._free = [d for d in self._free if d not in ids]

    def release(self, ids: tuple[str, ...]) -> None:
        """Give a finished trial's devices back."""
        order = {d: i for i, d in enumerate(self.plan.devices)}
        back = [d for d in ids if d in order and d not in self._free]
        self._free = sorted(self._free + back, key=order.__getitem__)

    @property
    def free(self) -> tuple[str, ...]:
        return tuple(self._free)
