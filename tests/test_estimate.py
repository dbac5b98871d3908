"""The memory / step-time estimator (harness.estimate), action=plan, and the driver's pre-flight."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from harness.config.compose import compose_config, resolve_paths
from harness.errors import ConfigError
from harness.estimate import hardware
from harness.estimate.kinds import Trainee, dpo, ppo
from harness.estimate.memory import (
    ALL_LINEAR,
    Setup,
    activation_bytes,
    logits_bytes,
    lora_params,
    optimizer_bytes,
    train_parts,
    weight_bytes,
)
from harness.estimate.predict import predict
from harness.estimate.shapes import shape_from_config
from harness.launch.slurm.settings import sized_parameters
from harness.records import read_record, read_trial_config
from harness.report.sections.memory_estimate import extract_memory_estimate
from harness.sweep.results import load_sweep
from tests.conftest import run_cli

LLAMA_8B = dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                vocab_size=128256, tie_word_embeddings=False)
QWEN_SMALL = dict(model_type="qwen2", hidden_size=256, intermediate_size=1024,
                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                  vocab_size=1000, tie_word_embeddings=True)


# -- formulas against hand computations and accelerate's meta-device count ----------------------
LLAMA_SMALL = {**LLAMA_8B, "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 2,
               "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1000}


@pytest.mark.parametrize("fields", [LLAMA_SMALL, QWEN_SMALL], ids=["llama-gqa-untied",
                                                                   "qwen2-bias-tied"])
def test_parameter_count_matches_accelerate_meta_device(fields):
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**fields)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()   # the meta-device model is built untied
    assert shape_from_config(fields, "x").total_params() == sum(
        p.numel() for p in model.parameters())


def test_llama_8b_by_hand():
    shape = shape_from_config(LLAMA_8B, "x")
    # per layer: q,o 4096^2 each; k,v 4096 x 1024 each; 3 MLP 4096 x 14336
    layer = 2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336
    assert shape.layer_linear_weights() == layer
    assert shape.total_params() == 32 * layer + 2 * 128256 * 4096 + 65 * 4096   # 8,030,261,248
    lora = Setup(rank=16, targets=ALL_LINEAR)
    # r (in + out) per module: q,o 16*8192; k,v 16*5120; gate,up,down 16*18432
    assert lora_params(shape, lora) == 32 * 16 * (2 * 8192 + 2 * 5120 + 3 * 18432)


def test_nf4_weights_and_constants_by_hand():
    shape = shape_from_config(LLAMA_8B, "x")
    linear = 32 * shape.layer_linear_weights()
    rest = shape.total_params() - linear
    modules = 32 * 7
    weights, constants = weight_bytes(shape, Setup(bits=4, double_quant=True))
    assert weights == linear / 2 + rest * 4          # packed 4-bit + fp32 embeddings/norms/head
    assert constants == pytest.approx(linear / 64 + 4 * linear / 64 / 256 + modules * 272 * 4)
    _, single = weight_bytes(shape, Setup(bits=4, double_quant=False))
    assert single == pytest.approx(4 * linear / 64 + modules * 64)   # fp32 absmax per 64
    w8, scales = weight_bytes(shape, Setup(bits=8))
    rows = 4096 + 2 * 1024 + 4096 + 2 * 14336 + 4096      # out features of q, k, v, o, MLP
    assert w8 == linear + rest * 4 and scales == 32 * 4 * rows
    assert weight_bytes(shape, Setup(bits=None, dtype="bfloat16")) == (2 * shape.total_params(), 0)


def test_optimizer_states_by_variant():
    p = 1000
    cuda = Setup(device="cuda")
    assert optimizer_bytes(p, 2, Setup(optim="adamw_torch", device="cuda")) == (4000, 2000)
    assert optimizer_bytes(p, 2, Setup(optim="paged_adamw_32bit"))[0] == 8000
    assert optimizer_bytes(p, 2, Setup(optim="paged_adamw_8bit"))[0] == pytest.approx(
        2 * p * (1 + 4 / 256))
    assert optimizer_bytes(p, 2, Setup(optim="adamw_torch_fused"))[1] == 0
    with pytest.raises(ConfigError, match="method.train.optim"):
        optimizer_bytes(p, 2, Setup(optim="lion_32bit", device=cuda.device))


def test_checkpointing_logits_and_sharding():
    shape = shape_from_config(LLAMA_8B, "x")
    plain = Setup(batch=1, seq=2048, peft="none", optim="adamw_torch")
    ckpt = Setup(batch=1, seq=2048, peft="none", optim="adamw_torch", checkpointing=True)
    assert activation_bytes(shape, ckpt) < activation_bytes(shape, plain) / 10
    assert logits_bytes(shape, plain) == 2048 * 128256 * (2 + 12)   # bf16 logits + 3 fp32 buffers
    sharded = train_parts(shape, Setup(batch=1, seq=2048, peft="none", shards=8,
                                       optim="adamw_torch"))
    whole = train_parts(shape, plain)
    assert sharded.optimizer == pytest.approx(whole.optimizer / 8)
    assert sharded.weights == pytest.approx(whole.weights / 8)


def test_dpo_reference_copy_vs_adapter_disabled_and_ppo_models():
    shape = shape_from_config(QWEN_SMALL, "x")
    lora = Setup(dtype="float32", batch=2, seq=64, optim="adamw_torch")
    full = Setup(dtype="float32", batch=2, seq=64, optim="adamw_torch", peft="none")
    assert dpo(shape, Trainee(lora))[0].extras["reference"] == 0          # adapter disabled
    parts, _ = dpo(shape, Trainee(full))
    assert parts.extras["reference"] == 4 * shape.total_params()          # a frozen copy
    assert parts.logits == logits_bytes(shape, Setup(dtype="float32", batch=4, seq=64))
    ppo_parts, _ = ppo(shape, Trainee(full, response_tokens=32))
    assert set(ppo_parts.extras) == {"value model", "reference", "reward model"}
    assert ppo_parts.generation > 0


def test_step_time_from_flops():
    flops = hardware.train_flops(1_000_000, 0, 1000, full=True, checkpointing=False,
                                 attention=0)
    assert flops == 6e9
    assert hardware.step_seconds(flops, 1.0, 0.5) == pytest.approx(6e9 / 0.5e12)
    lora = hardware.train_flops(1_000_000, 10, 1000, full=False, checkpointing=True,
                                attention=0)
    assert lora == 1000 * (4e6 + 60 + 2e6)


def test_unknown_method_kind_gets_a_flagged_policy_estimate():
    cfg = resolve_paths(compose_config(["model=llama3_1_8b", "launcher.gpu_type=h100-80gb"]))
    OmegaConf.set_struct(cfg, False)
    cfg.method.kind = "kto_like"
    pred = predict(cfg)
    assert "no memory model" in pred.note and pred.peak_gb > 0


def test_size_from_estimate_sets_gpus_mem_and_time():
    launcher = OmegaConf.create({"size_from_estimate": True, "estimate_margin": 1.5,
                                 "gpus_per_node": 0, "estimate_fixed_min": 10})
    prediction = {"device": "cuda", "peak_gb": 20.0, "parts_gb": {"weights": 16.0},
                  "steps": 100, "step_seconds": 6.0}
    sized = sized_parameters(launcher, [prediction, None])
    assert sized == {"mem": f"{int(-(-1.5 * 20.0 // 1))}GB", "time": 25, "gpus_per_node": 1}
    assert sized_parameters(OmegaConf.create({"size_from_estimate": False}), [prediction]) == {}


# method_compare's parameters of methods a test does not use (prepare() probes each one)
OTHER_PARAMS = ("lora_init", "kto_beta", "orpo_beta", "ppo_kl_coef", "grpo_beta", "rloo_beta")


# -- action=plan and bad input ------------------------------------------------------------------
def test_plan_table_for_llama_8b_method_compare(tmp_path):
    result = run_cli(["action=plan", "model=llama3_1_8b", "sweep=method_compare",
                      "sweep.params.method.choices=[full,lora,qlora,dpo,ppo]",
                      *(f"~sweep.params.{name}" for name in OTHER_PARAMS),
                      "launcher.gpu_type=h100-80gb", "method.train.per_device_train_batch_size=1",
                      "method.train.gradient_checkpointing=true"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    rows = {line.split()[1]: line for line in lines if line[:1].isdigit()}
    assert set(rows) == {"full", "lora", "qlora", "dpo", "ppo"}
    peak = {m: float(re.search(r"([\d.]+) (?:ok|REFUSED)", row).group(1))   # peak GB column
            for m, row in rows.items()}
    assert peak["qlora"] < peak["lora"] < peak["full"]
    assert "limit 80 GB" in lines[0]
    assert "REFUSED" in rows["full"] and "REFUSED" not in rows["lora"]
    assert not (tmp_path / "sweeps").exists()   # no training, nothing written


def test_bad_input_one_line_naming_the_field(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**LLAMA_8B, "intermediate_size": None}))
    result = run_cli(["action=plan", "model=local", f"model.path={model}"], cwd=tmp_path)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "intermediate_size" in errors[0], result.stderr[-2000:]
    result = run_cli(["action=plan", "model=llama3_1_8b", "launcher.gpu_type=z100"],
                     cwd=tmp_path)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "launcher.gpu_type" in errors[0], result.stderr[-2000:]


# -- pre-flight: a sweep whose full fine-tuning cannot fit never launches it --------------------
@pytest.fixture(scope="module")
def preflight_sweep(tiny_model_dir, tmp_path_factory):
    """A method_compare-style sweep (full, lora) on a ~3M-parameter random Llama, with
    launcher.gpu_memory_gb between the predicted LoRA and full figures."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("preflight")
    model_dir = root / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    vocab = json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=688,
                                 num_hidden_layers=4, num_attention_heads=4,
                                 num_key_value_heads=4, max_position_embeddings=256,
                                 pad_token_id=0, bos_token_id=1, eos_token_id=2)
                     ).save_pretrained(model_dir)
    args = ["sweep=method_compare", "sweep.name=preflight", "sweep.n_trials=2",
            "sweep.params.method.choices=[full,lora]",
            # only the two methods' parameters (prepare() probes every parameter's values)
            *(f"~sweep.params.{name}" for name in (*OTHER_PARAMS, "dpo_beta", "dpo_lr")),
            "sweep.enqueue=[{method:full},{method:lora}]",
            "sweep.objectives=[{metric:perplexity,direction:minimize}]",
            "model=local", f"model.path={model_dir}", "model.dtype=float32",
            "model.max_seq_length=64", "method.train.max_steps=3",
            "method.train.per_device_train_batch_size=2", "method.train.eval_steps=0",
            "eval.rouge.max_samples=4", "eval.perplexity.max_texts=8",
            "eval.lm_eval.enabled=false", "eval.mt_bench.enabled=false",
            "data.preference.metrics.enabled=false", "launcher.parallel=1"]
    figures = {m: predict(resolve_paths(compose_config(
        [*args, f"method={m}", "launcher.gpu_memory_gb=80"]))).peak_gb for m in ("full", "lora")}
    assert figures["lora"] < figures["full"]
    limit = round((figures["lora"] + figures["full"]) / 2, 4)
    result = run_cli([*args, f"launcher.gpu_memory_gb={limit}"], cwd=root)
    return root, result, figures, limit


def test_preflight_prunes_full_with_the_figure_and_runs_the_rest(preflight_sweep):
    root, result, figures, limit = preflight_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    trials = root / "sweeps" / "preflight" / "trials"
    records = {r.method: r for r in (read_record(d) for d in sorted(trials.iterdir()))}
    full, lora = records["full"], records["lora"]
    assert full.status == "PRUNED"
    assert full.preflight == f"predicted {figures['full']:.3g} GB > {limit:g} GB"
    assert not (trials / f"{full.number:04d}" / "trial.log").exists()   # never launched
    assert lora.status == "COMPLETE"
    lora_cfg, _ = read_trial_config(trials / f"{lora.number:04d}")   # its sampled rank
    assert lora.prediction["peak_gb"] == pytest.approx(predict(lora_cfg).peak_gb)
    assert lora.prediction["peak_gb"] <= limit
    assert lora.peak_rss_mb > 0 and lora.prediction["allocated_gb"] > 0
    study = optuna.load_study(study_name="preflight",
                              storage=f"sqlite:///{root}/sweeps/preflight/study.db")
    told = study.trials[full.number]
    assert told.state == optuna.trial.TrialState.PRUNED
    assert told.user_attrs["preflight"] == full.preflight


def test_report_lists_the_refused_trial_and_the_scatter(preflight_sweep):
    root, result, figures, _ = preflight_sweep
    info = extract_memory_estimate(load_sweep(root / "sweeps" / "preflight"))
    assert [r.method for r in info.refused] == ["full"]
    assert info.refused[0].reason.startswith(f"predicted {figures['full']:.3g} GB")
    assert [p.method for p in info.points] == ["lora"]
    page = (root / "reports" / "preflight.html").read_text()
    assert "Predicted against measured memory" in page
    assert html.escape(info.refused[0].reason) in page


def test_calibration_benchmark_shapes_are_what_it_says():
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "memory_calibration.py"
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_calibration", bench)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sizes = {name: shape_from_config(f, name).total_params() / 1e6
             for name, f in module.SHAPES.items()}
    assert 15 < sizes["s20"] < 25 and 80 < sizes["s100"] < 120 and 250 < sizes["s300"] < 350
