"""The driver's side of the warm worker (harness.launch.warm): start it, ask it for trials and
tasks, learn the moment each child ends. No torch here: the driver imports this module.

`WarmWorker` owns one `python -m harness.launch.warm` process. A reader thread turns its event
lines into state (the pid of each request, the exit status of each child) and sets `ended`
whenever a child ends, so the driver can wait on that instead of sleeping a poll period.
`WarmProcess` stands for one forked child with the part of subprocess.Popen's interface the
local launcher uses (pid, poll, wait, returncode).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.launch.warm import start_ticks

log = logging.getLogger(__name__)

WORKER_MODULE = "harness.launch.warm"


class WorkerGone(RuntimeError):
    """The warm worker is not running (failed to preload, or died)."""


class WarmWorker:
    """One warm worker process and what it has told the driver."""

    def __init__(self, env: dict[str, str], log_path: Path | None = None,
                 command: list[str] | None = None):
        """`command`: the worker's command line (default `python -m harness.launch.warm`)."""
        self.log_path = log_path
        stderr = log_path.open("ab") if log_path is not None else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(command or [sys.executable, "-m", WORKER_MODULE],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=stderr, env=env)
        finally:
            if log_path is not None:
                stderr.close()
        self.cond = threading.Condition()
        self.ended = threading.Event()      # set when a child ends (or the worker does)
        self.ready: dict | None = None
        self.gone: str | None = None        # why the worker is not there any more
        self.started: dict[int, dict] = {}  # request id -> started / error event
        self.exits: dict[int, int] = {}     # child pid -> returncode (-N: signal N)
        self._next_id = 0
        self._reader = threading.Thread(target=self._read, name="warm-worker-events",
                                        daemon=True)
        self._reader.start()

    # -- events -----------------------------------------------------------------------------
    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self._apply(event)
                self.cond.notify_all()
        code = self.process.wait()
        with self.cond:
            if self.gone is None:
                self.gone = f"the warm worker exited with code {code}"
            self.cond.notify_all()
        self.ended.set()

    def _apply(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "ready":
            self.ready = event
        elif kind == "failed":
            self.gone = f"the warm worker could not preload: {event.get('message')}"
        elif kind in ("started", "error"):
            self.started[int(event["id"])] = event
        elif kind == "exited":
            code = -int(event["signal"]) if "signal" in event else int(event["code"])
            self.exits[int(event["pid"])] = code
            self.ended.set()

    # -- requests ---------------------------------------------------------------------------
    def wait_ready(self, timeout: float | None = None) -> dict:
        """The worker's preload report, once it is ready (WorkerGone if it failed)."""
        with self.cond:
            self.cond.wait_for(lambda: self.ready is not None or self.gone is not None,
                               timeout)
            if self.ready is None:
                raise WorkerGone(self.gone or "the warm worker is not ready")
            return self.ready

    def start(self, kind: str, args: list[str], log_path: Path,
              env: dict[str, str]) -> WarmProcess:
        """Fork a child for a trial (args [DIR]) or task (args [KIND, DIR]); its log is
        `log_path`. Blocks until the worker has forked (after its preload, the first time);
        WorkerGone if it cannot (the launcher then starts the trial cold)."""
        with self.cond:
            if self.gone is not None:
                raise WorkerGone(self.gone)
            self._next_id += 1
            request_id = self._next_id
            request = {"id": request_id, "kind": kind, "args": [str(a) for a in args],
                       "log": str(log_path), "env": env}
            try:
                self.process.stdin.write((json.dumps(request) + "\n").encode())
                self.process.stdin.flush()
            except OSError as exc:
                raise WorkerGone(self.gone or f"the warm worker is gone ({exc})") from exc
            self.cond.wait_for(lambda: request_id in self.started or self.gone is not None)
            event = self.started.pop(request_id, None)
        if event is None:
            raise WorkerGone(self.gone or "the warm worker is gone")
        if event["event"] == "error":   # the fork failed, or the worker is stopping
            raise WorkerGone(f"the warm worker could not start it: {event['message']}")
        return WarmProcess(self, int(event["pid"]), event.get("start_ticks"))

    def wait(self, timeout: float) -> None:
        """Return when a child has ended since the last call, or after `timeout` seconds."""
        if self.ended.wait(timeout):
            self.ended.clear()

    def alive(self) -> bool:
        return self.gone is None and self.process.poll() is None

    def close_input(self) -> None:
        """No more requests: the worker exits once its running children have ended (a
        killed driver's worker does the same, so a restarted driver can re-attach to them).
        Events of the running children still arrive."""
        try:
            self.process.stdin.close()
        except OSError:
            pass

    def close(self) -> None:
        """close_input, then wait a little for the worker to end."""
        self.close_input()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("warm worker %d still runs trials; leaving it to finish them",
                        self.process.pid)


class WarmProcess:
    """A child of the warm worker, as the local launcher sees a trial process."""

    def __init__(self, worker: WarmWorker, pid: int, ticks: int | None):
        self.worker, self.pid, self.start_ticks = worker, pid, ticks
        self.returncode: int | None = None
        self.lost: str | None = None   # why its exit status is unknown (the worker died)

    def poll(self) -> int | None:
        """None while it runs; then its returncode (None too, with `lost` set, when the worker
        died before it: its status is unknown)."""
        if self.returncode is not None or self.lost is not None:
            return self.returncode
        code = self.worker.exits.get(self.pid)
        if code is not None:
            self.returncode = code
            return code
        if self.worker.gone is not None and start_ticks(self.pid) != self.start_ticks:
            self.lost = f"{self.worker.gone} while the trial ran; its exit status is unknown"
        return None

    def running(self) -> bool:
        return self.poll() is None and self.lost is None

    def wait(self, timeout: float = 10.0) -> int | None:
        """Wait up to `timeout` s for the end (e.g. after a kill); its returncode or None."""
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            with self.worker.cond:
                self.worker.cond.wait(0.1)
        return self.returncode
