"""Components named once, imported lazily from one table (in the style of lm-eval's registry).

A name in a config (`launcher.name`, `sweep.sampler.name`, `sweep.pruner.name`, `storage.kind`,
`method.kind`, an evaluation stage) picks an entry here. Validation checks names against these
tables without importing anything heavy; `load` imports the component only when it is used.
Adding a launcher, sampler, pruner, method kind or evaluation stage is one row here plus the
component itself (and its conf/ file).
"""

from __future__ import annotations

import functools
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
    """The object a "module:attribute" entry names ("module:Class.method" too), imported now."""
    module, _, attr = entry.partition(":")
    return functools.reduce(getattr, attr.split("."), importlib.import_module(module))


# The trial process's entry point. Launchers name it rather than import it, so that the sweep
# driver (which imports the launchers) never loads the training stack (torch, transformers,
# trl): the local launcher runs `python -m harness.trial`, a SLURM job resolves this on its node.
TRIAL_ENTRY = "harness.trial.run:run_trial"

# Jobs other than a trial that launchers run on a finished folder, by name for the same reason
# (harness.tasks: request and outcome files; `python -m harness.launch.task_main KIND DIR`).
TASKS = Registry("task", {
    "rescore": "harness.trial.rescore:rescore_task",   # re-run expensive evals on model/
})


LAUNCHERS = Registry("launcher.name", {
    "local": "harness.launch.local:LocalLauncher",
    "slurm": "harness.launch.slurm:SlurmLauncher",
})

# How the sweep driver runs its trials (launcher.mode, conf/launcher/slurm.yaml); each entry
# takes the sweep's Driver once the base model is evaluated.
LAUNCH_MODES = Registry("launcher.mode", {
    "job_per_trial": "harness.sweep.driver:Driver.run_jobs",   # one launcher job per trial
    "pool": "harness.sweep.pool:run_pool",   # long-lived SLURM workers ask and tell themselves
})

# Where the sweep's judge runs (a context manager per entry, yielding the served judge).
JUDGE_SERVICES = Registry("eval.judge.serve.where", {
    "local": "harness.eval.judge_server:sweep_judge",
    "slurm": "harness.sweep.judge_service:slurm_judge",
})

SAMPLERS = Registry("sweep.sampler.name", {
    "tpe": "harness.sweep.samplers:tpe",
    "gp": "harness.sweep.samplers:gp",
    "random": "harness.sweep.samplers:random",
    "grid": "harness.sweep.samplers:grid",
    "cmaes": "harness.sweep.samplers:cmaes",
    "nsgaii": "harness.sweep.samplers:nsgaii",
})

PRUNERS = Registry("sweep.pruner.name", {
    "none": "harness.study:no_pruner",
    "median": "harness.study:median_pruner",
    "hyperband": "harness.study:hyperband_pruner",
    "asha": "harness.study:successive_halving_pruner",   # Optuna SuccessiveHalvingPruner
})

# What an SFT trial's mid-training eval loss (the pruning signal) is computed on.
PRUNE_SIGNALS = Registry("sweep.pruner.signal", {
    "eval_loss": "harness.trial.prune_signal:sft_eval_rows",          # data.eval_loss pairs
    "perplexity_text": "harness.trial.prune_signal:perplexity_rows",  # the objective's texts
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
    "kto": "harness.trial.pipelines:KtoPipeline",
    "orpo": "harness.trial.pipelines:OrpoPipeline",
    "rloo": "harness.trial.pipelines:RlooPipeline",
})

# method.peft -> the peft adapter config for a method (None: full weights), harness.train.adapters.
PEFT_METHODS = Registry("method.peft", {
    "none": "harness.train.adapters:no_adapter",
    "lora": "harness.train.adapters:lora_adapter",
    "ia3": "harness.train.adapters:ia3_adapter",
    "prefix": "harness.train.adapters:prefix_adapter",
    "prompt": "harness.train.adapters:prompt_adapter",
})

# method.kind -> its memory model in the estimator (harness.estimate.kinds): the models one
# training step holds. A kind not listed gets a policy-only (SFT) estimate, flagged.
ESTIMATE_KINDS = Registry("method.kind", {
    "sft": "harness.estimate.kinds:sft",
    "dpo": "harness.estimate.kinds:dpo",
    "ppo": "harness.estimate.kinds:ppo",
    "grpo": "harness.estimate.kinds:grpo",
    "rloo": "harness.estimate.kinds:grpo",
    "kto": "harness.estimate.kinds:kto",
    "orpo": "harness.estimate.kinds:orpo",
})

# Expensive evaluation stages gated by the cost cascade (eval.<name>.enabled).
EVAL_STAGES = Registry("eval stage", {
    "lm_eval": "harness.eval.lm_eval_runner:lm_eval_stage",
    "mt_bench": "harness.eval.pairwise:mt_bench_stage",     # single or pairwise (mode)
})

# data.<set>.format -> the converter to training rows (harness.data.formats; SFT formats first,
# then preference formats).
DATA_FORMATS = Registry("data.<set>.format", {
    "messages": "harness.data.formats:messages",
    "prompt_completion": "harness.data.formats:prompt_completion",
    "alpaca": "harness.data.formats:alpaca",
    "sharegpt": "harness.data.formats:sharegpt",
    "pairs": "harness.data.formats:pairs",
    "hh_rlhf": "harness.data.formats:hh_rlhf",
    "ultrafeedback": "harness.data.formats:ultrafeedback",
})
