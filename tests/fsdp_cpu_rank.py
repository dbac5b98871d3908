"""One torchrun rank of a trial, with accelerate's FSDP gate lifted for CPU (a test helper).

    python -m torch.distributed.run --nproc-per-node=2 tests/fsdp_cpu_rank.py TRIAL_DIR

accelerate 1.15 (`AcceleratorState.__init__`) keeps an FSDP plugin only for multi-GPU runs; on
CPU (DistributedType.MULTI_CPU, gloo) it drops the plugin and the Trainer trains unsharded
replicas. torch's FSDP2 itself runs on CPU with gloo, so this wrapper sets the FSDP type and
plugin that accelerate would set on GPUs, then runs the real trial entry point
(harness.trial.run.main): everything after the gate (the Trainer's FSDP wrapping, sharded
checkpoints, resume, the gather on rank 0, save, evaluation) is the code a GPU run takes.
"""

from __future__ import annotations

import os
import sys

import accelerate.state as accelerate_state
import transformers

_original_init = accelerate_state.AcceleratorState.__init__


def _init_with_cpu_fsdp(self, *args, **kwargs):
    # every AcceleratorState() call copies PartialState's MULTI_CPU back into the shared state
    _original_init(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin") or getattr(self, "fsdp_plugin", None)
    if plugin is not None and \
            self.distributed_type == accelerate_state.DistributedType.MULTI_CPU:
        self.distributed_type = accelerate_state.DistributedType.FSDP
        self.fsdp_plugin = plugin


accelerate_state.AcceleratorState.__init__ = _init_with_cpu_fsdp

# HARNESS_TEST_DIE_AFTER_SAVE=N: every rank leaves (exit 143, like a preempted job) once the
# periodic checkpoint of step N is complete on all ranks: a requeue then resumes from it.
_DIE_AT = int(os.environ.get("HARNESS_TEST_DIE_AFTER_SAVE", "0") or 0)
_original_save = transformers.Trainer._save_checkpoint


def _save_then_maybe_die(self, *args, **kwargs):
    _original_save(self, *args, **kwargs)
    if _DIE_AT and self.state.global_step == _DIE_AT:
        import torch.distributed as dist

        dist.barrier()   # every rank's shard and rank 0's trainer_state.json are written
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(143)


transformers.Trainer._save_checkpoint = _save_then_maybe_die

if __name__ == "__main__":
    from harness.trial.run import main

    sys.exit(main())
