"""A local OpenAI-compatible judge: `transformers serve` for a local model dir on 127.0.0.1.

    with serve_model("/path/to/model") as server:
        client = OpenAI(base_url=server.base_url, api_key="EMPTY")
        client.chat.completions.create(model=server.model, messages=[...])

The server preloads the model (`transformers serve MODEL_DIR`), so requests must name it by
the same string (`server.model`). It listens on a free port of 127.0.0.1 only, runs offline
(HF_HUB_OFFLINE=1), and is stopped (SIGTERM, then SIGKILL) when the block ends, whatever
happens. `/v1/models` answers 500 unless the hub cache folder exists: it is created first.
`sweep_judge(cfg, sweep_dir)` starts one server for a whole sweep and yields it; the driver
writes its URL and model into every trial's spec (`judge_url`, `judge_model`), which
`configured_endpoint` prefers to the trial's own `eval.judge`. That is `eval.judge.serve.where=
local`; where=slurm serves the same command as its own SLURM job on 0.0.0.0 of a compute node
(harness.sweep.judge_service, judge_job), and `stop_stale_server` also cancels a recorded job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from harness import layout
from harness.embedded.evals import ensure_for_config
from harness.eval.judge import JudgeClient, JudgeSettings, JudgmentCache
from harness.records import TrialSpec

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
JUDGE_CACHE_DIR = "judge_cache"
# The server entry: `transformers serve` under a watchdog that kills it when its parent dies.
SERVE_MODULE = "harness.eval.judge_serve_main"
# A sweep's running judge server (pid, port, model), so a resumed driver can stop a stale one.
SERVER_FILE = "judge_server.json"


class JudgeServerError(RuntimeError):
    """The local judge server did not start or become healthy; the message says why."""


@dataclass
class ServedModel:
    """A running local server: where to reach it and which model name to request."""

    base_url: str
    model: str
    port: int
    pid: int | None            # the local server's process (None: a SLURM judge job)
    log_path: Path
    job_id: str | None = None  # the SLURM judge job (eval.judge.serve.where=slurm)


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_hub_cache() -> Path:
    """Create the hub cache folder (`transformers serve`'s /v1/models scans it)."""
    from huggingface_hub import constants

    path = Path(constants.HF_HUB_CACHE)
    path.mkdir(parents=True, exist_ok=True)
    return path


def serve_command(model_dir: str, port: int, device: str = "cpu", dtype: str = "auto",
                  extra_args: list[str] | None = None, host: str = HOST) -> list[str]:
    """The `transformers serve` command line (run with this interpreter), watched: the server
    kills itself when the process that runs this command dies (judge_serve_main)."""
    return [sys.executable, "-m", SERVE_MODULE, str(os.getpid()), "serve", model_dir,
            "--host", host,
            "--port", str(port), "--device", device, "--dtype", dtype, "--log-level", "warning",
            *(extra_args or [])]


def server_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    """Poll GET /health until 200; raise JudgeServerError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise JudgeServerError(f"judge server exited with code {process.returncode} before "
                                   f"it was healthy: {_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.5)
    raise JudgeServerError(f"judge server not healthy after {timeout_s:.0f} s "
                           f"(eval.judge.serve.startup_timeout_s): {_log_tail(log_path)}")


def _log_tail(log_path: Path, lines: int = 5) -> str:
    try:
        text = log_path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) + f" (log: {log_path})"


def stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL it after `grace_s`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def serve_model(model_dir: str | Path, *, log_path: str | Path | None = None,
                startup_timeout_s: float = 180.0, device: str = "cpu", dtype: str = "auto",
                threads: int | None = None,
                extra_args: list[str] | None = None) -> Iterator[ServedModel]:
    """Serve a local model dir on 127.0.0.1 with `transformers serve` for the `with` block."""
    model_dir = str(Path(model_dir).resolve())
    if not Path(model_dir, "config.json").is_file():
        raise JudgeServerError(f"eval.judge.serve.model_path: no model at {model_dir}")
    ensure_hub_cache()
    port = free_port()
    log_path = Path(log_path) if log_path else Path(model_dir).parent / f"judge-server-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(serve_command(model_dir, port, device, dtype, extra_args),
                                   stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=server_env(threads),
                                   start_new_session=True)
    url = f"http://{HOST}:{port}"
    try:
        start = time.monotonic()
        wait_healthy(url, process, startup_timeout_s, log_path)
        log.info("judge server for %s healthy on %s after %.1f s", model_dir, url,
                 time.monotonic() - start)
        yield ServedModel(base_url=f"{url}/v1", model=model_dir, port=port, pid=process.pid,
                          log_path=log_path)
    finally:
        stop(process)


def served_model_path(cfg) -> str | None:
    """`eval.judge.serve.model_path` when MT-Bench is on and judges through a local server
    (no `eval.judge.base_url`)."""
    ev = cfg.eval
    mt, judge = ev.get("mt_bench") or {}, ev.get("judge") or {}
    if not mt.get("enabled") or judge.get("base_url"):
        return None
    if not (judge.get("serve") or {}).get("model_path"):
        return None
    return str(judge.serve.model_path)


@contextlib.contextmanager
def sweep_judge(cfg: DictConfig, sweep_dir: str | Path) -> Iterator[ServedModel | None]:
    """One local judge server for a whole sweep (None if none is configured).

    The caller hands the server to its trials: the driver writes `judge_url` / `judge_model`
    into every TrialSpec; a re-scoring job gets it in its request (harness.sweep.cascade).
    """
    model_path = served_model_path(cfg)
    if model_path is None:
        yield None
        return
    ensure_for_config(cfg)
    serve = cfg.eval.judge.serve
    record = Path(sweep_dir) / SERVER_FILE
    stale = stop_stale_server(record)
    if stale:
        log.warning("stopped judge %d left running by an earlier driver", stale)
    with serve_model(model_path, log_path=Path(sweep_dir) / "judge_server.log",
                     startup_timeout_s=float(serve.get("startup_timeout_s", 180)),
                     device=str(serve.get("device", "cpu")),
                     dtype=str(serve.get("dtype", "auto")),
                     threads=serve.get("threads")) as server:
        record.write_text(json.dumps({"pid": server.pid, "port": server.port,
                                      "model": server.model, "driver_pid": os.getpid()}))
        try:
            yield server
        finally:
            record.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def stop_stale_server(record: Path, grace_s: float = 10.0) -> int | None:
    """Stop the judge server recorded in `record` if it still runs (a killed driver's); return
    its pid (or SLURM job id), or None when there was none. A recorded pid that now belongs to
    another program is left alone (its command line must name the judge's entry module), and
    so is a recorded job id that now names another job (its name must be the recorded one)."""
    try:
        info = json.loads(record.read_text())
        if isinstance(info, dict) and info.get("slurm_job_id"):
            record.unlink(missing_ok=True)
            return cancel_stale_job(str(info["slurm_job_id"]), str(info.get("job_name", "")))
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    record.unlink(missing_ok=True)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if SERVE_MODULE.encode() not in cmdline:
        return None
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not _running(pid):
                return pid
            time.sleep(0.2)
    return pid


def cancel_stale_job(job_id: str, job_name: str) -> int | None:
    """scancel the judge job `job_id` if SLURM still lists it under `job_name`; its id, or None
    when it is gone or is another job (squeue and scancel both filter on the name)."""
    def slurm(*cmd: str) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("%s: %s", cmd[0], exc)
            return ""
        return done.stdout if done.returncode == 0 else ""

    listed = slurm("squeue", "-h", "-j", job_id, "--name", job_name, "-o", "%i").split()
    if job_id not in listed:
        return None
    slurm("scancel", "--name", job_name, job_id)
    return int(job_id)


@dataclass
class Endpoint:
    """The judge to use for one evaluation (or why there is none)."""

    base_url: str | None
    model: str | None
    judge_cfg: object = None
    cache_dir: str | None = None
    error: str | None = None

    def client(self) -> JudgeClient:
        settings = JudgeSettings.from_config(self.judge_cfg, self.base_url, self.model)
        return JudgeClient(settings, JudgmentCache(self.cache_dir))


def configured_endpoint(cfg: DictConfig,
                        spec: TrialSpec | None = None) -> tuple[str | None, str | None]:
    """(base_url, model): the spec's sweep-wide server (`judge_url` / `judge_model`, written by
    the driver) when it names one, else `eval.judge.base_url` (+ model), else (None, None)."""
    spec = spec or TrialSpec.from_config(cfg)
    if spec.judge_url:
        return str(spec.judge_url), str(spec.judge_model or "")
    judge = cfg.eval.judge
    if judge.get("base_url"):
        model = judge.get("model")
        return str(judge.base_url), str(model) if model else None
    return None, None


def default_cache_dir(cfg: DictConfig, out_dir: str | Path) -> str:
    """`eval.judge.cache_dir`, else sweeps/<sweep>/judge_cache, else <out_dir>/judge_cache."""
    judge = cfg.eval.judge
    if judge.get("cache_dir"):
        return str(judge.cache_dir)
    paths, sweep = cfg.get("paths") or {}, cfg.get("sweep") or {}
    if paths.get("sweeps") and sweep.get("name"):
        return str(layout.sweep_dir(cfg) / JUDGE_CACHE_DIR)
    return str(Path(out_dir) / JUDGE_CACHE_DIR)


@contextlib.contextmanager
def judge_endpoint(cfg: DictConfig, out_dir: str | Path,
                   spec: TrialSpec | None = None) -> Iterator[Endpoint]:
    """The judge for one evaluation: a sweep-wide or configured endpoint (configured_endpoint),
    else a local server started for this block only (`eval.judge.serve.model_path`), else an
    Endpoint with `error` set. Never raises for a judge that cannot be reached or started."""
    judge = cfg.eval.judge
    cache_dir = default_cache_dir(cfg, out_dir)
    base_url, model = configured_endpoint(cfg, spec)
    if base_url:
        error = None if model else "eval.judge.model is not set"
        yield Endpoint(base_url, model, judge, cache_dir, error)
        return
    serve = judge.get("serve") or {}
    if not serve.get("model_path"):
        yield Endpoint(None, None, judge, cache_dir, "no judge configured: set "
                       "eval.judge.base_url (+ model) or eval.judge.serve.model_path")
        return
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(serve_model(
                str(serve.model_path), log_path=Path(out_dir) / "judge_server.log",
                startup_timeout_s=float(serve.get("startup_timeout_s", 180)),
                device=str(serve.get("device", "cpu")), dtype=str(serve.get("dtype", "auto")),
                threads=serve.get("threads")))
        except JudgeServerError as exc:
            yield Endpoint(None, None, judge, cache_dir, f"local judge server: {exc}")
            return
        yield Endpoint(server.base_url, server.model, judge, cache_dir)
