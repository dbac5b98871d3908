"""Config composition and the one-line errors a researcher sees for bad input."""

from __future__ import annotations

import json

import pytest

from harness.config.compose import compose_config
from harness.errors import ConfigError
from harness.sweep.driver import prepare, probe_points, trial_config
from harness.train.modeling import lora_alpha
from tests.conftest import run_cli


def test_default_config_composes_every_group():
    cfg = compose_config([])
    for group in ("model", "method", "data", "eval", "launcher", "storage", "sweep"):
        assert group in cfg
    assert cfg.method.name == "lora" and cfg.model.lora_target_modules == "all-linear"


def test_sweep_file_selects_its_method_and_cli_wins():
    assert compose_config(["sweep=qlora_rank"]).method.quantization.bits == 4
    assert compose_config(["sweep=qlora_rank", "method=full"]).method.name == "full"


@pytest.mark.parametrize("name,expected", [("llama3_2_1b", "meta-llama/Llama-3.2-1B-Instruct"),
                                           ("llama3_1_8b", "meta-llama/Llama-3.1-8B-Instruct"),
                                           ("qwen2_5_0_5b", "Qwen/Qwen2.5-0.5B-Instruct"),
                                           ("mistral_7b", "mistralai/Mistral-7B-Instruct-v0.3")])
def test_hub_model_configs(name, expected):
    cfg = compose_config([f"model={name}"])
    assert cfg.model.source == "hub" and cfg.model.path == expected
    assert cfg.model.lora_target_modules


def test_alpha_ratio_sets_alpha():
    cfg = compose_config(["method.lora.rank=8", "method.lora.alpha_ratio=2"])
    assert lora_alpha(cfg.method.lora) == 16.0
    assert cfg.method.lora.alpha == 16.0        # the saved trial config shows the real alpha
    assert lora_alpha(compose_config(["method.lora.rank=8"]).method.lora) == 32.0


def test_trial_config_applies_suggested_values():
    sweep = prepare([])
    cfg = trial_config(sweep, {"method": "qlora", "rank": 4, "lr": 1e-3})
    assert cfg.method.name == "qlora" and cfg.method.lora.rank == 4
    assert cfg.method.train.learning_rate == pytest.approx(1e-3)
    assert cfg.paths.sweeps.startswith("/")


def test_cli_fixed_value_leaves_the_search_space():
    sweep = prepare(["method.lora.rank=32"])
    assert "rank" not in [p.name for p in sweep.space]
    assert sweep.fixed == ["rank"]


def test_probe_points_cover_every_choice():
    sweep = prepare([])
    methods = {p["method"] for p in probe_points(sweep.space)}
    assert methods == {"lora", "qlora"}


@pytest.mark.parametrize("overrides,needle", [
    (["method=nope"], "unknown method config"),
    (["sweep=nope"], "unknown sweep config"),
    (["method.lora.rank=0"], "method.lora.rank"),
    (["method.lora.rank=-3"], "method.lora.rank"),
    (["method.lora.alpha_ratio=0"], "method.lora.alpha_ratio"),
    (["sweep.params.method.choices=[]"], "sweep.params.method.choices"),
    (["model=local", "model.path=/does/not/exist"], "model.path"),
    (["sweep.n_trials=0"], "sweep.n_trials"),
    (["eval.perplexity.stride=999"], "eval.perplexity.stride"),
    (["sweep.params.lr.low=-1"], "sweep.params.lr"),
    (["method.lora.rank=="], "method.lora.rank"),
])
def test_bad_config_is_one_line_naming_the_field(overrides, needle):
    with pytest.raises(ConfigError) as info:
        prepare(overrides)
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_swept_bad_value_is_caught_before_running():
    extra = "+sweep.params.r={type:categorical,key:method.lora.rank,choices:[0,4]}"
    with pytest.raises(ConfigError, match="method.lora.rank must be a positive integer"):
        prepare([extra])


def _existing_results(root):
    trial = root / "sweeps" / "default" / "trials" / "0000"
    trial.mkdir(parents=True)
    (trial / "result.json").write_text(json.dumps({"number": 0, "status": "COMPLETE"}))
    return trial / "result.json"


@pytest.mark.parametrize("args,needle", [
    (["method=nope"], "method"),
    (["method.lora.rank=0"], "method.lora.rank"),
    (["method.lora.alpha_ratio=-1"], "method.lora.alpha_ratio"),
    (["model=local", "model.path=/nope/model"], "model.path"),
    (["sweep.params.method.choices=[]"], "choices"),
    (["data=local_jsonl", "data.train.path=/nope/train.jsonl", "data.perplexity.path=/nope/p.jsonl",
      "data.rouge.path=/nope/r.jsonl", "model=local", "model.path=."], "/nope/train.jsonl"),
])
def test_cli_bad_input_exits_nonzero_with_one_line_and_keeps_results(tmp_path, args, needle):
    kept = _existing_results(tmp_path)
    before = kept.read_text()
    result = run_cli(args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert kept.read_text() == before
    assert sorted(p.name for p in (tmp_path / "sweeps").iterdir()) == ["default"]


def test_cli_malformed_jsonl_names_file_and_line(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "hello"}]})
    train = tmp_path / "train.jsonl"
    train.write_text(good + "\n" + good + "\n{not json\n")
    text = tmp_path / "ppl.jsonl"
    text.write_text(json.dumps({"text": "some text"}) + "\n")
    rouge = tmp_path / "rouge.jsonl"
    rouge.write_text(json.dumps({"prompt": "p", "summary": "s"}) + "\n")
    result = run_cli(["data=local_jsonl", f"data.train.path={train}",
                      f"data.perplexity.path={text}", f"data.rouge.path={rouge}",
                      "model=local", f"model.path={tmp_path}"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"harness: error: {train}:3: malformed JSON " \
        "(Expecting property name enclosed in double quotes)"
    assert not (tmp_path / "sweeps").exists()


def test_every_bad_field_is_named_at_once(tmp_path):
    """Validation collects: three bad fields give three lines, before anything is written."""
    bad = ["sweep.n_trials=0", "method.lora.rank=0", "eval.perplexity.batch_size=0"]
    with pytest.raises(ConfigError) as info:
        prepare(bad)
    assert len(info.value.problems) == 3
    for field in ("sweep.n_trials", "method.lora.rank", "eval.perplexity.batch_size"):
        assert sum(field in line for line in info.value.problems) == 1
    result = run_cli([*bad, f"paths.sweeps={tmp_path / 'sweeps'}"], cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 3 and all(ln.startswith("harness: error: ") for ln in lines)
    assert not (tmp_path / "sweeps").exists()
