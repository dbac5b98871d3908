"""harness.sweep.merge: fold a trial's LoRA adapter into its base model (tiny random Llama)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from harness.cli import main
from harness.errors import ConfigError
from harness.sweep.merge import merge_dtype, merge_trial
from tests.test_report import load_sweep, make_sweep


def _trial(trial_dir: Path, model_dir: Path, method: str = "qlora", bits: int | None = 4,
           seed: int = 0) -> Path:
    """A trial folder: config.yaml naming the tiny base, and a LoRA adapter with non-zero B."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trial_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"seed": 42,
           "model": {"name": "tiny", "source": "local", "path": str(model_dir),
                     "dtype": "float32", "trust_remote_code": False},
           "method": {"name": method, "peft": "lora",
                      "quantization": {"bits": bits, "compute_dtype": "float32"}},
           "trial": {"number": 0, "params": {}}}
    (trial_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                           task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    peft.save_pretrained(trial_dir / "model")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(trial_dir / "model")
    return trial_dir


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_merged_model_matches_base_plus_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trial = _trial(tmp_path / "trial", tiny_model_dir)
    out = merge_trial(trial, tmp_path / "merged")
    ids = torch.tensor([[1, 5, 9, 13, 17, 21, 25]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with_adapter = _logits(PeftModel.from_pretrained(base, str(trial / "model")), ids)
    plain_base = _logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), ids)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, ids), with_adapter, atol=1e-4)
    assert not torch.allclose(with_adapter, plain_base, atol=1e-3)   # the adapter mattered
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config                      # QLoRA: saved unquantized
    info = json.loads((out / "merge_info.json").read_text())
    assert info["dtype"] == "float32" and info["method"] == "qlora"
    assert (out / "tokenizer_config.json").is_file()


def test_merge_dtype_choice(tiny_model_dir: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": {"dtype": "float32"},
                            "method": {"quantization": {"bits": 4,
                                                        "compute_dtype": "bfloat16"}}})
    assert merge_dtype(cfg) == "bfloat16"                # QLoRA: the compute dtype
    cfg.method.quantization.bits = None
    assert merge_dtype(cfg) == "float32"                 # LoRA: the model's dtype
    assert merge_dtype(cfg, "float16") == "float16"
    trial = _trial(tmp_path / "trial", tiny_model_dir, method="lora", bits=None)
    out = merge_trial(trial, tmp_path / "bf16", dtype="bfloat16")
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out, dtype="auto").dtype == torch.bfloat16


def test_no_adapter_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "full" / "model").mkdir(parents=True)
    (tmp_path / "full" / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="no LoRA adapter"):
        merge_trial(tmp_path / "full", tmp_path / "out")


def test_cli_merges_the_best_trial(tiny_model_dir: Path, tmp_path: Path, monkeypatch,
                                   capsys) -> None:
    from transformers import AutoModelForCausalLM

    sweep = make_sweep(tmp_path, 3, storage="journal")
    best = load_sweep(sweep).best.number
    _trial(sweep / "trials" / f"{best:04d}", tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    args = ["action=merge", "sweep.name=synthetic", f"paths.sweeps={tmp_path / 'sweeps'}"]
    assert main(args) == 0
    out = sweep / "merged" / f"{best:04d}"
    assert f"merged model: {out}" in capsys.readouterr().out
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    assert main([*args, "merge.trial=99"]) == 2
    assert "merge.trial" in capsys.readouterr().err
