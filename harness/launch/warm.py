"""Warm trial processes: import the training stack once, then fork one child per trial.

`python -m harness.launch.warm` is the local launcher's worker (harness.launch.warm_client
starts it and talks to it); a SLURM pool worker uses `preload` and `fork_child` directly.
Each trial is still a process of its own, a fork of the warm worker: an exception, a NaN, an
out-of-memory kill or a SIGKILL ends only that trial, and the worker reports its exit status
(code or signal) the moment it ends.

Fork safety (why a fork of the worker is as good as a fresh `python -m harness.trial`):
- The worker only imports. It runs no tensor operation and never touches CUDA, so no CUDA
  context and no torch intra-op (OpenMP) pool exists when it forks; `preload` checks that no
  other Python thread runs and CUDA is not initialised, and forks a probe child that checks
  torch does not see a bad fork (see check_fork_safe for native pools). torch's
  `cuda.is_available()` would poison later forks (it calls cudaGetDeviceCount): the worker sets
  PYTORCH_NVML_BASED_CUDA_CHECK=1 so an import-time probe asks NVML instead.
- The child applies its own environment (CUDA_VISIBLE_DEVICES of its GPUs...) before the trial
  code runs, so CUDA, initialised in the child only, sees the trial's devices alone.
- TOKENIZERS_PARALLELISM=false and the quiet-progress-bar variables are set before the
  libraries are imported (huggingface_hub reads them at import time), as for a cold trial.
- The child starts a new session (its own process group: cancelling a trial kills whatever it
  started too), resets the worker's signal handlers to the defaults of a fresh Python process,
  points stdin at /dev/null and stdout/stderr at the trial's log, and ends with `os._exit`:
  it never returns into the worker's loop. Atexit handlers registered by the worker are
  dropped in the child; those the trial registers run, as they would at a cold exit.
- Seeds: Python's `random` is reseeded at fork by CPython itself, and the trial's own
  `set_seed` sets random, numpy and torch, as in a cold process. PYTHONHASHSEED is shared by
  every child of one worker (string hashing order is then the same across its trials).
- `gc.freeze()` after the imports keeps the preloaded objects out of the children's garbage
  collections, so copy-on-write pages stay shared.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import importlib.util
import json
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from harness.launch.task_main import main as task_main
from harness.progress import QUIET_BARS, log_to_stderr
from harness.registry import TRIAL_ENTRY, resolve

log = logging.getLogger(__name__)

# Imported by `preload`: the heavy libraries (a trial imports most inside functions), then the
# trial's entry (and so every harness module a trial imports at module level).
# The lazily imported submodules a trial of the default sweep would still import (trainer,
# SFT trainer, the embedded model's architecture) come too.
# openai: the MT-Bench judge's client (~0.7 s per trial's judging when imported there).
PRELOAD = ("torch", "transformers", "datasets", "accelerate", "trl", "lm_eval",
           "lm_eval.models.huggingface", "rouge_score.rouge_scorer",
           "transformers.models.llama.modeling_llama", "transformers.data.data_collator",
           "peft", "peft.optimizers", "peft.tuners.lora.bnb", "transformers.trainer",
           "transformers.integrations.bitsandbytes", "trl.trainer.sft_trainer", "openai",
           TRIAL_ENTRY)
# bitsandbytes initialises CUDA when it is imported on a GPU machine (it asks torch for each
# GPU's compute capability), and peft imports it when it is installed, as do the trainers and
# the trial's entry through peft: where both hold, these are left to each child to import.
CUDA_AT_IMPORT = ("bitsandbytes", "peft", "peft.optimizers", "peft.tuners.lora.bnb",
                  "transformers.trainer", "transformers.integrations.bitsandbytes",
                  "trl.trainer.sft_trainer", TRIAL_ENTRY)
# Set in the worker before anything is imported (a user's own values win). The NVML check
# keeps an import-time `torch.cuda.is_available()` from poisoning later forks; the child
# drops it again unless the user had set it.
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
WORKER_ENV = {**QUIET_BARS, "TOKENIZERS_PARALLELISM": "false", NVML_CHECK: "1"}
_set_here: list[str] = []   # WORKER_ENV names this process set (not the user)


def preload(modules: tuple[str, ...] = PRELOAD) -> dict:
    """Import the training stack and the trial's code once (entries are module names or
    registry "module:attr" entries), without initialising CUDA or torch's thread pools, then
    fork a probe child to check that CUDA would still work in a child. Returns what it did
    ({"seconds", "modules", "threads", "missing", "skipped"}); RuntimeError if forking is
    unsafe. A library that is not installed is skipped (a trial needing it fails as a cold
    one would)."""
    for name, value in WORKER_ENV.items():
        if name not in os.environ:
            os.environ[name] = value
            _set_here.append(name)
    start = time.perf_counter()
    missing, skipped = [], []
    for name in modules:
        if name in CUDA_AT_IMPORT and bitsandbytes_inits_cuda():
            skipped.append(name)
            continue
        try:
            resolve(name) if ":" in name else importlib.import_module(name)
        except ImportError:
            missing.append(name)
        check_fork_safe(name)
    warm_caches()
    probe_fork()
    gc.collect()
    gc.freeze()
    return {"seconds": round(time.perf_counter() - start, 3), "modules": len(sys.modules),
            "threads": os_threads(), "missing": missing, "skipped": skipped}


def warm_caches() -> None:
    """Build what the libraries build on first use and keep for the process, so each child
    inherits it instead of building it again; plain Python objects only, no tensors.
    transformers' checkpoint conversion table (every model type's weight renamings, about
    0.5 s on 2 cores) is built at the first `from_pretrained`."""
    try:
        mapping = importlib.import_module("transformers.conversion_mapping")
    except ImportError:
        return
    build = getattr(mapping, "get_checkpoint_conversion_mapping", None)
    if build is not None:   # transformers 5.x
        build("llama")


def bitsandbytes_inits_cuda() -> bool:
    """True where importing bitsandbytes would initialise CUDA: it is installed and torch
    sees a GPU (counted through NVML, which initialises nothing)."""
    import torch

    return importlib.util.find_spec("bitsandbytes") is not None and torch.cuda.device_count() > 0


def probe_fork() -> None:
    """RuntimeError unless a forked child could initialise CUDA (torch marks a child forked
    after CUDA was touched as a bad fork)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    pid = fork_child(lambda: 3 if torch.cuda._is_in_bad_fork() else 0)
    if exit_code(os.waitpid(pid, 0)[1]) != 0:
        raise RuntimeError("a child forked from the warm worker could not use CUDA: CUDA "
                           "was touched while importing")


def os_threads() -> int:
    """Threads of this process, native ones included (/proc/self/task)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def check_fork_safe(imported: str = "") -> None:
    """RuntimeError if forking now could hand a child a broken state: CUDA initialised, or a
    Python thread other than this one running (the locks it holds would stay held in the
    child). `imported`: the module just imported, named in the message. (bitsandbytes, which
    peft imports when installed, initialises CUDA at import on a GPU machine: the launcher
    then runs trials cold.) Native thread pools started at import (numpy's and scipy's
    OpenBLAS, pyarrow's jemalloc background thread) are allowed: they register
    pthread_atfork handlers that stop them around a fork and start them again in the child."""
    after = f" after importing {imported}" if imported else ""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError(f"CUDA was initialised in the warm worker{after}: forking is unsafe")
    if threading.active_count() > 1:
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        raise RuntimeError(f"the warm worker runs Python threads {names}{after}: forking is "
                           "unsafe")


def fork_child(target: Callable[[], int | None], log_path: Path | None = None,
               env: Mapping[str, str] | None = None, close: tuple[int, ...] = ()) -> int:
    """Fork; the child (a new session) applies `env`, writes stdout and stderr to `log_path`
    (appended; None: keeps the worker's), closes the worker's own file descriptors `close`,
    runs `target` and exits with its return value (0 for None, 1 for an exception,
    SystemExit's code). Returns the child's pid in the parent."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _become_child(log_path, env, close)
        result = target()
        code = 0 if result is None else int(result)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the child must reach os._exit whatever happens
        traceback.print_exc()
    finally:
        _exit_child(code)
    return 0  # unreachable: _exit_child never returns


# Signals whose handlers the worker may change; a fresh Python process has these.
_DEFAULT_HANDLERS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL,
                     signal.SIGCHLD: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL,
                     signal.SIGPIPE: signal.SIG_IGN}


def _become_child(log_path: Path | None, env: Mapping[str, str] | None,
                  close: tuple[int, ...]) -> None:
    """The forked child's setup, before the target runs (see the module docstring)."""
    os.setsid()
    for fd in close:
        os.close(fd)
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:   # not the main thread: no wakeup fd was set
        pass
    for sig, handler in _DEFAULT_HANDLERS.items():
        signal.signal(sig, handler)
    atexit._clear()   # the worker's handlers; those the trial registers run at _exit_child
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    if log_path is not None:
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        # streams on the new fds 1 and 2, whatever sys.stdout/stderr were in the worker
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives on
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)  # noqa: SIM115
    if NVML_CHECK in _set_here:   # as a cold trial's environment has it
        os.environ.pop(NVML_CHECK, None)
    os.environ.update(env or {})


def _exit_child(code: int) -> None:
    """Run the child's own atexit handlers, flush logging and stdio, and leave at once."""
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF if code >= 0 else 1)


# ----------------------------------------------------------------------------- the worker
# `python -m harness.launch.warm`: the local launcher's warm worker. Requests come on stdin,
# one JSON object a line; events go out on stdout, one JSON object a line (warm_client):
#   -> {"id": 3, "kind": "trial", "args": [DIR], "log": PATH, "env": {...}}
#   -> {"id": 4, "kind": "task", "args": [KIND, DIR], "log": PATH, "env": {...}}
#   <- {"event": "ready", "pid": ..., "seconds": ..., "modules": ..., "threads": ...}
#   <- {"event": "started", "id": 3, "pid": CHILD, "start_ticks": ...}
#   <- {"event": "error", "id": 3, "message": "..."}      (the fork itself failed)
#   <- {"event": "exited", "pid": CHILD, "code": 0}   or   {..., "signal": 9}
# stdin closing (the driver ended or was killed) stops new forks; the worker waits for its
# running children (a restarted driver re-attaches to them by pid) and exits.


def start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, /proc/PID/stat field 22): with the
    pid it names one process, never a later one reusing the pid. None if no such process or a
    zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return None if fields[0] == "Z" else int(fields[19])


def exit_code(status: int) -> int:
    """waitpid's status as Popen.returncode has it: the exit code, or -N for signal N."""
    return os.waitstatus_to_exitcode(status)


def _emit(event: dict) -> None:
    """One event line to the driver; a driver that is gone (broken pipe) is no error."""
    try:
        os.write(1, (json.dumps(event) + "\n").encode())
    except OSError:
        pass


def _target(request: dict) -> Callable[[], int | None]:
    """The child's work for a request: a trial (registry.TRIAL_ENTRY) or a task
    (harness.launch.task_main)."""
    args = [str(a) for a in request["args"]]
    if request["kind"] == "task":
        return lambda: task_main(args)
    return lambda: _trial_main(args[0])


def _trial_main(trial_dir: str) -> int:
    """What `python -m harness.trial DIR` does, in the forked child."""
    log_to_stderr()
    record = resolve(TRIAL_ENTRY)(trial_dir)
    print(f"trial {record.number}: {record.status}", file=sys.stderr)
    return 0


class _Worker:
    """The worker's loop: fork a child per request, report each child's end at once."""

    def __init__(self) -> None:
        self.children: set[int] = set()
        self.accepting = True
        self.buffer = b""
        self.wake_r, wake_w = os.pipe()
        for fd in (self.wake_r, wake_w):
            os.set_blocking(fd, False)
        self.wake_w = wake_w

    def serve(self) -> int:
        # SIGCHLD wakes select() through the wakeup fd; the handler itself does nothing.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        for sig in (signal.SIGINT, signal.SIGTERM):   # as a terminal's Ctrl-C reached cold trials
            signal.signal(sig, self._forward)
        while self.accepting or self.children:
            watched = [self.wake_r] + ([0] if self.accepting else [])
            readable = select.select(watched, [], [])[0]
            if self.wake_r in readable:
                self._drain()
            self._reap()
            if 0 in readable:
                self._read_requests()
        return 0

    def _forward(self, sig: int, _frame) -> None:
        self.accepting = False
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 4096):
                pass

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            code = exit_code(status)
            _emit({"event": "exited", "pid": pid,
                   **({"signal": -code} if code < 0 else {"code": code})})

    def _read_requests(self) -> None:
        chunk = os.read(0, 65536)
        if not chunk:   # the driver closed the pipe or died: no new trials
            self.accepting = False
            return
        self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self._start(json.loads(line))

    def _start(self, request: dict) -> None:
        if not self.accepting:   # SIGINT / SIGTERM: stopping, no new trials
            _emit({"event": "error", "id": request["id"], "message": "the worker is stopping"})
            return
        log_path = Path(request["log"]) if request.get("log") else None
        try:
            pid = fork_child(_target(request), log_path, request.get("env"),
                             close=(self.wake_r, self.wake_w))
        except OSError as exc:
            _emit({"event": "error", "id": request["id"], "message": f"fork failed: {exc}"})
            return
        self.children.add(pid)
        _emit({"event": "started", "id": request["id"], "pid": pid,
               "start_ticks": start_ticks(pid)})


def main() -> int:
    """Preload, say so (or why not), then serve requests until stdin closes."""
    log_to_stderr()
    try:
        info = preload()
    except Exception as exc:  # noqa: BLE001 - the launcher falls back to cold trials
        traceback.print_exc()
        _emit({"event": "failed", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    log.info("warm worker %d: %d modules preloaded in %.1f s%s", os.getpid(), info["modules"],
             info["seconds"], f" (left to each trial: {info['skipped']})" if info["skipped"]
             else "")
    _emit({"event": "ready", "pid": os.getpid(), **info})
    return _Worker().serve()


if __name__ == "__main__":
    sys.exit(main())
