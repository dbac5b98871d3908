"""Load the data sets a trial needs, from local JSONL files, local `datasets` folders or the hub.

Every data set in `conf/data/` is a spec: `path` (a .jsonl/.json file, a local directory, or a
hub id), optional `name` (hub subset), `split` and `revision`, plus the field names to read.
Local JSONL is checked line by line first so a bad row is reported as `file:line: problem`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad or missing data; the message is one line naming the file (and line)."""


def is_local_file(path: str) -> bool:
    return str(path).endswith((".jsonl", ".json"))


def read_jsonl(path: str | Path, required: list[str]) -> list[dict]:
    """Rows of a JSONL file; a malformed line or a missing/empty field raises DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: malformed JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object")
            for key in required:
                if row.get(key) in (None, "", []):
                    raise DataError(f"{path}:{number}: missing or empty field '{key}'")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def load_rows(spec: DictConfig, required: list[str]) -> list[dict]:
    """Rows of one data set spec, whatever its source."""
    path = str(spec.path)
    if is_local_file(path):
        return read_jsonl(path, required)
    if Path(path).is_dir():
        return _from_datasets(path, spec, required, local=True)
    if path.startswith(("/", "./", "../")):
        raise DataError(f"{path}: data path not found")
    return _from_datasets(path, spec, required, local=False)


def _from_datasets(path: str, spec: DictConfig, required: list[str], local: bool) -> list[dict]:
    import datasets

    try:
        saved = ("dataset_info.json", "dataset_dict.json")  # Dataset / DatasetDict.save_to_disk
        if local and any(Path(path, name).exists() for name in saved):
            ds = datasets.load_from_disk(path)
            ds = ds[spec.get("split", "train")] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(path, spec.get("name"), split=spec.get("split", "train"),
                                       revision=spec.get("revision"))
    except Exception as exc:  # datasets raises many types; name the data set in one line
        offline = " (HF_HUB_OFFLINE is set: only cached data sets load)" \
            if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot load data set{offline}: {first}") from None
    missing = [key for key in required if key not in ds.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; has {ds.column_names}")
    return list(ds)


def limit(rows: list, n: int | None) -> list:
    return rows if n is None else rows[: int(n)]


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


def check_data(data: DictConfig) -> None:
    """Open every local data file of a config now, so bad input fails before any training."""
    field = data.train.get("messages_field", "messages")
    checks = [(data.train, [field]), (data.perplexity, []),
              (data.rouge, [data.rouge.prompt_field, data.rouge.reference_field])]
    if data.get("eval_loss") and data.eval_loss.get("path"):
        checks.append((data.eval_loss, [data.eval_loss.get("messages_field", "messages")]))
    from harness.preference import check_preference_data

    check_preference_data(data)   # data.preference (if any): every row, file:line on error
    for spec, required in checks:
        if spec.get("path") and is_local_file(str(spec.path)):
            read_jsonl(spec.path, required)
        elif spec.get("path") and str(spec.path).startswith("/") \
                and not Path(str(spec.path)).exists():
            raise DataError(f"{spec.path}: data path not found")
