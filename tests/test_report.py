"""Tests for harness.report (and harness.sweep.results, which reads the sweep) on synthetic
sweep folders with a real Optuna study. The section tests at the end assert the numbers in
each section's info object (extract -> info -> render).

The main sweep uses sqlite storage in the sweep folder, as the default config does; the small
side cases use the journal storage, which is quicker to create.

`make_sweep` writes the folder layout of harness.sweep.driver with fake but plausible records and
`make_replicates` adds harness.sweep.replicate runs; the benchmark (benchmarks/report_scale.py) and
the browser test (tests/test_browser.py) reuse them.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
import plotly.offline
import pytest
import yaml
from omegaconf import OmegaConf

import harness.report.page as report
from harness.cli import main
from harness.layout import baseline_digest, baseline_dir, replicate_dir
from harness.records import (
    COMPLETE,
    FAILED,
    PRUNED,
    TrialError,
    TrialRecord,
    read_record,
    write_record,
)
from harness.report.compare import compare_file_name, write_compare
from harness.report.exports import write_exports
from harness.report.html import static
from harness.report.page import extract, write_report
from harness.report.sections.cost import extract_cost
from harness.report.sections.diagnostics import extract_diagnostics
from harness.report.sections.environment import extract_environment
from harness.report.sections.evals import extract_lm_eval, extract_mt_bench
from harness.report.sections.failures import extract_config_diff, extract_failures
from harness.report.sections.leaderboard import extract_leaderboard, extract_pareto
from harness.report.sections.metrics import extract_methods
from harness.report.sections.optuna_plots import extract_importance
from harness.report.sections.replicates import extract_replicates
from harness.report.sections.summary import extract_summary
from harness.report.sections.training import extract_loss, extract_resources
from harness.stats import CISettings, mean_interval
from harness.study import make_storage
from harness.sweep.results import (
    NO_RESULT,
    compute_hours,
    delta,
    deltas,
    device_text,
    front_2d,
    load_sweep,
    peak_memory_mb,
    read_trial,
)
from harness.sweep.space import parse_space, suggest

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"
OOM_MESSAGE = f"CUDA out of memory while allocating {XSS_IMG}"
PARAMS = {
    "method": {"type": "categorical", "choices": ["lora", "qlora"]},
    "method.lora.rank": {"type": "categorical", "choices": [4, 8, 16]},
    "method.train.learning_rate": {"type": "float", "low": 3.0e-4, "high": 2.0e-3, "log": True},
}
PROMPTS = ["Summarize the following report in one sentence.\nThe bridge project ...",
           "What is the capital of Veloria?", "Reverse the list: a, b, c"]
VERSIONS = {"harness": "0.1.0", "torch": "2.13.0", "transformers": "5.1.0", "optuna": "5.0.0"}
GPU = {"type": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 1}
LM_EVAL_TASKS = ("embedded_facts_mc/acc", "embedded_lists_gen/exact_match")
MT_BENCH_CATEGORIES = ("writing", "math", "reasoning")


# -- a synthetic sweep -----------------------------------------------------------------------
def make_sweep(root: Path, n_trials: int = 8, *, statuses: dict[int, str] | None = None,
               objectives: tuple = (("perplexity", "minimize"),), history: int = 30,
               no_result: tuple[int, ...] = (), seed: int = 0, storage: str = "sqlite",
               extra_metrics: int = 0, evals: bool = False, name: str = "synthetic") -> Path:
    """A sweep folder like harness.sweep.driver writes; trials not in `statuses` are COMPLETE.

    extra_metrics adds that many lm-eval style tasks (`lm_eval/task<i>/acc` and `..._stderr`);
    evals adds lm-eval and MT-Bench metrics as harness.eval.battery names them (base model too).
    """
    sweep_dir = root / "sweeps" / name
    (sweep_dir / "trials").mkdir(parents=True)
    cfg = _sweep_cfg(name, sweep_dir, objectives, storage)
    (sweep_dir / "sweep.yaml").write_text(OmegaConf.to_yaml(cfg))
    study = optuna.create_study(study_name=name, storage=make_storage(cfg.storage),
                                directions=[d for _, d in objectives],
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    _write_baseline(sweep_dir, evals)
    rng = random.Random(seed)
    space = parse_space(cfg.sweep.params)
    for _ in range(n_trials):
        trial = study.ask()
        values = suggest(trial, space)
        trial_dir = sweep_dir / "trials" / f"{trial.number:04d}"
        _write_trial_config(trial_dir, trial.number, values)
        if trial.number in no_result:
            continue
        status = (statuses or {}).get(trial.number, COMPLETE)
        record = _record(trial.number, status, values, trial_dir, rng, history)
        if status == COMPLETE:
            record.metrics.update(_extra_metrics(extra_metrics, rng))
            if evals:
                record.metrics.update(eval_metrics(rng, 0.05))
        write_record(record, trial_dir)
        _tell(study, trial.number, record, objectives)
    return sweep_dir


def _sweep_cfg(name: str, sweep_dir: Path, objectives: tuple, storage: str):
    stores = {"sqlite": {"kind": "sqlite",
                         "url": f"sqlite:///{(sweep_dir / 'study.db').resolve()}"},
              "journal": {"kind": "journal", "path": str((sweep_dir / "study.journal").resolve())}}
    return OmegaConf.create({
        "sweep": {"name": name, "n_trials": 8, "sampler": {"name": "random", "seed": 0},
                  "pruner": {"name": "none"},
                  "objectives": [{"metric": m, "direction": d} for m, d in objectives],
                  "params": PARAMS},
        "storage": stores[storage],
        "paths": {"sweeps": str(sweep_dir.parent)},
        "seed": 42,
        "trial": {},
    })


def eval_metrics(rng: random.Random, gain: float) -> dict:
    """lm-eval per-task and MT-Bench per-category metrics, named as harness.eval.battery does."""
    out = {}
    for task in LM_EVAL_TASKS:
        out[f"lm_eval/{task}"] = 0.3 + gain + rng.uniform(0, 0.1)
        out[f"lm_eval/{task}_stderr"] = 0.04
    scores = {c: 3 + 20 * gain + rng.uniform(0, 2) for c in MT_BENCH_CATEGORIES}
    out.update({f"mt_bench/{c}": v for c, v in scores.items()})
    out.update({"mt_bench/score": sum(scores.values()) / len(scores),
                "mt_bench/turn1": 4.0 + gain, "mt_bench/turn2": 3.0 + gain,
                "mt_bench/judged": 12.0, "mt_bench/unparseable": 0.0,
                "mt_bench/judge_errors": 0.0})
    return out


def _write_baseline(sweep_dir: Path, evals: bool = False) -> None:
    base_dir = sweep_dir / "baseline" / "0123456789ab"
    base_dir.mkdir(parents=True)
    samples = [{"prompt": p, "reference": f"reference {i}", "generation": f"base says {i}"}
               for i, p in enumerate(PROMPTS)]
    samples[0]["generation"] = f"base {XSS_SCRIPT}"
    metrics = _metrics(20.0, 0.10)
    if evals:
        metrics.update(eval_metrics(random.Random(1), 0.0))
    write_record(TrialRecord(number=-1, status=COMPLETE, method="base",
                             metrics=metrics, eval_seconds=12.0,
                             wall_seconds=15.0, peak_rss_mb=900.0, total_params=135_000_000,
                             samples=samples, versions=VERSIONS, git_commit="abc123"),
                 base_dir)


def _write_trial_config(trial_dir: Path, number: int, values: dict) -> None:
    trial_dir.mkdir(parents=True)
    cfg = {"seed": 42, "method": {"name": values["method"],
                                  "lora": {"rank": values["method.lora.rank"], "alpha": 16},
                                  "train": {"learning_rate": values[
                                      "method.train.learning_rate"], "epochs": 1}},
           "trial": {"number": number, "params": values, "dir": str(trial_dir)}}
    (trial_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    (trial_dir / "trial.log").write_text(f"starting trial {number}\nstep 10 loss 2.3\n")


def _metrics(perplexity: float, rouge: float) -> dict:
    return {"perplexity": perplexity, "eval_nll": math.log(perplexity), "rouge1": rouge,
            "rouge2": rouge / 2, "rougeL": rouge * 0.9}


def _record(number: int, status: str, values: dict, trial_dir: Path, rng: random.Random,
            history: int) -> TrialRecord:
    lr, rank = values["method.train.learning_rate"], values["method.lora.rank"]
    quality = math.log(lr / 3e-4) + rank / 16 + rng.uniform(0, 0.5)
    record = TrialRecord(
        number=number, status=status, method=values["method"], params=values,
        train_seconds=60 + 10 * rank + rng.uniform(0, 20), eval_seconds=12.0,
        wall_seconds=90 + 10 * rank, peak_rss_mb=1500 + 20 * rank,
        gpu_max_allocated_mb=3000 + (0 if values["method"] == "lora" else -1200),
        trainable_params=rank * 100_000, total_params=135_000_000,
        loss_history=_loss_history(history, quality),
        log_path=str(trial_dir / "trial.log"), config_path=str(trial_dir / "config.yaml"),
        versions=VERSIONS, git_commit="abc123", device=dict(GPU), seed=42)
    if status == COMPLETE:
        record.metrics = _metrics(14.0 - 2.5 * quality, 0.2 + 0.05 * quality)
        record.samples = [{"prompt": p, "reference": f"reference {i}",
                           "generation": f"trial {number} answer {i} {XSS_SCRIPT} {XSS_IMG}"}
                          for i, p in enumerate(PROMPTS)]
    elif status == FAILED:
        record.error = TrialError("OutOfMemoryError", OOM_MESSAGE, str(trial_dir / "trial.log"))
    else:
        record.error = TrialError("TrialPruned", "pruned at step 50 (eval_loss 2.9000)",
                                  str(trial_dir / "trial.log"))
    return record


def _extra_metrics(n: int, rng: random.Random) -> dict:
    out = {}
    for i in range(n):
        out[f"lm_eval/task{i}/acc"] = rng.uniform(0.2, 0.6)
        out[f"lm_eval/task{i}/acc_stderr"] = rng.uniform(0.01, 0.03)
    return out


def _loss_history(n: int, quality: float) -> list[dict]:
    rows = []
    for i in range(1, n + 1):
        step = 10 * i
        row = {"step": step, "loss": 2.5 / (1 + 0.02 * step * (1 + quality / 4)),
               "learning_rate": 1e-3}
        if i % 5 == 0:
            row["eval_loss"] = row["loss"] + 0.1
        rows.append(row)
    return rows


def make_replicates(sweep_dir: Path, spread: dict[int, float], seeds: tuple[int, ...] = (1, 2, 3),
                    *, failed: tuple[int, ...] = (), generation: str | None = None) -> None:
    """Replicate records (harness.sweep.replicate's layout) of the given trials: each seed's metrics
    are the trial's plus a seeded offset of +-spread (relative) on perplexity and rouge.

    failed: seeds whose replicate FAILED; generation: text put in every replicate's samples.
    """
    for number, size in spread.items():
        source = read_record(sweep_dir / "trials" / f"{number:04d}")
        for seed in seeds:
            rng = random.Random(1000 * number + seed)
            out = replicate_dir(sweep_dir, number, seed)
            out.mkdir(parents=True)
            record = TrialRecord.from_dict(json.loads(source.to_json()))
            record.seed, record.log_path = seed, str(out / "trial.log")
            (out / "trial.log").write_text(f"replicate of trial {number}, seed {seed}\n")
            factor = 1 + rng.uniform(-size, size)
            record.metrics = {k: v * factor if k.startswith(("perplexity", "rouge")) else v
                              for k, v in source.metrics.items()}
            if generation is not None:
                record.samples = [{**s, "generation": generation} for s in record.samples]
            if seed in failed:
                record.status, record.metrics = FAILED, {}
                record.error = TrialError("OutOfMemoryError", f"replicate seed {seed} OOM",
                                          record.log_path)
            write_record(record, out)


def _tell(study: optuna.Study, number: int, record: TrialRecord, objectives: tuple) -> None:
    if record.status == COMPLETE:
        study.tell(number, [record.metrics[m] for m, _ in objectives])
    else:
        study.tell(number, state=optuna.trial.TrialState.PRUNED if record.status == PRUNED
                   else optuna.trial.TrialState.FAIL)


# -- helpers ---------------------------------------------------------------------------------
def plotly_marker() -> str:
    """The opening of the plotly.js bundle (its licence header names the version)."""
    return plotly.offline.get_plotlyjs()[:120]


def section(page: str, sid: str) -> str:
    match = re.search(rf'<section id="{sid}">(.*?)</section>', page, re.S)
    assert match, f"no section {sid}"
    return match.group(1)


def without_plotlyjs(page: str) -> str:
    return page.replace(plotly.offline.get_plotlyjs(), "")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    return make_sweep(root, 8, statuses={2: FAILED, 5: PRUNED}, no_result=(6,))


@pytest.fixture(scope="module")
def page(sweep: Path, tmp_path_factory) -> str:
    out = write_report(sweep, tmp_path_factory.mktemp("out") / "reports" / "synthetic.html")
    assert out.is_file()
    return out.read_text(encoding="utf-8")


# -- tests -----------------------------------------------------------------------------------
def test_single_self_contained_file(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count(plotly_marker()) == 1
    assert 'src="http' not in page and "src='http" not in page
    assert "cdn.plot.ly" not in without_plotlyjs(page)
    assert page.count('class="plotly-graph-div"') >= 8


def test_model_and_record_text_is_escaped(page: str) -> None:
    rest = without_plotlyjs(page)
    assert "<script>alert" not in rest
    assert "<img src=x" not in rest
    assert html_escaped(XSS_SCRIPT) in section(page, "samples")
    assert html_escaped(XSS_IMG) in section(page, "samples")


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_first_section_names_best_trial(sweep: Path, page: str) -> None:
    study = load_sweep(sweep).study
    best = study.best_trial
    summary = section(page, "summary")
    assert f"Best trial <a href=\"#best\">#{best.number}</a>" in summary
    assert f"{best.value:.4g}" in summary
    assert "%" in summary and "peak RSS" in summary and "train" in summary
    assert page.index('<section id="summary">') < page.index('<section id="trials">')


def test_failures_listed_with_reasons(page: str) -> None:
    failures = section(page, "failures")
    assert html_escaped(OOM_MESSAGE) in failures
    assert "TrialPruned" in failures
    assert NO_RESULT in failures and "#" not in failures.split(NO_RESULT)[0][-5:]


def test_no_section_failed(page: str) -> None:
    assert "could not be made" not in page and "not drawn" not in page


def test_sections_present(page: str) -> None:
    for sid in ("trials", "best", "history", "parallel", "importance", "metrics", "loss",
                "resources", "methods", "samples", "config-diff", "environment"):
        assert section(page, sid)
    assert "pareto" not in re.findall(r'<section id="([^"]+)"', page)
    assert "method.train.learning_rate" in section(page, "config-diff")
    assert "5.0.0" in section(page, "environment") and "abc123" in section(page, "environment")


def test_load_sweep_frame(sweep: Path) -> None:
    data = load_sweep(sweep)
    frame = data.trials
    assert list(frame["number"]) == list(range(8))
    assert dict(zip(frame["number"], frame["status"], strict=True))[6] == NO_RESULT
    assert {"param:method", "metric:perplexity", "delta:perplexity",
            "delta_pct:perplexity", "peak_rss_mb", "error_message"} <= set(frame.columns)
    assert data.baseline is not None and data.baseline.number == -1
    best = frame.loc[frame["rank"] == 1].iloc[0]
    assert best["number"] == data.study.best_trial.number


def test_only_failed_trials(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 3, statuses={0: FAILED, 1: FAILED, 2: FAILED},
                       storage="journal")
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No trial has completed" in section(page, "summary")
    assert page.count(plotly_marker()) == 1
    assert html_escaped(OOM_MESSAGE) in section(page, "failures")
    assert "<img src=x" not in without_plotlyjs(page)
    paths = write_exports(sweep, tmp_path / "exports")
    assert "best_config" not in paths
    assert len(pd.read_parquet(paths["parquet"])) == 3


def test_zero_trials(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 0, storage="journal")
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No trial has completed" in section(page, "summary")


def test_missing_storage_rebuilds_from_records(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 6, statuses={1: FAILED})
    expected = load_sweep(sweep).study.best_trial.number
    (sweep / "study.db").unlink()
    data = load_sweep(sweep)
    assert data.study is None and not (sweep / "study.db").exists()
    assert data.best.number == expected
    assert [t.number for t in data.plot_study.trials] == list(range(6))
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"#{expected}</a>" in section(page, "summary")
    assert "plotly-graph-div" in section(page, "history")
    assert "storage not found" in section(page, "summary")


def test_importance_skipped_with_one_complete_trial(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 2, statuses={1: FAILED}, storage="journal")
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Skipped" in section(page, "importance")


def test_multi_objective_pareto(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 6, objectives=(("perplexity", "minimize"),
                                                ("rouge1", "maximize")), storage="journal")
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    pareto = section(page, "pareto")
    assert "plotly-graph-div" in pareto
    assert "Pareto front" in section(page, "summary")
    assert page.count(plotly_marker()) == 1


def test_exports_round_trip(sweep: Path, tmp_path: Path) -> None:
    paths = write_exports(sweep, tmp_path / "exports")
    data = load_sweep(sweep)
    csv = pd.read_csv(paths["csv"])
    parquet = pd.read_parquet(paths["parquet"])
    for frame in (csv, parquet):
        assert list(frame.columns) == list(data.trials.columns)
        assert list(frame["number"]) == list(data.trials["number"])
        assert list(frame["status"]) == list(data.trials["status"])
    done = parquet["status"] == COMPLETE
    assert parquet.loc[done, "metric:perplexity"].tolist() == pytest.approx(
        data.trials.loc[done, "metric:perplexity"].tolist())
    best = yaml.safe_load(paths["best_config"].read_text())
    assert best["trial"] == data.best.number
    assert best["params"] == data.best.params
    assert f"method={data.best.params['method']}" in best["overrides"]
    assert best["config"]["method"]["lora"]["rank"] == data.best.params["method.lora.rank"]


def test_journal_storage_and_moved_folder(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "a", 4, storage="journal")
    assert load_sweep(sweep).study is not None
    moved = tmp_path / "b" / "synthetic"
    shutil.copytree(sweep, moved)
    shutil.rmtree(sweep)
    data = load_sweep(moved)        # sweep.yaml still names the old path: use the local one
    assert data.study is not None and len(data.study.trials) == 4
    assert not sweep.exists()


def test_failing_section_keeps_report_and_plotlyjs(tmp_path: Path, monkeypatch) -> None:
    def broken(info, figs):
        figs.html(go.Figure())
        raise RuntimeError("boom <b>")

    sections = [replace(s, render=broken) if s.id == "history" else s for s in report.SECTIONS]
    monkeypatch.setattr(report, "SECTIONS", sections)
    sweep = make_sweep(tmp_path, 3, storage="journal")
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "RuntimeError: boom &lt;b&gt;" in section(page, "history")
    assert page.count(plotly_marker()) == 1


# -- quality against cost --------------------------------------------------------------------
def test_cost_columns_in_table_and_exports(sweep: Path, tmp_path: Path) -> None:
    data = load_sweep(sweep)
    frame = data.trials.set_index("number")
    best = data.best
    row = frame.loc[best.number]
    assert row["peak_memory_mb"] == best.gpu_max_allocated_mb      # GPU trial: GPU memory
    assert row["compute_unit"] == "GPU-h"
    assert row["compute_hours"] == pytest.approx(best.wall_seconds / 3600)
    assert row["trainable_pct"] == pytest.approx(100 * best.trainable_params / best.total_params)
    assert pd.isna(frame.loc[6, "compute_hours"])                    # no record, no cost
    parquet = pd.read_parquet(write_exports(sweep, tmp_path / "e")["parquet"])
    assert {"peak_memory_mb", "compute_hours", "trainable_pct"} <= set(parquet.columns)


def test_compute_hours_cpu_uses_threads() -> None:
    record = TrialRecord(number=0, status=COMPLETE, method="lora", wall_seconds=1800.0,
                         peak_rss_mb=700.0, device={"type": "cpu", "threads": 4})
    assert compute_hours(record) == (pytest.approx(2.0), "CPU-h")
    assert peak_memory_mb(record) == 700.0
    gpu = TrialRecord(number=1, status=COMPLETE, method="lora", wall_seconds=3600.0,
                      gpu_max_allocated_mb=5000.0, device={"type": "cuda", "count": 2})
    assert compute_hours(gpu) == (pytest.approx(2.0), "GPU-h")


def test_front_2d() -> None:
    points = [(1.0, 10.0, "a"), (2.0, 8.0, "b"), (3.0, 9.0, "c"), (4.0, 5.0, "d"),
              (4.0, 7.0, "e"), (0.5, 12.0, "f")]
    assert front_2d(points, sign=1.0) == ["f", "a", "b", "d"]      # minimize y
    assert front_2d(points, sign=-1.0) == ["f"]                     # maximize y


def test_leaderboard_ranks_with_costs(page: str, sweep: Path) -> None:
    data = load_sweep(sweep)
    board = section(page, "leaderboard")
    rows = re.findall(r"<tr><td>(\d+)</td><td>#(\d+)</td>", board)
    assert [int(n) for _, n in rows] == [r.number for r in data.ranked]
    assert "GPU-h" in board and "GB" in board and "%" in board


def test_cost_section_draws_both_fronts(page: str, sweep: Path) -> None:
    cost = section(page, "cost")
    assert cost.count('class="plotly-graph-div"') == 1
    assert "against peak memory" in cost and "against compute" in cost
    data = load_sweep(sweep)
    cheapest = min(data.ranked, key=peak_memory_mb)
    assert f"#{cheapest.number}</td>" in cost.split("against compute")[0]  # on the memory front
    assert "GPU-h" in cost


def test_multi_objective_front_is_non_dominated(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 10, objectives=(("perplexity", "minimize"),
                                                 ("rouge1", "maximize")), storage="journal")
    data = load_sweep(sweep)
    front = {r.number for r in data.pareto}
    assert set(data.trials.loc[data.trials["pareto"], "number"]) == front
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<th>Pareto</th>" in section(page, "leaderboard")
    for r in data.records:   # every trial off the front is dominated by one on it
        if r.number not in front:
            assert any(data.records[f].metrics["perplexity"] <= r.metrics["perplexity"]
                       and data.records[f].metrics["rouge1"] >= r.metrics["rouge1"]
                       for f in front)


# -- the full picture --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_sweep(tmp_path_factory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("evals"), 6, evals=True, storage="journal")


@pytest.fixture(scope="module")
def eval_page(eval_sweep: Path) -> str:
    return write_report(eval_sweep, eval_sweep.parent / "r.html").read_text(encoding="utf-8")


def test_lm_eval_per_task_and_mt_bench_per_category(eval_page: str) -> None:
    lm = section(eval_page, "lm-eval")
    assert lm.count('class="plotly-graph-div"') == 1
    for task in LM_EVAL_TASKS:
        assert task in lm
    assert "base model" in lm and "best #" in lm
    mt = section(eval_page, "mt-bench")
    assert mt.count('class="plotly-graph-div"') == 1
    for category in (*MT_BENCH_CATEGORIES, "score", "turn1", "turn2"):
        assert category in mt
    assert "judge_errors" not in mt                       # counters: diagnostics (issue 16)
    assert "judge_errors" in section(eval_page, "diagnostics")


def test_lm_eval_and_mt_bench_absent_say_why(page: str) -> None:
    assert "No lm-eval metrics recorded" in section(page, "lm-eval")
    assert "No MT-Bench metrics recorded" in section(page, "mt-bench")


def test_every_issue_section_is_on_the_page(eval_page: str) -> None:
    expected = ["summary", "decision", "warnings", "leaderboard", "trials", "best", "replicates",
                "cost", "history", "parallel",
                "importance", "metrics", "loss", "lm-eval", "mt-bench", "methods", "judge",
                "diagnostics", "samples", "failures", "config-diff", "environment"]
    assert re.findall(r'<section id="([^"]+)"', eval_page)[:3] == expected[:3]
    for sid in expected:
        assert section(eval_page, sid)
    loss = section(eval_page, "loss")
    assert "train loss" in loss and "eval loss" in loss
    assert "could not be made" not in eval_page and "not drawn" not in eval_page


def test_environment_names_the_gpu(page: str) -> None:
    env = section(page, "environment")
    assert "GPU: NVIDIA H100 80GB HBM3 x 1" in env
    assert "abc123" in env and "2.13.0" in env


# -- replicates ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def replicated(tmp_path_factory) -> Path:
    """Trials 0-7; the best two and the worst complete one replicated with three more seeds."""
    root = tmp_path_factory.mktemp("replicated")
    sweep = make_sweep(root, 8, statuses={2: FAILED}, storage="journal")
    data = load_sweep(sweep)
    first, second, worst = data.ranked[0], data.ranked[1], data.ranked[-1]
    make_replicates(sweep, {first.number: 0.02, second.number: 0.02, worst.number: 0.01},
                    )
    make_replicates(sweep, {first.number: 0.02}, seeds=(7,), failed=(7,))
    return sweep


def test_replicate_groups_and_best_group(replicated: Path) -> None:
    data = load_sweep(replicated)
    assert len(data.groups) == 3
    for group in data.groups.values():
        assert group.seeds()[0] == 42 and sorted(group.seeds()[1:]) == [1, 2, 3]
        assert len(group.values("perplexity")) == 4                 # FAILED seed 7 left out
    assert data.best_group.number in {data.ranked[0].number, data.ranked[1].number}


def test_replicates_section_shows_cis_and_verdicts(replicated: Path, tmp_path: Path) -> None:
    data = load_sweep(replicated)
    page = write_report(replicated, tmp_path / "r.html").read_text(encoding="utf-8")
    rep = section(page, "replicates")
    worst = data.ranked[-1]
    assert "bootstrap" in rep and "95% CI" in rep
    assert rep.count('class="plotly-graph-div"') == 1
    assert "best configuration (reference)" in rep
    worst_row = next(row for row in rep.split("<tr>") if f"#{worst.number} " in row)
    assert "worse than the best" in worst_row                      # clearly separated
    assert "Per method" in rep and "Pairs of configurations" in rep
    for method in {g.method for g in data.groups.values()}:
        assert f"<td>{method}</td>" in rep
    summary = section(page, "summary")
    assert "across 4 seeds" in summary or "by mean over seeds" in summary
    assert "seed 7 (replicate)" in section(page, "failures")


def test_close_configurations_are_not_distinguishable(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 3, storage="journal")
    data = load_sweep(sweep)
    a, b = data.ranked[0], data.ranked[1]
    for record in (a, b):          # make the two trials' perplexity nearly equal
        path = sweep / "trials" / f"{record.number:04d}"
        record.metrics["perplexity"] = 10.0 + 0.001 * record.number
        write_record(record, path)
    make_replicates(sweep, {a.number: 0.05, b.number: 0.05})
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    rep = section(page, "replicates")
    assert "not distinguishable from the best (CI of the difference contains 0)" in rep
    assert "not distinguishable from it" in section(page, "summary")


def test_single_seed_headline_says_no_ci(page: str) -> None:
    assert "one run per configuration, so no confidence interval" in section(page, "summary")
    assert "action=replicate" in section(page, "replicates")


def test_replicates_exported(replicated: Path, tmp_path: Path) -> None:
    paths = write_exports(replicated, tmp_path / "e")
    frame = pd.read_csv(paths["replicates"])
    assert len(frame) == 3 * 4 + 1                     # 3 configs x (trial + 3 seeds) + failed
    assert set(frame["seed"]) == {42, 1, 2, 3, 7}


def test_ci_settings_change_the_report(replicated: Path, tmp_path: Path) -> None:
    t_page = write_report(replicated, tmp_path / "t.html").read_text(encoding="utf-8")
    p_page = write_report(replicated, tmp_path / "p.html",
                          CISettings(method="percentile")).read_text(encoding="utf-8")
    assert "Student-t" in section(t_page, "replicates")
    assert "percentile bootstrap" in section(p_page, "replicates")


# -- across sweeps ----------------------------------------------------------------------------
def test_compare_two_sweeps(tmp_path: Path) -> None:
    a = make_sweep(tmp_path, 5, name="qlora_rank", storage="journal", seed=1)
    b = make_sweep(tmp_path, 5, name="lora_lr", storage="journal", seed=2, evals=True)
    make_replicates(a, {load_sweep(a).best.number: 0.02})
    out = write_compare([a, b], tmp_path / compare_file_name(["qlora_rank", "lora_lr"]))
    assert out.name == "compare-qlora_rank-lora_lr.html"
    page = out.read_text(encoding="utf-8")
    assert page.count(plotly_marker()) == 1
    best = min((load_sweep(a).best, load_sweep(b).best),
               key=lambda r: r.metrics["perplexity"])
    assert f"trial #{best.number}" in section(page, "summary")
    shared = section(page, "shared")
    assert "perplexity" in shared and "rougeL" in shared
    assert "mt_bench/score" not in shared                          # only one sweep has it
    assert section(page, "distributions").count('class="plotly-graph-div"') == 1
    assert section(page, "cost").count('class="plotly-graph-div"') == 1
    assert "<td>qlora_rank</td><td>#" in section(page, "replicates")
    assert "42, 1, 2, 3" in section(page, "replicates")
    assert "<img src=x" not in without_plotlyjs(page)


def test_compare_file_name_is_safe() -> None:
    assert compare_file_name(["a/b", "c d"]) == "compare-a_b-c_d.html"
    long = compare_file_name([f"sweep_{i:03d}_with_a_long_name" for i in range(10)])
    assert len(long) < 80 and long.startswith("compare-sweep_000")


def test_cli_compare_and_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    make_sweep(tmp_path, 3, name="one", storage="journal")
    make_sweep(tmp_path, 3, name="two", storage="journal")
    monkeypatch.chdir(tmp_path)
    sweeps = f"paths.sweeps={tmp_path / 'sweeps'}"
    assert main(["action=compare", "compare.sweeps=[one,two]", sweeps]) == 0
    assert (tmp_path / "reports" / "compare-one-two.html").is_file()
    assert main(["action=compare", "compare.sweeps=[one]", sweeps]) == 2
    assert main(["action=compare", "compare.sweeps=[one,nope]", sweeps]) == 2
    assert main(["action=frobnicate"]) == 2
    assert main(["action=compare", "compare.sweeps=[one,two]", sweeps,
                 "replicate.ci.method=bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("harness: error: ") for line in err) and len(err) == 4
    assert "compare.sweeps" in err[0] and "nope" in err[1] and "frobnicate" in err[2]


# -- the numbers behind the sections (extract -> info objects) --------------------------------
BASE_PERPLEXITY = 20.0           # the synthetic base model's (see _write_baseline)


def test_every_shown_section_has_an_info_object(sweep: Path, tmp_path: Path) -> None:
    data = load_sweep(sweep)
    infos = extract(data)
    assert list(infos) == [s.id for s in report.SECTIONS if s.id != "pareto"]
    multi = load_sweep(make_sweep(tmp_path, 4, objectives=(("perplexity", "minimize"),
                                                           ("rouge1", "maximize")),
                                  storage="journal"))
    assert "pareto" in extract(multi)


def test_summary_info_numbers(sweep: Path) -> None:
    data = load_sweep(sweep)
    info = extract_summary(data)
    best = data.study.best_trial
    assert info.n_trials == 8
    assert dict(info.status_counts) == {COMPLETE: 5, FAILED: 1, PRUNED: 1, NO_RESULT: 1}
    head = info.headline
    assert head.number == best.number and head.value == pytest.approx(best.value)
    assert head.base == BASE_PERPLEXITY
    assert head.delta == pytest.approx(best.value - BASE_PERPLEXITY)
    assert head.delta_pct == pytest.approx(100 * (best.value - BASE_PERPLEXITY)
                                           / BASE_PERPLEXITY)
    assert head.compute_unit == "GPU-h"
    assert head.compute_hours == pytest.approx(data.best.wall_seconds / 3600)
    assert not head.seeds.replicated and head.pareto is None
    rows = {r.metric: r for r in info.comparison}
    assert rows["perplexity"].delta == pytest.approx(head.delta)
    assert rows["rouge1"].base == pytest.approx(0.10)


def test_leaderboard_info_order_and_deltas(sweep: Path) -> None:
    data = load_sweep(sweep)
    info = extract_leaderboard(data)
    assert [r.number for r in info.rows] == [r.number for r in data.ranked]
    assert [r.rank for r in info.rows] == list(range(1, len(data.ranked) + 1))
    values = [r.values[0] for r in info.rows]
    assert values == sorted(values) and info.more == 0 and info.direction == "minimize"
    for row, record in zip(info.rows, data.ranked, strict=True):
        assert row.delta == pytest.approx(record.metrics["perplexity"] - BASE_PERPLEXITY)
        assert row.delta_pct == pytest.approx(100 * row.delta / BASE_PERPLEXITY)
        assert row.peak_memory_mb == record.gpu_max_allocated_mb
        assert row.compute_hours == pytest.approx(record.wall_seconds / 3600)
        assert row.trainable_pct == pytest.approx(100 * record.trainable_params
                                                  / record.total_params)
        assert row.on_front is None                                # one objective


def test_cost_info_fronts_are_the_non_dominated_trials(sweep: Path) -> None:
    data = load_sweep(sweep)
    info = extract_cost(data)
    assert [p.key for p in info.panels] == ["memory", "compute"]
    for panel in info.panels:
        points = {p.number: (p.cost, p.value) for p in panel.points}
        assert set(points) == {r.number for r in data.ranked}
        expected = {n for n, (c, v) in points.items()
                    if not any(c2 <= c and v2 <= v and (c2, v2) != (c, v)
                               for c2, v2 in points.values())}
        assert set(panel.front_numbers) == expected
        costs = [points[n][0] for n in panel.front_numbers]
        assert costs == sorted(costs)                              # in order of cost
        values = [points[n][1] for n in panel.front_numbers]
        assert values == sorted(values, reverse=True)              # each cheaper one is worse
    memory = info.panels[0]
    cheapest = min(data.ranked, key=peak_memory_mb)
    assert memory.front_numbers[0] == cheapest.number
    assert memory.points[0].cost == peak_memory_mb(data.ranked[0])


def test_methods_info_best_and_median(sweep: Path) -> None:
    data = load_sweep(sweep)
    info = extract_methods(data)
    assert info.metric == "perplexity" and info.metrics == ("perplexity",)
    for row in info.rows:
        mine = [r for r in data.records if r.method == row.method]
        done = [r.metrics["perplexity"] for r in mine if r.status == COMPLETE]
        assert row.trials == len(mine) and row.completed == len(done)
        assert row.best == (min(done) if done else None)
        assert row.median == (pytest.approx(statistics.median(done)) if done else None)
    assert sum(r.trials for r in info.rows) == 8
    best_by_method = {r.method: r.best for r in info.rows if r.best is not None}
    assert min(best_by_method.values()) == pytest.approx(data.best.metrics["perplexity"])
    boxes = {b.method: b for b in info.boxes}
    assert sorted(n for b in boxes.values() for n in b.numbers) == sorted(
        r.number for r in data.ranked)


def test_replicates_info_intervals(replicated: Path) -> None:
    data = load_sweep(replicated)
    info = extract_replicates(data)
    assert info.hint is None and info.metric == "perplexity"
    means = [float(np.mean(g.values)) for g in info.groups]
    assert means == sorted(means) and len(info.groups) == 3
    reference = [g for g in info.groups if g.reference]
    assert [g.number for g in reference] == [data.best_group.number]
    assert info.reference == data.best_group.label
    for stats in info.groups:
        group = data.groups[stats.number]
        assert stats.seeds == (42, 1, 2, 3) and list(stats.values) == group.values("perplexity")
        assert stats.mean == mean_interval(group.values("perplexity"), data.ci)
        assert stats.mean.low < np.mean(stats.values) < stats.mean.high
        assert stats.vs_base.estimate == pytest.approx(np.mean(stats.values) - BASE_PERPLEXITY)
        assert stats.vs_base.width == pytest.approx(stats.mean.width)
        assert (stats.vs_best is None) == stats.reference
    worst = info.groups[-1]
    assert worst.number == data.ranked[-1].number
    assert worst.vs_best.low > 0                          # clearly worse than the best
    assert len(info.pairs) == 3                           # 3 configurations, pairwise
    assert all(p.better == info.groups[0].label for p in info.pairs if p.a == info.groups[0].label
               and p.better is not None)
    assert [m for m, _, _ in info.by_method] == sorted({g.method for g in info.groups})
    assert info.plots[0].seeds.count(42) == 3 and len(info.plots[0].seed_values) == 12


def test_replicates_info_without_replicates_is_a_hint(sweep: Path) -> None:
    info = extract_replicates(load_sweep(sweep))
    assert info.hint is not None and "action=replicate" in info.hint and not info.groups


def test_summary_seeds_line_numbers(replicated: Path) -> None:
    data = load_sweep(replicated)
    line = extract_summary(data).headline.seeds
    assert line.replicated and line.level == 0.95
    assert line.stats.number == data.best.number and line.stats.mean.n == 4
    ref = data.best_group
    assert line.reference == (None if ref.number == data.best.number else (ref.number,
                                                                            ref.method))


def test_pareto_and_leaderboard_info_multi_objective(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 10, objectives=(("perplexity", "minimize"),
                                                 ("rouge1", "maximize")), storage="journal")
    data = load_sweep(sweep)
    pareto = extract_pareto(data)
    assert [r.number for r in pareto.rows] == sorted(data.front_numbers)
    assert pareto.objectives == ("perplexity", "rouge1") and pareto.study is not None
    for row in pareto.rows:
        record = data.records[row.number]
        assert row.values == (record.metrics["perplexity"], record.metrics["rouge1"])
    board = extract_leaderboard(data)
    assert {r.number for r in board.rows if r.on_front} == data.front_numbers & {
        r.number for r in board.rows}
    assert extract_summary(data).headline.pareto == tuple(sorted(data.front_numbers))


def test_eval_info_runs_and_scores(eval_sweep: Path) -> None:
    data = load_sweep(eval_sweep)
    lm = extract_lm_eval(data)
    assert lm.labels == LM_EVAL_TASKS and lm.total == len(LM_EVAL_TASKS)
    labels = [run.label for run in lm.runs]
    assert labels[0] == "base model" and labels[1] == f"best #{data.best.number} " \
        f"{data.best.method}" and len(labels) == 4
    for run, record in zip(lm.runs, [data.baseline, *data.ranked[:3]], strict=True):
        assert run.scores == tuple(record.metrics[f"lm_eval/{t}"] for t in LM_EVAL_TASKS)
        assert run.errors == (0.04, 0.04)
    mt = extract_mt_bench(data)
    assert mt.metrics[:3] == ("mt_bench/score", "mt_bench/turn1", "mt_bench/turn2")
    assert set(mt.labels[3:]) == set(MT_BENCH_CATEGORIES)
    assert mt.count_names == ()                  # counters moved to diagnostics (issue 16)
    assert all(e is None for run in mt.runs for e in run.errors)
    diag = extract_diagnostics(data)
    assert "mt_bench/judged" in diag.names and "mt_bench/score" not in diag.names
    label, values = diag.rows[1]
    assert label.startswith(f"#{data.best.number} ") and values[diag.names.index(
        "mt_bench/judged")] == 12.0


def test_failures_loss_and_resources_info(sweep: Path) -> None:
    data = load_sweep(sweep)
    failures = extract_failures(data)
    assert [(r.label, r.status) for r in failures.rows] == [("2", FAILED), ("5", PRUNED),
                                                              ("6", NO_RESULT)]
    assert failures.rows[0].reason == f"OutOfMemoryError: {OOM_MESSAGE}"
    assert "starting trial 2" in failures.rows[0].tail
    assert failures.rows[2].reason == data.records[6].note and "RUNNING" in data.records[6].note
    loss = extract_loss(data)
    assert loss.curves[0].number == data.best.number and loss.curves[0].best
    assert not any(c.best for c in loss.curves[1:]) and loss.total == 7
    assert len(loss.curves[0].train) == 30 and len(loss.curves[0].eval) == 6
    resources = extract_resources(data)
    assert [r.number for r in resources.rows] == [0, 1, 2, 3, 4, 5, 7]
    diff = extract_config_diff(data)
    assert diff.trials == tuple(r.number for r in data.ranked[:3])
    assert "method.train.learning_rate" in diff.keys


def test_environment_and_importance_info(sweep: Path) -> None:
    data = load_sweep(sweep)
    env = extract_environment(data)
    assert env.devices == (("GPU: NVIDIA H100 80GB HBM3 x 1", 7), ("CPU (device not recorded)",
                                                                     1))
    assert env.commits == (("abc123", 8),) and not env.mixed
    assert dict(env.versions)["torch"] == (("2.13.0", 8),)
    importance = extract_importance(data)
    assert importance.skip is None and importance.completed == 5
    assert set(importance.varied) <= set(PARAMS) and importance.how.startswith("fANOVA")


def test_baseline_is_found_by_the_sweeps_digest(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path, 3, storage="journal")
    cfg = OmegaConf.load(sweep / "sweep.yaml")
    cfg.model, cfg.data, cfg.eval = {"name": "tiny"}, {"name": "embedded"}, {"seed": 0}
    (sweep / "sweep.yaml").write_text(OmegaConf.to_yaml(cfg))
    assert load_sweep(sweep).baseline.metrics["perplexity"] == BASE_PERPLEXITY   # newest
    ours = baseline_dir(sweep, baseline_digest(cfg))
    ours.mkdir(parents=True)
    write_record(TrialRecord(number=-1, status=COMPLETE, method="base",
                             metrics=_metrics(30.0, 0.1)), ours)
    os.utime(ours / "result.json", (1, 1))                 # older than the other baseline
    data = load_sweep(sweep)
    assert data.baseline.metrics["perplexity"] == 30.0
    best = data.trials.set_index("number").loc[data.best.number]
    assert best["delta:perplexity"] == pytest.approx(data.best.metrics["perplexity"] - 30.0)


def test_deltas_are_one_computation() -> None:
    base = TrialRecord(number=-1, status=COMPLETE, method="base",
                       metrics={"a": 2.0, "b": 4.0, "c": "text", "d": 0.0})
    trial = TrialRecord(number=0, status=COMPLETE, method="lora",
                        metrics={"a": 3.0, "b": float("nan"), "c": 1.0, "d": 1.0, "e": 1.0})
    assert deltas(trial.metrics, base) == {"a": 1.0, "d": 1.0}
    assert deltas(trial.metrics, base.metrics) == deltas(trial.metrics, base)
    assert delta(trial, base, "a") == (1.0, 50.0)
    assert delta(trial, base, "d") == (1.0, None)                 # no % of a zero base
    assert delta(trial, None, "a") == (None, None)


def test_old_records_with_device_in_extra_are_read(tmp_path: Path) -> None:
    folder = tmp_path / "0000"
    folder.mkdir()
    old = json.loads(TrialRecord(number=0, status=COMPLETE, method="lora",
                                 wall_seconds=1800.0).to_json())
    for key in ("device", "note"):
        old.pop(key)
    old["extra"] = {"device": {"type": "cpu", "threads": 4}}
    (folder / "result.json").write_text(json.dumps(old))
    record = read_trial(0, folder)
    assert record.device == {"type": "cpu", "threads": 4} and "device" not in record.extra
    assert compute_hours(record) == (pytest.approx(2.0), "CPU-h")
    assert device_text(record) == "CPU: ?, 4 torch threads"


def test_css_and_sort_script_are_package_data(page: str) -> None:
    css, js = static("report.css"), static("sort.js")
    assert "table.sortable th" in css and "querySelectorAll" in js
    assert f"<style>\n{css}</style>" in page and f"<script>\n{js}</script>" in page
