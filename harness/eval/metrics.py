"""Evaluation metrics: sliding-window perplexity, batched greedy generation and ROUGE.

Works with plain ``transformers`` causal LMs, ``peft.PeftModel`` wrappers and bitsandbytes-quantized
models: inputs are placed on the device of the input embeddings, which is where the first layer of
a model dispatched with ``device_map`` lives.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from harness.progress import LogTqdm

IGNORE_INDEX = -100

# A window is (token ids, n_context): the first n_context ids are context only (label -100).
Window = tuple[list[int], int]


# ----------------------------------------------------------------------------- shared helpers


def input_device(model) -> torch.device:
    """Device that input ids must be on: the input embeddings' device, else ``model.device``."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return model.device


@contextmanager
def _eval_mode(model) -> Iterator[None]:
    """Put the model in eval mode and restore its previous training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _pad_id(tokenizer) -> int:
    """Token id used for padding: pad, else eos, else 0 (padded positions are always masked)."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def _batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most batch_size items."""
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def _token_batches(windows: Sequence, batch_size: int,
                   max_tokens: int | None) -> list[Sequence]:
    """Consecutive batches of at most batch_size windows and, when max_tokens is set, at most
    max_tokens padded tokens (longest window x windows; always at least one window).
    Windows come longest first, so a batch's first window sets its width."""
    if max_tokens is None:
        return list(_batches(windows, batch_size))
    out, start = [], 0
    while start < len(windows):
        width = max(1, len(windows[start][0]))
        n = max(1, min(batch_size, max_tokens // width))
        out.append(windows[start : start + n])
        start += n
    return out


def _check_window_args(max_length: int, stride: int) -> None:
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in [1, max_length={max_length}], got {stride}")


def _tokenize_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids per text, special tokens as the tokenizer adds them; texts < 2 tokens dropped."""
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]
    return [seq for seq in ids if len(seq) >= 2]


def _result(nll_sum: float, n_tokens: int) -> dict[str, float]:
    if n_tokens == 0:
        raise ValueError("no text has at least 2 tokens: nothing to score")
    mean_nll = nll_sum / n_tokens
    return {"perplexity": math.exp(mean_nll), "nll": mean_nll, "tokens": float(n_tokens)}


# ----------------------------------------------------------------------------- perplexity


def _text_windows(ids: list[int], max_length: int, stride: int) -> list[Window]:
    """Sliding windows over one text so that every token but the first is scored exactly once.

    Each window starts ``stride`` after the previous one, but never later than the previous
    window's last token: the first newly scored token needs at least one token of context, so with
    stride == max_length consecutive windows share exactly one (context-only) token.
    """
    windows: list[Window] = []
    begin = prev_end = 0
    while prev_end < len(ids):
        end = min(begin + max_length, len(ids))
        windows.append((ids[begin:end], prev_end - begin))
        prev_end = end
        begin = min(begin + stride, end - 1)
    return windows


def _collate(windows: Sequence[Window], pad_id: int, device: torch.device):
    """Right-pad windows into (input_ids, attention_mask, labels) tensors."""
    width = max(len(ids) for ids, _ in windows)
    input_ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(windows), width), dtype=torch.long)
    labels = torch.full((len(windows), width), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, n_context) in enumerate(windows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, n_context : len(ids)] = torch.tensor(ids[n_context:])
    return input_ids.to(device), attention_mask.to(device), labels.to(device)


def _nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL (float32) over positions whose label is not -100, and their count."""
    shift_labels = labels[:, 1:]
    scored = shift_labels != IGNORE_INDEX
    picked = logits[:, :-1][scored].float()  # only scored rows are upcast: bounded memory
    nll = F.cross_entropy(picked, shift_labels[scored], reduction="sum")
    return nll, int(scored.sum())


def _all_windows(tokenizer, texts: list[str], max_length: int, stride: int) -> list[Window]:
    """Windows of every text, longest first so that batches need little padding."""
    windows = [
        window
        for ids in _tokenize_texts(tokenizer, texts)
        for window in _text_windows(ids, max_length, stride)
    ]
    return sorted(windows, key=lambda w: len(w[0]), reverse=True)


def _batch_nll(model, batch: Sequence[Window], pad_id: int) -> tuple[torch.Tensor, int]:
    """One forward over a padded batch of windows -> (summed NLL, scored token count)."""
    input_ids, attention_mask, labels = _collate(batch, pad_id, input_device(model))
    if len({len(ids) for ids, _ in batch}) == 1:   # no padding: no mask, so attention takes
        attention_mask = None                       # its causal fast path (SDPA is_causal)
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    # prompt tuning (peft) prepends virtual-token positions to the logits: keep the inputs' own
    logits = out.logits[:, -labels.shape[1]:]
    return _nll_sum(logits, labels.to(logits.device))


@torch.inference_mode()
def perplexity(
    model,
    tokenizer,
    texts: list[str],
    *,
    max_length: int,
    stride: int,
    batch_size: int,
    max_batch_tokens: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Sliding-window perplexity (HF 'perplexity of fixed-length models') over each text.

    Texts are tokenized separately (bos added if the tokenizer does so) and windows never cross
    texts; each token except a text's first is scored exactly once (context-only tokens get label
    -100, padding is never counted). Windows of all texts are batched longest first, batch_size
    per forward (and at most `max_batch_tokens` padded tokens when set: short windows share a
    forward, long ones go alone), right-padded with an attention mask. Returns {"perplexity",
    "nll" (mean), "tokens" (scored)}.
    """
    _check_window_args(max_length, stride)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    windows = _all_windows(tokenizer, texts, max_length, stride)
    pad_id, batches = _pad_id(tokenizer), _token_batches(windows, batch_size, max_batch_tokens)
    total, n_tokens = torch.zeros((), dtype=torch.float64), 0
    with _eval_mode(model):
        for batch in LogTqdm(batches, total=len(batches), desc="perplexity", unit="batch",
                             disable=not progress):
            nll, count = _batch_nll(model, batch, pad_id)
            total = total.to(nll.device) + nll.double()  # float64 sum over all batches
            n_tokens += count
    return _result(total.item(), n_tokens)


@torch.inference_mode()
def perplexity_reference(
    model, tokenizer, texts: list[str], *, max_length: int, stride: int
) -> dict[str, float]:
    """The same quantity, one window at a time with no batching or padding (the HF doc loop).

    Uses the model's own shifted loss (``labels=``), so it is an independent check of the batched
    path's masking and loss code.
    """
    _check_window_args(max_length, stride)
    device = input_device(model)
    nll_sum, n_tokens = 0.0, 0
    with _eval_mode(model):
        for ids in _tokenize_texts(tokenizer, texts):
            seq = torch.tensor([ids], device=device)
            begin_loc = prev_end_loc = 0
            while prev_end_loc < seq.size(1):
                end_loc = min(begin_loc + max_length, seq.size(1))
                input_ids = seq[:, begin_loc:end_loc]
                target_ids = input_ids.clone()
                target_ids[:, : prev_end_loc - begin_loc] = IGNORE_INDEX
                n_valid = int((target_ids[:, 1:] != IGNORE_INDEX).sum())
                loss = model(input_ids=input_ids, labels=target_ids, use_cache=False).loss
                nll_sum += loss.item() * n_valid  # loss is the mean over the window's n_valid
                n_tokens += n_valid
                prev_end_loc = end_loc
                begin_loc = min(begin_loc + stride, end_loc - 1)
    return _result(nll_sum, n_tokens)


# ----------------------------------------------------------------------------- generation


def _render_prompts(tokenizer, prompts: list[str]) -> tuple[list[str], bool]:
    """Chat-render each prompt as one user turn; returns (texts, add_special_tokens)."""
    if getattr(tokenizer, "chat_template", None) is None:
        return list(prompts), True
    rendered = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    return rendered, False  # the template already holds bos etc.: don't add a second one


@contextmanager
def left_padding(tokenizer) -> Iterator[None]:
    """Temporarily pad on the left (with eos if there is no pad token); restore afterwards."""
    side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"
    if pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        yield
    finally:
        tokenizer.padding_side = side
        if pad_token is None:
            tokenizer.pad_token = None


def _eos_ids(model, tokenizer) -> set[int]:
    """Ids that end a generation: the model's generation config, else the tokenizer's eos."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, list | tuple) else {eos} - {None}


def _until_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    """Tokens before the first eos: drops the padding that finished rows get in a batch."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return tokens[:i]
    return tokens


def _generate_batch(
    model, tokenizer, texts: list[str], add_special_tokens: bool, max_new_tokens: int
) -> list[str]:
    """Greedy-generate one left-padded batch; decode only the new tokens."""
    enc = tokenizer(
        texts, add_special_tokens=add_special_tokens, padding=True, return_tensors="pt"
    ).to(input_device(model))
    out = model.generate(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    eos_ids = _eos_ids(model, tokenizer)
    new_tokens = [_until_eos(row, eos_ids) for row in out[:, enc["input_ids"].shape[1] :].tolist()]
    return [s.strip() for s in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Greedy generations (new tokens only, special tokens skipped, stripped), one per prompt.
    `progress`: log lines and progress-file updates named `desc` (harness.progress).

    Each prompt is rendered as a single user turn with the chat template and a generation prompt
    (plain text if the tokenizer has none) and batched with left padding; the tokenizer's
    padding side and pad token are restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts, add_special = _render_prompts(tokenizer, prompts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together
    outputs: list[str] = [""] * len(texts)
    n_batches = math.ceil(len(order) / batch_size)
    with _eval_mode(model), left_padding(tokenizer):
        batches = _batches(order, batch_size)
        for idx in LogTqdm(batches, total=n_batches, desc=desc, unit="batch",
                           disable=not progress):
            batch = [texts[i] for i in idx]
            generated = _generate_batch(model, tokenizer, batch, add_special, max_new_tokens)
            for i, text in zip(idx, generated, strict=True):
                outputs[i] = text
    return outputs


# ----------------------------------------------------------------------------- ROUGE


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 with Porter stemming (rouge_score) -> {"rouge1","rouge2","rougeL"}."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("rouge() needs at least one prediction")
    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    totals = dict.fromkeys(keys, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)  # score(target, prediction)
        for key in keys:
            totals[key] += scores[key].fmeasure
    return {key: total / len(predictions) for key, total in totals.items()}
