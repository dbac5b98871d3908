"""Cached training stages shared by a sweep's trials (SFT before DPO/PPO/GRPO, reward models).

A cached stage's output lives in `<stages_dir>/<stage>-<hash>/` (the spec's `stages_dir`,
normally `sweeps/<sweep>/stages/`) where the hash covers the stage's own resolved config (method
block, data spec, seed) and its input stage's hash. A file lock makes parallel trials that need
the same stage wait for one build; later trials reuse it. A stage dir holds `model/` (a full
model: LoRA adapters are merged into the base before the next stage; QLoRA adapters are merged
into the base re-loaded in model dtype) and `stage.json`. The trial's own last stage
(DPO/PPO/GRPO) is not cached: it is the trial.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness import layout
from harness.config.compose import conf_dir
from harness.data.preference import preference_rows
from harness.data.sft import sft_rows
from harness.records import TrialSpec
from harness.train.modeling import load_base_model, load_trial_model
from harness.train.reward import train_reward
from harness.train.sft import train_sft

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
STAGE_VERSION = 2   # bump when a stage's code changes what it produces (invalidates caches)


@dataclass
class Stage:
    """One stage of a trial's chain, as recorded in `record.stages`."""

    name: str
    dir: str
    hash: str
    reused: bool
    seconds: float = 0.0
    role: str = "chain"
    extra: dict = field(default_factory=dict)


def plain(node) -> object:
    """A config node as plain Python (resolved); anything else as is."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def stage_hash(config: dict, input_hash: str | None) -> str:
    """12 hex digits of sha256 over the stage's resolved config and its input's hash."""
    blob = json.dumps({"config": config, "input": input_hash, "version": STAGE_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def stages_root(cfg: DictConfig, spec: TrialSpec) -> Path:
    """Where the sweep's stages are cached: the spec's stages_dir, else the sweep's stages/."""
    if spec.stages_dir:
        return Path(spec.stages_dir)
    return layout.stages_dir(layout.sweep_dir(cfg))


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) held for the block; waits for other holders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_stage(root: Path, name: str, config: dict, input_hash: str | None,
                 build: Callable[[Path], dict]) -> Stage:
    """The stage's dir, built by `build(tmp_dir)` once under a lock, else reused."""
    digest = stage_hash(config, input_hash)
    out = root / f"{name}-{digest}"
    with file_lock(root / f".{name}-{digest}.lock"):
        if (out / STAGE_FILE).exists():
            info = json.loads((out / STAGE_FILE).read_text())
            log.info("stage %s reused from %s", name, out)
            return Stage(name, str(out), digest, True, info.get("seconds", 0.0),
                         extra=info.get("extra", {}))
        tmp = root / f".{name}-{digest}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "stage_config.json").write_text(json.dumps(config, indent=2, default=str))
        log.info("stage %s: building %s", name, out)
        start = time.perf_counter()
        extra = build(tmp)
        seconds = time.perf_counter() - start
        info = {"name": name, "hash": digest, "input": input_hash, "seconds": seconds,
                "extra": extra}
        (tmp / STAGE_FILE).write_text(json.dumps(info, indent=2, default=str))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return Stage(name, str(out), digest, False, seconds, extra=extra)


def cached_json(path: Path, build: Callable[[], dict]) -> dict:
    """A JSON file computed once under a lock (reference evaluations of a stage)."""
    with file_lock(path.with_name(f".{path.name}.lock")):
        if path.exists():
            return json.loads(path.read_text())
        value = build()
        path.write_text(json.dumps(value, default=str))
        return value


# ----------------------------------------------------------------------------- stage configs


def base_hash(cfg: DictConfig) -> str:
    """Identity of the base model (the input of the first stage)."""
    return stage_hash({"model": plain(cfg.model)}, None)


def stage_model_cfg(model_cfg: DictConfig, stage: Stage) -> DictConfig:
    """cfg.model pointing at a stage's saved model."""
    out = OmegaConf.create(plain(model_cfg))
    out.source, out.path = "local", str(Path(stage.dir) / "model")
    return out


def reward_method(cfg: DictConfig) -> DictConfig:
    """The reward stage config: method.reward (ppo/grpo), else conf/method/_reward.yaml."""
    if cfg.method.get("reward") is not None:
        return cfg.method.reward
    root = OmegaConf.create(plain(cfg))
    root._reward = OmegaConf.load(conf_dir() / "method" / "_reward.yaml")
    return OmegaConf.create(plain(root._reward))


# ----------------------------------------------------------------------------- SFT stage


def merged_model(model, model_cfg: DictConfig, method: DictConfig, work: Path):
    """A plain full model from a trained one: LoRA merged; QLoRA merged into the base
    re-loaded in model dtype (the 4-bit weights are not merged into)."""
    if method.peft != "lora":
        return model
    if method.quantization.get("bits") is None:
        return model.merge_and_unload()
    from peft import PeftModel

    model.save_pretrained(work / "adapter")
    base = load_base_model(model_cfg)
    merged = PeftModel.from_pretrained(base, str(work / "adapter")).merge_and_unload()
    shutil.rmtree(work / "adapter", ignore_errors=True)
    return merged


def _build_sft(cfg: DictConfig, tmp: Path) -> dict:
    sft = cfg.method.sft
    model, tokenizer = load_trial_model(cfg.model, sft)
    rows = sft_rows(cfg.data.train, cfg.data.get("max_train_samples"))
    spec = cfg.data.get("eval_loss")
    eval_rows = sft_rows(spec) if spec and spec.get("path") else None
    result = train_sft(model, tokenizer, sft, cfg.model, rows, eval_rows,
                       output_dir=tmp / "checkpoints", seed=int(cfg.seed), log_dir=tmp)
    merged_model(model, cfg.model, sft, tmp).save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
    return {"train_seconds": result.seconds, "steps": result.steps,
            "loss_history": result.loss_history}


def sft_stage(cfg: DictConfig, root: Path) -> Stage:
    """The SFT stage of a chained method (`method.sft`), built once per sweep."""
    config = {"method": plain(cfg.method.sft), "data": plain(cfg.data.train),
              "eval_loss": plain(cfg.data.get("eval_loss")),
              "max_train_samples": cfg.data.get("max_train_samples"), "seed": int(cfg.seed)}
    return cached_stage(root, "sft", config, base_hash(cfg), lambda tmp: _build_sft(cfg, tmp))


# ----------------------------------------------------------------------------- reward stage


def reward_stage(cfg: DictConfig, root: Path, sft: Stage | None = None) -> Stage:
    """The reward model stage (from the base, or from `sft` when method init is sft)."""
    method = reward_method(cfg)
    rows_spec = cfg.data.preference.train
    from_sft = method.get("init", "base") == "sft"
    if from_sft and sft is None:
        sft = sft_stage(cfg, root)
    init_dir = str(Path(sft.dir) / "model") if from_sft else str(cfg.model.path)
    input_hash = sft.hash if from_sft else base_hash(cfg)
    config = {"method": plain(method), "data": plain(rows_spec), "seed": int(cfg.seed),
              "max_train_samples": cfg.data.preference.get("max_train_samples")}

    def build(tmp: Path) -> dict:
        rows = preference_rows(rows_spec, cfg.data.preference.get("max_train_samples"))
        model, result = train_reward(init_dir, method, cfg.model, rows, tmp / "train",
                                     int(cfg.seed))
        model.save_pretrained(tmp / "model")
        _tokenizer(init_dir).save_pretrained(tmp / "model")
        shutil.rmtree(tmp / "train", ignore_errors=True)
        return {"train_seconds": result.seconds, "steps": result.steps, "init": init_dir,
                "loss_history": result.loss_history}

    return cached_stage(root, "reward", config, input_hash, build)


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
