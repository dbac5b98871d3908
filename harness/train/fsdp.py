"""FSDP for a full fine-tune over a data-parallel trial's processes (`method.train.fsdp`).

Through transformers' TrainingArguments and accelerate, not hand-written: `fsdp=True` with an
`fsdp_config` of FSDP2 (torch `fully_shard`), each decoder layer wrapped (the model's
`_no_split_modules`), FSDP's own activation checkpointing for `train.gradient_checkpointing`
(transformers refuses both kinds at once), and SHARDED_STATE_DICT checkpoints (one
torch.distributed.checkpoint file per rank under checkpoint-N/pytorch_model_fsdp_0, optimizer_0),
which `Trainer.train(resume_from_checkpoint=)` loads back: the requeue path of
harness.train.checkpoints. `fsdp=True` rather than the string "full_shard auto_wrap": the string
form is deprecated since transformers 5.17 (both 5.17 and 5.24 map it onto the same fsdp_config).

What the libraries do without CUDA (read in accelerate 1.15 `state.py`, transformers 5.24
`trainer.py`): accelerate sets DistributedType.FSDP and keeps the FSDP plugin only when the run
is MULTI_GPU (or another accelerator); a gloo run on CPUs stays MULTI_CPU, the plugin is
dropped, and the Trainer (`is_fsdp_enabled`: the state has a plugin) trains unsharded DDP
replicas without a word. `require_sharded` refuses that. torch's FSDP2 itself runs on CPU
with gloo (tests/test_distributed.py runs it through this module by lifting accelerate's gate).

After training, the weights are sharded across ranks and rank 0 goes on alone
(harness.trial.process.leave_data_parallel): `gather_trained` collects the full state dict on
rank 0 (every rank takes part) into an ordinary model, which the trial saves and evaluates.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from harness.config.distributed import FSDP_MODES, fsdp_mode

log = logging.getLogger(__name__)


class FsdpUnavailable(RuntimeError):
    """method.train.fsdp is set, but this run would not be sharded."""


def layer_classes(model) -> list[str]:
    """The classes FSDP wraps one by one: the model's decoder layers (`_no_split_modules`)."""
    names = list(getattr(model, "_no_split_modules", None) or [])
    if not names:
        raise FsdpUnavailable(f"method.train.fsdp: {type(model).__name__} names no decoder "
                              "layer class (_no_split_modules) to wrap")
    return names


def fsdp_arguments(train: DictConfig, model) -> dict:
    """TrainingArguments fields for `train.fsdp` ({} when it is null)."""
    mode = fsdp_mode(train)
    if mode is None:
        return {}
    return {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,                                   # FSDP2 (fully_shard)
            "reshard_after_forward": FSDP_MODES[mode],      # full_shard: True
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": layer_classes(model),
            "activation_checkpointing": bool(train.get("gradient_checkpointing", False)),
            "state_dict_type": "SHARDED_STATE_DICT",        # per-rank checkpoint files
            # every rank loads the whole model into host RAM first (harness.train.placement:
            # no device map under FSDP); rank-0-only loading needs the process group up
            # before from_pretrained, which the trial does not do
            "cpu_ram_efficient_loading": False,
        },
        "gradient_checkpointing": False,   # done by FSDP's activation checkpointing instead
    }


def require_sharded(trainer, train: DictConfig) -> None:
    """FsdpUnavailable when `train.fsdp` is set but accelerate did not enable FSDP."""
    mode = fsdp_mode(train)
    if mode is None or getattr(trainer, "is_fsdp_enabled", False):
        return
    import accelerate

    kind = trainer.accelerator.state.distributed_type
    raise FsdpUnavailable(
        f"method.train.fsdp={mode}: accelerate {accelerate.__version__} did not enable FSDP "
        f"for this run (distributed type {getattr(kind, 'value', kind)}); it shards multi-GPU "
        "runs only, and this one would train unsharded replicas")


def gather_trained(trainer, train: DictConfig):
    """After FSDP training: rank 0's unsharded copy of the trained model (None on the other
    ranks, and when `train.fsdp` is off). Every rank must call it (a collective gather)."""
    if fsdp_mode(train) is None or not getattr(trainer, "is_fsdp_enabled", False):
        return None
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    state = trainer.accelerator.get_state_dict(trainer.model)   # full tensors, on rank 0's CPU
    if dist.get_rank() != 0:
        return None
    if any(type(t).__name__ == "DTensor" for t in state.values()):   # not gathered: a bug
        raise RuntimeError("FSDP gather: accelerate returned sharded tensors, not full ones")
    sharded = trainer.accelerator.unwrap_model(trainer.model)
    # accelerate keeps fp32 master weights under bf16/fp16 mixed precision (fsdp2_prepare_model
    # upcasts them): the saved model gets the dtype it was loaded in (model.dtype) again
    loaded = getattr(sharded.config, "dtype", None)
    dtype = loaded if isinstance(loaded, torch.dtype) else next(iter(state.values())).dtype
    for name, tensor in list(state.items()):   # one tensor at a time: no second full copy
        if tensor.is_floating_point():
            state[name] = tensor.to(dtype)
    with torch.device("meta"):   # no second random init of the weights: they come from `state`
        plain = AutoModelForCausalLM.from_config(sharded.config, dtype=dtype)
    plain.load_state_dict(state, strict=False, assign=True)
    buffers = dict(sharded.named_buffers())   # FSDP shards parameters only: buffers are whole
    for name, buffer in list(plain.named_buffers()):
        if buffer.is_meta and name in buffers:
            owner, _, leaf = name.rpartition(".")
            plain.get_submodule(owner).register_buffer(
                leaf, buffers[name].detach().to("cpu").clone(), persistent=False)
    plain.tie_weights()
    missing = [n for n, t in [*plain.named_parameters(), *plain.named_buffers()] if t.is_meta]
    if missing:
        raise RuntimeError(f"FSDP gather: no weights for {missing[:5]} after training")
    log.info("FSDP: gathered the %d trained tensors on rank 0", len(state))
    return plain.eval()
