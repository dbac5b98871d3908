"""Expensive evaluations (lm-eval, MT-Bench) and the cost cascade that gates them.

`eval.cascade` lets cheap metrics decide who pays for expensive ones:

- in the trial: a trial whose `metric` passes `threshold` (<= for minimize, >= for maximize)
  is scored at once; otherwise it is deferred (`top_k` set) or skipped, and the record says why;
- after the sweep (`top_k_pass`): complete trials are ranked by `metric`; the top k not yet
  scored are scored from their saved model (`trial_dir/model`), and every other trial's record
  says its rank and why it was not judged.

The base model is always scored. `reevaluate` re-runs the expensive stages of a finished
sweep from saved models (judgments come from the cache: a re-run sends no request twice).

    python -m harness.cascade top-k sweeps/default
    python -m harness.cascade reeval sweeps/default [--stages mt_bench]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STAGES = ("lm_eval", "mt_bench")
EXPENSIVE_PREFIXES = ("lm_eval/", "mt_bench/")


@dataclass
class Decision:
    """Whether a trial gets the expensive evaluations now, and why."""

    judged: bool
    reason: str
    deferred: bool = False


# ------------------------------------------------------------------------------- decisions


def enabled_stages(cfg) -> list[str]:
    """The expensive stages switched on in `cfg.eval`."""
    return [s for s in STAGES if (cfg.eval.get(s) or {}).get("enabled")]


def _passes(value: float, threshold: float, direction: str) -> bool:
    return value <= threshold if direction == "minimize" else value >= threshold


def decide(cfg, metrics: dict) -> Decision:
    """The in-trial cascade decision from the trial's cheap metrics."""
    trial = cfg.get("trial") or {}
    casc = cfg.eval.get("cascade") or {}
    if trial.get("baseline"):
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


# ------------------------------------------------------------------------------- stages


def output_dir(cfg) -> Path:
    """Where a run's lm-eval / MT-Bench files go: the trial folder, else a temporary one."""
    trial = cfg.get("trial") or {}
    if trial.get("dir"):
        return Path(str(trial.dir))
    if cfg.eval.get("output_dir"):
        return Path(str(cfg.eval.output_dir))
    return Path(tempfile.mkdtemp(prefix="harness-eval-"))


def model_id(cfg) -> str:
    """FastChat model id of this run: 'base' or 'trial-NNNN'."""
    trial = cfg.get("trial") or {}
    if trial.get("baseline"):
        return "base"
    return f"trial-{int(trial.number):04d}" if trial.get("number") is not None else "model"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400] if text else ''}"


def run_stages(model, tokenizer, cfg, stages: list[str]) -> tuple[dict, dict]:
    """Run lm-eval and/or MT-Bench; (metrics, extra). A failing stage is recorded in
    extra['eval_errors'] (or re-raised when `eval.on_error: raise`), never loses the trial."""
    metrics: dict = {}
    extra: dict = {}
    out = output_dir(cfg)
    for stage in stages:
        start = time.perf_counter()
        try:
            stage_metrics, stage_extra = _run_stage(stage, model, tokenizer, cfg, out)
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


def _run_stage(stage: str, model, tokenizer, cfg, out: Path) -> tuple[dict, dict]:
    if stage == "lm_eval":
        from harness import lm_eval_runner as lmr

        result = lmr.run_lm_eval(model, tokenizer, cfg.eval.lm_eval, out / "lm_eval",
                                 seed=int(cfg.get("seed", 0)))
        extra = dict(result.extra)
        if not (cfg.get("trial") or {}).get("baseline"):
            flag, warnings = lmr.compare_to_base(result.metrics, lmr.base_metrics(cfg),
                                                 result.extra.get("fingerprints"),
                                                 lmr.base_fingerprints(cfg))
            result.metrics.update(flag)
            if warnings:
                log.warning(warnings[0])
                extra["warnings"] = warnings
        return result.metrics, extra
    from harness.mt_bench import run_mt_bench

    result = run_mt_bench(model, tokenizer, cfg, out / "mt_bench", model_id(cfg))
    return result.metrics, result.extra


def run_expensive(model, tokenizer, cfg, metrics: dict) -> tuple[dict, dict]:
    """The battery's hook: cascade decision, then the enabled stages; (metrics, extra)."""
    stages = enabled_stages(cfg)
    if not stages:
        return {}, {}
    decision = decide(cfg, metrics)
    extra = {"cascade": asdict(decision)}
    new_metrics = {"cascade/judged": float(decision.judged)}
    if decision.judged:
        stage_metrics, stage_extra = run_stages(model, tokenizer, cfg, stages)
        new_metrics.update(stage_metrics)
        extra.update(stage_extra)
    return new_metrics, extra


# ------------------------------------------------------------------------------- saved trials


def load_saved(cfg, trial_dir: Path):
    """(model, tokenizer) of a finished trial: the base plus its saved adapter (or the saved
    full model), or the base model for the baseline record."""
    from harness.modeling import load_base_model, load_tokenizer

    if (cfg.get("trial") or {}).get("baseline"):
        return load_base_model(cfg.model), load_tokenizer(cfg.model)
    saved = trial_dir / "model"
    if not saved.is_dir():
        raise FileNotFoundError(f"{saved}: the trial saved no model to re-evaluate")
    from omegaconf import OmegaConf

    local = OmegaConf.merge(cfg.model, {"path": str(saved), "source": "local"})
    tokenizer = load_tokenizer(local)
    if cfg.method.get("peft") == "lora":
        from peft import PeftModel

        base = load_base_model(cfg.model, cfg.method.get("quantization"))
        return PeftModel.from_pretrained(base, str(saved)), tokenizer
    return load_base_model(local), tokenizer


def evaluate_saved(trial_dir: str | Path, stages: list[str] | None = None,
                   reason: str | None = None) -> dict:
    """Run expensive stages on a finished trial's saved model and update its result.json
    (metrics, deltas against the base, extra); returns the new metrics."""
    from omegaconf import OmegaConf

    from harness.records import CONFIG_FILE, read_record, write_record

    trial_dir = Path(trial_dir)
    cfg = OmegaConf.load(trial_dir / CONFIG_FILE)
    record = read_record(trial_dir)
    if record is None:
        raise FileNotFoundError(f"{trial_dir}: no result.json")
    model, tokenizer = load_saved(cfg, trial_dir)
    model.eval()
    metrics, extra = run_stages(model, tokenizer, cfg, stages or enabled_stages(cfg))
    record.metrics.update(metrics)
    record.metrics["cascade/judged"] = 1.0
    record.extra.update(extra)
    if reason:
        record.extra["cascade"] = asdict(Decision(True, reason))
    if not (cfg.get("trial") or {}).get("baseline"):
        _update_deltas(record, cfg)
    write_record(record, trial_dir)
    return metrics


def _update_deltas(record, cfg) -> None:
    from harness.lm_eval_runner import base_metrics

    base = base_metrics(cfg) or {}
    for key, value in record.metrics.items():
        if key in base and isinstance(value, int | float) and isinstance(base[key], int | float):
            record.delta_vs_base[key] = float(value) - float(base[key])


def _is_judged(record) -> bool:
    cascade = record.extra.get("cascade")
    if isinstance(cascade, dict) and "judged" in cascade:
        return bool(cascade["judged"])
    return any(k.startswith(EXPENSIVE_PREFIXES) for k in record.metrics)


def rank_trials(sweep_dir: Path, metric: str, direction: str) -> list[tuple[Path, object]]:
    """Complete trials with `metric`, best first."""
    from harness.records import COMPLETE, read_record

    ranked = []
    for trial_dir in sorted((Path(sweep_dir) / "trials").glob("*")):
        record = read_record(trial_dir)
        if record is not None and record.status == COMPLETE and metric in record.metrics:
            ranked.append((trial_dir, record))
    ranked.sort(key=lambda item: float(item[1].metrics[metric]),
                reverse=direction == "maximize")
    return ranked


def top_k_pass(sweep_dir: str | Path, cfg) -> list[int]:
    """Score the top `eval.cascade.top_k` trials not yet scored; note the rank of the others.
    Returns the numbers of the trials scored now."""
    from harness.records import write_record

    casc = cfg.eval.get("cascade") or {}
    if not casc.get("enabled") or not casc.get("top_k") or not enabled_stages(cfg):
        return []
    metric, direction, k = str(casc.metric), str(casc.get("direction", "minimize")), int(
        casc.top_k)
    ranked = rank_trials(Path(sweep_dir), metric, direction)
    scored = []
    for rank, (trial_dir, record) in enumerate(ranked, start=1):
        where = f"rank {rank} of {len(ranked)} by {metric}"
        if _is_judged(record):
            continue
        if rank <= k:
            log.info("cascade: scoring trial %d (%s)", record.number, where)
            try:
                evaluate_saved(trial_dir, reason=f"{where}: in the top {k}")
                scored.append(record.number)
            except Exception as exc:  # noqa: BLE001 - one trial's failure is noted, not fatal
                record.extra["cascade"] = asdict(Decision(False, f"{where}: top-{k} scoring "
                                                          f"failed: {_one_line(exc)}"))
                write_record(record, trial_dir)
            continue
        before = (record.extra.get("cascade") or {}).get("reason", "")
        record.extra["cascade"] = asdict(Decision(False, f"not judged: {before.split(';')[0]}"
                                                  f"; {where}, not in the top {k}"))
        write_record(record, trial_dir)
    return scored


def reevaluate(sweep_dir: str | Path, stages: list[str] | None = None) -> list[str]:
    """Re-run the expensive stages for the base record(s) and every scored complete trial of a
    finished sweep (one judge server for all). Returns the folders re-evaluated."""
    from omegaconf import OmegaConf

    from harness.judge_server import sweep_judge
    from harness.records import COMPLETE, read_record

    sweep_dir = Path(sweep_dir)
    cfg = OmegaConf.load(sweep_dir / "sweep.yaml")
    folders = sorted((sweep_dir / "baseline").glob("*")) + sorted(
        (sweep_dir / "trials").glob("*"))
    done = []
    with sweep_judge(cfg, sweep_dir):
        for folder in folders:
            record = read_record(folder)
            if record is None or record.status != COMPLETE or not _is_judged(record):
                continue
            evaluate_saved(folder, stages)
            done.append(str(folder))
    return done


def main(argv: list[str] | None = None) -> int:
    """`top-k SWEEP_DIR` or `reeval SWEEP_DIR [--stages ...]`; prints judge request counts."""
    parser = argparse.ArgumentParser(prog="python -m harness.cascade")
    parser.add_argument("action", choices=["top-k", "reeval"])
    parser.add_argument("sweep_dir")
    parser.add_argument("--stages", nargs="*", choices=STAGES, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from omegaconf import OmegaConf

    from harness.judge_server import sweep_judge

    sweep_dir = Path(args.sweep_dir)
    if args.action == "top-k":
        cfg = OmegaConf.load(sweep_dir / "sweep.yaml")
        with sweep_judge(cfg, sweep_dir):
            print("scored:", top_k_pass(sweep_dir, cfg))
        return 0
    for folder in reevaluate(sweep_dir, args.stages):
        print(folder, json.dumps(judge_counts(Path(folder))))
    return 0


def judge_counts(folder: Path) -> dict:
    """The judge request / cache-hit counts of a folder's last evaluation."""
    from harness.records import read_record

    record = read_record(folder)
    keys = ("mt_bench/judge_requests", "mt_bench/judge_cache_hits", "mt_bench/judge_errors")
    return {k.split("/")[1]: record.metrics.get(k) for k in keys} if record else {}


if __name__ == "__main__":
    sys.exit(main())


# ------------------------------------------------------------------------------- validation


def check_eval_config(cfg) -> None:
    """Check the lm_eval / mt_bench / judge / cascade sections; raise ConfigError naming the
    first bad field (never echoing a value that looks like a secret)."""
    from harness.config import ConfigError

    ev = cfg.eval
    lm, mt = ev.get("lm_eval") or {}, ev.get("mt_bench") or {}
    judge, casc = ev.get("judge") or {}, ev.get("cascade") or {}
    if lm.get("enabled"):
        if not lm.get("tasks"):
            raise ConfigError("eval.lm_eval.tasks is empty")
        _positive(lm.get("batch_size"), "eval.lm_eval.batch_size", ConfigError)
        if lm.get("limit") is not None:
            _positive(lm.limit, "eval.lm_eval.limit", ConfigError)
    if mt.get("enabled"):
        for key in ("question_path", "judge_prompts_path"):
            if not mt.get(key):
                raise ConfigError(f"eval.mt_bench.{key} is not set")
        _positive(mt.get("max_new_tokens"), "eval.mt_bench.max_new_tokens", ConfigError)
        if judge.get("base_url") and not judge.get("model"):
            raise ConfigError("eval.judge.model must name the judge when eval.judge.base_url "
                              "is set")
    env = judge.get("api_key_env")
    if env and (str(env).startswith(("sk-", "Bearer")) or len(str(env)) > 64 or " " in str(env)):
        raise ConfigError("eval.judge.api_key_env must be the NAME of an environment variable "
                          "(e.g. OPENAI_API_KEY), not the key itself")
    if casc.get("enabled"):
        if casc.get("direction", "minimize") not in ("minimize", "maximize"):
            raise ConfigError("eval.cascade.direction must be minimize or maximize")
        if casc.get("threshold") is None and not casc.get("top_k"):
            raise ConfigError("eval.cascade needs a threshold or a top_k when enabled")
        if casc.get("top_k") is not None:
            _positive(casc.top_k, "eval.cascade.top_k", ConfigError)


def _positive(value, name: str, error) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise error(f"{name} must be > 0, got {value!r}")
