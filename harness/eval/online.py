"""Online-method (PPO, GRPO, RLOO) diagnostics: KL to the reference policy, generation length
and distinct-n diversity of greedy answers to held-out prompts.

A policy that games a small reward model collapses to a few well-scored answers: its reward
rises while distinct-n falls and its KL to the reference grows. The report flags that
(harness.report.sections.hacking) from these figures and the preference metrics.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from harness.data.preference import chat_text
from harness.eval.metrics import generate


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique word n-grams / all word n-grams, over all texts."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts)
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.inference_mode()
def kl_to_reference(policy, reference, tokenizer, prompts: list[str],
                    answers: list[str]) -> float:
    """Mean per-token KL(policy || reference) in nats over the answer tokens, the full
    next-token distributions compared at each position of the policy's own answers."""
    device = next(policy.parameters()).device
    total, count = 0.0, 0
    for prompt, answer in zip(prompts, answers, strict=True):
        n_prompt = len(tokenizer(chat_text(tokenizer, prompt, None),
                                 add_special_tokens=False).input_ids)
        ids = tokenizer(chat_text(tokenizer, prompt, answer), add_special_tokens=False,
                        return_tensors="pt").input_ids.to(device)
        if ids.shape[1] <= n_prompt:
            continue
        logp = torch.log_softmax(policy(input_ids=ids).logits[0, -ids.shape[1]:].float(), -1)
        logq = torch.log_softmax(reference(input_ids=ids).logits[0, -ids.shape[1]:].float(), -1)
        span = slice(n_prompt - 1, ids.shape[1] - 1)   # positions predicting answer tokens
        kl = (logp[span].exp() * (logp[span] - logq[span])).sum(-1)
        total, count = total + float(kl.sum()), count + kl.numel()
    return total / count if count else 0.0


def _length(tokenizer, texts: list[str]) -> float:
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    return sum(lengths) / len(lengths) if lengths else 0.0


def diversity(tokenizer, texts: list[str]) -> dict[str, float]:
    """gen_length (mean tokens), distinct_1 and distinct_2 of a set of generations."""
    return {"gen_length": _length(tokenizer, texts), "distinct_1": distinct_n(texts, 1),
            "distinct_2": distinct_n(texts, 2)}


def online_metrics(policy, reference, tokenizer, prompts: list[str],
                   online_cfg: DictConfig) -> tuple[dict, dict]:
    """(metrics, extra): the policy's kl_to_ref, gen_length, distinct_1/2 on `prompts`, and
    the reference's figures with a few side-by-side samples (for record.extra)."""
    prompts = prompts[: int(online_cfg.max_prompts)]
    kwargs = {"max_new_tokens": int(online_cfg.max_new_tokens),
              "batch_size": int(online_cfg.batch_size)}
    ours = generate(policy, tokenizer, prompts, **kwargs)
    theirs = generate(reference, tokenizer, prompts, **kwargs)
    was_training = policy.training
    policy.eval()
    reference.eval()
    kl = kl_to_reference(policy, reference, tokenizer, prompts, ours)
    policy.train(was_training)
    metrics = {"kl_to_ref": kl, **diversity(tokenizer, ours)}
    extra = {"reference": diversity(tokenizer, theirs),
             "collapse_ratio": float(online_cfg.collapse_ratio),
             "samples": [{"prompt": p, "generation": g, "reference": r}
                         for p, g, r in list(zip(prompts, ours, theirs, strict=True))[:4]]}
    return metrics, extra
