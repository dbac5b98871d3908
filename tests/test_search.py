"""The search settings reach Optuna: TPE knobs, ASHA / Hyperband rungs, bad values refused.

Fast: no training, in-memory studies only."""

from __future__ import annotations

import json

import optuna
import pytest
from omegaconf import OmegaConf

from harness.config.compose import compose_config
from harness.config.validate import Problems, validate_sweep
from harness.errors import ConfigError
from harness.records import (
    COMPLETE,
    PRUNED,
    TrialRecord,
    TrialSpec,
    read_record,
    write_record,
    write_trial_config,
)
from harness.study import make_pruner
from harness.sweep.budget import StepBudget, trial_steps, trials_that_fit
from harness.sweep.samplers import make_sampler
from harness.sweep.space import parse_space, study_params, suggest, to_overrides
from harness.trial.prune_signal import eval_rows


def _sampler(**fields):
    return make_sampler(OmegaConf.create({"name": "tpe", "seed": 0, **fields}), [], 1)


def test_tpe_gets_multivariate_group_constant_liar():
    tpe = _sampler(n_startup_trials=5, multivariate=True, group=True, constant_liar=False)
    assert (tpe._n_startup_trials, tpe._multivariate, tpe._group, tpe._constant_liar) == \
        (5, True, True, False)
    plain = _sampler(multivariate=False, constant_liar=True)
    assert (plain._multivariate, plain._group, plain._constant_liar) == (False, False, True)


def test_search_bench_builds_the_tuned_sampler_without_pruning():
    """search_bench.yaml's blocks, as the driver builds them: the noise-free GP sampler (1
    startup trial), no pruner; the benchmark's tpe+asha overrides give TPE (multivariate, constant
    liar) and ASHA with its one rung at step 20 (keep the best half)."""
    cfg = compose_config(["sweep=search_bench"])
    sampler = make_sampler(cfg.sweep.sampler, parse_space(cfg.sweep.params), 1)
    assert isinstance(sampler, optuna.samplers.GPSampler) and sampler._n_startup_trials == 1
    assert sampler._deterministic   # seeded trials: a noise-free GP
    assert isinstance(make_pruner(cfg.sweep.pruner), optuna.pruners.NopPruner)
    cfg = compose_config(["sweep=search_bench", "sweep.sampler.name=tpe",
                          "sweep.pruner.name=asha", "+sweep.pruner.min_resource=20",
                          "+sweep.pruner.reduction_factor=2"])
    sampler = make_sampler(cfg.sweep.sampler, parse_space(cfg.sweep.params), 1)
    study = optuna.create_study(sampler=sampler)
    assert (sampler._is_multivariate(study), sampler._constant_liar,
            sampler._n_startup_trials) == (True, True, 1)
    pruner = make_pruner(cfg.sweep.pruner)
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert (pruner._min_resource, pruner._reduction_factor) == (20, 2)


_GP_THEN_FORK = """
import os, sys
import optuna, torch
from omegaconf import OmegaConf
from harness.launch.warm import fork_child
from harness.sweep.samplers import make_sampler
optuna.logging.set_verbosity(optuna.logging.ERROR)
torch.set_num_threads(2)
study = optuna.create_study(sampler=make_sampler(
    OmegaConf.create({"name": "gp", "seed": 0, "n_startup_trials": 1}), [], 1))
for _ in range(4):   # asks after the first fit the GP in this process, with torch
    trial = study.ask()
    x, y = trial.suggest_int("x", 0, 2), trial.suggest_int("y", 0, 2)
    study.tell(trial, (x - 1) ** 2 + y)
def train():
    a = torch.randn(600, 600)
    for _ in range(10):
        a = torch.tanh(a @ a)   # multi-threaded ops in the forked child
pid = fork_child(train)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_worker_that_asked_the_gp_sampler_can_still_fork_a_trial():
    """A SLURM pool worker asks, then forks the trial: with Optuna's GPSampler as it is, the
    child's first multi-threaded torch op hangs (libgomp's threads do not survive the fork);
    the harness's GP fits with one thread, so the child trains."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", _GP_THEN_FORK], timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _rungs(pruner_cfg: dict, steps: list[int]) -> dict[str, float]:
    """Run one best-so-far trial reporting at `steps` under the pruner; its completed rungs."""
    pruner = make_pruner(OmegaConf.create(pruner_cfg))
    study = optuna.create_study(pruner=pruner)
    trial = study.ask()
    for step in steps:
        trial.report(1.0 / step, step)
        assert not trial.should_prune()   # the only (so the best) trial is always promoted
    return {k: v for k, v in study.trials[0].system_attrs.items() if "rung" in k}


def test_asha_rungs_follow_min_resource_and_reduction_factor():
    """Rungs at min_resource x factor^k steps: 5 and 15 with (5, 3) over evals every 5 steps;
    5, 10, 20 with (5, 2); each rung keeps the value reported at its step."""
    steps = [5, 10, 15, 20, 25, 30]
    assert _rungs({"name": "asha", "min_resource": 5, "reduction_factor": 3}, steps) == \
        {"completed_rung_0": 1 / 5, "completed_rung_1": 1 / 15}
    assert _rungs({"name": "asha", "min_resource": 5, "reduction_factor": 2}, steps) == \
        {"completed_rung_0": 1 / 5, "completed_rung_1": 1 / 10, "completed_rung_2": 1 / 20}


def test_asha_prunes_a_trial_worse_than_the_rung():
    pruner = make_pruner(OmegaConf.create({"name": "asha", "min_resource": 5,
                                           "reduction_factor": 2}))
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    study = optuna.create_study(pruner=pruner)
    for value in (1.0, 2.0):   # two trials reach rung 0 (step 5): the worse one is pruned
        trial = study.ask()
        trial.report(value, 5)
        pruned = trial.should_prune()
        study.tell(trial, state=optuna.trial.TrialState.PRUNED) if pruned else study.tell(trial,
                                                                                          value)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED"]


def test_hyperband_gets_its_settings():
    pruner = make_pruner(OmegaConf.create({"name": "hyperband", "min_resource": 5,
                                           "max_resource": 30, "reduction_factor": 3,
                                           "bootstrap_count": 2}))
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor,
            pruner._bootstrap_count) == (5, 30, 3, 2)


@pytest.mark.parametrize("override,line", [
    ("sweep.sampler.multivariate=maybe",
     "sweep.sampler.multivariate must be true or false or null, got 'maybe'"),
    ("sweep.sampler.constant_liar=null",
     "sweep.sampler.constant_liar must be true or false, got None"),
    ("+sweep.pruner.reduction_factor=1",
     "sweep.pruner.reduction_factor must be an integer >= 2, got 1"),
    ("sweep.sampler.deterministic_objective=1",
     "sweep.sampler.deterministic_objective must be true or false, got 1"),
    ("+sweep.pruner.min_resource=0",
     "sweep.pruner.min_resource must be an integer >= 1 or auto, got 0"),
    ("+sweep.pruner.min_resource=40",
     "sweep.pruner.min_resource (40) must be <= sweep.pruner.max_resource (30)"),
])
def test_bad_search_value_is_one_line(override, line):
    cfg = compose_config(["sweep=search_bench", "sweep.pruner.name=asha",
                          "+sweep.pruner.max_resource=30", override])
    problems = Problems()
    validate_sweep(cfg, 1, problems)
    assert problems.lines == [line]


def test_group_without_multivariate_is_refused():
    cfg = compose_config(["sweep=search_bench", "sweep.sampler.group=true",
                          "sweep.sampler.multivariate=false"])
    problems = Problems()
    validate_sweep(cfg, 1, problems)
    assert problems.lines == ["sweep.sampler.group=true needs sweep.sampler.multivariate true "
                              "or null (Optuna groups only the multivariate TPE)"]


def test_pruning_signal_picks_the_eval_rows(tmp_path):
    """perplexity_text: the objective's texts (capped like the final perplexity) as a
    language-modelling eval set; eval_loss: the SFT pairs as prompt/completion rows."""
    texts = tmp_path / "ppl.jsonl"
    texts.write_text("".join(f'{{"text": "text {i}"}}\n' for i in range(5)))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"messages": [{"role": "user", "content": "q"}, '
                     '{"role": "assistant", "content": "a"}]}\n')
    common = ["sweep=search_bench", f"data.perplexity.path={texts}",
              f"data.eval_loss.path={pairs}", "eval.perplexity.max_texts=3"]
    cfg = compose_config([*common, "sweep.pruner.signal=perplexity_text"])
    assert eval_rows(cfg) == [{"text": "text 0"}, {"text": "text 1"}, {"text": "text 2"}]
    cfg = compose_config([*common, "sweep.pruner.signal=eval_loss"])
    assert eval_rows(cfg) == [{"prompt": [{"role": "user", "content": "q"}],
                               "completion": [{"role": "assistant", "content": "a"}]}]
    problems = Problems()
    validate_sweep(compose_config(["sweep=search_bench", "sweep.pruner.signal=loss"]), 1,
                   problems)
    assert problems.lines == ["sweep.pruner.signal must be one of ['eval_loss', "
                              "'perplexity_text'], got 'loss'"]


LR = "method.train.learning_rate"


def _bench_space(ordered: bool) -> list:
    """search_bench's 27-point space, its choices declared ordered or not."""
    params = OmegaConf.to_container(compose_config(["sweep=search_bench"]).sweep.params)
    for spec in params.values():
        spec["ordered"] = ordered
    return parse_space(params)


def test_ordered_choice_is_an_int_position_for_tpe_and_the_value_for_the_trial():
    """TPE sees an IntDistribution over positions 0..2 (neighbours share its kernel); the
    values the trial's config and record get are the choices themselves."""
    space = _bench_space(ordered=True)
    study = optuna.create_study(sampler=make_sampler(
        OmegaConf.create({"name": "tpe", "seed": 0, "n_startup_trials": 1}), space, 1))
    for _ in range(4):   # past the startup trial: TPE's own model picks the rest
        trial = study.ask()
        values = suggest(trial, space)
        assert trial.distributions[LR] == optuna.distributions.IntDistribution(0, 2)
        assert values[LR] == (1.0e-4, 5.0e-4, 2.0e-3)[trial.params[LR]]
        assert f"{LR}={values[LR]!r}" in to_overrides(space, values)
        study.tell(trial, values[LR])
    plain = _bench_space(ordered=False)
    trial = optuna.create_study().ask()
    assert isinstance(suggest(trial, plain)[LR], float)
    assert isinstance(trial.distributions[LR], optuna.distributions.CategoricalDistribution)


def test_grid_sampler_runs_the_same_points_with_ordered_choices():
    def points(ordered: bool) -> list[tuple]:
        space = _bench_space(ordered)
        study = optuna.create_study(sampler=make_sampler(OmegaConf.create({"name": "grid"}),
                                                         space, 1))
        out = []
        for _ in range(27):
            trial = study.ask()
            out.append(tuple(sorted(suggest(trial, space).items())))
            study.tell(trial, 0.0)
        return out

    ordered = points(True)
    assert len(set(ordered)) == 27 and set(ordered) == set(points(False))


def test_enqueued_ordered_value_is_stored_as_its_position():
    space = _bench_space(ordered=True)
    study = optuna.create_study()
    study.enqueue_trial(study_params(space, {LR: 2.0e-3}))
    trial = study.ask()
    assert suggest(trial, space)[LR] == 2.0e-3 and trial.params[LR] == 2
    with pytest.raises(ConfigError, match=r"sweep.enqueue: method.train.learning_rate=0.001 "
                                          r"is not one of"):
        study_params(space, {LR: 1.0e-3})


@pytest.mark.parametrize("spec,line", [
    ({"type": "categorical", "choices": [4, 8], "ordered": "yes"},
     "sweep.params.p.ordered must be true or false, got 'yes'"),
    ({"type": "float", "low": 0.1, "high": 1.0, "ordered": True},
     "sweep.params.p.ordered applies to categorical choices only (float values are ordered "
     "already)"),
])
def test_bad_ordered_is_one_line(spec, line):
    with pytest.raises(ConfigError) as exc:
        parse_space({"p": spec})
    assert exc.value.problems == [line]


# -- sweep.max_train_steps (harness.sweep.budget) ------------------------------------------------
def _ended(trial_dir, status, train_steps=None, logged=()):
    """A finished trial folder: its result.json and the steps its loss.jsonl logged."""
    trial_dir.mkdir(parents=True)
    write_record(TrialRecord(number=int(trial_dir.name), status=status, method="lora",
                             train_steps=train_steps), trial_dir)
    (trial_dir / "loss.jsonl").write_text("".join(
        json.dumps({"step": s, "eval_loss": 3.0}) + "\n" for s in logged))


def test_pruned_trial_counts_the_steps_it_reported(tmp_path):
    """A complete trial counts its train_steps; a pruned one (no train_steps) the last step it
    logged; a refused one (nothing logged) none."""
    _ended(tmp_path / "0000", COMPLETE, train_steps=30, logged=(5, 10, 30))
    _ended(tmp_path / "0001", PRUNED, logged=(5, 10, 15, 20))
    _ended(tmp_path / "0002", PRUNED)
    assert [trial_steps(tmp_path / n, read_record(tmp_path / n))
            for n in ("0000", "0001", "0002")] == [30, 20, 0]


def test_step_budget_stops_asking_when_the_next_trial_would_not_fit(tmp_path):
    """Ended 30 + 20 (pruned) steps, one trial running (its own config plans 20): a 100-step
    budget holds one more 30-step trial, 99 none; no budget leaves the count alone."""
    cfg = compose_config(["sweep=search_bench", "sweep.max_train_steps=100"])
    sweep = tmp_path / "sweep"
    _ended(sweep / "trials" / "0000", COMPLETE, train_steps=30, logged=(30,))
    _ended(sweep / "trials" / "0001", PRUNED, logged=(5, 20))
    running = sweep / "trials" / "0002"
    running.mkdir()
    write_trial_config(running, compose_config(["sweep=search_bench",
                                                "method.train.max_steps=20"]),
                       TrialSpec(number=2, dir=str(running)))
    (running / "loss.jsonl").write_text(json.dumps({"step": 10, "eval_loss": 3.0}) + "\n")
    budget = StepBudget(cfg, sweep)
    assert (budget.spent({"0002"}), budget.planned) == (50, 30)
    assert [budget.cap(n, [running]) for n in (0, 1, 2)] == [0, 1, 1]
    assert StepBudget(compose_config(["sweep=search_bench", "sweep.max_train_steps=99"]),
                      sweep).cap(2, [running]) == 0
    assert StepBudget(compose_config(["sweep=search_bench", "sweep.max_train_steps=null"]),
                      sweep).cap(2, [running]) == 2
    assert trials_that_fit(243, 220, 0, 30) == 0 and trials_that_fit(243, 210, 0, 30) == 1


@pytest.mark.parametrize("override,line", [
    ("sweep.max_train_steps=0", "sweep.max_train_steps must be a positive integer or null, got 0"),
    ("sweep.max_train_steps=lots",
     "sweep.max_train_steps must be a positive integer or null, got 'lots'"),
    ("method.train.max_steps=null", "sweep.max_train_steps needs method.train.max_steps a "
     "positive integer (a trial's planned steps), got None"),
])
def test_bad_step_budget_is_one_line(override, line):
    cfg = compose_config(["sweep=search_bench", "sweep.max_train_steps=100", override])
    problems = Problems()
    validate_sweep(cfg, 1, problems)
    assert problems.lines == [line]


def test_pool_with_a_step_budget_is_refused():
    problems = Problems()
    validate_sweep(compose_config(["launcher=slurm", "launcher.mode=pool",
                                   "sweep.max_train_steps=500"]), 1, problems)
    assert problems.lines == ["sweep.max_train_steps is counted by the job_per_trial driver "
                              "only: set it null with launcher.mode=pool (workers ask trials "
                              "on their own)"]
