"""Data formats -> the harness's training rows (`data.<set>.format`, or detected).

SFT rows become {"messages": [{"role", "content"}, ...]} (the loss is on the last assistant
turn); preference rows become {"prompt": turns, "chosen": turns, "rejected": turns} (plus
score_chosen / score_rejected when the source has scores). Formats (registry.DATA_FORMATS):

    messages           {"messages": [{"role": "user", "content": ...}, ...]}  (OpenAI / ChatML)
    prompt_completion  {"prompt": ..., "completion": ...}
    alpaca             {"instruction": ..., "input": ..., "output": ...}
    sharegpt           {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}
    pairs              {"prompt": ..., "chosen": ..., "rejected": ...} (strings or chats)
    hh_rlhf            {"chosen": "\n\nHuman: ...\n\nAssistant: ...", "rejected": ...}
    ultrafeedback      {"instruction": ..., "completions": [{"response": ..., "overall_score"}]}

Every field name can be renamed with `data.<set>.fields.<name>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from harness.errors import DataError
from harness.registry import DATA_FORMATS

SFT, PREFERENCE = "sft", "preference"
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
                  "system": "system"}
# Default field names per format (data.<set>.fields overrides any of them).
FIELDS: dict[str, dict[str, str]] = {
    "messages": {"messages": "messages", "role": "role", "content": "content"},
    "prompt_completion": {"prompt": "prompt", "completion": "completion"},
    "alpaca": {"instruction": "instruction", "input": "input", "output": "output",
               "system": "system"},
    "sharegpt": {"conversations": "conversations", "from": "from", "value": "value"},
    "pairs": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected",
              "score_chosen": "score_chosen", "score_rejected": "score_rejected"},
    "hh_rlhf": {"chosen": "chosen", "rejected": "rejected"},
    "ultrafeedback": {"prompt": "instruction", "completions": "completions",
                      "response": "response", "score": "overall_score"},
}
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


class RowError(ValueError):
    """A row that does not fit its format; the caller adds where it is."""


def kind_of(name: str) -> str:
    return PREFERENCE if name in ("pairs", "hh_rlhf", "ultrafeedback") else SFT


def formats_of(kind: str) -> list[str]:
    return [n for n in DATA_FORMATS.names() if kind_of(n) == kind]


def fields_for(name: str, overrides: dict | None) -> dict[str, str]:
    known = FIELDS[name]
    return {**known, **{k: str(v) for k, v in (overrides or {}).items() if k in known}}


def detect(where: str, row: dict, kind: str, overrides: dict | None, key: str) -> str:
    """The one format of `kind` whose fields this row has; DataError when none or several."""
    found = [n for n in formats_of(kind) if _matches(n, row, fields_for(n, overrides))]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{where}: no {kind} format fits the fields {sorted(row)}; set "
                        f"{key}.format to one of {formats_of(kind)} (and {key}.fields)")
    raise DataError(f"{where}: ambiguous format: the row fits {found}; set {key}.format")


def _matches(name: str, row: dict, f: dict[str, str]) -> bool:
    has = {k: row.get(v) not in (None, "", []) for k, v in f.items()}
    if name == "pairs":   # prompt + chosen + rejected, or whole chats without a prompt field
        return has["chosen"] and has["rejected"] and (
            has["prompt"] or isinstance(row.get(f["chosen"]), list))
    if name == "hh_rlhf":
        return has["chosen"] and has["rejected"] and not row.get("prompt") and \
            isinstance(row.get(f["chosen"]), str) and "Human:" in row[f["chosen"]]
    required = {"messages": ["messages"], "prompt_completion": ["prompt", "completion"],
                "alpaca": ["instruction", "output"], "sharegpt": ["conversations"],
                "ultrafeedback": ["completions"]}[name]
    return all(has[k] for k in required)


def convert(name: str, row: dict, overrides: dict | None) -> dict:
    """One row of format `name` as a training row (RowError when it does not fit)."""
    fn: Callable[[dict, dict], dict] = DATA_FORMATS.load(name)
    return fn(row, fields_for(name, overrides))


def _get(row: dict, f: dict, key: str, required: bool = True):
    value = row.get(f[key])
    if required and value in (None, "", []):
        raise RowError(f"missing field '{f[key]}'")
    return value


def _text(value) -> str:
    if isinstance(value, (list, dict)):
        raise RowError(f"expected text, got {type(value).__name__}")
    return "" if value is None else str(value)


def _turns(value, role: str) -> list[dict]:
    """A string as one turn of `role`, or a list of {role, content} turns checked."""
    if not isinstance(value, list):
        return [{"role": role, "content": _text(value)}]
    return [_turn(t, "role", "content") for t in value]


def _turn(turn, role_key: str, content_key: str, roles: dict | None = None) -> dict:
    if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
        raise RowError(f"a turn without '{role_key}' and '{content_key}'")
    role = str(turn[role_key])
    role = roles.get(role.lower(), role) if roles else role
    if role not in ROLES:
        raise RowError(f"unknown role {turn[role_key]!r}")
    return {"role": role, "content": _text(turn[content_key])}


def _chat(turns: list[dict]) -> dict:
    """A checked chat; empty system turns (common in ShareGPT exports) are left out."""
    turns = [t for t in turns if t["role"] != "system" or t["content"].strip()]
    if not any(t["role"] == "assistant" for t in turns[1:]):
        raise RowError("no assistant turn after the first turn")
    return {"messages": turns}


def messages(row: dict, f: dict) -> dict:
    value = _get(row, f, "messages")
    if not isinstance(value, list):
        raise RowError(f"'{f['messages']}' is not a list of turns")
    return _chat([_turn(t, f["role"], f["content"]) for t in value])


def prompt_completion(row: dict, f: dict) -> dict:
    prompt = _turns(_get(row, f, "prompt"), "user")
    return _chat(prompt + _turns(_get(row, f, "completion"), "assistant"))


def alpaca(row: dict, f: dict) -> dict:
    """instruction + (blank line + input, when given) -> user; output -> assistant."""
    instruction, extra = _text(_get(row, f, "instruction")), _text(row.get(f["input"]))
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    system = _text(row.get(f["system"]))
    turns = [{"role": "system", "content": system}] if system.strip() else []
    return _chat(turns + [{"role": "user", "content": user},
                          {"role": "assistant", "content": _text(_get(row, f, "output"))}])


def sharegpt(row: dict, f: dict) -> dict:
    value = _get(row, f, "conversations")
    if not isinstance(value, list):
        raise RowError(f"'{f['conversations']}' is not a list of turns")
    return _chat([_turn(t, f["from"], f["value"], SHAREGPT_ROLES) for t in value])


def _pair(prompt, chosen, rejected) -> dict:
    """Chat rows without a prompt (chosen/rejected = whole chats): shared prefix = prompt."""
    if prompt in (None, "", []) and isinstance(chosen, list) and isinstance(rejected, list):
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    out = {"prompt": _turns(prompt, "user"), "chosen": _turns(chosen, "assistant"),
           "rejected": _turns(rejected, "assistant")}
    if not out["prompt"] or out["prompt"][-1]["role"] == "assistant":
        raise RowError("the prompt must end with a user turn")
    return out


def pairs(row: dict, f: dict) -> dict:
    out = _pair(row.get(f["prompt"]), _get(row, f, "chosen"), _get(row, f, "rejected"))
    scores = (row.get(f["score_chosen"]), row.get(f["score_rejected"]))
    if all(isinstance(s, (int, float)) for s in scores):
        out["score_chosen"], out["score_rejected"] = float(scores[0]), float(scores[1])
    return out


def _hh_turns(text: str) -> list[dict]:
    parts = HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise RowError("not an HH-RLHF transcript ('\\n\\nHuman: ... \\n\\nAssistant: ...')")
    role = {"Human": "user", "Assistant": "assistant"}
    return [{"role": role[parts[i]], "content": parts[i + 1].strip()}
            for i in range(1, len(parts) - 1, 2)]


def hh_rlhf(row: dict, f: dict) -> dict:
    """Two full transcripts sharing a prefix: the prefix is the prompt."""
    chosen = _hh_turns(_text(_get(row, f, "chosen")))
    rejected = _hh_turns(_text(_get(row, f, "rejected")))
    return _pair(None, chosen, rejected)


def ultrafeedback(row: dict, f: dict) -> dict:
    """Scored completions -> the best one vs the lowest-scored one (deterministic; the
    margin filter `preference.min_margin` then drops pairs too close to call)."""
    completions = _get(row, f, "completions")
    if not isinstance(completions, list) or len(completions) < 2:
        raise RowError(f"'{f['completions']}' needs at least two scored completions")
    scored = []
    for c in completions:
        score = c.get(f["score"]) if isinstance(c, dict) else None
        if not isinstance(score, (int, float)) or c.get(f["response"]) in (None, ""):
            raise RowError(f"a completion without '{f['response']}' and a numeric '{f['score']}'")
        scored.append((float(score), _text(c[f["response"]])))
    best = max(scored, key=lambda s: s[0])
    worst = min((s for s in scored if s is not best), key=lambda s: s[0])
    out = _pair(_text(_get(row, f, "prompt")), best[1], worst[1])
    out["score_chosen"], out["score_rejected"] = best[0], worst[0]
    return out
