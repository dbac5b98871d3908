"""Open every local data file of a config before any training (bad input fails first)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from harness.data.jsonl import is_local_file, read_jsonl
from harness.data.preference import check_preference_data
from harness.errors import DataError


def check_data(data: DictConfig) -> None:
    """Open every local data file of a config now, so bad input fails before any training."""
    field = data.train.get("messages_field", "messages")
    checks = [(data.train, [field]), (data.perplexity, []),
              (data.rouge, [data.rouge.prompt_field, data.rouge.reference_field])]
    if data.get("eval_loss") and data.eval_loss.get("path"):
        checks.append((data.eval_loss, [data.eval_loss.get("messages_field", "messages")]))
    check_preference_data(data)   # data.preference (if any): every row, file:line on error
    for spec, required in checks:
        if spec.get("path") and is_local_file(str(spec.path)):
            read_jsonl(spec.path, required)
        elif spec.get("path") and str(spec.path).startswith("/") \
                and not Path(str(spec.path)).exists():
            raise DataError(f"{spec.path}: data path not found")
