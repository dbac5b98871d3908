"""Where each process loads its models (harness.train.placement), decided without a GPU: every
data-parallel rank on its own GPU, FSDP left to accelerate, `model.dtype: auto` resolved."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from harness.errors import ConfigError
from harness.train import modeling, placement
from harness.train.placement import Machine

GPUS = 4


def _fake_gpus(monkeypatch, rank: int, bf16: bool = True) -> None:
    """A torchrun rank on a node with GPUS visible GPUs, as torch.cuda would report it."""
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: GPUS)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


MODEL = OmegaConf.create({"path": "meta-llama/Llama-3.1-8B-Instruct", "source": "hub",
                          "revision": "abc123", "trust_remote_code": True, "dtype": "auto",
                          "attn_implementation": "flash_attention_2"})


@pytest.mark.parametrize("rank", range(GPUS))
def test_each_rank_loads_onto_its_own_gpu(monkeypatch, rank):
    """The kwargs every model load uses (policy, reference, reward, value) put rank N on
    GPU N, for a full, a LoRA and a 4-bit base alike; the old {"": "cuda"} put all on GPU 0
    (torch's current device before accelerate sets it)."""
    from transformers.integrations.accelerate import check_and_set_device_map

    _fake_gpus(monkeypatch, rank)
    assert placement.detect() == Machine(local_rank=rank, cuda=True, device_count=GPUS,
                                         bf16=True)
    assert str(modeling.device()) == f"cuda:{rank}"
    for quant in (None, OmegaConf.create({"bits": None})):
        kwargs = modeling.model_kwargs(MODEL, quant)
        assert kwargs["device_map"] == {"": rank}
        # transformers keeps an int map as given: cuda:<rank>, not the current device
        assert check_and_set_device_map(kwargs["device_map"]) == {"": rank}
    assert placement.device_map(placement.detect()) == {"": rank}   # quantized: same map


def test_fsdp_loads_without_a_device_map(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    assert modeling.model_kwargs(MODEL, fsdp=True)["device_map"] is None
    assert placement.device_map(Machine(local_rank=1, cuda=True, device_count=2),
                                fsdp=True) is None


def test_cpu_and_too_few_gpus():
    assert placement.device_map(Machine()) == {"": "cpu"}
    assert placement.device_name(Machine(local_rank=3)) == "cpu"
    with pytest.raises(ConfigError, match="LOCAL_RANK=2 but only 2 GPU"):
        placement.device_map(Machine(local_rank=2, cuda=True, device_count=2))


def test_model_options_reach_every_load(monkeypatch):
    """revision / trust_remote_code / attn_implementation from model config; a stage folder
    (a saved copy) loads without the hub revision."""
    _fake_gpus(monkeypatch, 0)
    kwargs = modeling.model_kwargs(MODEL)
    assert kwargs["revision"] == "abc123" and kwargs["trust_remote_code"] is True
    assert kwargs["attn_implementation"] == "flash_attention_2"
    assert kwargs["dtype"] == torch.bfloat16
    saved = modeling.model_kwargs(MODEL, path="/stages/sft-1/model")
    assert saved["pretrained_model_name_or_path"] == "/stages/sft-1/model"
    assert "revision" not in saved and saved["trust_remote_code"] is True


@pytest.mark.parametrize(("machine", "dtype"), [
    (Machine(cuda=True, device_count=1, bf16=True), "bfloat16"),    # A100, H100
    (Machine(cuda=True, device_count=1, bf16=False), "float16"),    # V100, T4
    (Machine(), "float32"),                                          # CPU
])
def test_auto_dtype(machine, dtype):
    assert placement.resolve_dtype("auto", machine) == dtype
    assert placement.resolve_dtype("float16", machine) == "float16"   # explicit wins


def test_auto_dtype_at_load_time(monkeypatch):
    _fake_gpus(monkeypatch, 0, bf16=False)
    assert modeling.torch_dtype("auto") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert modeling.torch_dtype("auto") == torch.float32
