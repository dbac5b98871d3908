"""Read data set rows from local JSONL files, local `datasets` folders or the hub.

Every data set in `conf/data/` is a spec: `path` (a .jsonl/.json file, a local directory, or a
hub id), optional `name` (hub subset), `split` and `revision`, plus the field names to read.
Local JSONL is checked line by line first so a bad row is reported as `file:line: problem`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig

from harness.errors import DataError


def is_local_file(path: str) -> bool:
    return str(path).endswith((".jsonl", ".json"))


def jsonl_lines(path: str | Path, bad_json: str = "malformed JSON") -> Iterator[tuple[str, dict]]:
    """(`path:line`, row) for every non-blank line of a JSONL file (the one JSONL reader).

    DataError for a missing file, a line that is not JSON (`path:line: <bad_json> (why)`),
    a line that is not an object, or a file without rows. `path` is named as given.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: data file not found")
    count = 0
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: {bad_json} ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object")
            count += 1
            yield f"{path}:{number}", row
    if not count:
        raise DataError(f"{path}: no rows")


def read_jsonl(path: str | Path, required: list[str]) -> list[dict]:
    """Rows of a JSONL file; a malformed line or a missing/empty field raises DataError."""
    rows = []
    for where, row in jsonl_lines(Path(path)):
        for key in required:
            if row.get(key) in (None, "", []):
                raise DataError(f"{where}: missing or empty field '{key}'")
        rows.append(row)
    return rows


def load_rows(spec: DictConfig, required: list[str]) -> list[dict]:
    """Rows of one data set spec, whatever its source."""
    path = str(spec.path)
    if is_local_file(path):
        return read_jsonl(path, required)
    if Path(path).is_dir():
        return from_datasets(path, spec, required, local=True)
    if path.startswith(("/", "./", "../")):
        raise DataError(f"{path}: data path not found")
    return from_datasets(path, spec, required, local=False)


def from_datasets(path: str, spec: DictConfig, required: list[str], local: bool) -> list[dict]:
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
