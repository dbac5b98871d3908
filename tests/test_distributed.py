"""Several processes per trial: FSDP for full fine-tuning (`method.train.fsdp`) and torchrun
across the nodes of a SLURM job (`launcher.nodes > 1`).

The decisions (TrainingArguments, fsdp_config, config checks, command lines, the estimate)
are plain functions tested here. accelerate enables FSDP on multi-GPU runs only (see
harness.train.fsdp), so the 2-process gloo run lifts that one gate (tests/fsdp_cpu_rank.py)
and runs the rest for real: FSDP2 sharding, a sharded checkpoint, the resume after a
"preemption", the gather on rank 0, save and evaluation. The multi-node test runs two SLURM
tasks on the single-node cluster, each a torchrun agent of a 2-"node" rendezvous.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.config.compose import compose_config, resolve_paths, to_yaml
from harness.config.validate import Problems, validate_trial_config
from harness.errors import ConfigError
from harness.estimate.predict import predict
from harness.launch.local import LocalLauncher
from harness.launch.slurm import job as slurm_job
from harness.launch.torchrun import torchrun_command
from harness.records import COMPLETE, read_record, read_trial_config
from harness.sweep.driver import prepare
from harness.train.fsdp import FsdpUnavailable, fsdp_arguments, require_sharded
from tests.conftest import REPO

CACHE = os.environ.get("HARNESS_CACHE", str(REPO / ".cache" / "harness"))
FSDP = ["method=full", "method.train.fsdp=full_shard"]
NO_EVAL_LOSS = "method.train.eval_steps=0"   # SFT: no eval pass at the end of training
# one trial, a few steps, the battery reduced to perplexity and a little ROUGE
SMALL = ["data.max_train_samples=64", "method.train.per_device_train_batch_size=4",
         "method.train.logging_steps=1",
         "eval.rouge.max_samples=2", "eval.rouge.max_new_tokens=16",
         "eval.perplexity.max_texts=4",
         "eval.lm_eval.enabled=false", "eval.mt_bench.enabled=false",
         "data.preference.metrics.enabled=false", "sweep.pruner.name=none"]


def _cfg(*overrides: str):
    return resolve_paths(compose_config(list(overrides)))


def _fsdp_lines(*overrides: str) -> list[str]:
    problems = Problems()
    validate_trial_config(_cfg(*overrides), problems)
    return [line for line in problems.lines if "fsdp" in line]


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=2))


def _trial_dir(root: Path, overrides: list[str], number: int = 0) -> Path:
    """A trial folder with its config.yaml, as the driver writes it."""
    cfg = _cfg(*overrides, f"paths.sweeps={root}", f"paths.cache={CACHE}")
    trial_dir = root / "trials" / f"{number:04d}"
    trial_dir.mkdir(parents=True)
    cfg.trial = {"number": number, "params": {}, "threads": 2, "dir": str(trial_dir)}
    (trial_dir / "config.yaml").write_text(to_yaml(cfg))
    return trial_dir


# -- FSDP: the decisions -----------------------------------------------------------------------
def test_fsdp_training_arguments(monkeypatch):
    """full_shard -> FSDP2 through accelerate: decoder layers wrapped, FSDP's activation
    checkpointing instead of the model's, sharded checkpoints."""
    from harness.train.arguments import sft_config

    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")   # TrainingArguments sets it
    cfg = _cfg(*FSDP, "method.train.gradient_checkpointing=true")
    args = sft_config(cfg.method, cfg.model, Path("/tmp/unused"), 0, has_eval=False,
                      model=_tiny_llama())
    assert args.fsdp is True and args.gradient_checkpointing is False
    assert args.fsdp_plugin_args == {
        "fsdp_version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_cls_names_to_wrap": "LlamaDecoderLayer", "cpu_ram_efficient_loading": False,
        "state_dict_type": "SHARDED_STATE_DICT", "activation_checkpointing": True,
        "reshard_after_forward": True}
    grad_op = _cfg("method=full", "method.train.fsdp=shard_grad_op").method.train
    assert fsdp_arguments(grad_op, _tiny_llama())["fsdp_config"]["reshard_after_forward"] is False
    plain = _cfg("method=full", "method.train.gradient_checkpointing=true")
    args = sft_config(plain.method, plain.model, Path("/tmp/unused"), 0, has_eval=False,
                      model=_tiny_llama())
    assert not args.fsdp and args.fsdp_plugin_args is None and args.gradient_checkpointing


def test_fsdp_that_would_not_shard_is_refused():
    """accelerate drops the FSDP plugin on a CPU (MULTI_CPU) run: one line, never unsharded."""
    train = _cfg(*FSDP).method.train
    trainer = SimpleNamespace(is_fsdp_enabled=False, accelerator=SimpleNamespace(
        state=SimpleNamespace(distributed_type=SimpleNamespace(value="MULTI_CPU"))))
    with pytest.raises(FsdpUnavailable, match="fsdp=full_shard: accelerate .* did not enable "
                                              "FSDP .*MULTI_CPU"):
        require_sharded(trainer, train)
    require_sharded(SimpleNamespace(is_fsdp_enabled=True), train)
    require_sharded(trainer, _cfg("method=full").method.train)   # not asked for: fine


@pytest.mark.parametrize("overrides, expected", [
    (FSDP, "fsdp=full_shard needs more than one process per trial, got 1: set "
           "launcher.gpus_per_trial >= 2"),
    (["method=lora", "method.train.fsdp=full_shard", "launcher.devices=[0,1]",
      "launcher.gpus_per_trial=2"], "fsdp=full_shard needs method.peft=none"),
    (["method=qlora", "method.train.fsdp=full_shard", "launcher=slurm",
      "launcher.gpus_per_node=2", "method.train.save_steps=50"],
     "fsdp=full_shard needs method.peft=none"),
    (["method=dpo", "method.sft.train.fsdp=full_shard"],
     "method.sft.train.fsdp=full_shard: the SFT stage of method dpo runs as one process"),
    ([*FSDP, "launcher=slurm", "launcher.gpus_per_node=2", "method.train.save_steps=0"],
     "fsdp=full_shard with method.train.save_steps=0: torchrun ranks take no on-signal"),
    (["method=full", "method.train.fsdp=zero3", "launcher.devices=[0,1]",
      "launcher.gpus_per_trial=2"],
     "method.train.fsdp must be null or one of ['full_shard', 'shard_grad_op'], got 'zero3'"),
])
def test_fsdp_config_problems_are_one_line_each(overrides, expected):
    lines = _fsdp_lines(*overrides)
    assert len(lines) == 1 and expected in lines[0], lines


def test_fsdp_with_several_processes_is_accepted():
    saves = "method.train.save_steps=50"
    assert _fsdp_lines(*FSDP, "launcher=slurm", "launcher.gpus_per_node=8", saves) == []
    assert _fsdp_lines(*FSDP, "launcher=slurm", "launcher.nodes=2", saves) == []
    assert _fsdp_lines(*FSDP, "launcher.devices=[0,1]", "launcher.gpus_per_trial=2") == []


def test_sweep_with_unusable_fsdp_is_refused_before_writing(tmp_path):
    with pytest.raises(ConfigError, match="needs more than one process per trial"):
        prepare(["sweep=lora_lr", "~sweep.params.rank", *FSDP, f"paths.sweeps={tmp_path}"])
    assert list(tmp_path.iterdir()) == []


def test_fsdp_estimate_is_per_shard():
    """The pre-flight sees an 8B full fine-tune over 8 GPUs sharded, not replicated."""
    base = ["model=llama3_1_8b", "method=full", "launcher=slurm", "launcher.gpus_per_node=8"]
    replicated, sharded = predict(_cfg(*base)), predict(_cfg(*base, "method.train.fsdp=full_shard"))
    for part in ("weights", "optimizer"):
        assert sharded.parts_gb[part] == pytest.approx(replicated.parts_gb[part] / 8, rel=0.01)
    assert sharded.peak_gb < replicated.peak_gb / 2


def test_fsdp_trials_run_under_torchrun_with_one_rank_per_gpu(tmp_path):
    """Local: gpus_per_trial=2 -> torchrun --nproc-per-node=2 for an SFT trial, one process for
    the base model and for chained methods; SLURM: the same decision on the node."""
    local = ["launcher.devices=[0,1]", "launcher.gpus_per_trial=2", "launcher.parallel=1", *SMALL]
    launcher = LocalLauncher(_cfg(*FSDP, *local))
    full = _trial_dir(tmp_path / "a", [*FSDP, *local])
    assert launcher.command(full)[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=2",
                                          "--standalone", "-m", "harness.trial", str(full)]
    dpo = _trial_dir(tmp_path / "b", ["method=dpo", *local])
    assert launcher.command(dpo)[1:] == ["-m", "harness.trial", str(dpo)]
    task = slurm_job.TrialTask(nproc=4, nodes=2)
    assert task._data_parallel(*read_trial_config(full))
    assert not task._data_parallel(*read_trial_config(dpo))
    assert not slurm_job.TrialTask(nproc=1, nodes=1)._data_parallel(*read_trial_config(full))


# -- FSDP: a real 2-process run on gloo --------------------------------------------------------
def _run_ranks(trial_dir: Path, env: dict, timeout: float = 240) -> str:
    """torchrun of 2 ranks of the trial (the command the launchers build, with the CPU FSDP
    gate lifted by tests/fsdp_cpu_rank.py); returns the log."""
    cmd = torchrun_command(trial_dir, 2)
    at = cmd.index("harness.trial")
    cmd[at - 1:at + 1] = [str(REPO / "tests" / "fsdp_cpu_rank.py")]
    log = trial_dir / "trial.log"
    with log.open("ab") as out:
        subprocess.run(cmd, env={**os.environ, "ACCELERATE_USE_CPU": "true",
                                 "HARNESS_CACHE": CACHE, **env},
                       stdout=out, stderr=subprocess.STDOUT, timeout=timeout, cwd=trial_dir)
    return log.read_text()


@pytest.mark.slow
def test_fsdp_trial_resumes_from_its_sharded_checkpoint(tmp_path):
    """2 gloo ranks train a full fine-tune with FSDP, save a sharded checkpoint at step 2 and
    are "preempted"; the rerun (a requeue) resumes from that checkpoint, rank 0 gathers the
    weights into an ordinary model/ folder, which the trial reloads and evaluates."""
    trial_dir = _trial_dir(tmp_path, [*FSDP, *SMALL, NO_EVAL_LOSS, "method.train.max_steps=4",
                                      "method.train.save_steps=2"])
    _run_ranks(trial_dir, {"HARNESS_TEST_DIE_AFTER_SAVE": "2"})
    shards = trial_dir / "checkpoints" / "checkpoint-2"
    assert read_record(trial_dir) is None, "the first run was to stop after its checkpoint"
    assert sorted(p.name for p in (shards / "pytorch_model_fsdp_0").glob("*.distcp")) == \
        ["__0_0.distcp", "__1_0.distcp"]   # one file per rank: a sharded state dict
    assert (shards / "optimizer_0").is_dir() and (shards / "trainer_state.json").is_file()

    log = _run_ranks(trial_dir, {})
    record = read_record(trial_dir)
    assert record is not None and record.status == COMPLETE, (record, log[-3000:])
    assert record.resumed_from_step == 2 and record.train_steps == 4
    assert "data-parallel training on 2 processes (FSDP full_shard)" in log
    assert record.device["processes"] == 2
    assert (trial_dir / "model" / "model.safetensors").is_file()
    assert record.metrics["perplexity"] > 1 and not record.adapter_effect["dead"]
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(trial_dir / "model")   # plain weights
    assert not any(type(p).__name__ == "DTensor" for p in reloaded.parameters())


# -- multi-node data parallel on the single-node cluster ---------------------------------------
def test_multi_node_command_takes_the_task_index_as_node_rank(monkeypatch):
    """Two tasks of one job (on two nodes, or both on one) are agents 0 and 1 of one
    rendezvous on the first node: the node rank is the task's SLURM_PROCID, not SLURM_NODEID
    (0 for both tasks on one node)."""
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_NODEID", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    calls = []
    monkeypatch.setattr(slurm_job.subprocess, "call", lambda cmd, env: calls.append(cmd) or 0)
    monkeypatch.setattr(slurm_job, "master_address", lambda: "n01")
    slurm_job.TrialTask(nproc=2, nodes=2)._torchrun("/t", {"job_id": "4242"})
    assert calls[0][4:8] == ["--nnodes=2", "--node-rank=1", "--master-addr=n01",
                             "--master-port=24242"]


def _cluster() -> None:
    from tests.test_slurm import _cluster_answers

    if not _cluster_answers():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but the SLURM cluster does not answer")
        pytest.skip("no SLURM cluster answering (bash slurm/cluster.sh start)")


@pytest.mark.slurm
def test_two_tasks_train_one_trial_through_the_rendezvous(tmp_path):
    """A job of 2 tasks on the one node, each the node side of a 2-node trial (TrialTask with
    nodes=2, as `launcher.nodes=2` submits it, one task per node): the two torchrun agents
    meet in the rendezvous on the job's first host and train one trial with world size 2."""
    import submitit

    _cluster()
    trial_dir = _trial_dir(tmp_path, ["method=lora", *SMALL, NO_EVAL_LOSS,
                                      "method.train.max_steps=2", "launcher=slurm",
                                      "launcher.nodes=2", "launcher.cpus_per_task=1"])
    executor = submitit.SlurmExecutor(folder=tmp_path / "slurm", max_num_timeout=0)
    executor.update_parameters(job_name="harness-ci-rdzv", time=10, nodes=1, ntasks_per_node=2,
                               cpus_per_task=1, stderr_to_stdout=True)
    with submitit.helpers.clean_env():
        job = executor.submit(slurm_job.TrialTask(nproc=1, nodes=2, max_requeues=0),
                              str(trial_dir))
    try:
        end = time.time() + 300
        while read_record(trial_dir) is None and not job.done():
            assert time.time() < end, "timed out waiting for the 2-task trial"
            time.sleep(1)
        job.results()   # both tasks returned (a task's exception is raised here)
    finally:
        if not job.done():
            job.cancel(check=False)
    record = read_record(trial_dir)
    assert record is not None and record.status == COMPLETE, record
    assert record.device["processes"] == 2 and record.train_steps == 2
    logs = "".join(Path(p).read_text() for p in sorted((tmp_path / "slurm").glob("*_log.out")))
    for rank in (0, 1):
        assert f"--nnodes=2 --node-rank={rank} --master-addr=" in logs
    assert "data-parallel training on 2 processes" in logs
    assert record.job["job_id"] == job.job_id
