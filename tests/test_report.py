"""Tests for harness.report on synthetic sweep folders with a real Optuna study.

The main sweep uses sqlite storage in the sweep folder, as the default config does; the small
side cases use the journal storage, which is quicker to create.

`make_sweep` writes the folder layout of harness.sweep with fake but plausible records; the
benchmark (benchmarks/report_scale.py) reuses it for a 500-trial sweep.
"""

from __future__ import annotations

import math
import random
import re
import shutil
from pathlib import Path

import optuna
import pandas as pd
import plotly.offline
import pytest
import yaml
from omegaconf import OmegaConf

from harness import report
from harness.records import (
    COMPLETE,
    FAILED,
    PRUNED,
    TrialError,
    TrialRecord,
    write_record,
)
from harness.report import NO_RESULT, load_sweep, write_exports, write_report
from harness.space import parse_space, suggest
from harness.study import make_storage

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


# -- a synthetic sweep -----------------------------------------------------------------------
def make_sweep(root: Path, n_trials: int = 8, *, statuses: dict[int, str] | None = None,
               objectives: tuple = (("perplexity", "minimize"),), history: int = 30,
               no_result: tuple[int, ...] = (), seed: int = 0, storage: str = "sqlite",
               extra_metrics: int = 0) -> Path:
    """A sweep folder like harness.sweep writes; trials not in `statuses` are COMPLETE.

    extra_metrics adds that many lm-eval style tasks (`lm_eval/task<i>/acc` and `..._stderr`).
    """
    name = "synthetic"
    sweep_dir = root / "sweeps" / name
    (sweep_dir / "trials").mkdir(parents=True)
    cfg = _sweep_cfg(name, sweep_dir, objectives, storage)
    (sweep_dir / "sweep.yaml").write_text(OmegaConf.to_yaml(cfg))
    study = optuna.create_study(study_name=name, storage=make_storage(cfg.storage),
                                directions=[d for _, d in objectives],
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    _write_baseline(sweep_dir)
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


def _write_baseline(sweep_dir: Path) -> None:
    base_dir = sweep_dir / "baseline" / "0123456789ab"
    base_dir.mkdir(parents=True)
    samples = [{"prompt": p, "reference": f"reference {i}", "generation": f"base says {i}"}
               for i, p in enumerate(PROMPTS)]
    samples[0]["generation"] = f"base {XSS_SCRIPT}"
    write_record(TrialRecord(number=-1, status=COMPLETE, method="base",
                             metrics=_metrics(20.0, 0.10), eval_seconds=12.0,
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
        versions=VERSIONS, git_commit="abc123")
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
    def broken(data, figs):
        figs.html(report.go.Figure())
        raise RuntimeError("boom <b>")

    sections = [(s, t, broken if s == "history" else f) for s, t, f in report.SECTIONS]
    monkeypatch.setattr(report, "SECTIONS", sections)
    sweep = make_sweep(tmp_path, 3, storage="journal")
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "RuntimeError: boom &lt;b&gt;" in section(page, "history")
    assert page.count(plotly_marker()) == 1
