"""Progress of third-party evaluation loops in the trial's log and progress file.

lm-eval has no progress hook: its loops (building a task's requests, tokenizing them, HFLM's
loglikelihood, rolling loglikelihood and generation requests) draw tqdm
bars, which redraw with carriage returns in a log file. `lm_eval_progress` swaps the `tqdm`
name those modules look up for harness.progress.LogTqdm while an evaluation runs: the same
counts and timing, as log lines and progress.json updates (stage `eval`, part `lm_eval`).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from unittest import mock

from harness.progress import LogTqdm

# The lm-eval modules whose `tqdm` bars run during simple_evaluate with an HFLM model.
LM_EVAL_MODULES = ("lm_eval.api.task", "lm_eval.api.model", "lm_eval.models.huggingface")


@contextmanager
def lm_eval_progress() -> Iterator[None]:
    """lm-eval's loops report through LogTqdm while the block runs."""
    bar = partial(LogTqdm, stage="eval", part="lm_eval")
    with ExitStack() as stack:
        for name in LM_EVAL_MODULES:
            module = importlib.import_module(name)   # lm-eval is imported only to evaluate
            if hasattr(module, "tqdm"):
                stack.enter_context(mock.patch.object(module, "tqdm", bar))
        yield
