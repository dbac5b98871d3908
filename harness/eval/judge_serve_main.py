"""`transformers serve` that dies with the process that started it.

    python -m harness.eval.judge_serve_main PARENT_PID serve MODEL_DIR --host ... --port ...

The judge server runs in its own session (so that stopping it kills its whole process group),
which also means a SIGKILLed driver (a dropped login shell, an OOM kill) would leave it
running, holding memory and, on a GPU node, a GPU. A watchdog thread here polls the parent:
once the server has been re-parented (the parent died, whatever the signal) it kills its own
process group.

Why a watchdog and not `prctl(PR_SET_PDEATHSIG)`: the death signal fires when the *thread*
that forked the child exits, not the process, so a server started from a worker thread would
be killed early; and it is Linux-only. Polling `getppid()` is portable and exact.

Only the standard library and transformers' CLI are imported: this is the server process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

POLL_S = 0.5


def _watch(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        time.sleep(POLL_S)


def main(argv: list[str]) -> int:
    """Start the watchdog on argv[0] (the parent's pid), then run `transformers <argv[1:]>`."""
    parent_pid = int(argv[0])
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True,
                     name="parent-watchdog").start()
    from transformers.cli.transformers import main as transformers_main

    sys.argv = ["transformers", *argv[1:]]
    return transformers_main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
