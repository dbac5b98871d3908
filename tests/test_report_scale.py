"""The report of a big sweep: what stays on the page when there are thousands of trials (top-N
tables say how many they hide, one WebGL trace for parallel coordinates and big scatters, one
fANOVA per page), and result.json records that the fast reader hands to the standard one.

The thresholds are lowered on small synthetic sweeps; benchmarks/report_scale.py times the real
sizes (5,000 trials).
"""

from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path

import optuna
import pytest

from harness.records import COMPLETE, FAILED, PRUNED, read_record, write_record
from harness.report import figures
from harness.report.page import SECTIONS, write_report
from harness.report.sections import leaderboard, optuna_plots
from harness.report.sections.leaderboard import (
    LEADERBOARD_ROWS,
    extract_leaderboard,
    extract_trials,
    render_leaderboard,
    render_trials,
    table_cell,
)
from harness.report.sections.optuna_plots import extract_parallel, parcoords
from harness.sweep.results import load_sweep
from tests.test_report import PARAMS, make_sweep

N_TRIALS = 24


class Recording(figures.Figures):
    """Keeps the figures a section draws (the page's JSON also holds plotly's template, which
    names every trace type)."""

    def __init__(self) -> None:
        super().__init__()
        self.drawn: list = []

    def html(self, fig, height: int = 420) -> str:
        self.drawn.append(fig)
        return super().html(fig, height)


def trace_types(sweep: Path, sid: str) -> list[list[str]]:
    """The trace types of each figure the section `sid` draws."""
    entry = next(s for s in SECTIONS if s.id == sid)
    recording = Recording()
    entry.html(load_sweep(sweep), recording)
    return [[t.type for t in fig.data] for fig in recording.drawn]


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """More completed trials than the leaderboard shows; some FAILED and PRUNED, one unfinished."""
    statuses = {3: FAILED, 13: FAILED, 7: PRUNED}
    return make_sweep(tmp_path_factory.mktemp("scale"), N_TRIALS, statuses=statuses,
                      no_result=(N_TRIALS - 1,), storage="journal", history=5)


def test_leaderboard_lists_the_top_trials_and_says_how_many_are_hidden(big: Path) -> None:
    data = load_sweep(big)
    info = extract_leaderboard(data)
    assert len(data.ranked) == N_TRIALS - 4 > LEADERBOARD_ROWS
    assert [r.number for r in info.rows] == [r.number for r in data.ranked[:LEADERBOARD_ROWS]]
    assert info.more == len(data.ranked) - LEADERBOARD_ROWS
    assert f"{info.more} more completed trials in the trials table" in render_leaderboard(
        info, figures.Figures())


def test_trials_table_has_every_trial_with_its_cells_escaped(big: Path) -> None:
    frame = extract_trials(load_sweep(big)).frame
    out = render_trials(extract_trials(load_sweep(big)), figures.Figures())
    body = out.split("<tbody>", 1)[1]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    assert len(rows) == N_TRIALS == len(frame)
    shown = frame.drop(columns=["config_path"])
    header = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", out)]
    assert header == list(shown.columns)
    for row, (_, expected) in zip(rows, shown.iterrows(), strict=True):
        cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        assert cells == [table_cell(v) for v in expected]
    failed = rows[3]
    assert "OutOfMemoryError" in failed and "<img" not in failed and "&lt;img" in failed
    assert "<details>" not in out                   # a small sweep's table is open


def test_a_big_trials_table_starts_closed(big: Path, monkeypatch) -> None:
    monkeypatch.setattr(leaderboard, "TRIALS_CLOSED_FROM", N_TRIALS)
    out = render_trials(extract_trials(load_sweep(big)), figures.Figures())
    assert f"<details><summary>all {N_TRIALS} trials</summary>" in out
    assert out.count("<tr><td>") == N_TRIALS and 'class="dataframe sortable"' in out


def test_parallel_coordinates_of_a_big_study_are_one_trace(big: Path, monkeypatch) -> None:
    """At PARCOORDS_FROM completed trials: one go.Parcoords line per completed trial, the
    objective and every parameter an axis, categories named, the log parameter in log10."""
    info = extract_parallel(load_sweep(big))
    fig = parcoords(info)
    assert [t.type for t in fig.data] == ["parcoords"]
    trace = fig.data[0]
    done = [t for t in info.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]
    assert len(trace.line.color) == len(done) == info.complete
    # the objective, then the parameters in name order (labels shortened as Optuna does)
    names = ["perplexity", *sorted(PARAMS)]
    assert [d.label[:15] for d in trace.dimensions] == [n[:15] for n in names]
    dims = dict(zip(names, trace.dimensions, strict=True))
    assert sorted(dims["perplexity"].values) == pytest.approx(sorted(t.value for t in done))
    assert list(trace.line.color) == pytest.approx(list(dims["perplexity"].values))
    lr = "method.train.learning_rate"
    assert sorted(dims[lr].values) == pytest.approx(
        sorted(math.log10(t.params[lr]) for t in done))
    assert set(dims["method"].ticktext) == {t.params["method"] for t in done}
    assert trace_types(big, "parallel") == [["scatter"] * info.complete + ["scatter"]]
    monkeypatch.setattr(optuna_plots, "PARCOORDS_FROM", info.complete)
    assert trace_types(big, "parallel") == [["parcoords"]]


def test_big_scatter_plots_use_webgl(big: Path, monkeypatch) -> None:
    assert "scattergl" not in str(trace_types(big, "cost") + trace_types(big, "resources"))
    monkeypatch.setattr(figures, "GL_POINTS", 2)
    cost = trace_types(big, "cost")[0]
    assert cost.count("scattergl") == 4 and cost.count("scatter") == 2    # fronts stay SVG
    metrics = {t for fig in trace_types(big, "metrics") for t in fig}
    assert metrics == {"scatter", "scattergl"}      # categorical axes stay SVG
    assert trace_types(big, "resources") == [["scattergl"] * 3, ["scattergl"] * 2]


def test_importance_is_computed_once_a_page(big: Path, monkeypatch) -> None:
    """The warnings' near-zero-importance check and the importance plot share one fANOVA."""
    calls = []
    evaluate = optuna.importance.FanovaImportanceEvaluator.evaluate

    def counted(self, *args, **kwargs):
        calls.append(1)
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(optuna.importance.FanovaImportanceEvaluator, "evaluate", counted)
    write_report(big, big.parent / "once.html")
    assert len(calls) == 1
    data = load_sweep(big)
    info = optuna_plots.extract_importance(data)
    assert sum(v for _, v in info.importances) == pytest.approx(1.0)
    recording = Recording()
    optuna_plots.render_importance(info, recording)
    plotted = dict(zip(recording.drawn[0].data[0].y, recording.drawn[0].data[0].x, strict=True))
    assert plotted == pytest.approx(dict(info.importances))


def test_shallow_fanova_past_the_tree_budget() -> None:
    """Up to 800 completed trials Optuna's deep trees; past it, trees cut to a fixed depth."""
    assert optuna_plots.importance_evaluator(800)[1] == "fANOVA with 8 trees"
    assert optuna_plots.importance_evaluator(5000)[1] == (
        f"fANOVA with 8 trees of depth {optuna_plots.FANOVA_SHALLOW_DEPTH}")


def test_records_the_fast_reader_refuses_still_load(tmp_path: Path) -> None:
    """json.dumps writes NaN and Infinity (a diverged loss); orjson refuses them: the record
    is read by the standard parser instead, with the same values."""
    record = read_record(make_sweep(tmp_path, 1, history=3, storage="journal") / "trials" / "0000")
    assert record.status == COMPLETE
    record.metrics["perplexity"] = float("nan")
    record.loss_history.append({"step": 40, "loss": float("inf")})
    folder = tmp_path / "nan"
    folder.mkdir()
    write_record(record, folder)
    assert "NaN" in (folder / "result.json").read_text()
    again = read_record(folder)
    assert math.isnan(again.metrics["perplexity"]) and again.loss_history[-1]["loss"] == math.inf
    assert json.loads(again.to_json())["params"] == record.params
