"""Preference rows {prompt, chosen, rejected}, checked, and how their text is rendered.

Rows are plain strings (prompt = the user message) or chat form (prompt = list of turns,
chosen/rejected = assistant turn(s), or whole chats that start with the prompt, as in
UltraFeedback-binarized). Every row is checked before training: a bad row raises DataError
`file:line: problem`; nothing is dropped silently.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from harness.data.jsonl import is_local_file, jsonl_lines, limit, load_rows
from harness.errors import DataError

log = logging.getLogger(__name__)

FIELDS = ("prompt", "chosen", "rejected")


def _raw_rows(spec: DictConfig) -> list[tuple[str, dict]]:
    """(where, row) pairs: `file:line` for local JSONL, `path[row N]` for other sources."""
    path = str(spec.path)
    if not is_local_file(path):
        return [(f"{path}[row {i}]", r) for i, r in enumerate(load_rows(spec, []), 1)]
    return list(jsonl_lines(path, bad_json="invalid JSON"))


def text_of(value) -> str:
    """The text of a field: a string, or the joined contents of a list of chat turns."""
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return "" if value is None else str(value)


def _role(turn) -> str | None:
    return turn.get("role") if isinstance(turn, dict) else None


def _as_turns(value, role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": str(value)}]


def _split_prompt(row: dict) -> dict:
    """Chat rows without a prompt field (chosen/rejected = whole chats): shared prefix = prompt."""
    if row.get("prompt") not in (None, "", []) or not isinstance(row.get("chosen"), list):
        return row
    chosen, rejected = row["chosen"], row.get("rejected") or []
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return {**row, "prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}


def check_preference_row(where: str, row: dict) -> dict:
    """One validated row in trl's conversational form; DataError names `where` and the problem."""
    row = _split_prompt(row)
    for key in FIELDS:
        if key not in row or row[key] is None:
            raise DataError(f"{where}: missing field '{key}'")
        if not text_of(row[key]).strip():
            raise DataError(f"{where}: empty '{key}'")
    if text_of(row["chosen"]).strip() == text_of(row["rejected"]).strip():
        raise DataError(f"{where}: 'chosen' is identical to 'rejected'")
    if isinstance(row["prompt"], list) and _role(row["prompt"][-1]) == "assistant":
        raise DataError(f"{where}: prompt ends with an assistant turn")
    return {"prompt": _as_turns(row["prompt"], "user"),
            "chosen": _as_turns(row["chosen"], "assistant"),
            "rejected": _as_turns(row["rejected"], "assistant")}


def preference_rows(spec: DictConfig, max_samples: int | None = None) -> list[dict]:
    """Validated conversational preference rows of a spec (every row checked, then capped)."""
    rows = [check_preference_row(where, row) for where, row in _raw_rows(spec)]
    kept = limit(rows, max_samples)
    if len(kept) < len(rows):
        log.info("%s: using %d of %d preference pairs (cap %s)", spec.path, len(kept),
                 len(rows), max_samples)
    return kept


def check_preference_data(data: DictConfig) -> None:
    """Validate data.preference.train/test now (called before any training)."""
    pref = data.get("preference")
    if not pref:
        return
    for key in ("train", "test"):
        if pref.get(key) and pref[key].get("path"):
            preference_rows(pref[key])


def metric_rows(data: DictConfig) -> tuple[list[dict], list[str]]:
    """(held-out pairs for pref_accuracy, held-out prompts for generation)."""
    pref = data.preference
    m = pref.metrics
    rows = preference_rows(pref.test)
    return limit(rows, m.get("max_pairs")), [prompt_text(r) for r in limit(rows, m.max_prompts)]


def prompt_text(row: dict) -> str:
    """The user text of a conversational row's last prompt turn (what generation is asked)."""
    return str(row["prompt"][-1]["content"])


def chat_text(tokenizer, prompt: str, answer: str | None) -> str:
    """The chat-rendered prompt (with the generation prompt) or prompt + answer."""
    turns = [{"role": "user", "content": prompt}]
    if answer is None:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    turns.append({"role": "assistant", "content": answer})
    return tokenizer.apply_chat_template(turns, tokenize=False)


def reward_text(tokenizer, prompt: str, answer: str) -> str:
    """What the reward model reads: chat-rendered prompt + answer + eos, exactly the tokens a
    PPO rollout holds (query ids, response ids up to and including eos)."""
    return chat_text(tokenizer, prompt, None) + answer + tokenizer.eos_token
