"""Open every local data file of a config before any training (bad input fails first)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from harness.data.early import check_training_data
from harness.data.jsonl import is_local_file, load_rows, read_jsonl
from harness.errors import DataError


def check_data(data: DictConfig) -> None:
    """Open every local data file of a config now, so bad input fails before any training."""
    checks = [(data.perplexity, []),
              (data.rouge, [data.rouge.prompt_field, data.rouge.reference_field])]
    check_training_data(data)   # train, eval_loss, preference: every row in its format
    check_eval_folders(data)    # perplexity / ROUGE sets given as local folders
    for spec, required in checks:
        if spec.get("path") and is_local_file(str(spec.path)):
            read_jsonl(spec.path, required)
        elif spec.get("path") and str(spec.path).startswith("/") \
                and not Path(str(spec.path)).exists():
            raise DataError(f"{spec.path}: data path not found")


def check_eval_folders(data: DictConfig) -> None:
    """The perplexity and ROUGE sets given as local folders (JSONL files or a `datasets`
    save_to_disk folder): loadable, the configured fields present, at least one row."""
    ppl = data.perplexity
    for spec, required in ((ppl, [ppl.get("text_field", "text")]),
                           (data.rouge, [data.rouge.prompt_field, data.rouge.reference_field])):
        path = str(spec.get("path") or "")
        if not path or is_local_file(path) or not Path(path).is_dir():
            continue
        if not any(p.is_file() for p in Path(path).rglob("*")):
            raise DataError(f"{path}: empty data folder")
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()   # the one line of a bad folder stays one line
        if not load_rows(spec, [str(f) for f in required]):
            raise DataError(f"{path}: no rows")


def check_model_files(model: DictConfig) -> None:
    """A local model folder holds a readable config.json and a tokenizer that loads (checked
    with the `tokenizers` library, without transformers), before anything is written."""
    if model.get("source") not in ("local", "embedded"):
        return
    folder = Path(str(model.path))
    if not folder.is_dir():
        raise DataError(f"model.path: no model directory at {folder}")
    config = folder / "config.json"
    if not config.is_file():
        raise DataError(f"model.path: {folder} has no config.json (not a saved model folder)")
    try:
        if "model_type" not in json.loads(config.read_text()):
            raise DataError(f"model.path: {config} names no model_type")
    except ValueError as exc:
        raise DataError(f"model.path: {config} is not valid JSON ({exc})") from None
    fast, slow = folder / "tokenizer.json", [folder / n for n in SLOW_TOKENIZER_FILES]
    if fast.is_file():
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(str(fast))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise DataError(f"model.path: {fast} does not load ({exc})") from None
    elif not any(p.is_file() for p in slow):
        raise DataError(f"model.path: {folder} has no tokenizer (tokenizer.json, "
                        f"{', '.join(SLOW_TOKENIZER_FILES)})")


SLOW_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
