"""harness.sweep.replicate: what is replicated (synthetic sweeps, a stand-in launcher), and end to
end on the embedded tiny model: a one-trial sweep, then its configuration rerun with more seeds
through the launcher and `python -m harness.trial`, resumably; the report's confidence
interval narrows as seeds are added."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from omegaconf import OmegaConf

import harness.sweep.replicate as replicate
from harness.errors import ConfigError
from harness.layout import replicate_dir
from harness.records import COMPLETE, FAILED, TrialRecord, TrialSpec, read_record, write_record
from harness.stats import mean_interval
from harness.sweep.replicate import plan, run_replicates
from harness.sweep.results import load_sweep
from tests.conftest import run_cli
from tests.test_report import make_sweep

# Very short trials with the cheap metrics only (perplexity, ROUGE on a few samples).
CHEAP = ["method.train.max_steps=4", "method.train.eval_steps=2", "method.train.logging_steps=1",
         "eval.rouge.max_samples=4", "eval.perplexity.max_texts=8", "launcher.parallel=2",
         "eval.lm_eval.enabled=false", "eval.mt_bench.enabled=false",
         "data.preference.metrics.enabled=false"]
SWEEP = ["sweep.name=reps", "sweep.n_trials=1", *CHEAP]
REPLICATE = [*SWEEP, "action=replicate", "replicate.top_k=1", "replicate.per_method=false"]


def _rcfg(**kw) -> OmegaConf:
    base = {"top_k": 2, "per_method": False, "trials": None, "seeds": [1, 2]}
    return OmegaConf.create({**base, **kw})


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    return make_sweep(tmp_path, 6, statuses={1: FAILED}, storage="journal")


def test_plan_top_k_per_method_and_explicit(sweep: Path) -> None:
    data = load_sweep(sweep)
    top = [r.number for r in data.ranked]
    items = plan(sweep, _rcfg())
    assert [(i.number, i.seed) for i in items] == [(top[0], 1), (top[0], 2), (top[1], 1),
                                                   (top[1], 2)]
    assert items[0].dir == sweep / "replicates" / f"{top[0]:04d}-seed1"
    methods = {r.method for r in data.ranked}
    per_method = {i.number for i in plan(sweep, _rcfg(top_k=1, per_method=True))}
    assert {r.method for r in data.ranked if r.number in per_method} == methods
    assert {i.number for i in plan(sweep, _rcfg(trials=[top[-1]]))} == {top[-1]}
    assert [i.seed for i in plan(sweep, _rcfg(top_k=1, seeds=[42, 7]))] == [7]  # own seed


@pytest.mark.parametrize("bad, message", [
    ({"seeds": []}, "replicate.seeds is empty"),
    ({"seeds": [1, 1]}, "repeated seeds"),
    ({"trials": [1]}, "no COMPLETE trial [1]"),
    ({"top_k": 0}, "no COMPLETE trial with the objective"),
])
def test_plan_refuses_bad_input(sweep: Path, bad: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        plan(sweep, _rcfg(**bad))
    assert message in str(exc.value)


class FakeLauncher:
    """Finishes a replicate at once: writes a record whose perplexity depends on the seed."""

    parallel = 2

    def __init__(self, fail_seeds: tuple[int, ...] = ()) -> None:
        self.submitted: list[str] = []
        self.fail_seeds = fail_seeds

    def submit(self, trial_dir: Path):
        cfg = yaml.safe_load((trial_dir / "config.yaml").read_text())
        self.submitted.append(trial_dir.name)
        seed = cfg["seed"]
        status = FAILED if seed in self.fail_seeds else COMPLETE
        write_record(TrialRecord(number=cfg["trial"]["number"], status=status, method="lora",
                                 seed=seed, metrics={"perplexity": 10.0 + seed / 10}),
                     trial_dir)
        return SimpleNamespace(done=lambda: True, failure_reason=lambda: "")

    def reattach(self, trial_dir: Path):
        return None

    def close(self) -> None:
        return None


def _prepared(sweep: Path, **rcfg) -> SimpleNamespace:
    cfg = OmegaConf.create({"replicate": _rcfg(**rcfg), "launcher": {"poll_seconds": 0.01},
                            "eval": {}})
    return SimpleNamespace(dir=sweep, name="synthetic", cfg=cfg)


def test_rerun_skips_complete_and_retries_failed(sweep: Path, monkeypatch) -> None:
    launcher = FakeLauncher(fail_seeds=(2,))
    monkeypatch.setattr("harness.sweep.replicate.make_launcher", lambda cfg: launcher)
    monkeypatch.setattr("harness.sweep.driver.trial_threads", lambda cfg: 1)
    prepared = _prepared(sweep, top_k=1)
    records = run_replicates(prepared)
    assert sorted(r.status for r in records) == [COMPLETE, FAILED]
    assert len(launcher.submitted) == 2
    launcher.fail_seeds = ()
    records = run_replicates(prepared)
    assert launcher.submitted[2:] == [f"{load_sweep(sweep).best.number:04d}-seed2"]
    assert [r.status for r in records] == [COMPLETE, COMPLETE]
    launcher.submitted.clear()
    run_replicates(_prepared(sweep, top_k=1, seeds=[1, 2, 3]))
    assert [name.split("-")[1] for name in launcher.submitted] == ["seed3"]
    group = load_sweep(sweep).groups[load_sweep(sweep).best.number]
    assert group.seeds() == [42, 1, 2, 3]


def test_replicate_config_is_the_trials_with_another_seed(sweep: Path) -> None:
    item = plan(sweep, _rcfg(top_k=1, seeds=[5]))[0]
    replicate.write_config(sweep, item, TrialSpec(threads=3, git_commit="abc"))
    cfg = yaml.safe_load((item.dir / "config.yaml").read_text())
    source = yaml.safe_load((sweep / "trials" / f"{item.number:04d}" / "config.yaml")
                            .read_text())
    assert cfg["seed"] == 5 and cfg["method"] == source["method"]
    assert cfg["trial"]["number"] == item.number and cfg["trial"]["replicate_of"] == item.number
    assert cfg["trial"]["params"] == source["trial"]["params"]
    assert cfg["trial"]["trial_id"] is None                 # no pruning reports for replicates
    assert cfg["trial"]["threads"] == 3 and cfg["trial"]["git_commit"] == "abc"
    assert json.dumps(cfg)                                  # plain YAML, no OmegaConf nodes


def _cli(args: list[str], cwd: Path) -> str:
    result = run_cli(args, cwd=cwd, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_replicates_resume_and_narrow_the_ci(tmp_path: Path) -> None:
    _cli(SWEEP, tmp_path)
    sweep = tmp_path / "sweeps" / "reps"
    source = read_record(sweep / "trials" / "0000")
    assert source.status == "COMPLETE" and source.seed == 42

    out = _cli([*REPLICATE, "replicate.seeds=[1]"], tmp_path)
    assert "1 planned, 0 done, 1 to run" in out
    first = replicate_dir(sweep, 0, 1)
    kept = (first / "result.json").read_text()
    two = load_sweep(sweep).groups[0]
    assert two.seeds() == [42, 1]
    narrow_from = mean_interval(two.values("perplexity"))

    out = _cli([*REPLICATE, "replicate.seeds=[1,2,3]"], tmp_path)
    assert "3 planned, 1 done, 2 to run" in out                   # seed 1 is not run again
    assert (first / "result.json").read_text() == kept
    assert (first / "trial.log").read_text().count("COMPLETE") == 1
    data = load_sweep(sweep)
    four = data.groups[0]
    assert four.seeds() == [42, 1, 2, 3]
    values = four.values("perplexity")
    assert len(set(values)) == 4                                   # the seed changes training
    narrowed = mean_interval(values)
    print(f"perplexity 95% CI: 2 seeds {narrow_from}, 4 seeds {narrowed}")
    assert narrowed.width < narrow_from.width

    cfg = yaml.safe_load((replicate_dir(sweep, 0, 3) / "config.yaml").read_text())
    trial_cfg = yaml.safe_load((sweep / "trials" / "0000" / "config.yaml").read_text())
    assert cfg["seed"] == 3 and cfg["trial"]["replicate_of"] == 0
    assert {k: v for k, v in cfg.items() if k not in ("seed", "trial")} == \
        {k: v for k, v in trial_cfg.items() if k not in ("seed", "trial")}

    page = (tmp_path / "reports" / "reps.html").read_text(encoding="utf-8")
    replicates = re.search(r'<section id="replicates">(.*?)</section>', page, re.S).group(1)
    assert "42, 1, 2, 3" in replicates and "best configuration (reference)" in replicates
    assert "across 4 seeds trial #0" in page
    assert (tmp_path / "reports" / "reps" / "reps_replicates.csv").is_file()
