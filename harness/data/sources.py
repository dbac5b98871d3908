"""Raw rows of a data set spec with where each came from, whatever the source.

Local JSONL (`file:line`), JSON arrays, Parquet files and `save_to_disk` folders
(`file[row N]`), and hub data sets through `datasets` (`id[row N]`). The rows are plain dicts;
harness.data.formats turns them into training rows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig

from harness.data.jsonl import from_datasets, jsonl_lines
from harness.errors import DataError

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def is_local(path: str) -> bool:
    """A path on this machine (a file with a known suffix, a folder, or an explicit path)."""
    return str(path).endswith(LOCAL_SUFFIXES) or str(path).startswith(("/", "./", "../")) \
        or Path(str(path)).is_dir()


def raw_rows(spec: DictConfig) -> list[tuple[str, dict]]:
    """(where, row) for every row of a spec; DataError names the file (and line) on bad input."""
    path = str(spec.path)
    if path.endswith(".jsonl"):
        return list(jsonl_lines(path))
    if path.endswith(".json"):
        return _json_rows(path)
    if path.endswith(".parquet"):
        return _parquet_rows(path)
    if path.startswith(("/", "./", "../")) and not Path(path).exists():
        raise DataError(f"{path}: data path not found")
    rows = from_datasets(path, spec, [], local=Path(path).is_dir())
    return [(f"{path}[row {i}]", dict(r)) for i, r in enumerate(rows, 1)]


def _json_rows(path: str) -> list[tuple[str, dict]]:
    """A JSON file holding an array of objects (or JSON lines under a .json name)."""
    if not Path(path).is_file():
        raise DataError(f"{path}: data file not found")
    text = Path(path).read_text(encoding="utf-8")
    if not text.lstrip().startswith("["):
        return list(jsonl_lines(path))
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(f"{path}[row {i}]: expected a JSON object")
        out.append((f"{path}[row {i}]", row))
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def _parquet_rows(path: str) -> list[tuple[str, dict]]:
    import pyarrow.parquet as pq

    if not Path(path).is_file():
        raise DataError(f"{path}: data file not found")
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types; name the file in one line
        raise DataError(f"{path}: cannot read Parquet ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return [(f"{path}[row {i}]", row) for i, row in enumerate(rows, 1)]


def content_digest(spec: DictConfig | None) -> str:
    """Hash of a spec's data: the bytes of a local file or folder; the id, subset, split and
    revision of a hub data set (its content is pinned by `revision`)."""
    if spec is None or not spec.get("path"):
        return "none"
    path = Path(str(spec.path))
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
    elif path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(item.relative_to(path)).encode())
            h.update(item.read_bytes())
    else:
        h.update(json.dumps([str(spec.path), spec.get("name"), spec.get("split"),
                             spec.get("revision")]).encode())
    return h.hexdigest()
