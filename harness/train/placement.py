"""Where this process puts its models: the trial's torch device, the `device_map` handed to
`from_pretrained`, and the dtype `model.dtype: auto` stands for. Plain functions of
(LOCAL_RANK, CUDA availability, device count, FSDP; the same for full, LoRA and 4/8-bit
models), tested without a GPU; `detect()` reads them from this process.

Why an integer device map: transformers 5 (`integrations/accelerate.py`,
`check_and_set_device_map`) maps the bare string `device_map="cuda"` to `cuda:$LOCAL_RANK`,
but a dict value is used as given, and `{"": "cuda"}` means torch's *current* device, which
is cuda:0 in every torchrun rank until accelerate calls `torch.cuda.set_device`
(accelerate `state.py` `PartialState.set_device`: local_process_index % device_count, run
when TrainingArguments `_setup_devices` builds the PartialState, i.e. after the model is
loaded). Every rank then loads onto GPU 0 (8 x 16 GB for an 8B model on 8 ranks), and
accelerate's `prepare_model` (accelerator.py, "You can't train a model that has been loaded
in 8-bit or 4-bit precision on a different device than the one you're training on") refuses
a 4/8-bit model whose `hf_device_map` device (`torch.device("cuda").index` is None) is not
the rank's `cuda:N`. An int `{"": N}` is what accelerate's message recommends
(`device_map={'': torch.cuda.current_device()}`) and means cuda:N whatever the current device.
Under FSDP no device map is given: every rank loads the whole model on CPU
(harness.train.fsdp sets `cpu_ram_efficient_loading: False`, since rank-0-only loading needs
the process group before from_pretrained) and accelerate shards and places it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from harness.errors import ConfigError


@dataclass(frozen=True)
class Machine:
    """What the placement depends on, read from this process (`detect`) or given by a test."""

    local_rank: int = 0
    cuda: bool = False
    device_count: int = 0
    bf16: bool = False          # torch.cuda.is_bf16_supported() on this process's GPU


def local_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's rank on its node (torchrun's LOCAL_RANK; 0 when not distributed)."""
    env = os.environ if env is None else env
    return int(env.get("LOCAL_RANK", "0") or 0)


def detect(env: Mapping[str, str] | None = None) -> Machine:
    """This process's Machine (torch imported here, not at module import)."""
    import torch

    cuda = torch.cuda.is_available()
    # is_bf16_supported asks the current device (cuda:0 before accelerate sets the rank's):
    # the GPUs of one node are one type, so its answer holds for every rank.
    return Machine(local_rank=local_rank(env), cuda=cuda,
                   device_count=torch.cuda.device_count() if cuda else 0,
                   bf16=bool(torch.cuda.is_bf16_supported()) if cuda else False)


def device_name(machine: Machine) -> str:
    """The trial's torch device: `cuda:<LOCAL_RANK>` (each data-parallel rank its own GPU
    among the visible ones, CUDA_VISIBLE_DEVICES from the launcher), else `cpu`."""
    if not machine.cuda:
        return "cpu"
    if machine.local_rank >= machine.device_count:
        raise ConfigError(f"LOCAL_RANK={machine.local_rank} but only {machine.device_count} "
                          "GPU(s) are visible: launcher.nproc_per_node must not exceed the "
                          "GPUs given to the trial")
    return f"cuda:{machine.local_rank}"


def device_map(machine: Machine, fsdp: bool = False) -> dict | None:
    """`from_pretrained(device_map=...)` for this process: None under FSDP (loaded on CPU,
    then sharded and placed by accelerate), `{"": <local rank>}` on a GPU (an int:
    cuda:N, see the module docstring), `{"": "cpu"}` on CPU. The same for a full, LoRA or
    4/8-bit model: a bitsandbytes model must be loaded on the rank's GPU, the others are
    simply loaded there instead of on CPU then moved."""
    if fsdp:
        return None
    name = device_name(machine)
    return {"": machine.local_rank} if name.startswith("cuda") else {"": "cpu"}


def resolve_dtype(name: str, machine: Machine) -> str:
    """`model.dtype` as loaded: `auto` is bfloat16 on a GPU that supports it
    (torch.cuda.is_bf16_supported: Ampere and newer), float16 on older GPUs (V100, T4) and
    float32 on CPU (half precision is slow or unsupported there); other names unchanged."""
    if name != "auto":
        return name
    if not machine.cuda:
        return "float32"
    return "bfloat16" if machine.bf16 else "float16"
