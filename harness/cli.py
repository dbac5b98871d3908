"""Command line: `python -m harness [hydra overrides...]`.

    python -m harness                              the default sweep on the embedded model
    python -m harness sweep=qlora_rank             another sweep from conf/sweep/
    python -m harness sweep=lora_lr sweep.n_trials=20 method.lora.rank=32
    python -m harness action=report sweep=qlora_rank   rebuild the report, no training
    python -m harness action=replicate sweep=default replicate.top_k=2 replicate.seeds=[1,2,3]
                                                   rerun the top configurations with other seeds
    python -m harness action=compare compare.sweeps=[qlora_rank,lora_lr]
                                                   one report joining several sweeps
    python -m harness action=human_eval sweep=default   blinded rating sheet (CSV + HTML form);
                                                   human_eval.ratings=[filled.csv] imports it
    python -m harness action=export sweep=default  the best trial for vLLM / Ollama + its YAML
    python -m harness action=merge sweep=default   merge the best adapter into its base model
    python -m harness action=plan model=llama3_1_8b sweep=method_compare launcher.gpu_type=h100-80gb
                                                   predicted memory by part, GPU, step time
    python -m harness --cfg [job] [overrides...]   print the composed config and exit

Bad input exits with status 2 and one line naming the field, file or line; nothing is
written before the input is known to be good.
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf.errors import MissingMandatoryValue

from harness.config.compose import compose_config, to_yaml
from harness.errors import HarnessInputError
from harness.registry import Registry

USAGE = __doc__
# action=<name> -> its function in harness.actions, imported only when run (so --help and
# --cfg start without importing torch, Optuna or plotly).
# action=<name> -> the function that carries it out (overrides -> exit code). One row each.
ACTIONS = Registry("action", {
    "sweep": "harness.actions:sweep",
    "report": "harness.actions:report",
    "replicate": "harness.actions:replicate",
    "compare": "harness.actions:compare",
    "merge": "harness.actions:merge",
    "plan": "harness.sweep.plan:plan",
    "prepare": "harness.prepare_action:prepare",
    "human_eval": "harness.report.human_eval:human_eval",
    "export": "harness.deploy:export",
})


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
        if "--cfg" in args:   # Hydra's `--cfg job` spelling accepted too (the job's config)
            at = args.index("--cfg")
            rest = args[:at] + args[at + 1 + (args[at + 1:at + 2] == ["job"]):]
            print(to_yaml(compose_config(rest)))
            return 0
        action = compose_config(args).get("action", "sweep")
        return ACTIONS.load(action)(args)
    except HarnessInputError as exc:
        for line in str(exc).splitlines():   # collected validation: one line per problem
            print(f"harness: error: {line}", file=sys.stderr)
        return 2
    except INPUT_OS_ERRORS as exc:   # a file the user cannot read, or that is not there
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"harness: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except MissingMandatoryValue as exc:   # a `???` no validation caught
        print(f"harness: error: {exc.full_key}: mandatory value not set", file=sys.stderr)
        return 2


# Bad input the operating system reports (outside the harness's own error classes).
INPUT_OS_ERRORS = (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError)
