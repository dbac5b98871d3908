"""Every method a sweep compares: each trains on tiny data and is shown to learn (its own
metric against its start), every conf/method key reaches the trainer or peft, quantization and
report_to are applied or refused, preference/RL stages report values for pruning."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

import harness.data.preference as pref_data
import harness.eval.preference as pref_eval
from harness.eval.online import distinct_n
from harness.train import grpo, kto, orpo, ppo, reward, rloo

# Preference rows over the tiny tokenizer's words: chosen answers are fluent, rejected are not.
WORDS = ("cat", "dog", "fox", "report", "summary", "mat", "red", "blue")
ROWS = [{"prompt": [{"role": "user", "content": f"report {w}"}],
         "chosen": [{"role": "assistant", "content": f"the {w} sat on a mat"}],
         "rejected": [{"role": "assistant", "content": "red blue dog fox ran"}]}
        for w in WORDS]
HELD_OUT = [f"summary of {w}" for w in ("cat", "mat", "fox", "red")]   # prompts not trained on
MODEL_CFG = OmegaConf.create({"dtype": "float32"})


def _train(**over) -> dict:
    return {"learning_rate": 1e-3, "lr_scheduler_type": "constant", "warmup_ratio": 0.0,
            "max_steps": 15, "num_train_epochs": 1, "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1, "max_grad_norm": 1.0, "weight_decay": 0.0,
            "optim": "adamw_torch", "gradient_checkpointing": False, "logging_steps": 5,
            "report_to": "none", **over}


def _method(kind: str, block: dict | None = None, peft: str = "none", **train) -> OmegaConf:
    cfg = {"kind": kind, "peft": peft, "max_length": 64, "center_rewards_coefficient": None,
           "train": _train(**train)}
    if block is not None:
        cfg[kind] = block
    return OmegaConf.create(cfg)


def trained_reward_dir(tiny_model_dir: Path, out: Path, steps: int) -> Path:
    """out/model: a reward model trained `steps` steps on ROWS, with its tokenizer."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)             # the new score head's init: the same whatever ran before
    model, _ = reward.train_reward(tiny_model_dir, _method("reward", max_steps=steps), MODEL_CFG,
                                   ROWS, out / "train", seed=0)
    model.save_pretrained(out / "model")
    reward.load_reward_model(tiny_model_dir, MODEL_CFG)[1].save_pretrained(out / "model")
    return out / "model"


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A reward model trained on ROWS (ranks every chosen answer above its rejected one)."""
    return trained_reward_dir(tiny_model_dir, tmp_path_factory.mktemp("reward"), 20)


def _held_out_reward(model, tok, reward_dir: Path) -> float:
    """Mean reward-model score of greedy answers to prompts the policy never trained on."""
    from harness.eval.metrics import generate

    rm, rm_tok = reward.load_reward_model(reward_dir, MODEL_CFG)
    answers = generate(model, tok, HELD_OUT, max_new_tokens=12, batch_size=4)
    scores = pref_eval.reward_scores(rm, rm_tok, HELD_OUT, answers)
    return sum(scores) / len(scores)


def _policy(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok


# ----------------------------------------------------------------------------- offline methods


def test_kto_raises_preference_accuracy(tiny_model_dir, tmp_path):
    model, tok = _policy(tiny_model_dir)
    before = pref_eval.pref_accuracy(model, tok, ROWS)
    method = _method("kto", {"beta": 0.1, "loss_type": "kto", "desirable_weight": 1.0,
                             "undesirable_weight": 1.0, "max_length": 64})
    result = kto.train_kto(model, tok, method, MODEL_CFG, ROWS, tmp_path, seed=0,
                           ref_model=copy.deepcopy(model).eval().requires_grad_(False))
    after = pref_eval.pref_accuracy(model, tok, ROWS)
    print(f"{method.kind}: preference accuracy {before:.2f} -> {after:.2f}")
    assert result.steps == 15
    assert after == 1.0 > before


def test_orpo_raises_preference_accuracy(tiny_model_dir, tmp_path):
    model, tok = _policy(tiny_model_dir)
    before = pref_eval.pref_accuracy(model, tok, ROWS)
    method = _method("orpo", {"beta": 0.1, "max_length": 64, "max_completion_length": 32})
    result = orpo.train_orpo(model, tok, method, MODEL_CFG, ROWS, tmp_path, seed=0)
    after = pref_eval.pref_accuracy(model, tok, ROWS)
    print(f"{method.kind}: preference accuracy {before:.2f} -> {after:.2f}")
    assert result.steps == 15
    assert after == 1.0 > before


# ----------------------------------------------------------------------------- online methods

GRPO = {"beta": 0.0, "epsilon": 0.2, "num_generations": 4, "max_completion_length": 12,
        "temperature": 1.0, "loss_type": "dapo"}


def test_grpo_raises_held_out_reward(tiny_model_dir, reward_dir, tmp_path):
    model, tok = _policy(tiny_model_dir)
    before = _held_out_reward(model, tok, reward_dir)
    prompts = [pref_data.prompt_text(r) for r in ROWS]
    result = grpo.train_grpo(model, tok, reward_dir, _method("grpo", GRPO, max_steps=20),
                             MODEL_CFG, prompts, tmp_path, seed=0)
    after = _held_out_reward(model, tok, reward_dir)
    print(f"held-out reward {before:.3f} -> {after:.3f}")
    assert result.steps == 20
    assert after > before + 0.1   # untrained: after == before


def test_rloo_raises_held_out_reward(tiny_model_dir, reward_dir, tmp_path):
    model, tok = _policy(tiny_model_dir)
    before = _held_out_reward(model, tok, reward_dir)
    prompts = [pref_data.prompt_text(r) for r in ROWS]
    block = {k: v for k, v in GRPO.items() if k != "loss_type"} | {"normalize_advantages": False}
    result = rloo.train_rloo(model, tok, reward_dir, _method("rloo", block, max_steps=20),
                             MODEL_CFG, prompts, tmp_path, seed=0)
    after = _held_out_reward(model, tok, reward_dir)
    print(f"held-out reward {before:.3f} -> {after:.3f}")
    assert result.steps == 20
    assert after > before + 0.1   # untrained: after == before


def test_ppo_raises_held_out_reward(tiny_model_dir, reward_dir, tmp_path):
    policy_before, tok = _policy(tiny_model_dir)
    before = _held_out_reward(policy_before, tok, reward_dir)
    block = {"kl_coef": 0.05, "cliprange": 0.2, "vf_coef": 0.1, "response_length": 12,
             "num_ppo_epochs": 4, "num_mini_batches": 1, "temperature": 0.7,
             "missing_eos_penalty": None, "total_episodes": 64}
    prompts = [pref_data.prompt_text(r) for r in ROWS]
    model, tok, result = ppo.train_ppo(tiny_model_dir, reward_dir,
                                       _method("ppo", block, per_device_train_batch_size=8),
                                       MODEL_CFG, prompts, tmp_path, seed=0)
    after = _held_out_reward(model, tok, reward_dir)
    print(f"ppo: held-out reward {before:.3f} -> {after:.3f}")
    assert result.steps > 0
    assert after > before + 0.1   # untrained: after == before


def test_distinct_n_counts_repeated_ngrams():
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b", "a b", "a b"], 2) == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------- PEFT methods

CACHE = str(Path(__file__).resolve().parents[1] / ".cache" / "harness")


@pytest.fixture(scope="module")
def embedded():
    """(composed config, held-out texts, base perplexity) on the embedded model."""
    import os

    import torch

    from harness.config.compose import compose_config
    from harness.data.sft import perplexity_texts
    from harness.embedded.build import build_embedded
    from harness.train.modeling import load_base_model, load_tokenizer

    torch.set_num_threads(1)
    cfg = compose_config([f"paths.cache={os.environ.get('HARNESS_CACHE', CACHE)}"])
    build_embedded(cfg.paths.embedded, progress=False)
    texts = perplexity_texts(cfg.data.perplexity, 24)
    tok = load_tokenizer(cfg.model)
    return cfg, texts, _ppl(load_base_model(cfg.model), tok, texts)


def _ppl(model, tok, texts) -> float:
    from harness.eval.metrics import perplexity

    return perplexity(model, tok, texts, max_length=256, stride=128, batch_size=8)["perplexity"]


def _sft(embedded, tmp_path, overrides: list[str], steps: int = 20):
    """SFT of the composed method for `steps` on 320 embedded rows -> (model, tok, result)."""
    from transformers import set_seed

    from harness.config.compose import compose_config
    from harness.data.sft import sft_rows
    from harness.train.modeling import load_trial_model
    from harness.train.sft import train_sft

    cfg = compose_config([f"paths.cache={embedded[0].paths.cache}", *overrides,
                          f"method.train.max_steps={steps}", "method.train.eval_steps=0",
                          "method.train.warmup_ratio=0.0"])
    # seeded before the adapter's random init, as a trial process is (setup_process): unseeded,
    # the prefix encoder drew whatever state earlier tests and imports left, which differed
    # once accelerate 1.16 was installed (prefix ended at 79.5 vs base 78.8, 74.4 with 1.15);
    # seeded it ends at 74.55 with either version
    set_seed(0)
    model, tok = load_trial_model(cfg.model, cfg.method)
    rows = sft_rows(cfg.data.train)[:320]
    result = train_sft(model, tok, cfg.method, cfg.model, rows, None, tmp_path, seed=0)
    return model, tok, result


@pytest.mark.parametrize("overrides, steps", [
    (["method=ia3"], 20),
    (["method=prefix"], 20),
    (["method=prompt"], 40),    # its text-initialised soft prompt starts above the base
    (["method=lora", "method.lora.init=pissa", "method.lora.rank=8"], 20),
    (["method=lora", "method.lora.init=olora", "method.lora.rank=8"], 20),
], ids=["ia3", "prefix", "prompt", "lora-pissa", "lora-olora"])
def test_peft_method_lowers_held_out_perplexity_below_base(embedded, tmp_path, overrides,
                                                           steps):
    _, texts, base = embedded
    model, tok, result = _sft(embedded, tmp_path, overrides, steps)
    after = _ppl(model, tok, texts)
    print(f"{overrides}: held-out perplexity {base:.2f} (base) -> {after:.2f}")
    assert result.steps == steps
    assert after < base


def test_loraplus_trains_b_at_ratio_times_lr_and_learns(embedded, tmp_path):
    from harness.train.adapters import loraplus_optimizers

    _, texts, base = embedded
    overrides = ["method=lora", "method.lora.rank=8", "method.lora.loraplus_lr_ratio=16",
                 "method.train.learning_rate=2e-4"]
    model, tok, result = _sft(embedded, tmp_path, overrides)
    after = _ppl(model, tok, texts)
    print(f"LoRA+: held-out perplexity {base:.2f} (base) -> {after:.2f}")
    assert after < base
    from harness.config.compose import compose_config

    method = compose_config([f"paths.cache={embedded[0].paths.cache}", *overrides]).method
    optimizer, _ = loraplus_optimizers(model, method)
    lrs = {round(g["lr"], 12) for g in optimizer.param_groups if g["params"]}
    assert {2e-4, 3.2e-3} <= lrs   # A matrices at lr, B matrices at 16 x lr


# ----------------------------------------------------------------------------- no ignored key

def _arg_builders() -> dict:
    """method.kind -> the function that turns a method block into its trainer's arguments."""
    from harness.train import dpo
    from harness.train.arguments import sft_config

    # FSDP wraps the model's decoder layers: a stand-in naming one is all sft_config reads
    layers = SimpleNamespace(_no_split_modules=["LlamaDecoderLayer"])
    return {"sft": lambda m, mc, out, seed: sft_config(m, mc, out, seed, has_eval=True,
                                                       model=layers),
            "dpo": dpo.dpo_args, "kto": kto.kto_args, "orpo": orpo.orpo_args,
            "ppo": ppo.ppo_args, "grpo": grpo.grpo_args, "rloo": rloo.rloo_args,
            "reward": reward.reward_args}


# Keys a trainer's arguments / peft / bitsandbytes configs never see, and who reads them.
READ_ELSEWHERE = {
    "name": "the record's method name", "kind": "registry.METHOD_KINDS (the pipeline)",
    "peft": "registry.PEFT_METHODS (the adapter)", "init": "trial.stages.reward_stage",
    "ppo.max_prompts": "trial.pipelines.PpoPipeline",
    "lora.loraplus_lr_ratio": "train.adapters.loraplus_optimizers (test_loraplus_...)",
    "quantization.bits@ppo": "refused by validation (test_ppo_4bit_is_refused_...)",
}
ALTERNATIVES = {"lr_scheduler_type": ["linear", "cosine"], "optim": ["sgd"],
                "loss_type": ["ipo", "apo_zero_unpaired", "grpo", "sigmoid"],
                "report_to": ["tensorboard"], "init": ["pissa"], "compute_dtype": ["bfloat16"],
                "quant_type": ["fp4"], "target_modules": [["q_proj", "k_proj", "v_proj",
                                                           "down_proj"]],
                "feedforward_modules": [["k_proj"]], "init_text": ["another text"],
                "num_generations": [2], "fsdp": ["full_shard"]}


def _changed(key: str, value):
    """A different valid value for `key` (last path part picks the alternatives)."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "init" and key.startswith("prompt."):
        return "random"
    if leaf in ALTERNATIVES:
        return next(v for v in ALTERNATIVES[leaf] if v != value)
    if leaf == "bits":
        return 4 if value is None else 8
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value * 2 if value else 1
    if isinstance(value, float):
        return value * 2 if value else 0.1
    if value is None:
        return 64 if leaf == "encoder_hidden_size" else 3.0
    raise AssertionError(f"no alternative value for {key}={value!r}")


def _leaves(node, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _leaves(value, f"{path}.")
        else:
            out.append((path, value))
    return out


def _fingerprint(method: dict, model_cfg, kind: str, out: Path) -> str:
    """Everything a method block can reach: trainer arguments, peft and bitsandbytes configs."""
    import json

    from harness.registry import PEFT_METHODS
    from harness.train.modeling import quantization_config

    m = OmegaConf.create(method)
    args = _arg_builders()[kind](m, model_cfg, out, 0).to_dict()
    args.pop("logging_dir", None)
    adapter = PEFT_METHODS.load(str(m.peft))(m, model_cfg)
    bnb = quantization_config(m.quantization) if m.get("quantization") else None
    return json.dumps([args, adapter.to_dict() if adapter else None,
                       bnb.to_dict() if bnb else None], sort_keys=True, default=str)


def _method_files() -> list[str]:
    root = Path(__file__).resolve().parents[1] / "conf" / "method"
    return sorted(p.stem for p in root.glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", [*_method_files(), "ppo.reward"])
def test_every_method_key_reaches_the_trainer_or_peft(name, tmp_path):
    from harness.config.compose import compose_config

    cfg = compose_config([f"method={name.split('.')[0]}", "paths.cache=/tmp/none"])
    method = OmegaConf.to_container(cfg.method, resolve=True)
    if name.endswith(".reward"):
        method = method["reward"]
    kind = str(method["kind"])
    unread = []
    for key, value in _leaves({k: v for k, v in method.items() if k not in ("sft", "reward")}):
        if key in READ_ELSEWHERE or f"{key}@{kind}" in READ_ELSEWHERE:
            continue
        base = copy.deepcopy(method)
        if key.startswith("lora."):
            base["peft"] = "lora"          # LoRA keys act when the method trains LoRA
        if key.startswith("quantization.") and key != "quantization.bits":
            base["quantization"]["bits"] = 4
        if key == "ppo.total_episodes":   # a set train.max_steps (sweep=default) wins over it
            base["train"].pop("max_steps", None)
        changed = copy.deepcopy(base)
        node = changed
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = _changed(key, value)
        if _fingerprint(base, cfg.model, kind, tmp_path) == \
                _fingerprint(changed, cfg.model, kind, tmp_path):
            unread.append(key)
    assert not unread, f"method={name}: keys that reach no trainer argument or peft config"


def test_ppo_4bit_is_refused_with_one_line_naming_the_key(tmp_path):
    from tests.conftest import run_cli

    out = run_cli(["method=ppo", "method.quantization.bits=4", "sweep.n_trials=1"], tmp_path,
                  timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.startswith("harness: error:")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1 and "method.quantization.bits=4" in lines[0], out.stderr[-2000:]
    assert not (tmp_path / "sweeps").exists()


# ----------------------------------------------------------------------------- report_to, pruning


class Recorder:
    """A study stand-in for the trainer side of pruning: keeps what is reported."""

    def __init__(self, prune: bool = False):
        self.values: list[tuple[int, float]] = []
        self.prune = prune

    def report(self, value: float, step: int) -> None:
        self.values.append((step, value))

    def should_prune(self) -> bool:
        return self.prune


def _events(folder: Path) -> list[Path]:
    return list(folder.rglob("events.out.tfevents.*"))


def test_dpo_writes_tensorboard_events_and_reports_its_margin(tiny_model_dir, tmp_path):
    import optuna

    from harness.train import dpo

    block = {"beta": 0.1, "loss_type": "sigmoid", "max_length": 64}
    model, tok = _policy(tiny_model_dir)
    recorder = Recorder()
    dpo.train_dpo(model, tok, _method("dpo", block, max_steps=10, report_to=["tensorboard"]),
                  MODEL_CFG, ROWS, tmp_path / "a", seed=0, ref_model=dpo.frozen_copy(model),
                  reporter=recorder)
    assert _events(tmp_path / "a")
    assert [s for s, _ in recorder.values] == [5, 10]
    assert recorder.values[-1][1] > 0          # chosen pulled above rejected
    with pytest.raises(optuna.TrialPruned, match="step 5"):
        dpo.train_dpo(model, tok, _method("dpo", block, max_steps=10), MODEL_CFG, ROWS,
                      tmp_path / "b", seed=0, ref_model=dpo.frozen_copy(model),
                      reporter=Recorder(prune=True))
    assert not _events(tmp_path / "b")        # report_to none: no tracker


def test_grpo_writes_tensorboard_events_and_reports_reward_negated_when_minimizing(
        tiny_model_dir, reward_dir, tmp_path):
    model, tok = _policy(tiny_model_dir)
    recorder = Recorder()
    prompts = [pref_data.prompt_text(r) for r in ROWS]
    grpo.train_grpo(model, tok, reward_dir,
                    _method("grpo", GRPO, max_steps=5, report_to=["tensorboard"]), MODEL_CFG,
                    prompts, tmp_path, seed=0, reporter=recorder, minimize=True)
    assert _events(tmp_path)
    logged = [json_row["reward"] for json_row in _loss_rows(tmp_path) if "reward" in json_row]
    assert recorder.values and [v for _, v in recorder.values] == [-r for r in logged]


def _loss_rows(folder: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (folder / "loss.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- merge, report


@pytest.mark.parametrize("peft", ["prefix", "prompt"])
def test_merge_refuses_virtual_token_adapters_with_one_line(tiny_model_dir, tmp_path, peft):
    from peft import get_peft_model

    from harness.errors import ConfigError
    from harness.registry import PEFT_METHODS
    from harness.sweep.merge import merge_trial

    model, _ = _policy(tiny_model_dir)
    method = OmegaConf.create({
        "peft": peft, "prefix": {"num_virtual_tokens": 4, "prefix_projection": False},
        "prompt": {"num_virtual_tokens": 4, "init": "random", "init_text": ""}})
    adapter = PEFT_METHODS.load(peft)(method, OmegaConf.create({"path": str(tiny_model_dir)}))
    get_peft_model(model, adapter).save_pretrained(tmp_path / "model")
    (tmp_path / "config.yaml").write_text("method: {name: x}\n")
    with pytest.raises(ConfigError) as err:
        merge_trial(tmp_path, tmp_path / "merged")
    assert len(err.value.problems) == 1 and "cannot be merged" in str(err.value)
    assert not (tmp_path / "merged").exists()


def _record(number: int, method: str, metrics: dict, extra: dict):
    from harness.records import COMPLETE, TrialRecord

    return TrialRecord(number=number, status=COMPLETE, method=method, metrics=metrics,
                       extra=extra)


def test_report_flags_reward_rise_with_collapsed_diversity_and_shows_samples(tmp_path):
    from harness.records import TrialRecord
    from harness.report.figures import Figures
    from harness.report.sections.hacking import extract_methods_start, render_methods_start
    from harness.sweep.results import SweepData

    def online(distinct: float, reward: float) -> tuple[dict, dict]:
        return ({"reward_mean": reward, "distinct_2": distinct, "kl_to_ref": 0.5},
                {"sft_reward_mean": 0.1, "online": {
                    "reference": {"distinct_2": 0.8}, "collapse_ratio": 0.6,
                    "samples": [{"prompt": "p", "generation": "the mat <b>", "reference": "r"}]}})

    records = [_record(0, "lora", {"perplexity": 30.0}, {}),
               _record(1, "dpo", {"pref_accuracy": 0.7}, {"train_pairs": 600,
                                                          "sft_pref_accuracy": 0.6}),
               _record(2, "ppo", *online(0.2, 0.9)),      # reward up, diversity collapsed
               _record(3, "grpo", *online(0.7, 0.9)),     # reward up, diversity kept
               _record(4, "rloo", *online(0.2, 0.05))]    # diversity fell, reward did not rise
    data = SweepData(tmp_path, OmegaConf.create({"sweep": {"name": "x"}}), None,
                     TrialRecord(number=-1, status="COMPLETE", method="base",
                                 metrics={"perplexity": 80.0}), records)
    info = extract_methods_start(data)
    heads = {r.method: (r.headline, r.start, r.end) for r in info.rows}
    assert heads == {"lora": ("perplexity", 80.0, 30.0), "dpo": ("pref_accuracy", 0.6, 0.7),
                     "ppo": ("reward_mean", 0.1, 0.9), "grpo": ("reward_mean", 0.1, 0.9),
                     "rloo": ("reward_mean", 0.1, 0.05)}
    assert [f.number for f in info.flags] == [2] and info.online == 3
    html = render_methods_start(info, Figures())
    assert "Reward hacking? Trial 2 (ppo)" in html and "the mat &lt;b&gt;" in html


def test_grpo_policy_trains_as_4bit_base_plus_lora(tiny_model_dir, reward_dir, tmp_path):
    import bitsandbytes as bnb

    from harness.train.modeling import load_trial_model

    method = _method("grpo", GRPO, peft="lora", max_steps=3)
    method.lora = {"rank": 8, "alpha": 16, "alpha_ratio": None, "dropout": 0.0,
                   "target_modules": "all-linear"}
    method.quantization = {"bits": 4, "quant_type": "nf4", "double_quant": True,
                           "compute_dtype": "float32"}
    model_cfg = OmegaConf.create({"dtype": "float32", "source": "local",
                                  "path": str(tiny_model_dir), "trust_remote_code": False})
    model, tok = load_trial_model(model_cfg, method)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n][0]
    before = lora_b.detach().clone()
    prompts = [pref_data.prompt_text(r) for r in ROWS]
    result = grpo.train_grpo(model, tok, reward_dir, method, MODEL_CFG, prompts, tmp_path, 0)
    assert result.steps == 3 and not lora_b.detach().equal(before)   # the adapter trained
