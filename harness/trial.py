"""One trial, in its own process: load the model, train, evaluate, write the result record.

    python -m harness.trial sweeps/<sweep>/trials/0003

reads `config.yaml` in that folder (the fully resolved trial config written by the driver)
and writes `result.json` beside it, whatever happens: COMPLETE, PRUNED or FAILED with the
error's class and message. The adapter (or full model) is saved under `model/`.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.records import (
    COMPLETE,
    CONFIG_FILE,
    FAILED,
    LOG_FILE,
    PRUNED,
    TrialError,
    TrialRecord,
    package_versions,
    write_record,
)

log = logging.getLogger("harness.trial")
# Processes of a data-parallel (torchrun) trial; read at start, before rank 0 goes on alone.
_WORLD_SIZE = int(os.environ.get("WORLD_SIZE", "1"))


def new_record(cfg: DictConfig, trial_dir: Path) -> TrialRecord:
    """A record filled with what is known before any work starts."""
    trial = cfg.trial
    return TrialRecord(
        number=int(trial.number),
        status=FAILED,
        method="base" if trial.get("baseline") else str(cfg.method.name),
        params=_plain(trial.get("params")),
        seed=int(cfg.seed),
        log_path=str(trial_dir / LOG_FILE),
        config_path=str(trial_dir / CONFIG_FILE),
        versions=package_versions(),
        git_commit=trial.get("git_commit"),
        job=_job_info(trial),
    )


def _job_info(trial: DictConfig) -> dict:
    """`trial.job` plus what the launcher's job wrapper put in $HARNESS_JOB (JSON): job id,
    node and log paths of a SLURM job (harness.slurm)."""
    info = _plain(trial.get("job"))
    info.update(json.loads(os.environ.get("HARNESS_JOB") or "{}"))
    return info


def _plain(node) -> dict:
    """A config mapping (possibly empty or missing) as a plain dict."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) \
        else dict(node or {})


def _rank() -> int:
    """This process's rank in a data-parallel (torchrun) trial; 0 when not distributed."""
    return int(os.environ.get("RANK", "0"))


def _leave_data_parallel() -> bool:
    """After data-parallel training: True for ranks > 0 (done); rank 0 leaves the process
    group and goes on as a single process (evaluation and later stages are not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return _rank() != 0
    rank = dist.get_rank()
    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        return True
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    for name in ("LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                 "GROUP_WORLD_SIZE", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(name, None)
    return False


def run_trial(trial_dir: str | Path) -> TrialRecord:
    """Run the trial described by `trial_dir/config.yaml`; always writes `result.json`."""
    trial_dir = Path(trial_dir).resolve()
    cfg = OmegaConf.load(trial_dir / CONFIG_FILE)
    record = new_record(cfg, trial_dir)
    start = time.perf_counter()
    try:
        _setup_process(cfg)
        if cfg.trial.get("baseline"):
            _evaluate_base(cfg, record)
        else:
            _train_and_evaluate(cfg, trial_dir, record)
        record.status = COMPLETE
    except Exception as exc:  # noqa: BLE001 - every failure becomes part of the record
        record.status = PRUNED if type(exc).__name__ == "TrialPruned" else FAILED
        record.error = TrialError(type=type(exc).__name__, message=_one_line(exc),
                                  log=str(trial_dir / LOG_FILE))
        log.error("trial %s %s: %s", record.number, record.status, record.error.message)
        if record.status == FAILED:
            traceback.print_exc()
    record.wall_seconds = time.perf_counter() - start
    _record_memory(record)
    if _rank() == 0:   # data-parallel: rank 0 writes the record
        write_record(record, trial_dir)
    return record


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else type(exc).__name__


def _setup_process(cfg: DictConfig) -> None:
    import torch
    from transformers import set_seed

    threads = cfg.trial.get("threads")
    if threads:   # shared by the ranks of a data-parallel trial
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, int(threads) // local_ranks))
    set_seed(int(cfg.seed))


def _evaluate_base(cfg: DictConfig, record: TrialRecord) -> None:
    from harness.battery import run_battery
    from harness.modeling import count_parameters, load_base_model, load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    model = load_base_model(cfg.model)
    record.trainable_params, record.total_params = 0, count_parameters(model)[1]
    result = run_battery(model, tokenizer, cfg)
    record.metrics, record.samples = result.metrics, result.samples
    record.eval_seconds = result.seconds
    record.extra.update(result.extra)


def _train_and_evaluate(cfg: DictConfig, trial_dir: Path, record: TrialRecord) -> None:
    from harness import data
    from harness.battery import run_battery
    from harness.modeling import count_parameters, load_trial_model
    from harness.stages import CHAINED_KINDS, add_preference_metrics, run_chained_trial
    from harness.train import train_sft

    if cfg.method.get("kind", "sft") in CHAINED_KINDS:   # dpo / ppo / grpo (harness.stages)
        run_chained_trial(cfg, trial_dir, record)
        return
    model, tokenizer = load_trial_model(cfg.model, cfg.method)
    record.trainable_params, record.total_params = count_parameters(model)
    train_rows = data.sft_rows(cfg.data.train, cfg.data.get("max_train_samples"))
    eval_spec = cfg.data.get("eval_loss")
    eval_rows = data.sft_rows(eval_spec) if eval_spec and eval_spec.get("path") else None
    result = train_sft(model, tokenizer, cfg.method, cfg.model, train_rows, eval_rows,
                       output_dir=trial_dir / "checkpoints", seed=int(cfg.seed),
                       reporter=_reporter(cfg), log_dir=trial_dir)
    record.train_seconds, record.loss_history = result.seconds, result.loss_history
    record.extra["train_steps"] = result.steps
    record.extra["resumed_from_step"] = result.resumed_from_step
    if _leave_data_parallel():   # data-parallel: rank 0 goes on alone to save and evaluate
        return
    model.save_pretrained(trial_dir / "model")
    tokenizer.save_pretrained(trial_dir / "model")
    record.output_dir = str(trial_dir / "model")
    battery = run_battery(model, tokenizer, cfg)
    record.metrics, record.samples = battery.metrics, battery.samples
    record.eval_seconds = battery.seconds
    record.extra.update(battery.extra)
    add_preference_metrics(cfg, model, tokenizer, record)


def _reporter(cfg: DictConfig):
    """An Optuna reporter for pruning, when the sweep has a pruner and a study to report to."""
    trial = cfg.trial
    if trial.get("trial_id") is None or cfg.sweep.pruner.get("name", "none") == "none":
        return None
    from harness.study import TrialReporter

    return TrialReporter(cfg.storage, cfg.sweep.pruner, trial.study_name, int(trial.trial_id))


def _record_memory(record: TrialRecord) -> None:
    record.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        import torch

        if torch.cuda.is_available():
            record.gpu_max_allocated_mb = torch.cuda.max_memory_allocated() / 2**20
        record.extra["device"] = _device(torch)
    except ImportError:
        pass


def _device(torch) -> dict:
    """The GPU (name, count) or CPU (name, torch threads) the trial ran on, for the report's
    environment and GPU-/CPU-hours."""
    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": _WORLD_SIZE,
                "visible": torch.cuda.device_count()}
    return {"type": "cpu", "name": _cpu_name(), "threads": torch.get_num_threads()}


def _cpu_name() -> str:
    """The CPU model (/proc/cpuinfo on Linux), else the machine type."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    """Entry point of a trial process; exit code 0 unless the record could not be written."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.trial TRIAL_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    record = run_trial(args[0])
    print(f"trial {record.number}: {record.status}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

