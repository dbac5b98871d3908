"""Job side of `eval.judge.serve.where=slurm`: the sweep's judge as its own SLURM job.

    JudgeJobTask   what the judge job runs on its node (pickled by submitit): `transformers
                   serve` of the judge on 0.0.0.0, `host:port` published in the sweep folder
                   (ENDPOINT_FILE) once it answers, and a watchdog on the driver's heartbeat
                   file (HEARTBEAT_FILE): the job ends when the heartbeat is stale for `stale_s`
                   seconds (the driver is gone, SIGKILL included) or names another driver.

The heartbeat is compared by content (the driver writes a token and a counter), never by the
file's mtime against this node's clock: nodes and the file server need not agree on the time.
The server itself runs under judge_serve_main's watchdog on this task's pid, so a scancel that
kills the task (SIGKILL after KillWait) kills the server too.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.eval.judge_server import (
    JudgeServerError,
    ensure_hub_cache,
    free_port,
    serve_command,
    server_env,
    stop,
    wait_healthy,
)

log = logging.getLogger(__name__)

ENDPOINT_FILE = "judge_endpoint.json"    # written by the judge job: host, port, token, job id
HEARTBEAT_FILE = "judge_heartbeat"       # written by the driver: "<token> <counter>"
SERVER_LOG = "judge_server.log"          # the server's own output, in the sweep folder
BIND = "0.0.0.0"                         # every interface of the node: trials reach it by name
POLL_S = 1.0


def read_heartbeat(path: Path) -> tuple[str, str] | None:
    """(token, counter) of the driver's heartbeat file, None while it is missing or partial."""
    try:
        parts = path.read_text().split()
    except OSError:
        return None
    return (parts[0], parts[1]) if len(parts) >= 2 else None


def node_name() -> str:
    """The name trials use to reach this node: SLURM's node name, else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


@dataclass
class JudgeJobTask:
    """The callable the judge job runs: serve, publish, watch the heartbeat, stop."""

    model_dir: str
    sweep_dir: str
    token: str                      # the driver's heartbeat token
    stale_s: float = 60.0           # heartbeat unchanged this long: the driver is gone
    startup_timeout_s: float = 300.0
    device: str = "cpu"
    dtype: str = "auto"
    threads: int | None = None

    def __call__(self) -> str:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        folder = Path(self.sweep_dir)
        ensure_hub_cache()
        port = free_port(BIND)
        log_path = folder / SERVER_LOG
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                serve_command(self.model_dir, port, self.device, self.dtype, host=BIND),
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=server_env(self.threads), start_new_session=True)
        # submitit only logs SIGTERM (scancel): leave at once, stopping the server
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            start = time.monotonic()
            wait_healthy(f"http://127.0.0.1:{port}", process, self.startup_timeout_s, log_path)
            endpoint = {"host": node_name(), "port": port, "token": self.token,
                        "job_id": os.environ.get("SLURM_JOB_ID", ""), "pid": process.pid}
            _write_atomic(folder / ENDPOINT_FILE, json.dumps(endpoint))
            log.info("judge %s serving on %s:%d after %.1f s", self.model_dir, endpoint["host"],
                     port, time.monotonic() - start)
            return self._watch(process, folder / HEARTBEAT_FILE, log_path)
        finally:
            stop(process)

    def _watch(self, process: subprocess.Popen, heartbeat: Path, log_path: Path) -> str:
        """Serve until the driver's heartbeat is stale or taken over, or the server dies."""
        last, changed = None, time.monotonic()
        while True:
            if process.poll() is not None:
                raise JudgeServerError(f"judge server exited with code {process.returncode} "
                                       f"(log: {log_path})")
            beat = read_heartbeat(heartbeat)
            if beat is not None and beat[0] != self.token:
                log.warning("another driver writes the heartbeat: this judge job ends")
                return "replaced"
            if beat != last:
                last, changed = beat, time.monotonic()
            elif time.monotonic() - changed > self.stale_s:
                log.warning("driver heartbeat unchanged for %.0f s (stale_s): the driver is "
                            "gone, this judge job ends", self.stale_s)
                return "driver gone"
            time.sleep(POLL_S)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
