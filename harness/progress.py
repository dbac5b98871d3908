"""Progress of long work (training, evaluation, re-scoring) for log files and for the driver.

A trial, or a re-scoring job, keeps `progress.json` in its folder up to date: the stage it is in
(`setup`, `train`, `save`, `eval`, `done`...), the part (`sft`, `perplexity`, `lm_eval`,
`mt_bench answers`...), step and total, rate, loss and time left. The file is replaced
atomically (a reader never sees half of it) and at most once per `MIN_INTERVAL_S` while the
stage and part stay the same (a change, or the last step, is written at once), so it costs
nothing and works alike for local and SLURM trials: the driver reads the folder, not the
process (`running_text`, its progress bar).

`LogTqdm` is tqdm whose refreshes become log lines (at most one per `LOG_INTERVAL_S`, plus the
first and the last) and progress-file updates instead of redrawn bars: trial logs are files,
and tqdm redraws a bar with carriage returns. tqdm still counts, times and formats (rate, ETA).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
MIN_INTERVAL_S = 1.0     # the progress file is rewritten at most this often within one part
LOG_INTERVAL_S = 30.0    # an evaluation loop logs a line at most this often (first, last too)
# How a progress line reads: "perplexity 12/40 (30%) 2.86 batch/s elapsed 00:04 ETA 00:09".
LINE_FORMAT = ("{desc} {n_fmt}/{total_fmt} ({percentage:.0f}%) {rate_noinv_fmt} elapsed "
               "{elapsed} ETA {remaining}{postfix}")
OPEN_FORMAT = "{desc} {n_fmt} {rate_noinv_fmt} elapsed {elapsed}{postfix}"   # no total known
# The Hugging Face libraries' own bars (loading weights, dataset maps) redraw with carriage
# returns too: off in trial and task processes (the launchers set these; a user's value wins).
QUIET_BARS = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def log_to_stderr() -> None:
    """A job process's logging (trial, task, SLURM job): INFO lines with time and logger to
    stderr (its log file), tokenizers single-threaded after fork, and no library progress
    bars redrawn with carriage returns (a user's own values win). Call before transformers
    is imported."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name, value in QUIET_BARS.items():
        os.environ.setdefault(name, value)


@dataclass(frozen=True)
class Progress:
    """One snapshot of a job's progress (the content of progress.json)."""

    stage: str
    part: str = ""
    step: int | None = None
    total: int | None = None
    unit: str = ""
    rate: float | None = None      # steps per second
    eta_s: float | None = None     # seconds left at that rate
    loss: float | None = None
    updated: float = 0.0           # time.time() of the snapshot
    pid: int = 0
    host: str = ""

    def text(self) -> str:
        """`train sft 120/400`, `eval rouge 3/8`, `setup`."""
        words = [self.stage] + ([self.part] if self.part else [])
        if self.step is not None:
            words.append(f"{self.step}/{self.total}" if self.total else str(self.step))
        return " ".join(words)


def progress_path(folder: str | Path) -> Path:
    return Path(folder) / PROGRESS_FILE


class ProgressWriter:
    """Writes one folder's progress.json: atomically, at most once per `min_interval_s` while
    the stage and part stay the same."""

    def __init__(self, folder: str | Path, min_interval_s: float = MIN_INTERVAL_S):
        self.path = progress_path(folder)
        self.min_interval_s = min_interval_s
        self._last = float("-inf")
        self._where: tuple[str, str] | None = None

    def update(self, stage: str, part: str = "", step: int | None = None,
               total: int | None = None, *, force: bool = False, **values) -> bool:
        """Write the snapshot unless the same part was written less than min_interval_s ago
        (`force`, a new stage or part, or the last step: always). True if written."""
        now = time.time()
        last_step = step is not None and total is not None and step >= total
        if not (force or last_step or (stage, part) != self._where
                or now - self._last >= self.min_interval_s):
            return False
        snapshot = Progress(stage=stage, part=part, step=step, total=total, updated=now,
                            pid=os.getpid(), host=socket.gethostname(), **values)
        tmp = self.path.with_name(f".{PROGRESS_FILE}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps(asdict(snapshot)))
            os.replace(tmp, self.path)
        except OSError as exc:   # progress is a courtesy: never fail the work for it
            log.debug("progress file %s: %s", self.path, exc)
            return False
        self._last, self._where = now, (stage, part)
        return True


_writer: list[ProgressWriter | None] = [None]


def start(folder: str | Path, min_interval_s: float = MIN_INTERVAL_S) -> ProgressWriter:
    """Make `folder/progress.json` this process's progress file (a trial or re-scoring job),
    rewritten at most every `min_interval_s` (`launcher.progress_interval_s`) within a part."""
    _writer[0] = ProgressWriter(folder, min_interval_s)
    return _writer[0]


def stop() -> None:
    """No progress file from now on (report() does nothing)."""
    _writer[0] = None


def report(stage: str, part: str = "", step: int | None = None, total: int | None = None, *,
           force: bool = False, **values) -> None:
    """Update this process's progress file, if it has one (see start())."""
    if _writer[0] is not None:
        _writer[0].update(stage, part, step, total, force=force, **values)


def read(folder: str | Path) -> Progress | None:
    """The folder's last progress snapshot; None if there is none (or it cannot be read)."""
    try:
        data = json.loads(progress_path(folder).read_text())
    except (OSError, ValueError):
        return None
    known = {f.name for f in fields(Progress)}
    try:
        return Progress(**{k: v for k, v in data.items() if k in known})
    except TypeError:
        return None


def running_text(trials: Mapping[int, str | Path]) -> str:
    """The driver bar's view of running trials, from their folders' progress files:
    `#3 train sft 120/400 | #4 eval rouge 3/8 | #5 queued` (no progress file yet: queued)."""
    parts = []
    for number, folder in sorted(trials.items()):
        snapshot = read(folder)
        parts.append(f"#{number} {snapshot.text() if snapshot else 'queued'}")
    return " | ".join(parts)


def progress_line(desc: str, n: int, total: int | None, elapsed: float, unit: str = "it",
                  postfix: str = "", rate: float | None = None) -> str:
    """One log line: `train sft step 120/400 (30%) 2.10 step/s elapsed 00:57 ETA 02:46, loss
    1.83` (tqdm's own rate and time formatting; `rate`: steps/s if not n / elapsed;
    `postfix` follows a comma)."""
    line = tqdm.format_meter(n, total, elapsed, prefix=desc, unit=f" {unit}", postfix=postfix,
                             bar_format=LINE_FORMAT if total else OPEN_FORMAT, rate=rate)
    return " ".join(line.split())   # tqdm pads the rate to a fixed width


def eta_seconds(done: int, total: int | None, rate: float | None) -> float | None:
    """Seconds left for `total - done` steps at `rate` steps/s (None if unknown)."""
    if not total or not rate:
        return None
    return max(0.0, (total - done) / rate)


class _Nowhere:
    """A file that swallows what tqdm would draw (LogTqdm says it in log lines instead)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


class LogTqdm(tqdm):
    """tqdm whose refreshes are log lines and progress-file updates (stage, part), not bars.

    Same arguments as tqdm, plus `stage` and `part` (progress.json) and `log_interval` (s
    between log lines; the first and the last are always logged).
    """

    def __init__(self, *args, stage: str = "eval", part: str = "",
                 log_interval: float = LOG_INTERVAL_S, **kwargs):
        self._stage, self._part, self._log_interval = stage, part, log_interval
        self._logged = float("-inf")
        self._finished = False
        kwargs.setdefault("mininterval", MIN_INTERVAL_S)
        kwargs["file"] = _Nowhere()
        kwargs["dynamic_ncols"] = False
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        values = self.format_dict
        n, total, elapsed = int(values["n"]), values["total"], float(values["elapsed"])
        rate = values["rate"] or (n / elapsed if elapsed > 0 and n else None)
        total = int(total) if total else None
        last = total is not None and n >= total
        report(self._stage, self._part or str(values.get("prefix") or ""), n, total,
               unit=str(values.get("unit") or "").strip(), rate=rate,
               eta_s=eta_seconds(n, total, rate))
        now = time.time()
        if (last and not self._finished) or now - self._logged >= self._log_interval:
            self._logged, self._finished = now, self._finished or last
            log.info(progress_line(str(values.get("prefix") or self._part), n, total, elapsed,
                                   str(values.get("unit") or "it").strip(),
                                   str(values.get("postfix") or "")))
        return True
