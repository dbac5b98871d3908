"""Components named once, imported lazily from one table (in the style of lm-eval's registry).

A name in a config (`launcher.name`, `sweep.sampler.name`, `sweep.pruner.name`, `storage.kind`,
`method.kind`, an evaluation stage) picks an entry here. Validation checks names against these
tables without importing anything heavy; `load` imports the component only when it is used.
Adding a launcher, sampler, pruner, method kind or evaluation stage is one row here plus the
component itself (and its conf/ file).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError


@dataclass(frozen=True)
class Registry:
    """Names -> "module:attribute" for one kind of component, chosen by config `field`."""

    field: str
    entries: Mapping[str, str]

    def names(self) -> list[str]:
        return list(self.entries)

    def check(self, name: object) -> str | None:
        """None if `name` is registered, else the one-line problem naming the field."""
        if name in self.entries:
            return None
        return f"{self.field} must be one of {sorted(self.entries)}, got {name!r}"

    def load(self, name: str) -> Any:
        """Import and return the component registered as `name` (ConfigError if unknown)."""
        problem = self.check(name)
        if problem:
            raise ConfigError(problem)
        return resolve(self.entries[name])


def resolve(entry: str) -> Any:
    """The object a "module:attribute" entry names, imported now."""
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)


# The trial process's entry point. Launchers name it rather than import it, so that the sweep
# driver (which imports the launchers) never loads the training stack (torch, transformers,
# trl): the local launcher runs `python -m harness.trial`, a SLURM job resolves this on its node.
TRIAL_ENTRY = "harness.trial.run:run_trial"


LAUNCHERS = Registry("launcher.name", {
    "local": "harness.launch.local:LocalLauncher",
    "slurm": "harness.launch.slurm:SlurmLauncher",
})

SAMPLERS = Registry("sweep.sampler.name", {
    "tpe": "harness.sweep.samplers:tpe",
    "random": "harness.sweep.samplers:random",
    "grid": "harness.sweep.samplers:grid",
    "cmaes": "harness.sweep.samplers:cmaes",
    "nsgaii": "harness.sweep.samplers:nsgaii",
})

PRUNERS = Registry("sweep.pruner.name", {
    "none": "harness.study:no_pruner",
    "median": "harness.study:median_pruner",
    "hyperband": "harness.study:hyperband_pruner",
})

STORAGES = Registry("storage.kind", {
    "sqlite": "harness.study:sqlite_storage",
    "journal": "harness.study:journal_storage",
    "rdb": "harness.study:rdb_storage",
})

# method.kind -> the trial pipeline that trains it (harness.trial.pipelines).
METHOD_KINDS = Registry("method.kind", {
    "sft": "harness.trial.pipelines:SftPipeline",
    "dpo": "harness.trial.pipelines:DpoPipeline",
    "ppo": "harness.trial.pipelines:PpoPipeline",
    "grpo": "harness.trial.pipelines:GrpoPipeline",
})

# Expensive evaluation stages gated by the cost cascade (eval.<name>.enabled).
EVAL_STAGES = Registry("eval stage", {
    "lm_eval": "harness.eval.lm_eval_runner:lm_eval_stage",
    "mt_bench": "harness.eval.mt_bench:mt_bench_stage",
})
