"""The evaluation battery run on every trial's model and once on the base model.

Reads `conf/eval/` and the held-out data sets; returns plain metrics and sample generations.
Cheap metrics (perplexity, ROUGE) come first; lm-eval and MT-Bench follow when enabled and the
cost cascade (`eval.cascade`, see harness.eval.cascade) lets the trial through.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from omegaconf import DictConfig

import harness.data.sft as data
import harness.eval.metrics as evaluate
from harness.config.battery import perplexity_batching
from harness.eval.cascade import run_expensive
from harness.records import TrialRecord, TrialSpec

log = logging.getLogger(__name__)


@dataclass
class BatteryResult:
    """Metrics (name -> value), sample generations, how long it took, notes for the record's
    `extra` and the cascade decision for `record.cascade` (None: no expensive stage on)."""

    metrics: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    cascade: dict | None = None

    def fill(self, record: TrialRecord) -> None:
        """Copy the battery's outcome into a trial's record (metrics replaced)."""
        record.metrics, record.samples = dict(self.metrics), list(self.samples)
        record.eval_seconds = self.seconds
        record.extra.update(self.extra)
        if self.cascade is not None:
            record.cascade = dict(self.cascade)


def run_battery(model, tokenizer, cfg: DictConfig, progress: bool = True,
                spec: TrialSpec | None = None) -> BatteryResult:
    """Perplexity, ROUGE, then lm-eval and MT-Bench (cascade permitting), as `cfg.eval` says.

    `result.extra` holds output files, judge counts and any stage error; `result.cascade` the
    cascade decision. `spec`: the trial's spec (default: the `trial:` block of `cfg`).
    """
    start = time.perf_counter()
    result = BatteryResult()
    model.eval()
    ppl_cfg, rouge_cfg = cfg.eval.perplexity, cfg.eval.rouge
    if ppl_cfg.enabled:
        texts = data.perplexity_texts(cfg.data.perplexity, ppl_cfg.get("max_texts"))
        batch, tokens = perplexity_batching(ppl_cfg.batch_size,
                                            evaluate.input_device(model).type, _vocab_size(model))
        ppl = evaluate.perplexity(model, tokenizer, texts, max_length=int(ppl_cfg.max_length),
                                  stride=int(ppl_cfg.stride), batch_size=batch,
                                  max_batch_tokens=tokens, progress=progress)
        result.metrics.update({"perplexity": ppl["perplexity"], "eval_nll": ppl["nll"]})
        log.info("perplexity %.3f over %d tokens (batches of <= %d windows, <= %s tokens)",
                 ppl["perplexity"], ppl["tokens"], batch, tokens)
    if rouge_cfg.enabled:
        prompts, refs = data.rouge_pairs(cfg.data.rouge, rouge_cfg.get("max_samples"))
        outputs = evaluate.generate(model, tokenizer, prompts,
                                    max_new_tokens=int(rouge_cfg.max_new_tokens),
                                    batch_size=int(rouge_cfg.batch_size), progress=progress,
                                    desc="rouge generations")
        result.metrics.update(evaluate.rouge(outputs, refs))
        keep = int(cfg.eval.get("samples_in_record", 8))
        result.samples = [{"prompt": p, "reference": r, "generation": g}
                          for p, r, g in list(zip(prompts, refs, outputs, strict=True))[:keep]]
        log.info("rougeL %.4f on %d prompts", result.metrics["rougeL"], len(prompts))
    expensive = run_expensive(model, tokenizer, cfg, result.metrics, spec)  # lm-eval, MT-Bench
    result.metrics.update(expensive.metrics)
    result.extra.update(expensive.extra)
    result.cascade = expensive.cascade
    result.seconds = time.perf_counter() - start
    return result


def _vocab_size(model) -> int:
    """The model's vocabulary size (its logits' width), 32000 when its config has none."""
    return int(getattr(getattr(model, "config", None), "vocab_size", None) or 32000)
