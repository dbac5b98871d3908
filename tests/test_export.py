"""action=export: the chosen trial's files, parsed against the formats vLLM and Ollama document
(neither runtime installed): `vllm serve` argv against vLLM's serve flags (an argparse mirror of
the documented ones), the adapter folder peft/vLLM load (adapter_config.json + safetensors),
the Ollama Modelfile against its documented instructions and PARAMETER names, and its Go
TEMPLATE executed (the subset it uses) to give exactly what the model's chat template gives."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from harness.cli import main
from harness.config.compose import compose_config, resolve_paths
from harness.deploy import VLLM_LORA_RANKS, lora_rank_flag
from harness.embedded.build import build_embedded
from harness.records import TrialSpec, write_trial_config
from tests.conftest import REPO
from tests.test_report import make_sweep

# Ollama docs/modelfile.md: instructions and valid PARAMETER names.
OLLAMA_INSTRUCTIONS = {"FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE",
                       "MESSAGE", "REQUIRES"}
OLLAMA_PARAMETERS = {"mirostat": int, "mirostat_eta": float, "mirostat_tau": float,
                     "num_ctx": int, "repeat_last_n": int, "repeat_penalty": float,
                     "temperature": float, "seed": int, "stop": str, "num_predict": int,
                     "top_k": int, "top_p": float, "min_p": float}


def vllm_parser() -> argparse.ArgumentParser:
    """`vllm serve` as its docs list the flags used here (docs: serve_args, LoRA adapters)."""
    p = argparse.ArgumentParser(prog="vllm serve", exit_on_error=False)
    p.add_argument("model_tag")
    p.add_argument("--served-model-name", nargs="+")
    p.add_argument("--enable-lora", action="store_true")
    p.add_argument("--lora-modules", nargs="+")       # name=path or JSON
    p.add_argument("--max-lora-rank", type=int, choices=VLLM_LORA_RANKS)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--dtype", choices=["auto", "half", "float16", "bfloat16", "float",
                                       "float32"])
    return p


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(instruction, argument) pairs; triple-quoted arguments may span lines."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        word, _, arg = line.partition(" ")
        assert word.upper() in OLLAMA_INSTRUCTIONS, word
        if arg.startswith('"""'):
            body = arg[3:]
            while '"""' not in body:
                body += "\n" + lines[i]
                i += 1
            arg, rest = body.split('"""', 1)
            assert not rest.strip()
        out.append((word.upper(), arg))
    return out


def run_go_template(template: str, messages: list[dict]) -> str:
    """Execute the Go text/template subset an exported TEMPLATE uses: text, `range .Messages`,
    `if` / `else if` `eq .Role "x"`, `.Content`, `end` (nested blocks)."""
    tokens = re.split(r"(\{\{-?\s*.*?\s*-?\}\})", template)
    out: list[str] = []

    def holds(action: str, msg: dict | None) -> bool:
        role = re.fullmatch(r'(?:else )?if eq \.Role "(\w+)"', action)
        assert role, f"unexpected condition {action!r}"
        return msg is not None and msg["role"] == role.group(1)

    def run(pos: int, msg: dict | None, emit: bool) -> tuple[int, str]:
        while pos < len(tokens):
            tok = tokens[pos]
            pos += 1
            if not tok.startswith("{{"):
                if emit:
                    out.append(tok)
                continue
            action = tok[2:-2].strip("- ").strip()
            if action == ".Content":
                if emit:
                    out.append(msg["content"])
            elif action == "range .Messages":
                start, end = pos, None
                for m in messages if emit else []:
                    end, _ = run(start, m, True)
                pos = end if end is not None else run(start, None, False)[0]
            elif action.startswith("if "):
                taken, cond = False, holds(action, msg)
                while True:
                    pos, stop = run(pos, msg, emit and cond and not taken)
                    taken |= cond
                    if stop == "end":
                        break
                    cond = holds(stop, msg)
            elif action.startswith("else if ") or action == "end":
                return pos, action
            else:
                raise AssertionError(f"unexpected template action {action!r}")
        return pos, "eof"

    assert run(0, None, True)[1] == "eof"
    return "".join(out)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A sweep whose best trial holds a real LoRA adapter on the embedded model; exported."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("export")
    embedded = Path(os.environ.get("HARNESS_CACHE", REPO / ".cache" / "harness")) / "embedded-v2"
    build_embedded(embedded)
    sweep = make_sweep(root, 3, storage="journal")
    best = min(((json.loads((d / "result.json").read_text()), d)
                for d in (sweep / "trials").iterdir() if (d / "result.json").is_file()),
               key=lambda t: t[0]["metrics"]["perplexity"])[1]
    cfg = resolve_paths(compose_config([f"paths.cache={embedded.parent}",
                                        f"paths.sweeps={root / 'sweeps'}",
                                        f"paths.reports={root / 'reports'}"]))
    write_trial_config(best, cfg, TrialSpec(number=int(best.name), params=json.loads(
        (best / "result.json").read_text())["params"], seed=42, dir=str(best.resolve())))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded / "model")
    peft = get_peft_model(model, LoraConfig(r=12, lora_alpha=24, target_modules="all-linear"))
    peft.save_pretrained(best / "model")
    AutoTokenizer.from_pretrained(embedded / "model").save_pretrained(best / "model")
    assert main([f"paths.sweeps={root / 'sweeps'}", f"paths.reports={root / 'reports'}",
                 f"paths.cache={embedded.parent}", "sweep.name=synthetic",
                 "action=export"]) == 0
    return root / "reports" / "synthetic" / "export" / best.name, embedded, best


def test_vllm_command_parses_with_vllms_flags(exported) -> None:
    out, embedded, best = exported
    script = (out / "vllm_serve.sh").read_text().splitlines()
    assert script[0] == "#!/bin/sh"
    argv = shlex.split(script[-1])
    assert argv[:2] == ["vllm", "serve"]
    args = vllm_parser().parse_args(argv[2:])
    assert args.model_tag == str(embedded / "model")            # the base model id
    assert args.enable_lora and args.max_lora_rank == 16        # rank 12 -> vLLM's 16
    name, path = args.lora_modules[0].split("=", 1)
    assert name == f"synthetic-{best.name}" and Path(path) == out / "adapter"
    adapter = json.loads((Path(path) / "adapter_config.json").read_text())
    assert adapter["r"] == 12 and adapter["peft_type"] == "LORA"
    assert (Path(path) / "adapter_model.safetensors").is_file()
    assert (Path(path) / "base_model.txt").read_text().strip() == str(embedded / "model")
    assert args.max_model_len == 256 and args.dtype == "float32"


def test_lora_rank_flag() -> None:
    assert [lora_rank_flag(r) for r in (1, 4, 8, 9, 64, 300)] == [1, 8, 8, 16, 64, 320]


def test_ollama_modelfile_follows_the_documented_format(exported) -> None:
    from transformers import AutoTokenizer

    out, embedded, _ = exported
    pairs = parse_modelfile((out / "Modelfile").read_text())
    names = [n for n, _ in pairs]
    assert names[0] == "FROM" and names.count("TEMPLATE") == 1
    assert dict(pairs)["FROM"] == str(embedded / "model")
    assert Path(dict(pairs)["ADAPTER"]) == out / "adapter"
    params = [a.split(" ", 1) for n, a in pairs if n == "PARAMETER"]
    for key, value in params:
        kind = OLLAMA_PARAMETERS[key]                             # a documented parameter
        kind(json.loads(value)) if kind is str else kind(value)
    stops = [json.loads(v) for k, v in params if k == "stop"]
    assert "<|end|>" in stops and "<|user|>" in stops
    assert dict(params)["temperature"] == "0.7" and dict(params)["num_ctx"] == "256"
    # the Go template renders a conversation exactly as the chat template does
    template = dict(pairs)["TEMPLATE"]
    tokenizer = AutoTokenizer.from_pretrained(embedded / "model")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <b>"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Sort: b, a"}]
    expected = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert run_go_template(template, chat) == expected


def test_training_yaml_and_gguf_line(exported) -> None:
    out, _, best = exported
    text = (out / "train.yaml").read_text()
    config = yaml.safe_load(text)
    assert "trial" not in config and config["method"]["name"] and config["model"]["path"]
    command = next(line for line in text.splitlines() if "python -m harness" in line)
    assert f"sweep.name=synthetic-{best.name}" in command and "sweep.n_trials=1" in command
    assert OmegaConf.create(config).seed == 42
    readme = (out / "README.txt").read_text()
    assert readme.splitlines()[-1].startswith("GGUF: not written")


def test_merged_export_serves_the_model_folder(exported, tmp_path) -> None:
    out, embedded, best = exported
    sweeps = best.parent.parent.parent
    merged = tmp_path / "merged"
    assert main([f"paths.sweeps={sweeps}", f"paths.reports={tmp_path}",
                 f"paths.cache={embedded.parent}", "sweep.name=synthetic", "action=export",
                 "export.merge=true", f"export.out={merged}"]) == 0
    args = vllm_parser().parse_args(shlex.split(
        (merged / "vllm_serve.sh").read_text().splitlines()[-1])[2:])
    assert args.model_tag == str(merged / "model") and not args.enable_lora
    assert args.lora_modules is None and args.served_model_name == [f"synthetic-{best.name}"]
    assert (merged / "model" / "config.json").is_file()
    assert list((merged / "model").glob("*.safetensors"))
    pairs = dict(parse_modelfile((merged / "Modelfile").read_text()))
    assert pairs["FROM"] == str(merged / "model") and "ADAPTER" not in pairs
