"""Checks that run before any long step: the preparation settings, and every data file the
user named (read and converted row by row), before the embedded build or any training."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.data.filters import PII
from harness.data.formats import PREFERENCE, SFT
from harness.data.jsonl import read_jsonl
from harness.data.sources import is_local
from harness.data.stage import read_set
from harness.errors import ConfigError, DataError
from harness.registry import DATA_FORMATS

MODES = ("drop", "warn", "off")
TRAINING = {"train": SFT, "eval_loss": SFT, "preference.train": PREFERENCE,
            "preference.test": PREFERENCE}


def check_prepare_config(data: DictConfig) -> None:
    """Every bad preparation setting, one line each (ConfigError)."""
    problems: list[str] = []
    if str(data.get("decontaminate")) not in MODES:
        problems.append(f"data.decontaminate must be one of {list(MODES)}, "
                        f"got {data.get('decontaminate')!r}")
    prep = data.prepare
    fractions = [prep.split.train, prep.split.validation, prep.split.test]
    if any(not isinstance(f, (int, float)) or not 0 <= f <= 1 for f in fractions) \
            or abs(sum(fractions) - 1) > 1e-6:
        problems.append(f"data.prepare.split: train/validation/test must be fractions summing "
                        f"to 1, got {fractions}")
    f = prep.filters
    if f.length.unit not in ("words", "tokens"):
        problems.append(f"data.prepare.filters.length.unit must be words or tokens, got "
                        f"{f.length.unit!r}")
    unknown = [k for k in f.pii.kinds if k not in PII]
    if unknown:
        problems.append(f"data.prepare.filters.pii.kinds: unknown {unknown}; known {list(PII)}")
    if not 0 < float(f.dedup.near.threshold) <= 1:
        problems.append("data.prepare.filters.dedup.near.threshold must be in (0, 1]")
    if int(prep.contamination.ngram) < 1 or not 0 < float(prep.contamination.min_overlap) <= 1:
        problems.append("data.prepare.contamination: ngram >= 1 and min_overlap in (0, 1]")
    for key in TRAINING:
        spec = OmegaConf.select(data, key)
        name = spec.get("format") if spec is not None else None
        if name and DATA_FORMATS.check(name):
            problems.append(f"data.{key}.format: {DATA_FORMATS.check(name)}")
    if problems:
        raise ConfigError("\n".join(problems))


def check_training_data(data: DictConfig) -> None:
    """Read and convert every row of each local training / held-out file (file:line on error)."""
    for key, kind in TRAINING.items():
        spec = OmegaConf.select(data, key)
        if spec is not None and spec.get("path") and is_local(str(spec.path)):
            if not Path(str(spec.path)).exists():
                raise DataError(f"{spec.path}: data path not found (data.{key}.path)")
            read_set(spec, kind, f"data.{key}")


def check_user_data(cfg: DictConfig) -> None:
    """Open and convert every local data file outside the embedded cache now (file:line on
    the first bad row), so bad input fails before the embedded build."""
    check_prepare_config(cfg.data)
    embedded = Path(str(cfg.paths.embedded))
    for key in (*TRAINING, "perplexity", "rouge"):
        spec = OmegaConf.select(cfg.data, key)
        if spec is None or not spec.get("path") or not is_local(str(spec.path)):
            continue
        path = Path(str(spec.path)).expanduser().resolve()
        if path.is_relative_to(embedded):
            continue
        if not path.exists():
            raise DataError(f"{spec.path}: data path not found (data.{key}.path)")
        if key in TRAINING:
            read_set(spec, TRAINING[key], f"data.{key}")
        elif str(spec.path).endswith(".jsonl"):
            required = [spec.prompt_field, spec.reference_field] if key == "rouge" else []
            read_jsonl(spec.path, required)
