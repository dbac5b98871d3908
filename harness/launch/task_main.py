"""`python -m harness.launch.task_main KIND DIR`: run the task `KIND` (harness.registry.TASKS,
e.g. `rescore`) on the finished folder DIR in this process: the local launcher's command for
jobs other than trials. The task is named, not imported (launchers never import the trial)."""

from __future__ import annotations

import sys

from harness.progress import log_to_stderr
from harness.registry import TASKS


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the task returned; its outcome file says how it went."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m harness.launch.task_main KIND DIR", file=sys.stderr)
        return 2
    log_to_stderr()
    TASKS.load(args[0])(args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
