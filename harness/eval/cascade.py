"""Expensive evaluations (lm-eval, MT-Bench) in a trial, and the cost cascade that gates them.

`eval.cascade` lets cheap metrics decide who pays for expensive ones: a trial whose `metric`
passes `threshold` (<= for minimize, >= for maximize) is scored at once; otherwise it is
deferred (`top_k` set: harness.sweep.cascade scores the top k after the sweep) or skipped, and
the record says why (`record.cascade`). The base model is always scored.

The stages are named in harness.registry.EVAL_STAGES; each is a function
`(model, tokenizer, cfg, spec, out_dir) -> (metrics, extra)` writing its files under `out_dir`.
"""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from harness import layout
from harness.records import TrialSpec
from harness.registry import EVAL_STAGES

log = logging.getLogger(__name__)

STAGES = tuple(EVAL_STAGES.names())
EXPENSIVE_PREFIXES = tuple(f"{stage}/" for stage in STAGES)


@dataclass
class Decision:
    """Whether a trial gets the expensive evaluations now, and why."""

    judged: bool
    reason: str
    deferred: bool = False


@dataclass
class ExpensiveResult:
    """What the expensive stages added: metrics, notes for `record.extra`, the cascade decision
    for `record.cascade` (None when no expensive stage is enabled)."""

    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    cascade: dict | None = None


# ------------------------------------------------------------------------------- decisions


def enabled_stages(cfg: DictConfig) -> list[str]:
    """The expensive stages switched on in `cfg.eval`."""
    return [s for s in STAGES if (cfg.eval.get(s) or {}).get("enabled")]


def _passes(value: float, threshold: float, direction: str) -> bool:
    return value <= threshold if direction == "minimize" else value >= threshold


def decide(cfg: DictConfig, metrics: dict, spec: TrialSpec | None = None) -> Decision:
    """The in-trial cascade decision from the trial's cheap metrics."""
    spec = spec or TrialSpec.from_config(cfg)
    casc = cfg.eval.get("cascade") or {}
    if spec.baseline:
        return Decision(True, "base model: always scored")
    if not casc.get("enabled"):
        return Decision(True, "cascade off: every trial scored")
    metric, direction = str(casc.get("metric", "perplexity")), str(casc.get("direction",
                                                                            "minimize"))
    threshold, top_k = casc.get("threshold"), casc.get("top_k")
    value = metrics.get(metric)
    if value is None:
        return Decision(False, f"not judged: cascade metric {metric} was not computed")
    op = "<=" if direction == "minimize" else ">="
    if threshold is not None and _passes(float(value), float(threshold), direction):
        return Decision(True, f"{metric}={value:.4g} passes threshold {op} {threshold}")
    why = f"{metric}={value:.4g} fails threshold {op} {threshold}" if threshold is not None \
        else "no threshold"
    if top_k:
        return Decision(False, f"{why}; deferred to the top-{top_k} pass after the sweep",
                        deferred=True)
    return Decision(False, f"not judged: {why}")


# ------------------------------------------------------------------------------- the trial


def output_dir(cfg: DictConfig, spec: TrialSpec) -> Path:
    """Where a run's lm-eval / MT-Bench files go: the trial folder, else a temporary one."""
    if spec.dir:
        return Path(spec.dir)
    if cfg.eval.get("output_dir"):
        return Path(str(cfg.eval.output_dir))
    return Path(tempfile.mkdtemp(prefix="harness-eval-"))


def baseline_folder(cfg: DictConfig, spec: TrialSpec) -> Path | None:
    """The sweep's base-model folder: the spec's `baseline_dir` (set by the driver), else the
    completed one harness.layout finds for this config; None outside a sweep."""
    if spec.baseline_dir:
        return Path(spec.baseline_dir)
    if not (cfg.get("paths") or {}).get("sweeps") or not (cfg.get("sweep") or {}).get("name"):
        return None
    try:
        digest = layout.baseline_digest(cfg)
    except (OmegaConfBaseException, KeyError):  # an unresolvable config: the newest one
        digest = None
    return layout.find_baseline(layout.sweep_dir(cfg), digest)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400] if text else ''}"


def run_stages(model, tokenizer, cfg: DictConfig, stages: list[str],
               spec: TrialSpec | None = None) -> tuple[dict, dict]:
    """Run the named expensive stages; (metrics, extra). A failing stage is recorded in
    extra['eval_errors'] (or re-raised when `eval.on_error: raise`), never loses the trial."""
    spec = spec or TrialSpec.from_config(cfg)
    metrics: dict = {}
    extra: dict = {}
    out = output_dir(cfg, spec)
    for stage in stages:
        start = time.perf_counter()
        try:
            stage_metrics, stage_extra = EVAL_STAGES.load(stage)(model, tokenizer, cfg, spec,
                                                                 out)
        except Exception as exc:
            if str(cfg.eval.get("on_error", "record")) == "raise":
                raise
            log.error("%s failed: %s", stage, _one_line(exc))
            traceback.print_exc()
            extra.setdefault("eval_errors", {})[stage] = _one_line(exc)
            continue
        metrics.update(stage_metrics)
        extra[stage] = {**stage_extra, "seconds": round(time.perf_counter() - start, 2)}
        log.info("%s: %d metrics in %.1f s", stage, len(stage_metrics), extra[stage]["seconds"])
    return metrics, extra


def run_expensive(model, tokenizer, cfg: DictConfig, metrics: dict,
                  spec: TrialSpec | None = None) -> ExpensiveResult:
    """The battery's hook: the cascade decision, then the enabled stages if it says so."""
    stages = enabled_stages(cfg)
    if not stages:
        return ExpensiveResult()
    spec = spec or TrialSpec.from_config(cfg)
    decision = decide(cfg, metrics, spec)
    result = ExpensiveResult(metrics={"cascade/judged": float(decision.judged)},
                             cascade=asdict(decision))
    if decision.judged:
        stage_metrics, stage_extra = run_stages(model, tokenizer, cfg, stages, spec)
        result.metrics.update(stage_metrics)
        result.extra.update(stage_extra)
    return result
