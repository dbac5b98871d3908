"""Command line: `python -m harness [hydra overrides...]`.

    python -m harness                              the default sweep on the embedded model
    python -m harness sweep=qlora_rank             another sweep from conf/sweep/
    python -m harness sweep=lora_lr sweep.n_trials=20 method.lora.rank=32
    python -m harness action=report sweep=qlora_rank   rebuild the report, no training
    python -m harness action=replicate sweep=default replicate.top_k=2 replicate.seeds=[1,2,3]
                                                   rerun the top configurations with other seeds
    python -m harness action=compare compare.sweeps=[qlora_rank,lora_lr]
                                                   one report joining several sweeps
    python -m harness action=merge sweep=default   merge the best adapter into its base model
    python -m harness --cfg [overrides...]         print the composed config and exit

Bad input exits with status 2 and one line naming the field, file or line; nothing is
written before the input is known to be good.
"""

from __future__ import annotations

import logging
import os
import sys

from harness.config.compose import compose_config, to_yaml
from harness.errors import HarnessInputError
from harness.registry import Registry

USAGE = __doc__
# action=<name> -> its function in harness.actions, imported only when run (so --help and
# --cfg start without importing torch, Optuna or plotly).
ACTIONS = Registry("action", {name: f"harness.actions:{name}" for name in
                              ("sweep", "report", "replicate", "compare", "merge")})


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return 0
    logging.basicConfig(level=os.environ.get("HARNESS_LOG", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # bitsandbytes warns at import that an optional hub-downloaded CPU kernel is missing.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        if "--cfg" in args:
            print(to_yaml(compose_config([a for a in args if a != "--cfg"])))
            return 0
        action = compose_config(args).get("action", "sweep")
        return ACTIONS.load(action)(args)
    except HarnessInputError as exc:
        for line in str(exc).splitlines():   # collected validation: one line per problem
            print(f"harness: error: {line}", file=sys.stderr)
        return 2
