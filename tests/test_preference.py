"""Preference data checks, the stage cache, config validation, and tiny DPO / reward training."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import harness.data.preference as pref_data
import harness.eval.preference as pref_eval
import harness.trial.stages as stages
from harness.config.compose import compose_config
from harness.config.validate import validate_trial_config
from harness.data.check import check_data
from harness.errors import ConfigError, DataError
from harness.train import dpo, reward

GOOD = {"prompt": "Sort: b, a", "chosen": "a, b", "rejected": "b, a"}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("bad, needle", [
    ({"prompt": "p", "chosen": "c"}, "missing field 'rejected'"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "'chosen' is identical to 'rejected'"),
    ({"prompt": "  ", "chosen": "c", "rejected": "r"}, "empty 'prompt'"),
    ("{not json", "invalid JSON"),
])
def test_bad_row_names_file_and_line(tmp_path, bad, needle):
    path = _write(tmp_path / "p.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(DataError) as err:
        pref_data.preference_rows(OmegaConf.create({"path": str(path)}))
    assert str(err.value).startswith(f"{path}:3: ")
    assert needle in str(err.value)


def test_plain_and_chat_rows_become_conversational(tmp_path):
    chat = {"chosen": [{"role": "user", "content": "Sort: b, a"},
                       {"role": "assistant", "content": "a, b"}],
            "rejected": [{"role": "user", "content": "Sort: b, a"},
                         {"role": "assistant", "content": "b, a"}]}
    path = _write(tmp_path / "p.jsonl", [GOOD, chat])
    plain, split = pref_data.preference_rows(OmegaConf.create({"path": str(path)}))
    assert plain == split == {"prompt": [{"role": "user", "content": "Sort: b, a"}],
                              "chosen": [{"role": "assistant", "content": "a, b"}],
                              "rejected": [{"role": "assistant", "content": "b, a"}]}


def test_cap_is_logged_not_silent(tmp_path, caplog):
    path = _write(tmp_path / "p.jsonl", [GOOD] * 5)
    with caplog.at_level("INFO"):
        rows = pref_data.preference_rows(OmegaConf.create({"path": str(path)}), max_samples=2)
    assert len(rows) == 2 and "using 2 of 5 preference pairs" in caplog.text


def test_check_data_rejects_bad_preference_file_before_training(tmp_path):
    bad = _write(tmp_path / "bad.jsonl", [GOOD, {"prompt": "p", "chosen": "c"}])
    cfg = compose_config([f"data.preference.train.path={bad}"])
    cfg.data.train.path = cfg.data.perplexity.path = cfg.data.rouge.path = None
    cfg.data.eval_loss.path = None
    cfg.data.preference.test.path = None
    with pytest.raises(DataError, match=f"{bad}:2: missing field 'rejected'"):
        check_data(cfg.data)


@pytest.mark.parametrize("method", ["dpo", "ppo", "grpo", "lora"])
def test_method_configs_validate(method):
    cfg = compose_config([f"method={method}", "paths.cache=/tmp/none"])
    validate_trial_config(cfg)
    assert cfg.method.kind == ("sft" if method == "lora" else method)
    if method != "lora":
        assert cfg.method.sft.kind == "sft" and cfg.method.sft.peft == "lora"


def test_bad_kind_and_bad_sft_block_are_config_errors():
    cfg = compose_config(["method=dpo", "paths.cache=/tmp/none"])
    cfg.method.kind = "rlhf"
    with pytest.raises(ConfigError, match="method.kind must be one of"):
        validate_trial_config(cfg)
    cfg.method.kind = "dpo"
    cfg.method.sft.lora.rank = 0
    with pytest.raises(ConfigError, match="method.sft.lora.rank"):
        validate_trial_config(cfg)


def test_sweep_configs_cover_every_method():
    cfg = compose_config(["sweep=method_compare", "paths.cache=/tmp/none"])
    every = ["full", "lora", "qlora", "ia3", "prefix", "prompt", "dpo", "kto", "orpo", "ppo",
             "grpo", "rloo"]
    assert list(cfg.sweep.params.method.choices) == every
    assert sorted(e["method"] for e in cfg.sweep.enqueue) == sorted(every)
    beta = compose_config(["sweep=dpo_beta", "paths.cache=/tmp/none"])
    assert beta.method.kind == "dpo" and beta.sweep.n_trials == 3


def test_stage_hash_covers_config_and_input():
    base = stages.stage_hash({"lr": 1}, "in")
    assert base == stages.stage_hash({"lr": 1}, "in")
    assert base != stages.stage_hash({"lr": 2}, "in")
    assert base != stages.stage_hash({"lr": 1}, "other")


def test_parallel_trials_build_a_stage_once(tmp_path):
    builds: list[int] = []

    def build(tmp: Path) -> dict:
        builds.append(1)
        time.sleep(0.3)
        (tmp / "model").mkdir()
        return {"steps": 3}

    results: list[stages.Stage] = []
    threads = [threading.Thread(target=lambda: results.append(
        stages.cached_stage(tmp_path, "sft", {"lr": 1}, None, build))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert sorted(r.reused for r in results) == [False, True, True]
    assert len({r.dir for r in results}) == 1 and Path(results[0].dir, "model").is_dir()


def test_failed_build_leaves_no_stage(tmp_path):
    def broken(tmp: Path) -> dict:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        stages.cached_stage(tmp_path, "sft", {}, None, broken)
    again = stages.cached_stage(tmp_path, "sft", {}, None, lambda tmp: {})
    assert not again.reused


def test_win_rate_counts_ties_half():
    assert pref_eval.win_rate([1.0, 0.0, 2.0, 1.0], [0.0, 1.0, 2.0, 0.5]) == pytest.approx(0.625)


# ----------------------------------------------------------------------------- tiny training

ROWS = [{"prompt": [{"role": "user", "content": f"report {w}"}],
         "chosen": [{"role": "assistant", "content": f"the {w} sat on a mat"}],
         "rejected": [{"role": "assistant", "content": "red blue dog fox ran"}]}
        for w in ("cat", "dog", "fox", "report", "summary", "mat", "red", "blue")]


def _method(kind: str, **train) -> OmegaConf:
    return OmegaConf.create({
        "kind": kind, "peft": "none", "max_length": 64, "center_rewards_coefficient": None,
        "dpo": {"beta": 0.1, "loss_type": "sigmoid", "max_length": 64},
        "train": {"learning_rate": 1e-3, "lr_scheduler_type": "constant", "warmup_ratio": 0.0,
                  "max_steps": 15, "num_train_epochs": 1, "per_device_train_batch_size": 8,
                  "gradient_accumulation_steps": 1, "max_grad_norm": 1.0, "weight_decay": 0.0,
                  "optim": "adamw_torch", "gradient_checkpointing": False,
                  "logging_steps": 5, **train}})


MODEL_CFG = OmegaConf.create({"dtype": "float32"})


def test_dpo_raises_preference_accuracy(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = pref_eval.pref_accuracy(model, tok, ROWS)
    result = dpo.train_dpo(model, tok, _method("dpo"), MODEL_CFG, ROWS, tmp_path, seed=0,
                           ref_model=dpo.frozen_copy(model))
    assert result.steps == 15
    assert pref_eval.pref_accuracy(model, tok, ROWS) == 1.0 > before


def test_reward_model_learns_to_rank_chosen_above_rejected(tiny_model_dir, tmp_path):
    import torch

    torch.set_num_threads(1)
    model, result = reward.train_reward(tiny_model_dir, _method("reward", max_steps=20),
                                        MODEL_CFG, ROWS, tmp_path, seed=0)
    _, tok = reward.load_reward_model(tiny_model_dir, MODEL_CFG)
    prompts = [pref_data.prompt_text(r) for r in ROWS]
    chosen = pref_eval.reward_scores(model, tok, prompts,
                                     [r["chosen"][0]["content"] for r in ROWS])
    rejected = pref_eval.reward_scores(model, tok, prompts,
                                       [r["rejected"][0]["content"] for r in ROWS])
    assert result.steps == 20
    assert all(c > r for c, r in zip(chosen, rejected, strict=True))
