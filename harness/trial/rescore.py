"""Re-score a finished trial: run expensive evaluation stages on its saved model, in process.

`evaluate_saved(trial_dir)` loads the trial's model back (the base plus its saved adapter, the
saved full model, or the base model for the base record), runs the stages and updates its
result.json: metrics, deltas against the base record, the stages' notes and `record.cascade`.
harness.sweep.cascade calls it for the top-k pass and for `reeval`, with the sweep's judge
server of the moment (the one a trial's spec names died with the run that started it).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.eval.cascade import Decision, baseline_folder, enabled_stages, run_stages
from harness.eval.judge_server import ServedModel
from harness.layout import MODEL_DIR
from harness.records import (
    COMPLETE,
    TrialRecord,
    TrialSpec,
    deltas,
    read_record,
    read_trial_config,
    write_record,
)
from harness.train.modeling import load_base_model, load_tokenizer

log = logging.getLogger(__name__)


def load_saved(cfg: DictConfig, spec: TrialSpec, trial_dir: Path):
    """(model, tokenizer) of a finished trial: the base plus its saved adapter (or the saved
    full model), or the base model for the base record."""
    if spec.baseline:
        return load_base_model(cfg.model), load_tokenizer(cfg.model)
    saved = Path(trial_dir) / MODEL_DIR
    if not saved.is_dir():
        raise FileNotFoundError(f"{saved}: the trial saved no model to re-evaluate")
    local = OmegaConf.merge(cfg.model, {"path": str(saved), "source": "local"})
    tokenizer = load_tokenizer(local)
    if cfg.method.get("peft") == "lora":
        from peft import PeftModel

        base = load_base_model(cfg.model, cfg.method.get("quantization"))
        return PeftModel.from_pretrained(base, str(saved)), tokenizer
    return load_base_model(local), tokenizer


def with_judge(spec: TrialSpec, judge: ServedModel | None) -> TrialSpec:
    """The spec with the judge server of this re-scoring in place of the original run's."""
    return replace(spec, judge_url=judge.base_url if judge else None,
                   judge_model=judge.model if judge else None)


def evaluate_saved(trial_dir: str | Path, stages: list[str] | None = None,
                   reason: str | None = None, judge: ServedModel | None = None) -> dict:
    """Run expensive stages on a finished trial's saved model and update its result.json
    (metrics, deltas against the base record, extra; `record.cascade` when `reason` is given).
    `judge`: the live sweep-wide judge server, if any. Returns the new metrics."""
    trial_dir = Path(trial_dir)
    cfg, spec = read_trial_config(trial_dir)
    spec = with_judge(spec, judge)
    record = read_record(trial_dir)
    if record is None:
        raise FileNotFoundError(f"{trial_dir}: no result.json")
    model, tokenizer = load_saved(cfg, spec, trial_dir)
    model.eval()
    metrics, extra = run_stages(model, tokenizer, cfg, stages or enabled_stages(cfg), spec)
    record.metrics.update(metrics)
    record.metrics["cascade/judged"] = 1.0
    record.extra.update(extra)
    if reason:
        record.cascade = asdict(Decision(True, reason))
    if not spec.baseline:
        base_dir = baseline_folder(cfg, spec)
        update_deltas(record, read_record(base_dir) if base_dir else None)
    write_record(record, trial_dir)
    return metrics


def update_deltas(record: TrialRecord, base: TrialRecord | None) -> None:
    """Refresh `record.delta_vs_base` for every numeric metric the completed base record has."""
    if base is None or base.status != COMPLETE:
        return
    record.delta_vs_base.update(deltas(record.metrics, base))
