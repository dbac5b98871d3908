"""lm-eval without two per-call costs that no score depends on (measured with cProfile on the
default battery, lm-eval 0.4.13, 2-core CPU: 2.0 s and 0.5 s of a 4.1 s call).

- `simple_evaluate` ends with `add_env_info`, which runs torch's `collect_env` (`pip list`,
  `nvidia-smi`, `git`... as subprocesses, about 2 s) for a `pretty_env_info` string in the
  results. The harness keeps none of it (`write_outputs` keeps results, configs, versions,
  n-shot; the record has the package versions), so the string says it was not collected;
  the other fields (`transformers_version`, `lm_eval_version`) are filled as lm-eval does.
- `lm_eval.utils.apply_template` compiles its Jinja template again for every document
  (`env.from_string`, 294 compilations for 72 documents); the compiled template of a
  template string is reused instead (same environment, same filters, same rendering).

`lean_lm_eval()` applies both for the block and restores lm-eval afterwards. A library that
lacks either function (another lm-eval version) is left as it is.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

NOT_COLLECTED = "not collected (harness.eval.lm_eval_lean: versions are in result.json)"


def _env_info(storage: dict) -> None:
    """lm-eval's add_env_info without torch's collect_env subprocesses."""
    try:
        lm_eval_version = version("lm_eval")
    except PackageNotFoundError as exc:
        lm_eval_version = str(exc)
    try:
        transformers_version = version("transformers")
    except PackageNotFoundError:
        transformers_version = "N/A"
    storage.update({"pretty_env_info": NOT_COLLECTED, "lm_eval_version": lm_eval_version,
                    "transformers_version": transformers_version})


@contextlib.contextmanager
def lean_lm_eval() -> Iterator[None]:
    """lm-eval's environment probe skipped and its Jinja templates compiled once (above)."""
    import lm_eval.evaluator as evaluator
    import lm_eval.utils as utils

    saved = [(mod, name, getattr(mod, name)) for mod, name in
             ((evaluator, "add_env_info"), (utils, "apply_template")) if hasattr(mod, name)]
    compiled = functools.lru_cache(maxsize=1024)(utils.env.from_string) \
        if hasattr(utils, "env") else None

    def apply_template(template: str, doc: dict) -> str:
        return compiled(template).render(**doc)

    for mod, name, _ in saved:
        if name == "add_env_info":
            mod.add_env_info = _env_info
        elif compiled is not None:
            mod.apply_template = apply_template
    try:
        yield
    finally:
        for mod, name, original in saved:
            setattr(mod, name, original)
