"""What went wrong and what differs: failed, pruned and unfinished trials (reason and log tail),
and the config keys that differ between the top trials.

    extract_failures(data)    -> FailuresInfo      render_failures(info, figs)
    extract_config_diff(data) -> ConfigDiffInfo    render_config_diff(info, figs)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from harness.records import COMPLETE, FAILED, PRUNED, TrialRecord
from harness.report.figures import Figures
from harness.report.html import Raw, link, note, params_text, table, text
from harness.sweep.results import NO_RESULT, SweepData, plain

MAX_LOG_TAILS = 50               # failed trials whose log tail is embedded
LOG_TAIL_BYTES = 3000
TOP_CONFIGS = 3                  # trials compared in the config difference


@dataclass(frozen=True)
class FailureRow:
    label: str                          # "3", or "3 seed 7 (replicate)"
    status: str
    method: str
    params: dict
    reason: str
    log: str                            # the log's path ("" when unknown)
    tail: str | None                    # its last lines (the first MAX_LOG_TAILS rows)


@dataclass(frozen=True)
class FailuresInfo:
    rows: tuple[FailureRow, ...]


def extract_failures(data: SweepData) -> FailuresInfo:
    """Trials and replicates without a COMPLETE record, with the reason and the log's tail."""
    bad = [(str(r.number), r) for r in data.records if r.status in (FAILED, PRUNED, NO_RESULT)]
    bad += [(f"{r.number} seed {r.seed} (replicate)", r) for r in data.replicates
            if r.status != COMPLETE]
    return FailuresInfo(tuple(_failure(label, r, i < MAX_LOG_TAILS)
                              for i, (label, r) in enumerate(bad)))


def _failure(label: str, record: TrialRecord, with_tail: bool) -> FailureRow:
    if record.error is not None:
        reason = f"{record.error.type}: {record.error.message}"
    else:
        reason = record.note or "(no reason recorded)"
    log = str(Path(record.error.log if record.error and record.error.log else record.log_path))
    known = log not in ("", ".")
    return FailureRow(label, record.status, record.method, dict(record.params), reason,
                      log if known else "", log_tail(Path(log)) if with_tail and known else None)


def log_tail(path: Path) -> str | None:
    """The last LOG_TAIL_BYTES of a log file, from a line start."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return None
    return tail.split("\n", 1)[-1] if size > LOG_TAIL_BYTES else tail


def render_failures(info: FailuresInfo, figs: Figures) -> str:
    if not info.rows:
        return note("None: every trial has a COMPLETE record.")
    rows = []
    for row in info.rows:
        log_html = link(row.log) if row.log else Raw("—")
        if row.tail:
            log_html = Raw(f"{log_html}<details><summary>last lines</summary>"
                           f"{text(row.tail)}</details>")
        rows.append([row.label, row.status, row.method, params_text(row.params),
                     text(row.reason), log_html])
    return table(["trial", "status", "method", "params", "reason", "log"], rows)


# -- config difference -------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfigDiffInfo:
    trials: tuple[int, ...]             # the top trials compared, best first
    keys: tuple[str, ...]               # config keys whose values differ (outside `trial`)
    rows: tuple[tuple, ...]             # (key, value in each trial)


def extract_config_diff(data: SweepData) -> ConfigDiffInfo:
    """Config keys whose values differ between the top trials' config.yaml."""
    top = [r for r in data.ranked if data.config_path(r.number).is_file()][:TOP_CONFIGS]
    if len(top) < 2:
        return ConfigDiffInfo(tuple(r.number for r in top), (), ())
    flat = [flatten(OmegaConf.to_container(OmegaConf.load(data.config_path(r.number))))
            for r in top]
    keys = sorted({k for f in flat for k in f if not k.startswith("trial.")})
    absent = object()
    differ = [k for k in keys if len({repr(f.get(k, absent)) for f in flat}) > 1]
    rows = tuple((k, *[plain(f.get(k, "(absent)")) for f in flat]) for k in differ)
    return ConfigDiffInfo(tuple(r.number for r in top), tuple(differ), rows)


def flatten(tree: object, prefix: str = "") -> dict:
    """A nested config as {"a.b.c": value}."""
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def render_config_diff(info: ConfigDiffInfo, figs: Figures) -> str:
    if len(info.trials) < 2:
        return note("Needs at least 2 completed trials with a config.yaml.")
    if not info.keys:
        return note("The top trials' configs are identical outside `trial`.")
    head = ["key", *[f"#{n} (rank {i + 1})" for i, n in enumerate(info.trials)]]
    return (note("Keys under `trial` (number, folder, ids) are left out.")
            + table(head, [list(row) for row in info.rows]))
