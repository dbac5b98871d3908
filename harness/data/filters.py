"""Row filters of the preparation stage (`data.prepare.filters`), each on/off by config.

Quality heuristics in the manner of Gopher's MassiveText rules (Rae et al. 2021): length
bounds, URL and numeric ratios, duplicate-line and repeated-n-gram fractions; a regex PII
scrub (emails, phone numbers, IPv4 addresses); preference filters (ties, score margin, empty
turns). Each filter is `row text -> reason to drop | None`; the stage counts rows per filter.
Regexes rather than a PII library (presidio, scrubadub) because those need spaCy models from
the hub and this stage must run offline; the patterns are the common ones the guides use.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from omegaconf import DictConfig

URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
PII = {   # kind -> (pattern, replacement)
    "email": (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<EMAIL>"),
    "ip": (re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
           "<IP>"),
    "phone": (re.compile(r"(?<![\w.])(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]?\d{3,4}"
                         r"[ .-]?\d{3,4}(?![\w.])"), "<PHONE>"),
}
WORD = re.compile(r"\S+")


def words(text: str) -> list[str]:
    return WORD.findall(text)


def _length(cfg: DictConfig, counter: Callable[[str], int]) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        n = counter(text)
        if cfg.get("min") is not None and n < int(cfg.min):
            return f"shorter than {cfg.min} {cfg.unit}"
        if cfg.get("max") is not None and n > int(cfg.max):
            return f"longer than {cfg.max} {cfg.unit}"
        return None
    return check


def url_ratio(text: str) -> float:
    tokens = words(text)
    return sum(1 for t in tokens if URL.match(t)) / len(tokens) if tokens else 0.0


def numeric_ratio(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0


def duplicate_line_fraction(text: str) -> float:
    """Fraction of non-blank lines that repeat an earlier line (Gopher: drop above 0.30)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (len(lines) - len(set(lines))) / len(lines) if lines else 0.0


def top_ngram_char_fraction(text: str, n: int = 2) -> float:
    """Characters covered by the most frequent word n-gram over all characters (Gopher: drop
    above 0.20 for 2-grams); 0 when the n-gram occurs once."""
    tokens = words(text.lower())
    grams = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    total = sum(len(t) for t in tokens)
    return (count * sum(len(t) for t in gram)) / total if count > 1 and total else 0.0


def text_filters(cfg: DictConfig, count_tokens: Callable[[str], int] | None) \
        -> list[tuple[str, Callable[[str], str | None]]]:
    """(name, check) for every enabled text filter, in the order they run."""
    out: list[tuple[str, Callable[[str], str | None]]] = []
    length = cfg.length
    if length.enabled:
        unit_count = count_tokens if length.unit == "tokens" and count_tokens else \
            (lambda t: len(words(t)))
        out.append(("length", _length(length, unit_count)))
    ratios = (("url_ratio", url_ratio), ("numeric_ratio", numeric_ratio),
              ("line_repetition", duplicate_line_fraction),
              ("char_repetition", lambda t: top_ngram_char_fraction(t, int(cfg.char_repetition.n))))
    for name, fn in ratios:
        spec = cfg[name]
        if spec.enabled:
            out.append((name, _above(name, fn, float(spec.max), int(spec.get("min_words") or 0))))
    return out


def _above(name: str, fn: Callable[[str], float], limit: float, min_words: int) \
        -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        if min_words and len(words(text)) < min_words:
            return None   # too short for the ratio to mean anything
        value = fn(text)
        return f"{name} {value:.2f} > {limit}" if value > limit else None
    return check


def scrub(text: str, kinds: list[str], counts: Counter) -> str:
    """The text with every PII match of `kinds` replaced; counts[kind] += matches."""
    for kind in [k for k in PII if k in kinds]:   # IPs before phones: 10.0.0.1 is an IP
        pattern, replacement = PII[kind]
        text, n = pattern.subn(replacement, text)
        counts[kind] += n
    return text


def preference_drop(row: dict, cfg: DictConfig, text: Callable[[list], str]) -> str | None:
    """The preference filter that drops this pair (empty_turns, ties, margin) or None."""
    if cfg.empty_turns and any(not text(row[k]).strip() for k in ("prompt", "chosen", "rejected")):
        return "empty_turns"
    if cfg.ties and text(row["chosen"]).strip() == text(row["rejected"]).strip():
        return "ties"
    margin = cfg.get("min_margin")
    if margin is not None and "score_chosen" in row and \
            row["score_chosen"] - row["score_rejected"] < float(margin):
        return "margin"
    return None
