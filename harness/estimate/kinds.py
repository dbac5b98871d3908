"""Per method kind: the models one training step holds at once and its FLOPs.

Each function takes (shape, Trainee) and returns (Parts, FLOPs per optimizer step); rows in
harness.registry.ESTIMATE_KINDS. What each kind holds (trl 1.12, the harness's pipelines):
- sft: the policy.
- dpo: the policy on chosen + rejected concatenated (trl DPOTrainer's concatenated forward:
  2 x batch sequences); the reference is the adapter-disabled policy for LoRA (no memory) or a
  frozen copy for full weights (its no-grad forward runs before the policy's, so only its
  weights add to the peak).
- ppo: policy, reference (copy unless LoRA), value model (from the reward model, trained with
  the policy: weights, gradients, optimizer states, activations, no vocabulary logits; LoRA
  on the reward base when the policy trains LoRA, harness.train.reward.load_value_model) and
  reward model (frozen, 4/8-bit as the reward block says); rollouts hold a KV cache (a
  separate phase, before the update).
- grpo, rloo: policy, reference (copy when beta > 0 and full weights), reward model (frozen);
  rollouts of num_generations completions with a KV cache.
- kto: the policy, the reference as for DPO (plus a no-grad KL pass); orpo: chosen + rejected
  concatenated, no reference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.estimate.hardware import train_flops
from harness.estimate.memory import (
    Parts,
    Setup,
    frozen_bytes,
    kv_cache_bytes,
    lora_params,
    lora_targets,
    train_parts,
)
from harness.estimate.shapes import ModelShape


@dataclass(frozen=True)
class Trainee:
    """The policy's Setup plus the kind-specific numbers a method config gives."""

    setup: Setup
    beta: float = 0.0                 # GRPO KL coefficient (> 0: a reference is held)
    response_tokens: int = 0          # generated tokens per rollout (PPO, GRPO)
    reward_full: bool = True          # the reward model is a full frozen copy
    reward_bits: int | None = None    # the reward (and value) model's quantization bits
    precompute_ref: bool = False      # DPO: reference log-probs computed once, up front


def _flops(shape: ModelShape, setup: Setup, sequences: int) -> float:
    tokens = sequences * setup.seq
    full = setup.peft == "none"
    lora = 0 if full else lora_params(shape, replace(setup, targets=lora_targets(
        setup.targets, shape)))
    attention = 4 * shape.layers * setup.seq * shape.q_dim
    return train_flops(shape.matmul_params(), lora, tokens, full, setup.checkpointing, attention)


def _reference(shape: ModelShape, setup: Setup) -> float:
    """A frozen copy for full weights; nothing for LoRA (the adapter-disabled policy)."""
    return frozen_bytes(shape, setup) if setup.peft == "none" else 0.0


def sft(shape: ModelShape, t: Trainee) -> tuple[Parts, float]:
    return train_parts(shape, t.setup), _flops(shape, t.setup, t.setup.batch)


def dpo(shape: ModelShape, t: Trainee) -> tuple[Parts, float]:
    pairs = replace(t.setup, batch=2 * t.setup.batch)     # chosen + rejected
    parts = train_parts(shape, pairs)
    if not t.precompute_ref:
        parts.extras["reference"] = _reference(shape, t.setup)
    ref_flops = 2 * shape.matmul_params() * pairs.batch * pairs.seq
    return parts, _flops(shape, pairs, pairs.batch) + ref_flops


def kto(shape: ModelShape, t: Trainee) -> tuple[Parts, float]:
    """trl KTOTrainer: the policy on the batch, plus a no-grad pass on mismatched (KL)
    completions; the reference as for DPO."""
    parts = train_parts(shape, t.setup)
    parts.extras["reference"] = _reference(shape, t.setup)
    kl_flops = 2 * 2 * shape.matmul_params() * t.setup.batch * t.setup.seq   # policy + ref
    return parts, _flops(shape, t.setup, t.setup.batch) + kl_flops


def orpo(shape: ModelShape, t: Trainee) -> tuple[Parts, float]:
    """trl ORPOTrainer: chosen + rejected concatenated, no reference model."""
    pairs = replace(t.setup, batch=2 * t.setup.batch)
    return train_parts(shape, pairs), _flops(shape, pairs, pairs.batch)


def ppo(shape: ModelShape, t: Trainee) -> tuple[Parts, float]:
    parts = train_parts(shape, t.setup)
    value_peft = "lora" if t.setup.peft == "lora" else "none"
    value = train_parts(shape, replace(t.setup, peft=value_peft,
                                       bits=t.reward_bits if value_peft == "lora" else None))
    parts.extras["value model"] = (value.weights + value.grads + value.optimizer
                                   + value.activations)
    parts.extras["reference"] = _reference(shape, t.setup)
    parts.extras["reward model"] = frozen_bytes(shape, replace(t.setup, bits=t.reward_bits))
    parts.generation = _rollouts(shape, t)
    gen = 2 * shape.matmul_params() * t.setup.batch * t.response_tokens
    forwards = 3 * 2 * shape.matmul_params() * t.setup.batch * t.setup.seq  # ref, reward, value
    return parts, 2 * _flops(shape, t.setup, t.setup.batch) + gen + forwards


def grpo(shape: ModelShape, t: Trainee) -> tuple[Parts, float]:
    parts = train_parts(shape, t.setup)
    if t.beta > 0:
        parts.extras["reference"] = _reference(shape, t.setup)
    parts.extras["reward model"] = frozen_bytes(shape, replace(t.setup, bits=t.reward_bits))
    parts.generation = _rollouts(shape, t)
    gen = 2 * shape.matmul_params() * t.setup.batch * t.response_tokens
    return parts, _flops(shape, t.setup, t.setup.batch) + gen


def _rollouts(shape: ModelShape, t: Trainee) -> float:
    """Generation: the KV cache of batch x seq tokens and one step's fp32 logits."""
    setup = t.setup
    return kv_cache_bytes(shape, setup, setup.batch, setup.seq) + 4.0 * setup.batch * shape.vocab
