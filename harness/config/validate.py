"""Every check of a composed config, collected: a run with three bad fields names all three.

`validate_trial_config` checks one trial's config (method, model, data, eval); `validate_sweep`
checks the driver-level fields (sweep, launcher, storage). Both add one line per problem to a
`Problems` collector; `Problems.raise_if_any()` raises one ConfigError holding every line. The
command line prints them, one `harness: error:` line each, before anything is written.
Component names are checked against harness.registry, never by importing the component.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.config.battery import check_battery
from harness.config.distributed import check_fsdp
from harness.config.judge_reach import check_judge_reach
from harness.config.methods import NO_SFT_STAGE, check_method_kind
from harness.config.pool import check_launch_mode
from harness.config.search import check_search, check_step_budget
from harness.errors import ConfigError
from harness.registry import LAUNCHERS, METHOD_KINDS, PEFT_METHODS, PRUNERS, SAMPLERS, STORAGES

LOCAL_PROCESSES = ("warm", "cold")   # launcher.processes of launcher=local (launch/local.py)

METHODS_WITH_PEFT = set(PEFT_METHODS.names())
QUANT_BITS = {None, 4, 8}
DTYPES = {"float32", "bfloat16", "float16", "auto"}   # auto: harness.train.placement
SOURCES = {"embedded", "hub", "local"}


class Problems:
    """One line per problem found, in the order found, without repeats."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)

    def check(self, fn: Callable[..., None], *args) -> None:
        """Run one check that raises ConfigError at its first problem; keep its lines."""
        try:
            fn(*args)
        except ConfigError as exc:
            for line in exc.problems:
                self.add(line)

    def raise_if_any(self) -> None:
        if self.lines:
            raise ConfigError(problems=self.lines)


def validate_trial_config(cfg: DictConfig, problems: Problems | None = None) -> None:
    """Check one composed trial config; with no collector given, raise every problem found."""
    own = problems is None
    problems = Problems() if own else problems
    _method_checks(cfg.method, "method", problems)
    check_fsdp(cfg, problems.add)   # method.train.fsdp: full weights, several processes
    problems.check(_check_model, cfg.model)
    problems.check(_check_data, cfg.data)
    problems.check(_check_positive, cfg, ["eval.perplexity.max_length", "eval.perplexity.stride"])
    problems.check(check_battery, cfg)   # perplexity batch size, preference-metrics switch
    problems.check(_check_positive, cfg, ["eval.rouge.max_new_tokens", "eval.rouge.batch_size"])
    problems.check(_check_stride, cfg.eval.perplexity)
    for check in (_check_lm_eval, _check_mt_bench, _check_judge, _check_cascade):
        problems.check(check, cfg.eval)
    if own:
        problems.raise_if_any()


def validate_sweep(cfg: DictConfig, n_objectives: int, problems: Problems) -> None:
    """The driver-level fields: sweep counts and objectives, sampler, pruner, launcher,
    storage (names from harness.registry; `launcher=slurm` settings)."""
    problems.check(_check_sweep_fields, cfg)
    for key in OmegaConf.missing_keys(cfg):   # `???` left in a config group (storage=rdb: url)
        problems.add(f"{key}: mandatory value not set (give {key}=...)")
    sampler, pruner = cfg.sweep.sampler, cfg.sweep.pruner
    for registry, name in ((SAMPLERS, sampler.get("name", "tpe")),
                           (PRUNERS, pruner.get("name", "none")),
                           (STORAGES, cfg.storage.get("kind")),
                           (LAUNCHERS, cfg.launcher.get("name"))):
        if registry.check(name):
            problems.add(registry.check(name))
    if n_objectives > 1 and sampler.get("name") == "cmaes":
        problems.add("sweep.sampler.name=cmaes cannot optimize several objectives")
    check_search(cfg.sweep, problems.add)   # sampler / pruner values (harness.config.search)
    check_step_budget(cfg, problems.add)    # sweep.max_train_steps (config.search)
    if cfg.launcher.get("parallel") is not None:   # null (local): GPUs // gpus_per_trial
        problems.check(_check_positive, cfg, ["launcher.parallel"])
    interval = cfg.launcher.get("progress_interval_s", 1.0)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
        problems.add(f"launcher.progress_interval_s must be a number >= 0, got {interval!r}")
    if cfg.launcher.get("name") == "slurm":
        problems.check(check_slurm_config, cfg)
    else:
        problems.check(check_launch_mode, cfg)   # launcher.mode=pool needs launcher=slurm
        processes = cfg.launcher.get("processes", "cold")   # harness/launch/warm.py
        if processes not in LOCAL_PROCESSES:
            problems.add(f"launcher.processes must be one of {list(LOCAL_PROCESSES)}, "
                         f"got {processes!r}")
    problems.check(check_judge_reach, cfg)   # eval.judge.serve.where, no loopback judge on SLURM


# -- method ------------------------------------------------------------------------------------
def _method_checks(method: DictConfig, where: str, problems: Problems) -> None:
    """method (or method.sft of a chained method): each part checked on its own."""
    name = method.get("name")
    if not name or str(name).startswith("_"):
        problems.add(f"{where}: '{name}' is not a method config")
        return
    kind = method.get("kind", "sft")
    if METHOD_KINDS.check(kind):
        problems.add(METHOD_KINDS.check(kind).replace("method.", f"{where}.", 1))
    if kind != "sft" and kind not in NO_SFT_STAGE:
        sft = method.get("sft")
        if sft is None or sft.get("kind", "sft") != "sft":
            problems.add(f"{where}.sft must be an SFT method config (kind: sft)")
        else:
            _method_checks(sft, f"{where}.sft", problems)
    peft = method.get("peft")
    if peft not in METHODS_WITH_PEFT:
        problems.add(f"{where}.peft must be one of {sorted(METHODS_WITH_PEFT)}, got {peft!r}")
    bits = method.quantization.get("bits")
    if bits not in QUANT_BITS:
        problems.add(f"{where}.quantization.bits must be null, 4 or 8, got {bits!r}")
    elif bits is not None and peft != "lora" and kind != "ppo":   # ppo: config/methods.py
        problems.add(f"{where}.quantization.bits needs {where}.peft=lora "
                     "(a quantized base cannot be fully fine-tuned)")
    if peft == "lora":
        problems.check(_check_lora, method.lora, where)
    if peft in METHODS_WITH_PEFT:
        check_method_kind(method, where, problems.add)
    problems.check(_check_positive, method, ["train.learning_rate",
                                             "train.per_device_train_batch_size",
                                             "train.gradient_accumulation_steps"], f"{where}.")


def _check_lora(lora: DictConfig, where: str) -> None:
    rank = lora.rank
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ConfigError(f"{where}.lora.rank must be a positive integer, got {rank!r}")
    ratio = lora.get("alpha_ratio")
    if ratio is not None and not _positive_number(ratio):
        raise ConfigError(f"{where}.lora.alpha_ratio must be > 0, got {ratio!r}")
    if ratio is None and not _positive_number(lora.alpha):
        raise ConfigError(f"{where}.lora.alpha must be > 0, got {lora.alpha!r}")
    if not 0 <= float(lora.dropout) < 1:
        raise ConfigError(f"{where}.lora.dropout must be in [0, 1), got {lora.dropout!r}")


# -- model and data ----------------------------------------------------------------------------
def _check_model(model: DictConfig) -> None:
    source = model.source
    if source not in SOURCES:
        raise ConfigError(f"model.source must be embedded, hub or local, got {source!r}")
    if source == "local" and not Path(str(model.path)).is_dir():
        raise ConfigError(f"model.path: no model directory at {model.path}")
    if model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be float32, bfloat16, float16 or auto, "
                          f"got {model.dtype!r}")


def _check_data(data: DictConfig) -> None:
    if data.source not in SOURCES:
        raise ConfigError(f"data.source must be embedded, hub or local, got {data.source!r}")


# -- evaluation --------------------------------------------------------------------------------
def _check_stride(ppl: DictConfig) -> None:
    if _positive_number(ppl.stride) and _positive_number(ppl.max_length) \
            and ppl.stride > ppl.max_length:
        raise ConfigError("eval.perplexity.stride must be <= eval.perplexity.max_length")


def _check_lm_eval(ev: DictConfig) -> None:
    lm = ev.get("lm_eval") or {}
    if not lm.get("enabled"):
        return
    if not lm.get("tasks"):
        raise ConfigError("eval.lm_eval.tasks is empty")
    _positive(lm.get("batch_size"), "eval.lm_eval.batch_size")
    if lm.get("limit") is not None:
        _positive(lm.limit, "eval.lm_eval.limit")


def _check_mt_bench(ev: DictConfig) -> None:
    mt, judge = ev.get("mt_bench") or {}, ev.get("judge") or {}
    if not mt.get("enabled"):
        return
    for key in ("question_path", "judge_prompts_path"):
        if not mt.get(key):
            raise ConfigError(f"eval.mt_bench.{key} is not set")
    _positive(mt.get("max_new_tokens"), "eval.mt_bench.max_new_tokens")
    if str(mt.get("mode", "single")) not in ("single", "pairwise"):
        raise ConfigError(f"eval.mt_bench.mode must be single or pairwise, got {mt.get('mode')}")
    if judge.get("base_url") and not judge.get("model"):
        raise ConfigError("eval.judge.model must name the judge when eval.judge.base_url is set")


def _check_judge(ev: DictConfig) -> None:
    """The judge's API key is named by an environment variable: never echo what looks like a
    key itself."""
    env = (ev.get("judge") or {}).get("api_key_env")
    if env and (str(env).startswith(("sk-", "Bearer")) or len(str(env)) > 64 or " " in str(env)):
        raise ConfigError("eval.judge.api_key_env must be the NAME of an environment variable "
                          "(e.g. OPENAI_API_KEY), not the key itself")


def _check_cascade(ev: DictConfig) -> None:
    casc = ev.get("cascade") or {}
    if not casc.get("enabled"):
        return
    if casc.get("direction", "minimize") not in ("minimize", "maximize"):
        raise ConfigError("eval.cascade.direction must be minimize or maximize")
    if casc.get("threshold") is None and not casc.get("top_k"):
        raise ConfigError("eval.cascade needs a threshold or a top_k when enabled")
    if casc.get("top_k") is not None:
        _positive(casc.top_k, "eval.cascade.top_k")


def check_eval_config(cfg: DictConfig) -> None:
    """The lm_eval / mt_bench / judge / cascade sections (every problem, one line each)."""
    problems = Problems()
    for check in (_check_lm_eval, _check_mt_bench, _check_judge, _check_cascade):
        problems.check(check, cfg.eval)
    problems.raise_if_any()


# -- sweep and launcher ------------------------------------------------------------------------
def _check_sweep_fields(cfg: DictConfig) -> None:
    n = cfg.sweep.n_trials
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise ConfigError(f"sweep.n_trials must be a positive integer, got {n!r}")
    objectives = cfg.sweep.get("objectives") or []
    if not objectives:
        raise ConfigError("sweep.objectives is empty")
    for objective in objectives:
        if objective.get("direction") not in {"minimize", "maximize"}:
            raise ConfigError(f"sweep.objectives: direction of {objective.get('metric')} must "
                              f"be minimize or maximize, got {objective.get('direction')!r}")


def check_slurm_config(cfg: DictConfig) -> None:
    """Check `launcher=slurm` settings and their storage before any job runs (every problem)."""
    launcher = cfg.launcher
    if launcher.get("name") != "slurm":
        return
    problems = Problems()
    for key in ("parallel", "array_parallelism", "nodes", "cpus_per_task"):
        problems.check(_check_int, launcher, key, 1)
    problems.check(_check_int, launcher, "gpus_per_node", 0)
    problems.check(_check_int, launcher, "max_requeues", 0)
    if launcher.get("nproc_per_node") is not None:
        problems.check(_check_int, launcher, "nproc_per_node", 1)
    problems.check(_check_number, launcher, "timeout_min", False)
    problems.check(_check_number, launcher, "mem_gb", True)
    problems.check(_check_number, launcher, "poll_seconds", False)
    delay, timeout = launcher.signal_delay_s, launcher.timeout_min
    if not isinstance(delay, int) or delay < 0 or (_positive_number(timeout)
                                                  and delay >= float(timeout) * 60):
        problems.add(f"launcher.signal_delay_s must be an integer in [0, timeout_min * 60), "
                     f"got {delay!r}")
    if not OmegaConf.is_list(launcher.setup):
        problems.add(f"launcher.setup must be a list of shell lines, got {launcher.setup!r}")
    if not OmegaConf.is_dict(launcher.additional):
        problems.add("launcher.additional must be a mapping of sbatch options, "
                     f"got {launcher.additional!r}")
    if isinstance(launcher.get("nodes"), int):
        problems.check(check_storage, cfg.storage, int(launcher.nodes))
    problems.check(check_launch_mode, cfg)   # launcher.mode, launcher.pool.* (config.pool)
    problems.raise_if_any()


def check_storage(storage: DictConfig, nodes: int) -> None:
    """SQLite cannot be shared by processes on several nodes: refuse it for multi-node runs."""
    if storage.get("kind") == "sqlite" and nodes > 1:
        raise ConfigError(f"storage=sqlite cannot be shared by trials running on {nodes} nodes "
                          "(SQLite locking breaks on shared file systems): use storage=journal "
                          "or storage=rdb")


# -- small checks ------------------------------------------------------------------------------
def _check_int(node: DictConfig, key: str, minimum: int) -> None:
    value = node.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"launcher.{key} must be an integer >= {minimum}, got {value!r}")


def _check_number(node: DictConfig, key: str, allow_none: bool) -> None:
    value = node.get(key)
    if value is None and allow_none:
        return
    if not _positive_number(value):
        raise ConfigError(f"launcher.{key} must be > 0, got {value!r}")


def _check_positive(cfg: DictConfig, keys: list[str], prefix: str = "") -> None:
    problems = Problems()
    for key in keys:
        value = OmegaConf.select(cfg, key)
        if not _positive_number(value):
            problems.add(f"{prefix}{key} must be > 0, got {value!r}")
    problems.raise_if_any()


def _positive(value, name: str) -> None:
    if not _positive_number(value):
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
