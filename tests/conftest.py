"""Shared fixtures: a tiny random Llama saved locally (no hub), and a repo-relative CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama + a BPE tokenizer with a chat template, saved with save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-model")
    words = "the cat sat on a mat and ran to red blue dog summary of report fox".split()
    corpus = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(200)]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                "{% if add_generation_prompt %}<s>assistant:{% endif %}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", chat_template=template)
    fast.save_pretrained(out)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2)
    import torch

    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def run_cli(args: list[str], cwd: Path, timeout: float = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m harness ARGS` in cwd (outputs land under cwd/sweeps, cwd/reports)."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("HARNESS_CACHE", str(REPO / ".cache" / "harness"))
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_trial(tmp_path_factory) -> dict:
    """One tiny LoRA trial of the embedded model, run as the local launcher runs it, with the
    progress.json snapshots seen meanwhile (tests/test_progress.py; tests/test_cascade_jobs.py
    re-scores its saved model). Session-wide: it runs once for both."""
    from tests.test_progress import run_tiny_trial

    return run_tiny_trial(tmp_path_factory.mktemp("progress"))
