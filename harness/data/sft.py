"""SFT rows, perplexity texts and ROUGE pairs of a trial's data specs (`conf/data/`)."""

from __future__ import annotations

from omegaconf import DictConfig

from harness.data.jsonl import limit, load_rows
from harness.errors import DataError


def sft_rows(spec: DictConfig, max_samples: int | None = None) -> list[dict]:
    """SFT rows in trl's conversational prompt/completion form (loss on the completion only).

    A `messages` row becomes prompt = every turn before the last assistant turn, completion =
    that last assistant turn. Rows already in prompt/completion form pass through.
    """
    field = spec.get("messages_field", "messages")
    if spec.get("prompt_field"):
        rows = load_rows(spec, [spec.prompt_field, spec.completion_field])
        return limit([{"prompt": [{"role": "user", "content": r[spec.prompt_field]}],
                       "completion": [{"role": "assistant", "content": r[spec.completion_field]}]}
                      for r in rows], max_samples)
    rows = load_rows(spec, [field])
    out = []
    for index, row in enumerate(rows, start=1):
        messages = row[field]
        last = _last_assistant(messages)
        if last is None:
            raise DataError(f"{spec.path}:{index}: no assistant turn in '{field}'")
        out.append({"prompt": messages[:last], "completion": [messages[last]]})
    return limit(out, max_samples)


def _last_assistant(messages: list[dict]) -> int | None:
    for index in range(len(messages) - 1, 0, -1):
        if messages[index].get("role") == "assistant":
            return index
    return None


def perplexity_texts(spec: DictConfig, max_texts: int | None = None) -> list[str]:
    """Held-out texts for perplexity (empty ones dropped, as hub corpora have blank lines)."""
    field = spec.get("text_field", "text")
    texts = [str(r[field]) for r in load_rows(spec, [])
             if field in r and str(r[field]).strip()]
    if not texts:
        raise DataError(f"{spec.path}: no non-empty '{field}' texts")
    return limit(texts, max_texts)


def rouge_pairs(spec: DictConfig, max_samples: int | None = None) -> tuple[list[str], list[str]]:
    """(prompts, references) for generation + ROUGE."""
    prompt_field, ref_field = spec.prompt_field, spec.reference_field
    rows = limit(load_rows(spec, [prompt_field, ref_field]), max_samples)
    prefix = spec.get("prompt_prefix") or ""
    return [prefix + str(r[prompt_field]) for r in rows], [str(r[ref_field]) for r in rows]
