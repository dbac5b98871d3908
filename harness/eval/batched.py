"""Greedy generation of many prompts at once, token for token what one prompt at a time gives.

Prompts are sorted by token length (similar lengths share a batch: little padding), left-padded
in batches of `batch_size`, generated greedily and handed back in the caller's order. Each
row's new tokens are cut after its first eos (kept), which is what a one-prompt `generate()`
returns: a finished row's padding never reaches the caller. `greedy_dialogues` runs
multi-turn conversations this way, one turn of every conversation per pass (MT-Bench's greedy
questions, harness.eval.mt_bench).

Why the answers are the same: with left padding, `generate()` takes each row's position ids
from the attention mask (cumsum - 1), so every real token has the position it has alone, and
padded positions get exactly zero attention weight (masked to the dtype's minimum before the
softmax, whose exp underflows to 0). What can differ is the last bit of float sums (matrix
kernels and reduction lengths change with the batch's shape), so a greedy choice can flip only
where two logits tie to within rounding. tests/test_battery.py checks equality on a tiny
random model, benchmarks/battery.py on the embedded model; `batch_size=1` is the
one-at-a-time path exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from harness.eval.metrics import input_device, left_padding


def _cut(tokens: list[int], eos_ids: set[int]) -> list[int]:
    """Tokens up to and including the first eos (what a lone generate() stops at)."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[: i + 1]
    return tokens


@torch.inference_mode()
def greedy_tokens(model, tokenizer, texts: Sequence[str], add_special: bool, *,
                  max_new_tokens: int, batch_size: int, eos_ids: list[int]) -> list[list[int]]:
    """New token ids of each text's greedy continuation, in the order of `texts`."""
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=add_special,
                                             verbose=False)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    out: list[list[int]] = [[] for _ in texts]
    with left_padding(tokenizer):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in idx], add_special_tokens=add_special,
                            padding=True, return_tensors="pt").to(input_device(model))
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=eos_ids or None)
            width = enc["input_ids"].shape[1]
            for i, row in zip(idx, gen[:, width:].tolist(), strict=True):
                out[i] = _cut(row, set(eos_ids))
    return out


def greedy_dialogues(model, tokenizer, dialogues: Sequence[Sequence[str]],
                     start: Callable[[], object],
                     finish: Callable[[list[int], object], str], *, max_new_tokens: int,
                     batch_size: int, eos_ids: list[int]) -> list[list[str]]:
    """Every dialogue's answers, turn by turn, each turn of all dialogues batched.

    `start()` makes a conversation with `prompt(user) -> (text, add_special)` and
    `reply(answer)`; `finish(new_tokens, conversation)` makes the answer text."""
    convs = [start() for _ in dialogues]
    answers: list[list[str]] = [[] for _ in dialogues]
    for turn in range(max((len(d) for d in dialogues), default=0)):
        active = [i for i, d in enumerate(dialogues) if turn < len(d)]
        prompts = {i: convs[i].prompt(dialogues[i][turn]) for i in active}
        for flag in sorted({add for _, add in prompts.values()}):
            group = [i for i in active if prompts[i][1] == flag]
            tokens = greedy_tokens(model, tokenizer, [prompts[i][0] for i in group], flag,
                                   max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   eos_ids=eos_ids)
            for i, new in zip(group, tokens, strict=True):
                text = finish(new, convs[i])
                convs[i].reply(text)
                answers[i].append(text)
    return answers
