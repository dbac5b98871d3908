"""The sweep's judge, wherever `eval.judge.serve.where` puts it (harness.registry.JUDGE_SERVICES).

    judge_service(cfg, sweep_dir)   the driver's one entry: a context manager yielding the
                                    running judge (ServedModel) or None, for the whole sweep
    slurm_judge(cfg, sweep_dir)     where=slurm: the judge as its own SLURM job (judge_job)

where=local is harness.eval.judge_server.sweep_judge (`transformers serve` on 127.0.0.1 of the
driver host). where=slurm submits JudgeJobTask with its own sbatch options
(`eval.judge.serve.slurm.*`), keeps a heartbeat file in the sweep folder up to date from a
thread of the driver, waits (bounded) until the job has published `host:port` and answers
/health from here, then yields it; trials get its URL in their TrialSpec (`judge_url`). At the
end (or on any error) the job is cancelled. A SIGKILLed driver cannot cancel it: its heartbeat
stops and the job ends itself `stale_s` later; a resumed driver cancels the recorded job
(judge_server.stop_stale_server) before submitting its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import submitit
from omegaconf import DictConfig, OmegaConf
from submitit.core.utils import FailedJobError, JobPaths

from harness.embedded.evals import ensure_for_config
from harness.errors import HarnessInputError
from harness.eval.judge_server import (
    SERVER_FILE,
    ServedModel,
    served_model_path,
    stop_stale_server,
)
from harness.launch.slurm.queue import SlurmQueue, run_command
from harness.launch.slurm.settings import _pythonpath_line
from harness.launch.slurm.submit import sbatch_error
from harness.registry import JUDGE_SERVICES
from harness.sweep.judge_job import ENDPOINT_FILE, HEARTBEAT_FILE, SERVER_LOG, JudgeJobTask

log = logging.getLogger(__name__)

JOB_FOLDER = "judge_slurm"        # submitit's files and the judge job's log, in the sweep folder
# sbatch options taken from launcher=slurm when eval.judge.serve.slurm leaves them null
INHERITED = ("partition", "account", "qos", "constraint", "setup", "python")


class JudgeJobError(HarnessInputError):
    """The SLURM judge job could not be submitted, did not start or did not answer in time
    (one line; nothing of the sweep is lost: rerun it once the cause is fixed)."""


@contextlib.contextmanager
def judge_service(cfg: DictConfig, sweep_dir: str | Path) -> Iterator[ServedModel | None]:
    """The sweep's judge for the `with` block, served where `eval.judge.serve.where` says."""
    where = str(((cfg.eval.get("judge") or {}).get("serve") or {}).get("where") or "local")
    with JUDGE_SERVICES.load(where)(cfg, sweep_dir) as judge:
        yield judge


@dataclass(frozen=True)
class JobSettings:
    """The judge job's sbatch options and its timing (from eval.judge.serve.slurm)."""

    params: dict
    python: str | None
    heartbeat_s: float
    stale_s: float
    queue_timeout_s: float
    startup_timeout_s: float


def job_settings(cfg: DictConfig, sweep_name: str) -> JobSettings:
    """eval.judge.serve.slurm, its null options filled from launcher=slurm (INHERITED)."""
    serve = cfg.eval.judge.serve
    own = OmegaConf.to_container(serve.get("slurm") or {}, resolve=True) or {}
    launcher = cfg.get("launcher") or {}
    if launcher.get("name") == "slurm":
        for key in INHERITED:
            if own.get(key) is None and launcher.get(key) is not None:
                own[key] = OmegaConf.to_container(launcher[key], resolve=True) \
                    if OmegaConf.is_config(launcher[key]) else launcher[key]
    params = {"job_name": f"harness-judge-{sweep_name}", "nodes": 1, "ntasks_per_node": 1,
              "time": int(math.ceil(float(own.get("timeout_min") or 1440))),
              "cpus_per_task": int(own.get("cpus_per_task") or 1), "stderr_to_stdout": True,
              "setup": [_pythonpath_line(), *[str(line) for line in own.get("setup") or []]],
              "additional_parameters": dict(own.get("additional") or {})}
    for key in ("partition", "account", "qos", "constraint"):
        if own.get(key):
            params[key] = str(own[key])
    if own.get("gpus_per_node"):
        params["gpus_per_node"] = int(own["gpus_per_node"])
    if own.get("mem_gb"):
        mem = float(own["mem_gb"])
        params["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
    return JobSettings(params, str(own["python"]) if own.get("python") else None,
                       float(own.get("heartbeat_s") or 5), float(own.get("stale_s") or 60),
                       float(own.get("queue_timeout_s") or 1800),
                       float(serve.get("startup_timeout_s") or 300))


class Heartbeat:
    """A driver thread rewriting `path` with "<token> <counter>" every `interval_s`: the judge
    job's proof that its driver is alive (a SIGKILL stops it with the driver)."""

    def __init__(self, path: Path, token: str, interval_s: float):
        self.path, self.token, self.interval_s = Path(path), token, interval_s
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="judge-heartbeat")

    def beat(self) -> None:
        """Rewrite the file in place: on NFS a reader's open sees what the writer closed
        (close-to-open), while a renamed-over name may resolve to the old file for up to the
        client's directory cache time. A torn read only looks like one more change."""
        self.count += 1
        self.path.write_text(f"{self.token} {self.count} {time.time():.0f}\n")

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(OSError):   # a file-system hiccup: the next beat retries
                self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def slurm_judge(cfg: DictConfig, sweep_dir: str | Path) -> Iterator[ServedModel | None]:
    """The sweep's judge as its own SLURM job, healthy from here, cancelled when the block
    ends (None when no judge is configured)."""
    model_path = served_model_path(cfg)
    if model_path is None:
        yield None
        return
    ensure_for_config(cfg)
    folder = Path(sweep_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / SERVER_FILE
    stale = stop_stale_server(record)
    if stale:
        log.warning("cancelled judge job %d left running by an earlier driver", stale)
    (folder / ENDPOINT_FILE).unlink(missing_ok=True)
    settings = job_settings(cfg, str(cfg.sweep.name))
    serve = cfg.eval.judge.serve
    token = uuid.uuid4().hex
    task = JudgeJobTask(model_dir=str(Path(model_path).resolve()), sweep_dir=str(folder),
                        token=token, stale_s=settings.stale_s,
                        startup_timeout_s=settings.startup_timeout_s,
                        device=str(serve.get("device", "cpu")),
                        dtype=str(serve.get("dtype", "auto")), threads=serve.get("threads"))
    with Heartbeat(folder / HEARTBEAT_FILE, token, settings.heartbeat_s):
        job_id = _submit(task, folder / JOB_FOLDER, settings)
        record.write_text(json.dumps({"slurm_job_id": job_id,
                                      "job_name": settings.params["job_name"],
                                      "driver_pid": os.getpid(),
                                      "driver_host": socket.gethostname()}))
        try:
            start = time.monotonic()
            host, port = wait_for_endpoint(job_id, folder, token, settings)
            print(f"judge: SLURM job {job_id} serving on {host}:{port} "
                  f"(healthy after {time.monotonic() - start:.0f} s)", flush=True)
            yield ServedModel(base_url=f"http://{host}:{port}/v1", model=task.model_dir,
                              port=port, pid=None, log_path=folder / SERVER_LOG, job_id=job_id)
        finally:
            run_command(["scancel", job_id])
            record.unlink(missing_ok=True)
            (folder / ENDPOINT_FILE).unlink(missing_ok=True)


def _submit(task: JudgeJobTask, job_folder: Path, settings: JobSettings) -> str:
    try:
        executor = submitit.SlurmExecutor(folder=job_folder, max_num_timeout=0,
                                          python=settings.python)
    except RuntimeError as exc:
        raise JudgeJobError(f"eval.judge.serve.where=slurm: {exc} (no srun on PATH)") from None
    executor.update_parameters(**settings.params)
    try:   # clean_env: a driver running as a job must not pass its SLURM_* on
        with submitit.helpers.clean_env():
            job = executor.submit(task)
    except FailedJobError as exc:
        raise JudgeJobError(f"eval.judge.serve.slurm: sbatch refused the judge job: "
                            f"{sbatch_error(str(exc))}") from None
    log.info("judge -> SLURM job %s", job.job_id)
    return str(job.job_id)


def wait_for_endpoint(job_id: str, folder: Path, token: str,
                      settings: JobSettings) -> tuple[str, int]:
    """(host, port) once the job has published them and /health answers 200 from here;
    JudgeJobError (one line) when the job ends first or a bound passes: queue_timeout_s while
    it is pending, startup_timeout_s from when it runs."""
    queue = SlurmQueue(max_age_s=2.0)
    submitted, running = time.monotonic(), None
    while True:
        endpoint = _read_endpoint(folder / ENDPOINT_FILE, token)
        if endpoint and _healthy(f"http://{endpoint[0]}:{endpoint[1]}"):
            return endpoint
        status, now = queue.get(job_id), time.monotonic()
        paths = JobPaths(folder / JOB_FOLDER, job_id=job_id)
        where = f"(job {job_id}, log {paths.stdout})"
        if status is not None and queue.ended(job_id, status):
            raise JudgeJobError(f"eval.judge.serve.where=slurm: the judge job ended "
                                f"({status.state}) before serving: {_job_error(paths)} {where}")
        if status is None and queue.vanished(job_id):
            raise JudgeJobError(f"eval.judge.serve.where=slurm: judge job unknown to SLURM "
                                f"{where}")
        if running is None and status is not None and status.state == "RUNNING":
            running = now
        if running is None and now - submitted > settings.queue_timeout_s:
            reason = status.reason if status else "unknown"
            raise JudgeJobError(f"eval.judge.serve.slurm.queue_timeout_s: the judge job did not "
                                f"start within {settings.queue_timeout_s:.0f} s (pending: "
                                f"{reason}) {where}")
        if running is not None and now - running > settings.startup_timeout_s:
            published = f"published {endpoint[0]}:{endpoint[1]} but " if endpoint else ""
            raise JudgeJobError(f"eval.judge.serve.startup_timeout_s: the judge job "
                                f"{published}did not answer /health from this host within "
                                f"{settings.startup_timeout_s:.0f} s of starting {where}")
        time.sleep(1.0)


def _job_error(paths: JobPaths) -> str:
    """The last line of the traceback the judge job raised (submitit's result pickle)."""
    try:
        outcome, payload = submitit.core.utils.pickle_load(paths.result_pickle)
    except Exception:  # noqa: BLE001 - absent or half-written: no traceback to show
        return "no error recorded"
    lines = [ln.strip() for ln in str(payload).splitlines() if ln.strip()]
    return lines[-1][:300] if outcome == "error" and lines else "no error recorded"


def _read_endpoint(path: Path, token: str) -> tuple[str, int] | None:
    try:
        info = json.loads(path.read_text())
        if info.get("token") != token:   # an earlier job's, or another driver's
            return None
        return str(info["host"]), int(info["port"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
