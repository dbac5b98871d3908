"""The report's decision layer (issue 16): paired-by-seed differences and Holm's correction
(harness.stats) checked against hand computations, the decision summary on a replicated
method comparison, metric kinds (no bookkeeping in figures), and the search-space warnings
(a best learning rate at the edge of its range). Numbers from the extract functions, not HTML.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.layout import replicate_dir
from harness.records import COMPLETE, TrialRecord, read_record, write_record
from harness.report.kinds import metric_kind
from harness.report.page import extract, write_report
from harness.report.sections.decision import SAME, extract_decision
from harness.report.sections.space_warnings import extract_warnings, position, widened
from harness.stats import holm, paired_comparison, unpaired_comparison
from harness.sweep.results import load_sweep
from tests.test_report import make_sweep, section, without_plotlyjs

T_975_DF2 = 4.302652729911275        # Student-t 97.5% quantile, 2 degrees of freedom (tables)


# -- harness.stats against hand computations ---------------------------------------------------
def test_paired_interval_matches_a_hand_computation() -> None:
    a = {1: 10.0, 2: 12.0, 3: 11.0}
    b = {1: 9.0, 2: 10.5, 3: 10.6, 9: 50.0}          # seed 9 has no partner: left out
    d = [1.0, 1.5, 0.4]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = T_975_DF2 * sd / math.sqrt(3)
    got = paired_comparison(a, b)
    assert got.paired and got.interval.n == 3
    assert got.interval.estimate == pytest.approx(mean)
    assert got.interval.low == pytest.approx(mean - half, rel=1e-9)
    assert got.interval.high == pytest.approx(mean + half, rel=1e-9)
    # p: two-sided t tail at t = mean / se with 2 dof; closed form for 2 dof: 1 - t/sqrt(2+t^2)
    t = mean / (sd / math.sqrt(3))
    assert got.p_value == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)


def test_pairing_removes_the_shared_seed_effect() -> None:
    seed_effect = {1: 0.0, 2: 5.0, 3: -4.0}
    a = {s: 10.0 + e for s, e in seed_effect.items()}
    b = {s: 10.5 + e + 0.05 * s for s, e in seed_effect.items()}
    paired = paired_comparison(a, b)
    welch = unpaired_comparison(list(a.values()), list(b.values()))
    assert not paired.interval.contains(0.0)          # -0.6 +- small: a real difference
    assert welch.interval.contains(0.0)               # swamped by the seed-to-seed spread
    assert paired.p_value < 0.05 < welch.p_value


def test_holm_matches_a_hand_computation() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([]) == []
    assert holm([0.4, 0.9]) == pytest.approx([0.8, 0.9])


# -- the decision on a replicated method comparison ---------------------------------------------
SEEDS = (1, 2, 3)
SEED_EFFECT = {1: 0.0, 2: 0.30, 3: -0.25}
# method -> reward_mean per seed (before the shared seed effect)
METHODS = {"lora": [1.00, 1.02, 0.99], "qlora": [0.99, 1.03, 0.98],   # a tie with lora
           "full": [0.60, 0.62, 0.58],                                # clearly worse
           "dpo": [0.95, 0.96, 0.94]}                                 # worse only when paired


def method_compare_sweep(root: Path) -> Path:
    """A replicated `method_compare`-shaped sweep: one trial per method, seeds 1, 2, 3."""
    sweep_dir = root / "sweeps" / "method_compare"
    cfg = OmegaConf.create({
        "sweep": {"name": "method_compare", "objectives": [
            {"metric": "reward_mean", "direction": "maximize"},
            {"metric": "perplexity", "direction": "minimize"}],
            "params": {"method": {"type": "categorical", "choices": [*METHODS, "ppo"]},
                       "lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}}},
        "storage": {"kind": "journal", "path": str(sweep_dir / "study.journal")},
        "seed": 1})
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "sweep.yaml").write_text(OmegaConf.to_yaml(cfg))
    for number, (method, values) in enumerate(METHODS.items()):
        for seed, value in zip(SEEDS, values, strict=True):
            reward = value + SEED_EFFECT[seed]
            record = TrialRecord(
                number=number, status=COMPLETE, method=method, seed=seed,
                params={"method": method, "lr": 1e-4},
                metrics={"reward_mean": reward, "perplexity": 30 - 5 * reward,
                         "mt_bench/judge_requests": 12.0},
                wall_seconds=100.0 * (number + 1), peak_rss_mb=1000.0 + 100 * number,
                device={"type": "cpu", "threads": 2})
            out = (sweep_dir / "trials" / f"{number:04d}" if seed == SEEDS[0]
                   else replicate_dir(sweep_dir, number, seed))
            out.mkdir(parents=True, exist_ok=True)
            write_record(record, out)
    return sweep_dir


@pytest.fixture(scope="module")
def decision(tmp_path_factory):
    sweep = method_compare_sweep(tmp_path_factory.mktemp("decision"))
    return sweep, extract_decision(load_sweep(sweep))


def test_decision_is_paired_and_holm_corrected(decision) -> None:
    _, info = decision
    assert [r.method for r in info.rows][0] in ("lora", "qlora")
    assert info.paired and info.comparisons == 3
    ref = info.rows[0]
    assert ref.reference and ref.seeds == SEEDS and ref.diffs[0].verdict == "reference"
    verdicts = {r.method: r.diffs[0].verdict for r in info.rows[1:]}
    assert verdicts["full"] == "worse" and verdicts["dpo"] == "worse"
    other = "qlora" if ref.method == "lora" else "lora"
    assert verdicts[other] == SAME
    # Holm: the adjusted p-values are holm() of the raw paired p-values
    ref_runs = dict(zip(SEEDS, [v + SEED_EFFECT[s] for s, v in zip(SEEDS, METHODS[ref.method],
                                                                      strict=True)], strict=True))
    raws = []
    for row in info.rows[1:]:
        runs = {s: v + SEED_EFFECT[s] for s, v in zip(SEEDS, METHODS[row.method], strict=True)}
        raws.append(paired_comparison(runs, ref_runs).p_value)
    assert [r.diffs[0].p_adjusted for r in info.rows[1:]] == pytest.approx(holm(raws))
    # the Holm-level interval is wider than the plain 95% one
    full = next(r for r in info.rows if r.method == "full").diffs[0].comparison
    assert full.level > 0.95 and full.paired
    # cost beside quality
    assert ref.compute_unit == "CPU-h" and ref.peak_memory_mb >= 1000.0
    assert "wins on reward_mean" in info.sentence and "not distinguishable" in info.sentence


def test_decision_is_on_the_first_screen_of_the_page(decision, tmp_path) -> None:
    sweep, _ = decision
    page = write_report(sweep, tmp_path / "r.html").read_text(encoding="utf-8")
    top = page[:page.index("<nav>")]
    assert '<section id="decision">' in top and '<section id="warnings">' in top
    dec = section(page, "decision")
    assert "paired by seed" in dec and "Holm-corrected over 3 comparisons" in dec
    assert "not distinguishable" in dec and "CPU-h" in dec
    assert "ppo" in section(page, "warnings")              # a method choice never tried


def test_single_runs_say_no_interval(tmp_path) -> None:
    info = extract_decision(load_sweep(make_sweep(tmp_path, 8, storage="journal")))
    assert len(info.rows) == 2
    assert not info.paired
    assert all(r.diffs[0].verdict in ("reference", "one run: no interval") for r in info.rows)
    assert "action=replicate" in info.sentence


# -- metric kinds: no bookkeeping in the figures -------------------------------------------------
def test_metric_kinds() -> None:
    assert metric_kind("perplexity") == "quality"
    assert metric_kind("mt_bench/score") == "quality"
    assert metric_kind("lm_eval/embedded_facts_mc/acc") == "quality"
    assert metric_kind("lm_eval/embedded_facts_mc/acc_stderr") == "stderr"
    for name in ("mt_bench/judge_requests", "mt_bench/judge_cache_hits", "mt_bench/judged",
                 "lm_eval/identical_to_base", "cascade/judged", "mt_pair/pairs"):
        assert metric_kind(name) == "bookkeeping", name


COUNTERS = {"mt_bench/judge_requests": 12.0, "mt_bench/judge_cache_hits": 3.0,
            "lm_eval/identical_to_base": 0.0, "cascade/judged": 1.0}


def test_figures_hold_no_bookkeeping_metric(tmp_path) -> None:
    sweep = make_sweep(tmp_path, 6, evals=True, storage="journal")
    for folder in sorted((sweep / "trials").iterdir()):
        record = read_record(folder)
        if record is not None and record.status == COMPLETE:
            record.metrics.update(COUNTERS)
            write_record(record, folder)
    page = without_plotlyjs(write_report(sweep, tmp_path / "r.html").read_text("utf-8"))
    figures = re.findall(r'<div class="figure">(.*?)</script>', page, re.S)
    assert len(figures) >= 8
    counters = [*COUNTERS, "mt_bench/judged", "judge_errors", "unparseable", "_stderr"]
    for fig in figures:
        for name in counters:
            assert name not in fig, name
    assert "judge_requests" in section(page, "diagnostics")
    grid = extract(load_sweep(sweep))["metrics"]
    assert [p.metric for p in grid.panels] == ["perplexity"]     # objectives only by default
    assert "rougeL" in grid.others and "mt_bench/judged" not in grid.others


def test_report_metrics_adds_a_grid(tmp_path) -> None:
    sweep = make_sweep(tmp_path, 4, storage="journal")
    cfg = OmegaConf.load(sweep / "sweep.yaml")
    cfg.report = {"metrics": ["rougeL", "no_such_metric"]}
    (sweep / "sweep.yaml").write_text(OmegaConf.to_yaml(cfg))
    grid = extract(load_sweep(sweep))["metrics"]
    assert [p.metric for p in grid.panels] == ["perplexity", "rougeL"]
    assert grid.unknown == ("no_such_metric",)                  # said, not silently dropped


# -- search-space warnings ------------------------------------------------------------------------
LR = "method.train.learning_rate"      # tests.test_report's lr: 3e-4 .. 2e-3, log


def _set_lr(sweep: Path, numbers: list[int], value: float) -> None:
    for number in numbers:
        folder = sweep / "trials" / f"{number:04d}"
        record = read_record(folder)
        record.params[LR] = value
        write_record(record, folder)


def test_best_learning_rate_at_the_edge_is_warned(tmp_path) -> None:
    sweep = make_sweep(tmp_path, 6, storage="journal")
    data = load_sweep(sweep)
    _set_lr(sweep, [r.number for r in data.records], 7.7e-4)      # the middle (log scale)
    _set_lr(sweep, [data.ranked[0].number], 1.95e-3)               # the best at the high edge
    info = extract_warnings(load_sweep(sweep))
    edge = [w for w in info.edges if w.param == LR]
    assert len(edge) == 1 and edge[0].side == "high" and edge[0].best_at_edge
    assert edge[0].trials == (data.ranked[0].number,)
    low, high = edge[0].suggested
    assert low == pytest.approx(3e-4) and high == pytest.approx(2e-3 * math.sqrt(2e-3 / 3e-4))
    page = write_report(sweep, tmp_path / "r.html").read_text("utf-8")
    top = page[:page.index("<nav>")]
    assert f"<b>{LR}</b>: the best trial (#{data.ranked[0].number})" in top
    assert "high</b> end" in top and f"sweep.params.{LR}.high=" in top


def test_nothing_at_the_edge_no_warning(tmp_path) -> None:
    sweep = make_sweep(tmp_path, 6, storage="journal")
    data = load_sweep(sweep)
    _set_lr(sweep, [r.number for r in data.records], 7.7e-4)
    assert [w for w in extract_warnings(load_sweep(sweep)).edges if w.param == LR] == []


def test_edge_geometry() -> None:
    assert position(3e-4, 3e-4, 2e-3, True) == pytest.approx(0.0)
    assert position(math.sqrt(3e-4 * 2e-3), 3e-4, 2e-3, True) == pytest.approx(0.5)
    assert position(5, 0, 10, False) == pytest.approx(0.5)
    assert widened(0, 10, False, "low", False) == (0.0, 10.0)
    assert widened(2, 10, False, "high", True) == (2.0, 14.0)
    assert widened(1e-4, 1e-2, True, "low", False) == pytest.approx((1e-5, 1e-2))


def test_untried_choice_and_low_importance(tmp_path) -> None:
    sweep = make_sweep(tmp_path, 8, storage="journal")
    cfg = OmegaConf.load(sweep / "sweep.yaml")
    cfg.sweep.params["method.lora.rank"]["choices"] = [4, 8, 16, 64]
    cfg.report = {"importance_floor": 0.05}
    (sweep / "sweep.yaml").write_text(OmegaConf.to_yaml(cfg))
    data = load_sweep(sweep)
    seen = {str(r.params["method.lora.rank"]) for r in data.records if r.status == COMPLETE}
    info = extract_warnings(data)
    untried = {u.param: u.choices for u in info.untried}
    assert untried["method.lora.rank"] == tuple(c for c in ("4", "8", "16", "64")
                                                if c not in seen)
    assert "64" in untried["method.lora.rank"]
    # the synthetic metric does not depend on the method at all: near-zero importance
    assert info.importance_note is None
    flagged = [u.param for u in info.unimportant]
    assert "method" in flagged and LR not in flagged         # lr drives the metric


# -- the forgetting check ---------------------------------------------------------------------
TASK = "lm_eval/embedded_facts_mc/acc"      # tests.test_report's eval metrics, stderr 0.04


def test_forgetting_flags_a_drop_beyond_threshold_and_two_stderrs(tmp_path) -> None:
    sweep = make_sweep(tmp_path, 6, evals=True, storage="journal")
    cfg = OmegaConf.load(sweep / "sweep.yaml")
    cfg.report = {"forgetting": {"tasks": [TASK, "lm_eval/never_run/acc"], "threshold": 0.02,
                                 "stderrs": 2.0}}
    (sweep / "sweep.yaml").write_text(OmegaConf.to_yaml(cfg))
    data = load_sweep(sweep)
    base = data.base_value(TASK)
    big, small = data.ranked[0].number, data.ranked[1].number
    for number, drop in ((big, 0.2), (small, 0.1)):    # 2 x hypot(0.04, 0.04) = 0.113
        folder = sweep / "trials" / f"{number:04d}"
        record = read_record(folder)
        record.metrics[TASK] = base - drop
        write_record(record, folder)
    info = extract(load_sweep(sweep))["forgetting"]
    rows = {r.number: r for r in info.rows}
    assert rows[big].drop == pytest.approx(0.2) and rows[big].flagged
    assert rows[big].stderr == pytest.approx(math.hypot(0.04, 0.04))
    assert rows[small].drop == pytest.approx(0.1) and not rows[small].flagged   # > 0.02 only
    assert [r.number for r in info.flagged] == [big]
    assert info.missing == ("lm_eval/never_run/acc",)


def test_embedded_general_task_rows() -> None:
    from harness.embedded.general import general_rows

    rows = general_rows(0, 30)
    assert len(rows) == 30
    for row in rows:
        right = row["choices"][row["label"]]
        assert len(set(row["choices"])) == 4
        for other in row["choices"]:
            assert sorted(other.rstrip(".").split()) == sorted(right.rstrip(".").split())
    assert general_rows(0, 30) == rows                  # deterministic for a seed


# -- judge honesty ----------------------------------------------------------------------------
def _with_judge(sweep: Path, judge: dict) -> None:
    cfg = OmegaConf.load(sweep / "sweep.yaml")
    cfg.paths.embedded = "/cache/harness/embedded-v2"
    cfg.eval = {"mt_bench": {"enabled": True, "prompts": {"single": "single-v1"}},
                "judge": judge}
    (sweep / "sweep.yaml").write_text(OmegaConf.to_yaml(cfg))


def test_embedded_judge_is_named_and_marked_plumbing_only(tmp_path) -> None:
    sweep = make_sweep(tmp_path, 4, evals=True, storage="journal")
    _with_judge(sweep, {"base_url": None,
                        "serve": {"model_path": "/cache/harness/embedded-v2/judge"}})
    info = extract(load_sweep(sweep))
    judge = info["judge"]
    assert judge.embedded and judge.mode == "single" and judge.prompts == ("single-v1",)
    assert "transformers serve" in judge.endpoint
    assert info["warnings"].judge is not None and "no quality signal" in info["warnings"].judge
    assert "plumbing check" in info["mt-bench"].title


def test_a_real_judge_endpoint_is_not_marked(tmp_path) -> None:
    sweep = make_sweep(tmp_path, 4, evals=True, storage="journal")
    _with_judge(sweep, {"base_url": "https://judge.example/v1", "model": "gpt-4",
                        "serve": {"model_path": "/cache/harness/embedded-v2/judge"}})
    info = extract(load_sweep(sweep))
    assert not info["judge"].embedded and "https://judge.example/v1" in info["judge"].endpoint
    assert info["warnings"].judge is None and "plumbing" not in info["mt-bench"].title


def test_pairwise_agreement_is_reported(tmp_path) -> None:
    sweep = make_sweep(tmp_path, 4, storage="journal")
    _with_judge(sweep, {"base_url": "https://judge.example/v1", "model": "gpt-4"})
    cfg = OmegaConf.load(sweep / "sweep.yaml")
    cfg.eval.mt_bench.mode = "pairwise"
    cfg.eval.mt_bench.pairwise = {"reference": "base"}
    (sweep / "sweep.yaml").write_text(OmegaConf.to_yaml(cfg))
    data = load_sweep(sweep)
    best = data.ranked[0]
    folder = sweep / "trials" / f"{best.number:04d}"
    record = read_record(folder)
    record.metrics.update({"mt_pair/pairs": 8.0, "mt_pair/errors": 1.0, "mt_pair/wins": 4.0,
                           "mt_pair/position_consistency": 0.75, "mt_pair/win_rate": 0.6,
                           "mt_pair/win_rate_low": 0.3, "mt_pair/win_rate_high": 0.9,
                           "mt_pair/answer_words": 30.0, "mt_pair/reference_words": 20.0,
                           "mt_pair/longer_wins": 0.8})
    write_record(record, folder)
    info = extract(load_sweep(sweep))
    judge = info["judge"]
    assert judge.mode == "pairwise" and judge.reference == "base"
    assert judge.prompts[0] == "pair-v2"
    (label, pc, win, low, high, ratio, longer, pairs, errors), = judge.agreement
    assert label.startswith(f"#{best.number} ") and (pc, win, low, high) == (0.75, 0.6, 0.3, 0.9)
    assert ratio == pytest.approx(1.5) and (longer, pairs, errors) == (0.8, 8.0, 1.0)
    assert "mt_pair/win_rate" in info["metrics"].others                      # a quality metric
    assert "mt_pair/position_consistency" in info["diagnostics"].names       # bookkeeping


def test_command_line_report_block_replaces_the_sweeps(tmp_path) -> None:
    sweep = make_sweep(tmp_path, 4, storage="journal")
    page = write_report(sweep, tmp_path / "r.html", report={"metrics": ["rougeL"]})
    grid = section(page.read_text("utf-8"), "metrics")
    assert "rougeL against each parameter" in grid
    assert "rougeL against each parameter" not in section(
        write_report(sweep, tmp_path / "plain.html").read_text("utf-8"), "metrics")


def test_replicates_section_pairs_by_seed(decision) -> None:
    from harness.report.sections.replicates import extract_replicates

    sweep, _ = decision
    data = load_sweep(sweep)
    info = extract_replicates(data)
    ref = data.best_group
    dpo = next(g for g in info.groups if g.method == "dpo")
    ref_runs = {r.seed: r.metrics["reward_mean"] for r in ref.runs}
    dpo_runs = {r.seed: r.metrics["reward_mean"] for r in data.groups[dpo.number].runs}
    assert dpo.vs_best == paired_comparison(dpo_runs, ref_runs).interval
    assert not dpo.vs_best.contains(0.0)                     # Welch would not see it
    assert unpaired_comparison(list(dpo_runs.values()), list(ref_runs.values())
                               ).interval.contains(0.0)
