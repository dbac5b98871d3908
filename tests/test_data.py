"""Hub configs load through real `datasets` / `transformers` code, tested on local copies."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from harness.config.compose import compose_config as compose
from harness.data.jsonl import load_rows
from harness.data.sft import perplexity_texts, rouge_pairs, sft_rows
from harness.errors import DataError
from harness.train.modeling import load_base_model, load_tokenizer


@pytest.fixture()
def hub_style_copies(tmp_path):
    """Local copies shaped like the hub sets of conf/data/ultrachat_cnn.yaml (splits, fields)."""
    import datasets

    chat = [{"messages": [{"role": "user", "content": f"Say {i}."},
                          {"role": "assistant", "content": f"{i}."}]} for i in range(6)]
    ultrachat = datasets.DatasetDict({"train_sft": datasets.Dataset.from_list(chat),
                                      "test_sft": datasets.Dataset.from_list(chat[:2])})
    ultrachat.save_to_disk(tmp_path / "ultrachat")          # load_from_disk layout
    wiki = tmp_path / "wikitext"                             # a folder of data files: load_dataset
    wiki.mkdir()
    datasets.Dataset.from_list([{"text": "a line of wiki text"}] * 3).to_json(wiki / "test.jsonl")
    cnn = tmp_path / "cnn"
    cnn.mkdir()
    rows = [{"article": "The cat sat.", "highlights": "A cat sat."}] * 2
    datasets.Dataset.from_list(rows).to_parquet(cnn / "test.parquet")
    return tmp_path


def test_hub_data_config_loads_local_copies(hub_style_copies):
    root = hub_style_copies
    cfg = compose(["data=ultrachat_cnn", f"data.train.path={root / 'ultrachat'}",
                   f"data.eval_loss.path={root / 'ultrachat'}",
                   f"data.perplexity.path={root / 'wikitext'}", "data.perplexity.name=null",
                   f"data.rouge.path={root / 'cnn'}", "data.rouge.name=null"])
    assert len(sft_rows(cfg.data.train)) == 6
    assert len(sft_rows(cfg.data.eval_loss)) == 2                       # split test_sft
    assert perplexity_texts(cfg.data.perplexity) == ["a line of wiki text"] * 3
    prompts, refs = rouge_pairs(cfg.data.rouge)
    assert prompts[0].startswith("Summarize the article") and prompts[0].endswith("The cat sat.")
    assert refs == ["A cat sat."] * 2


def test_missing_column_names_the_data_set(hub_style_copies):
    cfg = compose(["data=ultrachat_cnn", f"data.rouge.path={hub_style_copies / 'wikitext'}",
                   "data.rouge.name=null"])
    with pytest.raises(DataError, match="wikitext: missing column"):
        rouge_pairs(cfg.data.rouge)


def test_offline_hub_id_fails_in_one_line_naming_it():
    code = ("from omegaconf import OmegaConf; from harness.data.jsonl import load_rows, DataError\n"
            "try:\n    load_rows(OmegaConf.create({'path': 'no-such-org/no-such-set'}), ['text'])\n"
            "except DataError as exc:\n    print(exc)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    line = out.stdout.strip()
    assert line.startswith("no-such-org/no-such-set: cannot load data set (HF_HUB_OFFLINE is set")
    assert "\n" not in line


def test_hub_model_config_loads_a_local_path(tiny_model_dir):
    cfg = compose(["model=qwen2_5_0_5b", f"model.path={tiny_model_dir}", "model.dtype=float32"])
    tokenizer = load_tokenizer(cfg.model)
    model = load_base_model(cfg.model)
    assert model.config.model_type == "llama" and tokenizer.pad_token is not None


def test_local_jsonl_rows_must_have_fields(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "ok"}\n{"text": ""}\n')
    with pytest.raises(DataError, match=r"p.jsonl:2: missing or empty field 'text'"):
        load_rows(OmegaConf.create({"path": str(path)}), ["text"])
