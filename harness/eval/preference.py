"""Preference metrics of a policy: pref_accuracy (log-prob of chosen vs rejected), reward
scores of its greedy answers, and the win rate against a reference policy."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from harness.data.preference import chat_text, prompt_text, reward_text, text_of
from harness.eval.metrics import generate
from harness.progress import LogTqdm


@torch.inference_mode()
def completion_logprob(model, tokenizer, prompt: str, answers: list[str]) -> list[float]:
    """Summed log-probability of each answer after the chat-rendered prompt."""
    device = next(model.parameters()).device
    n_prompt = len(tokenizer(chat_text(tokenizer, prompt, None),
                             add_special_tokens=False).input_ids)
    out = []
    for answer in answers:
        ids = tokenizer(chat_text(tokenizer, prompt, answer), add_special_tokens=False,
                        return_tensors="pt").input_ids.to(device)
        # prompt tuning (peft) prepends virtual-token positions: keep the inputs' own
        logits = model(input_ids=ids).logits[0, -ids.shape[1]:-1].float()
        logp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
        out.append(float(logp[n_prompt - 1:].sum()))
    return out


def pref_accuracy(model, tokenizer, rows: list[dict]) -> float:
    """Share of held-out pairs whose chosen answer has a higher log-prob than the rejected."""
    was_training = model.training
    model.eval()
    wins = 0
    for row in LogTqdm(rows, desc="preference pairs", unit="pair"):
        chosen, rejected = completion_logprob(model, tokenizer, prompt_text(row),
                                              [text_of(row["chosen"]), text_of(row["rejected"])])
        wins += chosen > rejected
    model.train(was_training)
    return wins / max(1, len(rows))


@torch.inference_mode()
def reward_scores(reward_model, tokenizer, prompts: list[str], answers: list[str],
                  batch_size: int = 16, max_length: int | None = None) -> list[float]:
    """Reward-model score of each (prompt, answer) rendered as a chat, truncated at
    `max_length` tokens (the reward block's max_length, as it was trained; None: not
    truncated)."""
    reward_model.eval()
    device = next(reward_model.parameters()).device
    texts = [reward_text(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    scores: list[float] = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], add_special_tokens=False, padding=True,
                            truncation=max_length is not None, max_length=max_length,
                            return_tensors="pt").to(device)
            scores += reward_model(**enc).logits[:, 0].float().tolist()
    finally:
        tokenizer.padding_side = side
    return scores


def generations(model, tokenizer, prompts: list[str], metrics_cfg: DictConfig) -> list[str]:
    """Greedy answers to held-out prompts (harness.eval.metrics.generate)."""
    return generate(model, tokenizer, prompts, max_new_tokens=int(metrics_cfg.max_new_tokens),
                    batch_size=int(metrics_cfg.batch_size), progress=True,
                    desc="preference generations")


def policy_eval(model, tokenizer, rows: list[dict], prompts: list[str], reward,
                metrics_cfg: DictConfig, max_length: int | None = None) -> dict:
    """pref_accuracy, generations, their reward scores and reward_mean for one policy.
    `reward`: (reward model, its tokenizer), or None for no scores; `max_length`: the reward
    model's truncation length (reward_scores)."""
    outs = generations(model, tokenizer, prompts, metrics_cfg)
    scores = reward_scores(reward[0], reward[1], prompts, outs,
                           max_length=max_length) if reward else []
    return {"pref_accuracy": pref_accuracy(model, tokenizer, rows), "generations": outs,
            "scores": scores, "reward_mean": sum(scores) / len(scores) if scores else None}


def win_rate(scores: list[float], reference: list[float]) -> float:
    """Share of prompts where the trial's answer out-scores the reference's (ties count half)."""
    pairs = list(zip(scores, reference, strict=True))
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / max(1, len(pairs))
