"""Every training stage checkpoints (every train.save_steps, and on request: SLURM's SIGTERM /
SIGUSR2) and a rerun resumes from the last checkpoint (harness.train.checkpoints); trl's PPO,
whose loop cannot resume, through harness.train.ppo_resume. The SLURM sweep at the end requeues
chained stages mid-training on the real cluster and shows a trial PRUNED from the node."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import harness.data.preference as pref_data
from harness.records import COMPLETE, PRUNED, read_record
from harness.train import dpo, grpo, ppo, reward
from harness.train.callbacks import LossHistory, request_checkpoint
from harness.train.checkpoints import last_checkpoint, remove_checkpoints
from harness.trial.stages import cached_stage
from tests import test_slurm as slurm
from tests.test_methods import GRPO, MODEL_CFG, ROWS, Recorder, _method, _policy, trained_reward_dir
from tests.test_slurm import cluster as _cluster  # noqa: F401 - a fixture

PROMPTS = [pref_data.prompt_text(r) for r in ROWS]
PPO = {"kl_coef": 0.05, "cliprange": 0.2, "vf_coef": 0.1, "response_length": 8,
       "num_ppo_epochs": 2, "num_mini_batches": 1, "temperature": 0.7,
       "missing_eos_penalty": None, "total_episodes": 64}
DPO = {"beta": 0.1, "loss_type": "sigmoid", "max_length": 64}


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A small reward model (GRPO's reward function, PPO's reward and value models)."""
    return trained_reward_dir(tiny_model_dir, tmp_path_factory.mktemp("reward"), 5)


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _steps(folder: Path) -> list[int]:
    """The steps of a stage's loss log (one row per logged step)."""
    return [json.loads(line)["step"] for line in (folder / "loss.jsonl").read_text()
            .splitlines()]


def _train(kind: str, folder: Path, tiny: Path, rewards: Path, reporter=None, **train):
    """(trained model, TrainResult) of one `kind` stage in `folder` (resuming what is there)."""
    train = {"max_steps": 4, "logging_steps": 1, **train}
    if kind == "dpo":
        model, tok = _policy(tiny)
        result = dpo.train_dpo(model, tok, _method("dpo", DPO, **train), MODEL_CFG, ROWS,
                               folder, seed=0, ref_model=dpo.frozen_copy(model),
                               reporter=reporter)
        return model, result
    if kind == "reward":
        torch.manual_seed(0)
        return reward.train_reward(tiny, _method("reward", **train), MODEL_CFG, ROWS, folder,
                                   seed=0)
    if kind == "grpo":
        model, tok = _policy(tiny)
        result = grpo.train_grpo(model, tok, rewards, _method("grpo", GRPO, **train), MODEL_CFG,
                                 PROMPTS, folder, seed=0, reporter=reporter)
        return model, result
    torch.manual_seed(0)
    model, _, result = ppo.train_ppo(tiny, rewards, _method("ppo", PPO,
                                                            per_device_train_batch_size=8,
                                                            **train),
                                     MODEL_CFG, PROMPTS, folder, seed=0, reporter=reporter)
    return model, result


@pytest.mark.parametrize("kind", ["dpo", "reward", "grpo", "ppo"])
def test_stage_resumes_from_its_last_periodic_checkpoint(kind, tiny_model_dir, reward_dir,
                                                         tmp_path):
    """save_steps=2: checkpoints at steps 2 and 4; the run dies after step 2's (its step-4
    checkpoint removed): the rerun resumes at 2, trains 3-4 once, and ends where the
    uninterrupted run ended (DPO, reward, GRPO: weights equal); PPO (trl's loop cannot resume:
    harness.train.ppo_resume) with its value model, optimizer and scheduler of 4 updates."""
    whole, first = _train(kind, tmp_path, tiny_model_dir, reward_dir, save_steps=2)
    assert first.resumed_from_step == 0 and first.steps == 4
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2",
                                                                      "checkpoint-4"]
    shutil.rmtree(tmp_path / "checkpoint-4")
    with _ppo_optimizer_seen() as seen:
        model, again = _train(kind, tmp_path, tiny_model_dir, reward_dir, save_steps=2)
    assert again.resumed_from_step == 2 and again.steps == 4
    if kind == "ppo":   # AdamW's step count and the scheduler's epoch cover all 4 updates
        assert seen == {"adam_steps": {4 * PPO["num_ppo_epochs"]}, "epoch": 4}
        assert {k.split(".")[0] for k in _ppo_saved(tmp_path / "checkpoint-2")} == \
            {"policy", "value_model"}   # trl's own checkpoint holds the policy alone
    assert _steps(tmp_path) == [1, 2, 3, 4]           # the log goes on from the checkpoint
    assert [r["step"] for r in again.loss_history] == [1, 2, 3, 4]   # the record's history
    if kind != "ppo":   # restored weights, optimizer, scheduler, RNG and data order
        ends, resumed = _weights(whole), _weights(model)
        assert all(torch.allclose(ends[k], resumed[k], atol=1e-6) for k in ends)


@contextlib.contextmanager
def _ppo_optimizer_seen() -> Iterator[dict]:
    """What PPO's optimizer and scheduler hold when its train() returns."""
    from trl.experimental.ppo import PPOTrainer

    seen: dict = {}
    original = PPOTrainer.train

    def spy(self):
        original(self)
        seen["adam_steps"] = {int(s["step"]) for s in
                              self.optimizer.state_dict()["state"].values()}
        seen["epoch"] = self.lr_scheduler.last_epoch

    PPOTrainer.train = spy
    try:
        yield seen
    finally:
        PPOTrainer.train = original


def _ppo_saved(checkpoint: Path) -> list[str]:
    from safetensors import safe_open

    from harness.train.ppo_resume import STATE_FILE

    with safe_open(str(checkpoint / STATE_FILE), "pt") as handle:
        return list(handle.keys())


class Preempt(Exception):
    """A job leaving mid-build (the SLURM job side's os._exit), as an exception."""


def test_a_pruned_stage_leaves_no_training_to_checkpoint(tiny_model_dir, tmp_path):
    """A stage that raised (here: pruned) is not training any more: a SIGTERM after it is
    served at once (the job leaves) rather than waiting for a step end that never comes."""
    import optuna

    with pytest.raises(optuna.TrialPruned):
        _train("dpo", tmp_path, tiny_model_dir, tmp_path, reporter=Recorder(prune=True))
    left = []
    assert request_checkpoint(lambda: left.append(True)) is False and not left


def test_loss_history_resume_keeps_rows_up_to_the_checkpoint(tmp_path):
    path = tmp_path / "loss.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3)))
    history = LossHistory(path)
    history.resume(2)
    assert [r["step"] for r in history.rows] == [1, 2]
    assert [json.loads(x)["step"] for x in path.read_text().splitlines()] == [1, 2]
    history.resume(0)
    assert history.rows == [] and path.read_text() == ""


def test_stage_cache_keeps_a_half_built_stage_for_its_resume(tmp_path):
    """A stage build cut short (the job requeued mid-training) leaves its folder and
    checkpoints; the next build of the same stage starts from them (it used to delete them)."""
    calls = []

    def build(tmp: Path) -> dict:
        calls.append(sorted(p.name for p in tmp.iterdir()))
        (tmp / "checkpoints" / "checkpoint-3").mkdir(parents=True, exist_ok=True)
        if len(calls) == 1:
            raise Preempt
        return {"resumed_from_step": 3}

    with pytest.raises(Preempt):
        cached_stage(tmp_path, "reward", {"a": 1}, None, build)
    stage = cached_stage(tmp_path, "reward", {"a": 1}, None, build)
    assert calls == [["stage_config.json"], ["checkpoints", "stage_config.json"]]
    assert stage.resumed_from_step == 3 and not stage.reused
    assert cached_stage(tmp_path, "reward", {"a": 1}, None, build).resumed_from_step == 3


def test_incomplete_checkpoint_is_not_resumed_from_and_trial_removes_them(tmp_path):
    """A save cut short (no trainer_state.json, written last) is skipped; remove_checkpoints
    takes every checkpoint-N folder of a trial (stage folders one level down)."""
    for step, complete in ((2, True), (4, False)):
        folder = tmp_path / "dpo" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / "checkpoint-7").mkdir(parents=True)
    (tmp_path / "dpo" / "loss.jsonl").write_text("")
    assert last_checkpoint(tmp_path / "dpo").name == "checkpoint-2"
    assert last_checkpoint(tmp_path / "missing") is None
    removed = remove_checkpoints(tmp_path)
    assert sorted(p.name for p in removed) == ["checkpoint-2", "checkpoint-4", "checkpoint-7"]
    assert not list(tmp_path.rglob("checkpoint-*")) and (tmp_path / "dpo" / "loss.jsonl").exists()


# -- the real cluster: requeued chained stages resume, a trial is PRUNED from its node ---------
# One sweep, 3 trials, 2 at a time: DPO (lr 1e-3), PPO, DPO (lr 1e-12: its reward margin stays
# 0). Trial 0's DPO stage and trial 1's PPO stage (trl's custom loop) are requeued mid-training
# (`scontrol requeue`: SIGTERM -> checkpoint at the step's end -> SLURM requeues the job -> the
# trial resumes). The median pruner (n_startup_trials 1; warm-up past PPO's 4 steps, so only DPO
# margins are compared) prunes trial 2 against the finished trial 0, from trial 2's job through
# the journal storage. Per-method sizes are conditional parameters (one value each).
SWEEP_ARGS = [
    "launcher=slurm", "launcher.parallel=2", "launcher.array_parallelism=2",
    "launcher.poll_seconds=1", "launcher.timeout_min=15", "launcher.signal_delay_s=60",
    "sweep.n_trials=3", "sweep.sampler.name=random",
    "sweep.params.method.choices=[dpo,ppo]", "~sweep.params.rank", "~sweep.params.lr",
    *[f"+sweep.params.{name}={{type:categorical,choices:[{values}],key:{key},"
      f"when:{{method:{method}}}}}" for name, values, key, method in [
          ("dpo_lr", "1.0e-3,1.0e-12", "method.train.learning_rate", "dpo"),
          ("sft_steps", "10", "method.sft.train.max_steps", "[dpo,ppo]"),
          ("dpo_steps", "10", "method.train.max_steps", "dpo"),
          ("ppo_steps", "4", "method.train.max_steps", "ppo"),
          ("ppo_batch", "8", "method.train.per_device_train_batch_size", "ppo"),
          ("ppo_epochs", "2", "method.ppo.num_ppo_epochs", "ppo"),
          ("ppo_length", "16", "method.ppo.response_length", "ppo"),
          ("reward_steps", "10", "method.reward.train.max_steps", "ppo")]],
    "sweep.enqueue=[{method:dpo,dpo_lr:1.0e-3},{method:ppo},{method:dpo,dpo_lr:1.0e-12}]",
    "sweep.pruner.name=median", "+sweep.pruner.n_startup_trials=1",
    "+sweep.pruner.n_warmup_steps=6",
    "method.train.logging_steps=1",
    "data.max_train_samples=200", "data.preference.max_train_samples=200",
    "eval.rouge.max_samples=4", "eval.perplexity.max_texts=8", "eval.online.max_prompts=4",
    "eval.online.max_new_tokens=8", "eval.lm_eval.enabled=false", "eval.mt_bench.enabled=false",
    "data.preference.metrics.enabled=false",
]


def _steps_in(path: Path) -> int:
    lines = path.read_text().splitlines() if path.is_file() else []
    return max((json.loads(line)["step"] for line in lines if line.strip()), default=0)


@pytest.fixture(scope="module")
def requeue_sweep(request, tmp_path_factory):
    """The sweep above, with its two requeues; (folder, sweep name, driver output)."""
    request.getfixturevalue("_cluster")   # tests.test_slurm's `cluster`: skip without SLURM
    cwd = tmp_path_factory.mktemp("requeue")
    sweep = f"ci_requeue_{os.getpid()}"
    driver = slurm.start_driver([*SWEEP_ARGS, f"sweep.name={sweep}"], cwd)

    def trial(index: int) -> Path:
        return cwd / "sweeps" / sweep / "trials" / f"{index:04d}"

    # what to wait for before requeueing whose job (each once, in whatever order they come)
    pending = {
        "dpo": (lambda: _steps_in(trial(0) / "dpo" / "loss.jsonl") >= 3, trial(0)),
        "ppo": (lambda: _steps_in(trial(1) / "ppo" / "loss.jsonl") >= 1, trial(1)),
    }
    try:
        def requeue_what_is_due() -> bool:
            slurm.driver_alive(driver, cwd)
            for name, (due, trial_dir) in list(pending.items()):
                if due():
                    subprocess.run(["scontrol", "requeue", slurm.job_id(trial_dir)],
                                   check=True, timeout=30)
                    del pending[name]
            return not pending

        slurm.wait_until(requeue_what_is_due, 400, f"requeues of {sorted(pending)}")
        driver.wait(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
        subprocess.run(["scancel", "--name", f"harness-{sweep}"], timeout=30)
    return cwd, sweep, (cwd / "driver.log").read_text()


def _loss_steps(folder: Path, key: str = "loss") -> list[int]:
    rows = [json.loads(line) for line in (folder / "loss.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if key in row]


@pytest.mark.slurm
def test_requeued_dpo_stage_resumes_from_its_checkpoint(requeue_sweep):
    cwd, sweep, out = requeue_sweep
    trial_dir = slurm.trial_dirs(cwd, sweep)[0]
    record = read_record(trial_dir)
    assert record.status == COMPLETE, (record.error, out[-3000:])
    assert record.job["restart_count"] >= 1
    assert record.resumed_from_step > 0 and record.train_steps == 10
    assert record.stages[-1]["name"] == "dpo"
    assert record.stages[-1]["resumed_from_step"] == record.resumed_from_step
    log_text = Path(record.job["stdout"]).read_text()
    assert "SIGTERM: job cancelled, requeued or preempted" in log_text
    assert f"resuming from {trial_dir}/dpo/checkpoint-{record.resumed_from_step}" in log_text
    steps = _loss_steps(trial_dir / "dpo")
    assert steps == list(range(1, 11)), steps       # no step trained twice, none lost
    assert not list(trial_dir.rglob("checkpoint-*"))   # removed once the record was written


@pytest.mark.slurm
def test_requeued_ppo_stage_resumes_from_its_checkpoint(requeue_sweep):
    """trl's PPO loop, requeued mid-stage, resumes (harness.train.ppo_resume); the record's
    stages say which stage resumed where."""
    cwd, sweep, out = requeue_sweep
    trial_dir = slurm.trial_dirs(cwd, sweep)[1]
    record = read_record(trial_dir)
    assert record.status == COMPLETE, (record.error, out[-3000:])
    assert record.job["restart_count"] >= 1
    stages = {s["name"]: s for s in record.stages}
    assert [s["name"] for s in record.stages] == ["sft", "reward", "ppo"]
    assert stages["reward"]["resumed_from_step"] == 0 and stages["reward"]["extra"]["steps"] == 10
    assert stages["ppo"]["resumed_from_step"] == record.resumed_from_step > 0
    assert record.train_steps == 4
    log_text = Path(record.job["stdout"]).read_text()
    assert f"resuming from {trial_dir}/ppo/checkpoint-{record.resumed_from_step}" in log_text
    assert _loss_steps(trial_dir / "ppo", "objective/scores") == [1, 2, 3, 4]
    assert not list(trial_dir.rglob("checkpoint-*"))
    assert not list((cwd / "sweeps" / sweep / "stages").glob(".*.tmp"))   # every stage built


@pytest.mark.slurm
def test_a_trial_is_pruned_from_its_node_through_the_journal(requeue_sweep):
    """Trial 2 (DPO at lr 1e-12) reports margin 0 from its SLURM job through the journal
    storage; the median pruner prunes it against trial 0 once past the warm-up."""
    cwd, sweep, out = requeue_sweep
    dirs = slurm.trial_dirs(cwd, sweep)
    record = read_record(dirs[2])
    assert record.status == PRUNED, (record.status, record.error, out[-3000:])
    assert record.error.type == "TrialPruned"
    assert record.error.message.startswith("pruned at step "), record.error.message
    assert "(rewards/margins " in record.error.message
    assert record.job["node"]
    study = slurm.load_study(cwd, sweep)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"], states
    # every kind reported intermediate values from its node: DPO margins, PPO scores
    assert all(t.intermediate_values for t in study.trials)
    assert max(study.trials[2].intermediate_values) >= 6     # after the warm-up
