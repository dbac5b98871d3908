"""`python -m harness action=export`: the chosen trial (default: the best) ready to serve.

Writes under `export.out` (default <paths.reports>/<sweep>/export/<NNNN>/):

- `adapter/` (the LoRA adapter, with `base_model.txt` naming its base) or `model/` (a full
  fine-tune, or the adapter merged into its base with `export.merge=true`, harness.sweep.merge);
- `vllm_serve.sh`: the `vllm serve` command line: the base model with `--enable-lora
  --lora-modules <name>=<adapter> --max-lora-rank <r>` for an adapter, the model folder itself
  otherwise, plus `--served-model-name`, `--max-model-len`, `--dtype`;
- `Modelfile`: an Ollama Modelfile: FROM (the model folder, or the base with ADAPTER), a Go
  TEMPLATE derived from the model's chat template by rendering it around placeholders, its
  stop tokens, and the sampling defaults of `export.*`;
- `train.yaml`: the trial's resolved config as a standalone training config, with the command
  that reruns exactly it;
- `README.txt`: what each file is, and one line about GGUF: converted with llama.cpp's
  `convert_hf_to_gguf.py` when it is installed ($LLAMA_CPP_CONVERT or on PATH; merged or full
  models only), else a line saying it is not.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from harness.config.compose import compose_config, resolve_paths
from harness.errors import ConfigError
from harness.layout import sweep_dir
from harness.records import COMPLETE, read_trial_config
from harness.sweep.merge import ADAPTER_FILE, merge_trial
from harness.sweep.results import SweepData, load_sweep, overrides

# vLLM's accepted --max-lora-rank values (vllm/config/lora.py, MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
GGUF_CONVERTER = "convert_hf_to_gguf.py"
PLACEHOLDER = {"system": "\x00SYSTEM\x00", "user": "\x00USER\x00", "assistant": "\x00ASSISTANT\x00"}


def lora_rank_flag(rank: int) -> int:
    """The smallest value vLLM accepts for --max-lora-rank that holds `rank`."""
    for value in VLLM_LORA_RANKS:
        if value >= rank:
            return value
    raise ConfigError(f"export: LoRA rank {rank} exceeds vLLM's largest --max-lora-rank")


def vllm_command(model: str, name: str, *, adapter: Path | None, rank: int | None,
                 max_len: int | None, dtype: str | None) -> list[str]:
    """`vllm serve` argv (vLLM's documented CLI: serve MODEL [--flags])."""
    cmd = ["vllm", "serve", model]
    if adapter is None:
        cmd += ["--served-model-name", name]
    else:                           # clients ask for the adapter by its --lora-modules name
        cmd += ["--enable-lora", "--lora-modules", f"{name}={adapter}",
                "--max-lora-rank", str(lora_rank_flag(int(rank or 16)))]
    if max_len:
        cmd += ["--max-model-len", str(int(max_len))]
    if dtype in ("float32", "bfloat16", "float16"):
        cmd += ["--dtype", dtype]
    return cmd


def chat_template_parts(tokenizer) -> dict[str, tuple[str, str]]:
    """Each role's text before and after its content, the template's fixed header and the
    generation prompt, found by rendering the chat template around placeholders (alternating
    user/assistant turns, so templates that enforce alternation render too; no Jinja parsing).
    """
    def render(roles: list[str], prompt: bool = False) -> str:
        msgs = [{"role": r, "content": PLACEHOLDER[r]} for r in roles]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)

    one, ua, uau = render(["user"]), render(["user", "assistant"]), render(
        ["user", "assistant", "user"])
    user = uau[len(ua):]
    header = one[: len(one) - len(user)] if one.endswith(user) else ""
    parts = {"header": (header, ""), "user": _split(user, "user"),
             "assistant": _split(ua[len(one):], "assistant"),
             "generation": (render(["user"], True)[len(one):], "")}
    try:
        with_system = render(["system", "user"])
        parts["system"] = _split(with_system[len(header): len(with_system) - len(user)],
                                 "system")
    except Exception:  # noqa: BLE001 - a template without a system role
        pass
    return parts


def _split(piece: str, role: str) -> tuple[str, str]:
    before, found, after = piece.partition(PLACEHOLDER[role])
    if not found:
        raise ConfigError(f"export: the chat template drops {role} messages' content")
    return before, after


def go_template(parts: dict[str, tuple[str, str]]) -> str:
    """An Ollama TEMPLATE (Go text/template over .Messages) equivalent to the chat template."""
    branches = []
    for role in ("system", "user", "assistant"):
        if role in parts:
            before, after = parts[role]
            word = "if" if not branches else "else if"
            branches.append(f'{{{{ {word} eq .Role "{role}" }}}}{before}{{{{ .Content }}}}{after}')
    return (parts["header"][0] + "{{ range .Messages }}" + "".join(branches)
            + "{{ end }}{{ end }}" + parts["generation"][0])


def stop_tokens(tokenizer, parts: dict[str, tuple[str, str]]) -> list[str]:
    """EOS, and the text that opens a new user turn: generation must stop there."""
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    assistant_end = parts.get("assistant", ("", ""))[1].strip()
    user_start = parts.get("user", ("", ""))[0].strip()
    for token in (assistant_end, user_start):
        if token and token not in stops:
            stops.append(token)
    return stops


def modelfile(source: str, adapter: Path | None, template: str, stops: list[str],
              params: dict) -> str:
    """An Ollama Modelfile (docs/modelfile.md: FROM, ADAPTER, TEMPLATE, PARAMETER)."""
    lines = ["# Ollama Modelfile written by `python -m harness action=export`",
             f"FROM {source}"]
    if adapter is not None:
        lines.append(f"ADAPTER {adapter}")
    lines.append(f'TEMPLATE """{template}"""')
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    lines += [f"PARAMETER {k} {v}" for k, v in params.items() if v is not None]
    return "\n".join(lines) + "\n"


def training_yaml(data: SweepData, number: int, cfg) -> str:
    """The trial's resolved config without its `trial:` block, and the command that reruns it."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("trial", None)
    params = next(r.params for r in data.records if r.number == number)
    args = " ".join(shlex.quote(o) for o in overrides(data, params))
    header = (f"# Trial #{number} of sweep {data.name} as a standalone training config.\n"
              f"# Rerun exactly this configuration as a one-trial sweep:\n"
              f"#   python -m harness sweep={data.name} sweep.name={data.name}-{number:04d} "
              f"sweep.n_trials=1 {args}\n")
    return header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def gguf_line(model_dir: Path | None, out: Path) -> str:
    """Convert to GGUF with llama.cpp when its converter is installed; one line either way."""
    converter = os.environ.get("LLAMA_CPP_CONVERT") or shutil.which(GGUF_CONVERTER)
    if not converter:
        return (f"GGUF: not written: llama.cpp's {GGUF_CONVERTER} is not installed (set "
                "LLAMA_CPP_CONVERT to its path to convert).")
    if model_dir is None:
        return "GGUF: not written: an adapter export; use export.merge=true to convert a model."
    target = out / "model.gguf"
    run = subprocess.run([sys.executable, converter, str(model_dir), "--outfile", str(target)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        return f"GGUF: conversion failed: {run.stderr.strip().splitlines()[-1:]}"
    return f"GGUF: {target}"


def export_trial(data: SweepData, settings, out: Path | None = None) -> dict[str, Path]:
    """Write the export files for `settings.trial` (None: the best trial); returns them."""
    from transformers import AutoTokenizer

    number = settings.get("trial")
    record = data.best if number is None else next(
        (r for r in data.records if r.number == int(number) and r.status == COMPLETE), None)
    if record is None:
        raise ConfigError(f"export.trial: no COMPLETE trial {number} in {data.sweep_dir}")
    trial_dir = data.config_path(record.number).parent
    cfg, _ = read_trial_config(trial_dir)
    out = Path(out or settings.get("out") or Path(str(data.cfg.paths.get("reports", "reports")))
               / data.name / "export" / f"{record.number:04d}").expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    saved = trial_dir / "model"
    is_adapter = (saved / ADAPTER_FILE).is_file()
    name = f"{data.name}-{record.number:04d}"
    files: dict[str, Path] = {}
    if is_adapter and not settings.get("merge"):
        adapter = out / "adapter"
        shutil.copytree(saved, adapter, dirs_exist_ok=True)
        base = str(cfg.model.path)
        (adapter / "base_model.txt").write_text(base + "\n")
        rank = json.loads((adapter / ADAPTER_FILE).read_text()).get("r")
        rank = int(settings.get("max_lora_rank") or rank or 16)
        model_dir, source = None, base
        cmd = vllm_command(base, name, adapter=adapter, rank=rank,
                           max_len=cfg.model.get("max_seq_length"), dtype=str(cfg.model.dtype))
        files["adapter"] = adapter
    else:
        model_dir = merge_trial(trial_dir, out / "model") if is_adapter else Path(
            shutil.copytree(saved, out / "model", dirs_exist_ok=True))
        adapter, source = None, str(model_dir)
        cmd = vllm_command(str(model_dir), name, adapter=None, rank=None,
                           max_len=cfg.model.get("max_seq_length"), dtype=str(cfg.model.dtype))
        files["model"] = model_dir
    files["vllm"] = out / "vllm_serve.sh"
    files["vllm"].write_text("#!/bin/sh\n# Serve the exported trial with vLLM (OpenAI-compatible "
                             "API on :8000)\n" + shlex.join(cmd) + "\n")
    tokenizer = AutoTokenizer.from_pretrained(str(saved if (saved / "tokenizer_config.json")
                                                  .is_file() else cfg.model.path))
    parts = chat_template_parts(tokenizer)
    params = {"temperature": settings.get("temperature"), "top_p": settings.get("top_p"),
              "repeat_penalty": settings.get("repeat_penalty"),
              "num_ctx": cfg.model.get("max_seq_length")}
    files["modelfile"] = out / "Modelfile"
    files["modelfile"].write_text(modelfile(source, adapter, go_template(parts),
                                            stop_tokens(tokenizer, parts), params))
    files["train"] = out / "train.yaml"
    files["train"].write_text(training_yaml(data, record.number, cfg))
    files["readme"] = out / "README.txt"
    files["readme"].write_text(
        f"Trial #{record.number} of sweep {data.name} ({record.method}).\n"
        f"vllm_serve.sh: {shlex.join(cmd)}\n"
        f"Modelfile: ollama create {name} -f {files['modelfile']}\n"
        f"train.yaml: the resolved training config\n{gguf_line(model_dir, out)}\n")
    return files


def export(overrides_: list[str]) -> int:
    """The action: export the chosen trial."""
    cfg = resolve_paths(compose_config(overrides_))
    sweep = sweep_dir(cfg)
    if not (sweep / "sweep.yaml").is_file():
        raise ConfigError(f"sweep.name: no sweep at {sweep} to export from")
    data = load_sweep(sweep)
    out = cfg.export.get("out")
    default = Path(str(cfg.paths.reports)) / data.name / "export"
    number = cfg.export.get("trial")
    chosen = number if number is not None else (data.best.number if data.best else None)
    if chosen is None:
        raise ConfigError(f"export: no COMPLETE trial with the objective in {sweep}")
    files = export_trial(data, cfg.export, Path(str(out)) if out else default / f"{chosen:04d}")
    for kind, path in files.items():
        print(f"{kind}: {path}")
    print(files["readme"].read_text().splitlines()[-1])
    return 0
