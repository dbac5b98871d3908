"""The cost cascade after a sweep: the top-k pass and re-scoring of a finished sweep.

- `top_k_pass`: complete trials are ranked by `eval.cascade.metric`; the top k not yet scored
  are scored from their saved model (`trial_dir/model`), and every other trial's record says
  its rank and why it was not judged (`record.cascade`);
- `reevaluate`: re-run the expensive stages of a finished sweep from saved models, the base
  record(s) included (judgments come from the cache: a re-run sends no request twice).

    python -m harness.cascade top-k sweeps/default
    python -m harness.cascade reeval sweeps/default [--stages mt_bench]
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from harness import layout
from harness.eval.cascade import EXPENSIVE_PREFIXES, STAGES, Decision, enabled_stages
from harness.eval.judge_server import ServedModel, sweep_judge
from harness.records import COMPLETE, TrialRecord, read_record, write_record
from harness.trial.rescore import evaluate_saved
from harness.trial.saved import SavedModelError

log = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400] if text else ''}"


def is_judged(record: TrialRecord) -> bool:
    """Whether a record got (or was already decided to get) the expensive stages."""
    cascade = record.cascade
    if isinstance(cascade, dict) and "judged" in cascade:
        return bool(cascade["judged"])
    return any(k.startswith(EXPENSIVE_PREFIXES) for k in record.metrics)


def rank_trials(sweep_dir: Path, metric: str, direction: str) -> list[tuple[Path, TrialRecord]]:
    """Complete trials with `metric`, best first."""
    ranked = []
    for trial_dir in layout.trial_dirs(Path(sweep_dir)):
        record = read_record(trial_dir)
        if record is not None and record.status == COMPLETE and metric in record.metrics:
            ranked.append((trial_dir, record))
    ranked.sort(key=lambda item: float(item[1].metrics[metric]),
                reverse=direction == "maximize")
    return ranked


def top_k_pass(sweep_dir: str | Path, cfg: DictConfig,
               judge: ServedModel | None = None) -> list[int]:
    """Score the top `eval.cascade.top_k` trials not yet scored; note the rank of the others.
    `judge`: the sweep's live judge server, if any. Returns the numbers of the trials scored."""
    casc = cfg.eval.get("cascade") or {}
    if not casc.get("enabled") or not casc.get("top_k") or not enabled_stages(cfg):
        return []
    metric, direction, k = str(casc.metric), str(casc.get("direction", "minimize")), int(
        casc.top_k)
    ranked = rank_trials(Path(sweep_dir), metric, direction)
    scored = []
    for rank, (trial_dir, record) in enumerate(ranked, start=1):
        where = f"rank {rank} of {len(ranked)} by {metric}"
        if is_judged(record):
            continue
        if rank <= k:
            log.info("cascade: scoring trial %d (%s)", record.number, where)
            try:
                evaluate_saved(trial_dir, reason=f"{where}: in the top {k}", judge=judge)
                scored.append(record.number)
            except Exception as exc:  # noqa: BLE001 - one trial's failure is noted, not fatal
                record.cascade = asdict(Decision(False, f"{where}: top-{k} scoring failed: "
                                                 f"{_one_line(exc)}"))
                write_record(record, trial_dir)
            continue
        before = (record.cascade or {}).get("reason", "")
        record.cascade = asdict(Decision(False, f"not judged: {before.split(';')[0]}"
                                         f"; {where}, not in the top {k}"))
        write_record(record, trial_dir)
    return scored


def reevaluate(sweep_dir: str | Path, stages: list[str] | None = None) -> list[str]:
    """Re-run the expensive stages for the base record(s) and every scored complete trial of a
    finished sweep (one judge server for all). Returns the folders re-evaluated."""
    sweep_dir = Path(sweep_dir)
    cfg = layout.read_sweep_config(sweep_dir)
    base_root = sweep_dir / layout.BASELINE_DIR
    folders = sorted(p for p in base_root.glob("*") if p.is_dir()) + layout.trial_dirs(sweep_dir)
    done = []
    with sweep_judge(cfg, sweep_dir) as judge:
        for folder in folders:
            record = read_record(folder)
            if record is None or record.status != COMPLETE or not is_judged(record):
                continue
            try:
                evaluate_saved(folder, stages, judge=judge)
            except SavedModelError as exc:   # recorded in that trial; go on with the others
                print(exc, flush=True)
                continue
            done.append(str(folder))
    return done


def judge_counts(folder: Path) -> dict:
    """The judge request / cache-hit counts of a folder's last evaluation."""
    record = read_record(folder)
    keys = ("mt_bench/judge_requests", "mt_bench/judge_cache_hits", "mt_bench/judge_errors")
    return {k.split("/")[1]: record.metrics.get(k) for k in keys} if record else {}


def main(argv: list[str] | None = None) -> int:
    """`top-k SWEEP_DIR` or `reeval SWEEP_DIR [--stages ...]`; prints judge request counts."""
    parser = argparse.ArgumentParser(prog="python -m harness.cascade")
    parser.add_argument("action", choices=["top-k", "reeval"])
    parser.add_argument("sweep_dir")
    parser.add_argument("--stages", nargs="*", choices=STAGES, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sweep_dir = Path(args.sweep_dir)
    if args.action == "top-k":
        cfg = layout.read_sweep_config(sweep_dir)
        with sweep_judge(cfg, sweep_dir) as judge:
            print("scored:", top_k_pass(sweep_dir, cfg, judge))
        return 0
    for folder in reevaluate(sweep_dir, args.stages):
        print(folder, json.dumps(judge_counts(Path(folder))))
    return 0
