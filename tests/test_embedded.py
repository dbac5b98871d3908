"""Tests for the embedded default model and data (`harness.embedded.build`, `.corpus`)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import harness.embedded.build as E
import harness.embedded.corpus as C
from tests.conftest import REPO

DATA_FILES = {
    "sft_train": C.N_SFT_TRAIN,
    "sft_eval": C.N_SFT_EVAL,
    "perplexity": C.N_PERPLEXITY,
    "summarize_test": C.N_SUMMARIZE_TEST,
    "preference_train": C.N_PREF_TRAIN,
    "preference_test": C.N_PREF_TEST,
}


def _rows(root: Path, name: str) -> list[dict[str, Any]]:
    lines = (root / "data" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _data_hashes(root: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((root / "data").glob("*.jsonl"))
    }


@pytest.fixture(scope="module")
def built() -> Path:
    """The complete build in the repo cache that the end-to-end tests also use (built once)."""
    root = REPO / ".cache" / "harness" / f"embedded-v{E.EMBEDDED_VERSION}"
    assert E.build_embedded(root, seed=0, progress=False) == root.absolute()
    return root


def test_files_present_and_parse(built: Path) -> None:
    info = json.loads((built / E.BUILD_INFO).read_text())
    assert info["version"] == E.EMBEDDED_VERSION and info["seed"] == 0
    assert 500_000 < info["num_parameters"] < 3_000_000
    assert info["pretrain_final_loss"] < 3.0
    for rel in info["files"]:
        assert (built / rel).is_file(), rel
    for name, n in DATA_FILES.items():
        rows = _rows(built, name)
        assert len(rows) == n, name
    for row in _rows(built, "sft_train"):
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in row["messages"])
    for row in _rows(built, "summarize_test"):
        assert row["prompt"].endswith(row["document"]) and row["summary"]
    for row in _rows(built, "preference_train") + _rows(built, "preference_test"):
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["chosen"] != row["rejected"]
    assert all(row["text"].strip() for row in _rows(built, "perplexity"))


def test_summarization_is_trained(built: Path) -> None:
    users = [r["messages"][0]["content"] for r in _rows(built, "sft_train")]
    assert sum(u.startswith(C.SUMMARIZE_INSTRUCTION) for u in users) > 100


def test_model_and_tokenizer_load(built: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built / "model")
    model = AutoModelForCausalLM.from_pretrained(built / "model")
    assert model.config.model_type == "llama"
    assert tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id
    assert model.generation_config.eos_token_id == tok.eos_token_id
    ids = tok("The capital of", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_chat_template_and_generation_mask(built: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built / "model")
    user = [{"role": "user", "content": "Reverse this list: lamp, coin, door"}]
    prompt = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith(tok.bos_token) and prompt.endswith("<|assistant|>\n")
    assert not tok.apply_chat_template(user, tokenize=False).endswith("<|assistant|>\n")

    answer = "door, coin, lamp"
    conv = [*user, {"role": "assistant", "content": answer}]
    out = tok.apply_chat_template(
        conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    masked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(masked) == answer + tok.eos_token
    prompt_ids = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=True)
    if isinstance(prompt_ids, dict) or hasattr(prompt_ids, "keys"):
        prompt_ids = prompt_ids["input_ids"]
    assert out["input_ids"][: len(prompt_ids)] == list(prompt_ids)


def test_perplexity_texts_are_rendered_conversations(built: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built / "model")
    row = _rows(built, "sft_eval")[0]
    rendered = tok.apply_chat_template(row["messages"], tokenize=False)
    assert rendered == C.render_chat(row["messages"])
    for row in _rows(built, "perplexity"):
        assert row["text"].startswith(tok.bos_token + "<|user|>\n")
        assert "<|assistant|>\n" in row["text"]


def test_held_out_documents_not_in_training(built: Path) -> None:
    train = _rows(built, "sft_train")
    train_users = "\n".join(r["messages"][0]["content"] for r in train)
    train_answers = {r["messages"][1]["content"] for r in train}
    for row in _rows(built, "summarize_test"):
        assert row["document"] not in train_users
        assert row["summary"] not in train_answers     # references are never trained on
    for row in _rows(built, "perplexity"):
        user = row["text"].split("<|user|>\n", 1)[1].split(C.EOS, 1)[0]
        assert user not in train_users


def test_pretraining_never_shows_summaries() -> None:
    corpus = C.make_corpus(0)
    summaries = {row["summary"] for row in corpus.files["summarize_test"]}
    text = "\n".join(corpus.pretrain)
    assert "Summary:" not in text
    assert not [s for s in summaries if s in text]


def test_second_call_is_a_noop(built: Path) -> None:
    marker = built / E.BUILD_INFO
    before = marker.stat().st_mtime_ns
    E.build_embedded(built, seed=0, progress=False)
    assert marker.stat().st_mtime_ns == before


def _short_build(root: Path, seed: int = 0) -> Path:
    """A complete build whose pre-training stops after 3 steps (same recipe otherwise)."""
    return E.build_embedded(root, seed=seed, progress=False)


def test_same_seed_is_deterministic(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second full build would cost as much as the first: two 3-step builds exercise the same
    # seeding (initialisation, data order, optimizer) and are compared with each other; data and
    # tokenizer do not depend on the step count and are compared with the full build.
    monkeypatch.setattr(E, "PRETRAIN_STEPS", 3)
    first, second = _short_build(tmp_path / "a"), _short_build(tmp_path / "b")
    assert _data_hashes(first) == _data_hashes(second) == _data_hashes(built)
    assert E.weights_hash(first / "model") == E.weights_hash(second / "model")
    for name in ("tokenizer.json", "config.json"):
        assert (first / "model" / name).read_bytes() == (built / "model" / name).read_bytes()


def test_other_seed_changes_data() -> None:
    a, b = C.make_corpus(0), C.make_corpus(1)
    assert a.files["sft_train"] != b.files["sft_train"]
    assert a.files == C.make_corpus(0).files


def test_concurrent_builds_share_one_result(tmp_path: Path) -> None:
    script = (
        "import sys; import harness.embedded.build as E; E.PRETRAIN_STEPS = 2; "
        "E.build_embedded(sys.argv[1], progress=False)"
    )
    root = tmp_path / "shared"
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(root)], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
    assert E.is_complete(root, seed=0)
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
