"""An LLM judge behind any OpenAI-compatible endpoint, with a cache of its judgments.

- settings from `eval.judge` (`base_url`, `model`, `api_key_env`, retries, concurrency...);
  the API key is read from the environment variable named by `api_key_env` at call time and is
  never stored in a config, a record, a log line or the cache;
- retries with exponential backoff on connection errors, timeouts, 429 and 5xx answers;
  4xx answers (bad request, authentication) fail at once with a clear message;
- bounded concurrency (a thread pool of `concurrency` workers);
- a circuit breaker: after `max_consecutive_failures` failed requests in a row the endpoint is
  considered down and the remaining requests fail fast (recorded as judge errors, not raised);
- a judgment cache (one small JSON file per key under `cache_dir`, atomic writes, safe for
  concurrent trial processes) keyed by question id, turn, answer hash, judge model and prompt
  name (plus a hash of the full rendered prompt), so a re-run never pays twice;
- FastChat's `[[rating]]` parsing (`Rating: [[5]]`, backup `[5]`); a reply with no rating, or
  one outside 1..10, is unparseable: counted and excluded from scores, like FastChat's -1;
  pairwise replies (`[[A]]`, `[[B]]`, `[[C]]` for a tie) through `parse_pairwise`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from harness.progress import LogTqdm

log = logging.getLogger(__name__)

# FastChat (fastchat/llm_judge/common.py, Apache-2.0): rating patterns and the error marker.
ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
API_ERROR_OUTPUT = "$ERROR$"
NO_RATING = -1
RATING_RANGE = (1.0, 10.0)


class JudgeError(RuntimeError):
    """The judge cannot be used (bad config, refused request); the message says why."""


@dataclass
class JudgeSettings:
    """How to reach the judge; mirrors `eval.judge` (no secret in here, only an env var name)."""

    base_url: str
    model: str
    api_key_env: str | None = None
    max_tokens: int = 2048
    temperature: float = 0.0
    concurrency: int = 4
    max_retries: int = 4
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    timeout_s: float = 120.0
    max_consecutive_failures: int = 3

    @classmethod
    def from_config(cls, judge_cfg, base_url: str, model: str) -> JudgeSettings:
        """Settings from an `eval.judge` config node and the resolved endpoint."""
        get = judge_cfg.get
        return cls(base_url=base_url, model=model, api_key_env=get("api_key_env"),
                   max_tokens=int(get("max_tokens", 2048)),
                   temperature=float(get("temperature", 0.0)),
                   concurrency=max(1, int(get("concurrency", 4))),
                   max_retries=max(0, int(get("max_retries", 4))),
                   backoff_s=float(get("backoff_s", 1.0)),
                   backoff_max_s=float(get("backoff_max_s", 30.0)),
                   timeout_s=float(get("timeout_s", 120.0)),
                   max_consecutive_failures=max(1, int(get("max_consecutive_failures", 3))))


@dataclass
class JudgeRequest:
    """One grading request: the cache key and the two messages FastChat sends."""

    key: str
    system_prompt: str
    user_prompt: str


@dataclass
class JudgeReply:
    """The judge's text and parsed rating (-1 when unparseable or on error)."""

    judgment: str
    score: float
    cached: bool = False
    error: str | None = None

    @property
    def parsed(self) -> bool:
        return self.error is None and self.score != NO_RATING


@dataclass
class JudgeStats:
    """What a client did: HTTP requests sent (retries included), cache hits, failures."""

    requests: int = 0
    cache_hits: int = 0
    errors: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "cache_hits": self.cache_hits,
                "errors": self.errors, "retries": self.retries}


# ------------------------------------------------------------------------------- parsing


def parse_rating(judgment: str) -> float:
    """FastChat's single-answer rating: `[[N]]`, else `[N]`; -1 if absent or outside 1..10."""
    match = ONE_SCORE.search(judgment or "") or ONE_SCORE_BACKUP.search(judgment or "")
    if not match:
        return NO_RATING
    try:
        value = float(ast.literal_eval(match.group(1)))
    except (ValueError, SyntaxError):
        return NO_RATING
    low, high = RATING_RANGE
    return value if low <= value <= high else NO_RATING


def parse_pairwise(judgment: str) -> str:
    """FastChat's pairwise verdict (play_a_match_pair): "A", "B", "tie" ([[C]]) or "error"."""
    text = judgment or ""
    if "[[A]]" in text:
        return "A"
    if "[[B]]" in text:
        return "B"
    if "[[C]]" in text:
        return "tie"
    return "error"


# ------------------------------------------------------------------------------- cache


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(question_id, turn: int, answer_hash: str, judge_model: str, prompt_name: str,
              prompt_hash: str) -> str:
    """Key of one judgment: question, turn, answer, judge model, prompt name, rendered prompt."""
    parts = [str(question_id), str(turn), answer_hash, judge_model, prompt_name, prompt_hash]
    return sha256(json.dumps(parts))


class JudgmentCache:
    """Judgments on disk, one JSON file per key; writes are atomic (rename)."""

    def __init__(self, directory: str | Path | None):
        self.dir = Path(directory) if directory else None

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        if self.dir is None:
            return None
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict) -> None:
        if self.dir is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, path)


# ------------------------------------------------------------------------------- client


def api_key(env_name: str | None) -> str:
    """The key from the named environment variable; a placeholder for key-less local servers."""
    if not env_name:
        return "EMPTY"
    value = os.environ.get(str(env_name), "")
    if not value:
        raise JudgeError(f"eval.judge.api_key_env: environment variable {env_name} is not set")
    return value


def _retryable(exc: BaseException) -> bool:
    """Connection problems, timeouts, 408/409/429 and 5xx are worth another try."""
    import openai

    if isinstance(exc, openai.APIConnectionError | openai.APITimeoutError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class JudgeClient:
    """Sends grading requests to an OpenAI-compatible chat endpoint, through the cache."""

    def __init__(self, settings: JudgeSettings, cache: JudgmentCache,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings, self.cache, self.sleep = settings, cache, sleep
        self.stats = JudgeStats()
        self._failures_in_row = 0
        self._down: str | None = None
        self._lock = threading.Lock()
        self._client = None

    @property
    def down(self) -> str | None:
        """Why the endpoint is considered down (circuit open), or None."""
        return self._down

    def _openai(self):
        if self._client is None:
            from openai import OpenAI

            self._client = OpenAI(base_url=self.settings.base_url,
                                  api_key=api_key(self.settings.api_key_env),
                                  max_retries=0, timeout=self.settings.timeout_s)
        return self._client

    def judge_many(self, requests: list[JudgeRequest]) -> list[JudgeReply]:
        """Replies in request order; cached ones are not sent again, failures never raise."""
        self._openai()  # a missing API key fails here, once, with a clear message
        workers = min(self.settings.concurrency, max(1, len(requests)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(LogTqdm(pool.map(self.judge_one, requests), total=len(requests),
                                desc="mt_bench judging", unit="judgment"))

    def judge_one(self, request: JudgeRequest) -> JudgeReply:
        cached = self.cache.get(request.key)
        if cached is not None:
            self.stats.add("cache_hits")
            return JudgeReply(cached["judgment"], float(cached["score"]), cached=True)
        try:
            text = self._complete(request)
        except Exception as exc:  # noqa: BLE001 - a judge failure is recorded, never raised
            self.stats.add("errors")
            return JudgeReply(API_ERROR_OUTPUT, NO_RATING, error=_short(exc))
        reply = JudgeReply(text, parse_rating(text))
        self.cache.put(request.key, {"judgment": text, "score": reply.score,
                                     "judge": self.settings.model, "tstamp": time.time()})
        return reply

    def _complete(self, request: JudgeRequest) -> str:
        """One chat completion with retries and backoff; raises the last error."""
        attempt = 0
        while True:
            if self._down:
                raise JudgeError(f"judge endpoint down ({self._down}); request not sent")
            self.stats.add("requests")
            try:
                text = self._send(request)
            except Exception as exc:  # noqa: BLE001 - classified below
                self._note_failure(exc)
                if not _retryable(exc) or attempt >= self.settings.max_retries:
                    raise
                self.stats.add("retries")
                self.sleep(self._backoff(attempt))
                attempt += 1
                continue
            with self._lock:
                self._failures_in_row = 0
            return text

    def _send(self, request: JudgeRequest) -> str:
        response = self._openai().chat.completions.create(
            model=self.settings.model,
            messages=[{"role": "system", "content": request.system_prompt},
                      {"role": "user", "content": request.user_prompt}],
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
        )
        choices = getattr(response, "choices", None)
        if not choices:  # garbage that still parsed as a response object
            return ""
        return choices[0].message.content or ""

    def _note_failure(self, exc: BaseException) -> None:
        with self._lock:
            self._failures_in_row += 1
            if self._failures_in_row >= self.settings.max_consecutive_failures:
                self._down = f"{self._failures_in_row} failed requests in a row, last: " \
                             f"{_short(exc)}"

    def _backoff(self, attempt: int) -> float:
        base = min(self.settings.backoff_max_s, self.settings.backoff_s * 2 ** attempt)
        return base * (0.5 + random.random() / 2)
