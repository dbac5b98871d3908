"""One trial, in its own process: setup -> train -> evaluate -> record.

    python -m harness.trial sweeps/<sweep>/trials/0003

reads `config.yaml` in that folder (the fully resolved trial config and its `trial:` spec,
written by the driver) and writes `result.json` beside it, whatever happens: COMPLETE, PRUNED
or FAILED with the error's class and message. The adapter (or full model) is saved under
`model/`. The method kind picks the pipeline (harness.registry.METHOD_KINDS ->
harness.trial.pipelines); the base model (spec.baseline) is evaluated untrained.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from harness import progress
from harness.eval.battery import run_battery
from harness.layout import CONFIG_FILE, LOG_FILE, MODEL_DIR
from harness.records import (
    COMPLETE,
    FAILED,
    PRUNED,
    TrialError,
    TrialRecord,
    TrialSpec,
    package_versions,
    read_trial_config,
    write_record,
)
from harness.registry import METHOD_KINDS
from harness.train.checkpoints import remove_checkpoints
from harness.trial.pipelines import BasePipeline, Trained, TrialContext
from harness.trial.process import leave_data_parallel, rank, record_machine, setup_process
from harness.trial.saved import (
    SavedModelError,
    adapter_effect,
    artifact_info,
    dead_message,
    load_saved,
    lora_dtypes,
    release_memory,
)
from harness.trial.scoring import (
    SKIPPED,
    PreferenceResult,
    base_preference,
    preference_metrics,
    scoring_stage,
)

log = logging.getLogger("harness.trial.run")


def run_trial(trial_dir: str | Path, job: dict | None = None) -> TrialRecord:
    """Run the trial described by `trial_dir/config.yaml`; always writes `result.json`.
    `job`: the launcher's job information, copied into the record."""
    trial_dir = Path(trial_dir).resolve()
    cfg, spec = read_trial_config(trial_dir)
    record = new_record(cfg, spec, trial_dir, job)
    start = time.perf_counter()
    if rank() == 0:   # trial_dir/progress.json: stage and step, for the driver's bar
        interval = float(cfg.launcher.get("progress_interval_s", progress.MIN_INTERVAL_S))
        progress.start(trial_dir, interval).update("setup", force=True)
    try:
        setup_process(spec)
        run_pipeline(TrialContext(cfg, spec, trial_dir), record)
        record.status = COMPLETE
    except Exception as exc:  # noqa: BLE001 - every failure becomes part of the record
        record_failure(record, exc, trial_dir)
    record.wall_seconds = time.perf_counter() - start
    record_machine(record)
    progress.report("done", record.status, force=True)
    if rank() == 0:   # data-parallel: rank 0 writes the record
        write_record(record, trial_dir)
        remove_checkpoints(trial_dir)   # kept for a requeue until the trial has its record
    return record


def run_pipeline(ctx: TrialContext, record: TrialRecord) -> None:
    """Train (or load the base model), save, evaluate, score preferences: into `record`."""
    pipeline = BasePipeline() if ctx.spec.baseline \
        else METHOD_KINDS.load(str(ctx.cfg.method.get("kind", "sft")))()
    trained = pipeline.train(ctx)
    record_training(record, trained)
    if leave_data_parallel():   # data-parallel: rank 0 goes on alone to save and evaluate
        return
    if trained.result is not None:
        progress.report("save", force=True)
        save_model(trained, ctx.trial_dir / MODEL_DIR, record)
        reload_saved(ctx, trained, record)   # every number below is of the saved files
    run_battery(trained.model, trained.tokenizer, ctx.cfg, spec=ctx.spec).fill(record)
    record.metrics.update(trained.metrics)   # the pipeline's own (online methods: KL, distinct-n)
    if ctx.spec.baseline:
        if ctx.spec.build_scorer:
            score_base(ctx, trained, record)
        return
    try:
        score_preferences(ctx, trained, record)
    finally:
        if record.adapter_effect.get("dead"):   # numbers kept in the record, trial FAILED
            raise SavedModelError(dead_message(ctx.spec, record.adapter_effect))


def reload_saved(ctx: TrialContext, trained: Trained, record: TrialRecord) -> None:
    """Swap the in-memory trained model for the saved one reloaded; record its dtypes and
    whether it differs from the model training started from (harness.trial.saved)."""
    trained_lora = lora_dtypes(trained.model)
    trained.model = None   # the in-memory model's memory goes before the reload
    release_memory()
    trained.model, trained.tokenizer = load_saved(ctx.cfg, ctx.spec, ctx.trial_dir,
                                                  record.stages)
    record.artifact = artifact_info(trained_lora, trained.model, ctx.trial_dir / MODEL_DIR,
                                    ctx.cfg)
    record.adapter_effect = adapter_effect(trained.model, trained.tokenizer, ctx.cfg,
                                           record.stages)
    if record.adapter_effect["dead"]:
        log.error(dead_message(ctx.spec, record.adapter_effect))


def score_preferences(ctx: TrialContext, trained: Trained, record: TrialRecord) -> None:
    """The preference metrics against the sweep's scoring reward model (if any)."""
    start = time.perf_counter()
    progress.report("eval", "preference", force=True)
    scorer = scoring_stage(ctx)   # the sweep's reward model: built by the base-model job
    if scorer is None:
        record.extra["preference_metrics"] = SKIPPED
        return
    record.stages.append(asdict(scorer))
    record_preference(record, preference_metrics(ctx, trained, scorer))
    # evaluation time, including the sweep's reward model when this trial had to train it
    # (the base-model job did not: harness.trial.scoring)
    record.eval_seconds += time.perf_counter() - start


def score_base(ctx: TrialContext, trained: Trained, record: TrialRecord) -> None:
    """The base-model job of a sweep that computes preference metrics: build the sweep's
    scoring reward model here, once, before any trial needs it, and score the base model
    (its training time goes to extra.scorer_train_seconds, not eval_seconds)."""
    progress.report("eval", "preference", force=True)
    scorer = scoring_stage(ctx, every_method=True)
    if scorer is None:
        return
    start = time.perf_counter()
    record.stages.append(asdict(scorer))
    record_preference(record, base_preference(ctx, trained, scorer))
    record.eval_seconds += time.perf_counter() - start
    record.extra["scorer_train_seconds"] = 0.0 if scorer.reused else scorer.seconds


# ----------------------------------------------------------------------------- the record


def new_record(cfg: DictConfig, spec: TrialSpec, trial_dir: Path,
               job: dict | None = None) -> TrialRecord:
    """A record filled with what is known before any work starts. `job`: where the launcher's
    job wrapper ran it (SLURM job id, node, log paths; see harness.launch.slurm)."""
    return TrialRecord(
        number=spec.number,
        status=FAILED,
        method="base" if spec.baseline else str(cfg.method.name),
        params=dict(spec.params),
        seed=spec.seed,
        log_path=str(trial_dir / LOG_FILE),
        config_path=str(trial_dir / CONFIG_FILE),
        versions=package_versions(),
        git_commit=spec.git_commit,
        job=dict(job or {}),
        prediction=spec.prediction,   # the driver's memory estimate, beside the measured peak
    )


def record_training(record: TrialRecord, trained: Trained) -> None:
    """Parameter counts, train time, steps, loss history, stages and notes of a pipeline."""
    record.trainable_params, record.total_params = trained.params
    result = trained.result
    if result is None:   # the base model: nothing trained
        return
    record.train_seconds, record.loss_history = result.seconds, result.loss_history
    record.train_steps, record.resumed_from_step = result.steps, result.resumed_from_step
    record.train_tokens = result.tokens
    record.stages = [asdict(s) for s in trained.stages]
    record.extra.update(trained.notes)


def save_model(trained: Trained, out: Path, record: TrialRecord) -> None:
    """The trained adapter (or full model) and its tokenizer under the trial's model/."""
    trained.model.save_pretrained(out)
    trained.tokenizer.save_pretrained(out)
    record.output_dir = str(out)


def record_preference(record: TrialRecord, result: PreferenceResult) -> None:
    record.metrics.update(result.metrics)
    record.extra.update(result.extra)


def record_failure(record: TrialRecord, exc: Exception, trial_dir: Path) -> None:
    """PRUNED for an Optuna prune, else FAILED with the error's class and first line."""
    record.status = PRUNED if type(exc).__name__ == "TrialPruned" else FAILED
    record.error = TrialError(type=type(exc).__name__, message=_one_line(exc),
                              log=str(trial_dir / LOG_FILE))
    log.error("trial %s %s: %s", record.number, record.status, record.error.message)
    if record.status == FAILED:
        traceback.print_exc()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else type(exc).__name__


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    """Entry point of a trial process; exit code 0 unless the record could not be written."""
    args = list(sys.argv[1:] if argv is None else argv)
    job: dict = {}
    if len(args) == 3 and args[1] == "--job-info":   # a launcher's job wrapper (torchrun ranks)
        job = json.loads(args.pop(2))
        args.pop(1)
    if len(args) != 1:
        print("usage: python -m harness.trial TRIAL_DIR [--job-info JSON]", file=sys.stderr)
        return 2
    progress.log_to_stderr()
    record = run_trial(args[0], job)
    print(f"trial {record.number}: {record.status}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
