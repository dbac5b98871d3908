"""Re-score a finished trial: run expensive evaluation stages on its saved model.

`evaluate_saved(trial_dir)` loads the trial's model back (harness.trial.saved: its adapter on
the base it was trained from, the saved full model, or the base model for the base record),
checks that it differs from its start model, runs the stages and updates its result.json:
metrics, deltas against the base record, the stages' notes and `record.cascade`. A missing
adapter or one without effect marks the trial FAILED (SavedModelError, one line) instead.

`rescore_task(folder)` is the job that does it (registry.TASKS["rescore"]): harness.sweep.cascade
writes the request (stages, reason, the sweep's judge server of the moment: the one a trial's
spec names died with the run that started it) and submits it through the sweep's launcher, so
the model is loaded in a job (a child process, a SLURM job), never in the driver.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

from harness import progress, tasks
from harness.eval.cascade import Decision, baseline_folder, enabled_stages, run_stages
from harness.eval.judge_server import ServedModel
from harness.layout import LOG_FILE
from harness.records import (
    COMPLETE,
    FAILED,
    TrialError,
    TrialRecord,
    TrialSpec,
    deltas,
    read_record,
    read_trial_config,
    write_record,
)
from harness.trial.saved import SavedModelError, adapter_effect, dead_message, load_saved

log = logging.getLogger(__name__)


def rescore_task(folder: str | Path) -> str:
    """The re-scoring job: the folder's rescore request -> evaluate_saved -> its outcome file
    (done, unusable: SavedModelError, recorded in the trial; error: re-raised). Returns the
    status."""
    folder = Path(folder)
    request = tasks.read_request(folder, tasks.RESCORE)
    progress.start(folder).update("reeval", force=True)
    start = time.perf_counter()
    try:
        metrics = evaluate_saved(folder, request.get("stages"), request.get("reason"),
                                 request.get("judge_url"), request.get("judge_model"))
    except SavedModelError as exc:
        tasks.write_outcome(folder, tasks.RESCORE, tasks.UNUSABLE, str(exc),
                            seconds=time.perf_counter() - start)
        progress.report("done", tasks.UNUSABLE, force=True)
        return tasks.UNUSABLE
    except Exception as exc:
        traceback.print_exc()
        tasks.write_outcome(folder, tasks.RESCORE, tasks.ERROR, _one_line(exc),
                            seconds=time.perf_counter() - start)
        progress.report("done", tasks.ERROR, force=True)
        raise
    tasks.write_outcome(folder, tasks.RESCORE, tasks.DONE, f"{len(metrics)} metrics",
                        seconds=time.perf_counter() - start)
    progress.report("done", tasks.DONE, force=True)
    return tasks.DONE


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400] if text else ''}"


def with_judge(spec: TrialSpec, judge: ServedModel | None) -> TrialSpec:
    """The spec with the judge server of this re-scoring in place of the original run's."""
    return replace(spec, judge_url=judge.base_url if judge else None,
                   judge_model=judge.model if judge else None)


def evaluate_saved(trial_dir: str | Path, stages: list[str] | None = None,
                   reason: str | None = None, judge_url: str | None = None,
                   judge_model: str | None = None) -> dict:
    """Run expensive stages on a finished trial's saved model, in this process, and update its
    result.json (metrics, deltas against the base record, extra; `record.cascade` when
    `reason` is given). `judge_url`, `judge_model`: the live sweep-wide judge server, if any.
    Returns the new metrics."""
    trial_dir = Path(trial_dir)
    cfg, spec = read_trial_config(trial_dir)
    spec = replace(spec, judge_url=judge_url, judge_model=judge_model)   # this run's judge
    record = read_record(trial_dir)
    if record is None:
        raise FileNotFoundError(f"{trial_dir}: no result.json")
    try:
        model, tokenizer = load_saved(cfg, spec, trial_dir, record.stages)
    except SavedModelError as exc:   # recorded for this trial; the caller goes on
        mark_unusable(record, trial_dir, "SavedModelError", str(exc))
        raise
    model.eval()
    if not spec.baseline:
        record.adapter_effect = adapter_effect(model, tokenizer, cfg, record.stages)
    metrics, extra = run_stages(model, tokenizer, cfg, stages or enabled_stages(cfg), spec)
    record.metrics.update(metrics)
    record.metrics["cascade/judged"] = 1.0
    record.extra.update(extra)
    if reason:
        record.cascade = asdict(Decision(True, reason))
    if not spec.baseline:
        base_dir = baseline_folder(cfg, spec)
        update_deltas(record, read_record(base_dir) if base_dir else None)
    if record.adapter_effect.get("dead"):
        mark_unusable(record, trial_dir, "SavedModelError",
                      dead_message(spec, record.adapter_effect))
        raise SavedModelError(dead_message(spec, record.adapter_effect))
    write_record(record, trial_dir)
    return metrics


def mark_unusable(record: TrialRecord, trial_dir: Path, kind: str, message: str) -> None:
    """FAILED with the reason: the saved model cannot stand for the trial's numbers (they
    stay in the record, out of every ranking)."""
    record.status = FAILED
    record.error = TrialError(kind, message, str(Path(trial_dir) / LOG_FILE))
    write_record(record, trial_dir)


def update_deltas(record: TrialRecord, base: TrialRecord | None) -> None:
    """Refresh `record.delta_vs_base` for every numeric metric the completed base record has."""
    if base is None or base.status != COMPLETE:
        return
    record.delta_vs_base.update(deltas(record.metrics, base))
