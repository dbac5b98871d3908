"""Cached training stages shared by a sweep's trials (SFT before DPO/PPO/GRPO, reward models).

A cached stage's output lives in `<stages_dir>/<stage>-<hash>/` (the spec's `stages_dir`,
normally `sweeps/<sweep>/stages/`) where the hash covers the stage's own resolved config (method
block, data spec, seed), its input stage's hash, the content of its input files (data files,
a local base model) and the harness version and training code that build it; the key is in
`stage.json` and in every trial record's `stages`. A file lock makes parallel trials that need
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
from harness.config.scale import reward_block
from harness.data.preference import preference_rows
from harness.data.sft import sft_rows
from harness.records import TrialSpec, package_versions
from harness.train.modeling import load_base_model, load_trial_model, model_source
from harness.train.reward import train_reward
from harness.train.sft import train_sft

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
STAGE_VERSION = 3   # bump when a stage's output changes for reasons code_digest cannot see


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
    key: dict = field(default_factory=dict)   # what the hash covers (cached_stage)
    resumed_from_step: int = 0   # the checkpoint step its training resumed at (0: from start)


def plain(node) -> object:
    """A config node as plain Python (resolved); anything else as is."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def file_digest(path: Path, whole_below: int = 1 << 26) -> str:
    """sha256 of a file's bytes (files over `whole_below` bytes: of their name and size, so
    model weights in the tens of GB are not read on every trial)."""
    path = Path(path)
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        digest = hashlib.sha256()
        if stat.st_size > whole_below:
            digest.update(f"{path.name}:{stat.st_size}".encode())
        else:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        _DIGESTS[memo] = digest.hexdigest()[:16]
    return _DIGESTS[memo]


_DIGESTS: dict[tuple, str] = {}


def content_digests(paths: list) -> dict[str, str]:
    """{path: content digest} of the local files (or every file of local folders) among
    `paths`; hub ids and unset paths are left out (the config names their revision)."""
    out = {}
    for raw in paths:
        path = Path(str(raw)) if raw else None
        if path is None or not path.exists():
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if ".lock" not in file.name:
                out[str(file)] = file_digest(file)
    return out


def code_digest() -> dict:
    """The harness that builds stages: its version and a digest of the training and data code
    (harness/train, harness/data, this module), so a code change rebuilds cached stages."""
    root = Path(__file__).resolve().parents[1]
    files = sorted([*root.joinpath("train").glob("*.py"), *root.joinpath("data").glob("*.py"),
                    Path(__file__).resolve()])
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + file.read_bytes())
    return {"harness": package_versions().get("harness"), "code": digest.hexdigest()[:16]}


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
                 build: Callable[[Path], dict], inputs: list | None = None) -> Stage:
    """The stage's dir, built by `build(tmp_dir)` once under a lock, else reused. Its key:
    the stage config, its input stage's hash, the content of its input files (`inputs`: data
    files, model folders) and the harness code that builds it (`Stage.key`)."""
    key = {"config": config, "files": content_digests(inputs or []), **code_digest()}
    digest = stage_hash(key, input_hash)
    out = root / f"{name}-{digest}"
    with file_lock(root / f".{name}-{digest}.lock"):
        if (out / STAGE_FILE).exists():
            info = json.loads((out / STAGE_FILE).read_text())
            log.info("stage %s reused from %s", name, out)
            return Stage(name, str(out), digest, True, info.get("seconds", 0.0),
                         extra=info.get("extra", {}), key=info.get("key", key),
                         resumed_from_step=int(info.get("extra", {}).get("resumed_from_step", 0)))
        tmp = root / f".{name}-{digest}.tmp"
        if tmp.is_dir():   # a build cut short (requeue, preemption): its checkpoints resume it
            log.info("stage %s: resuming the half-built %s", name, tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "stage_config.json").write_text(json.dumps(config, indent=2, default=str))
        log.info("stage %s: building %s", name, out)
        start = time.perf_counter()
        extra = build(tmp)
        seconds = time.perf_counter() - start
        info = {"name": name, "hash": digest, "input": input_hash, "seconds": seconds,
                "extra": extra, "key": key}
        (tmp / STAGE_FILE).write_text(json.dumps(info, indent=2, default=str))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return Stage(name, str(out), digest, False, seconds, extra=extra, key=key,
                 resumed_from_step=int(extra.get("resumed_from_step", 0)))


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
    """The reward stage a method trains against: method.reward (ppo/grpo/rloo), else the
    sweep's scorer (scorer_method)."""
    if cfg.method.get("reward") is not None:
        return cfg.method.reward
    return scorer_method(cfg)


def scorer_method(cfg: DictConfig) -> DictConfig:
    """The sweep's scoring reward model config, the same for every method:
    conf/method/_reward.yaml with the scale's reward settings and the
    data.preference.metrics.scorer overrides (harness.config.scale)."""
    root = OmegaConf.create(plain(cfg))
    root._reward = reward_block(cfg)   # + the scale's reward settings (harness.config.scale)
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
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)   # the stage's model is saved
    return {"train_seconds": result.seconds, "steps": result.steps,
            "resumed_from_step": result.resumed_from_step, "loss_history": result.loss_history}


def sft_stage(cfg: DictConfig, root: Path) -> Stage:
    """The SFT stage of a chained method (`method.sft`), built once per sweep."""
    config = {"method": plain(cfg.method.sft), "data": plain(cfg.data.train),
              "eval_loss": plain(cfg.data.get("eval_loss")),
              "max_train_samples": cfg.data.get("max_train_samples"), "seed": int(cfg.seed)}
    inputs = [cfg.data.train.get("path"), (cfg.data.get("eval_loss") or {}).get("path"),
              model_folder(cfg.model)]
    return cached_stage(root, "sft", config, base_hash(cfg), lambda tmp: _build_sft(cfg, tmp),
                        inputs)


def model_folder(model_cfg: DictConfig) -> str | None:
    """The base model's local folder (None for a hub id: its revision is in the config)."""
    return str(model_cfg.path) if model_cfg.get("source") in ("embedded", "local") else None


# ----------------------------------------------------------------------------- reward stage


def reward_stage(cfg: DictConfig, root: Path, sft: Stage | None = None,
                 method: DictConfig | None = None) -> Stage:
    """The reward model stage (from the base, or from `sft` when its init is sft); `method`:
    its config (default reward_method: the one the trial's method trains against)."""
    method = reward_method(cfg) if method is None else method
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
        _tokenizer(init_dir, cfg.model).save_pretrained(tmp / "model")
        shutil.rmtree(tmp / "train", ignore_errors=True)   # checkpoints: the model is saved
        return {"train_seconds": result.seconds, "steps": result.steps, "init": init_dir,
                "resumed_from_step": result.resumed_from_step,
                "loss_history": result.loss_history}

    inputs = [rows_spec.get("path"), None if from_sft else model_folder(cfg.model)]
    return cached_stage(root, "reward", config, input_hash, build, inputs)


def _tokenizer(path: str, model_cfg: DictConfig):
    """The tokenizer at `path` with the model's options (hub revision, trust_remote_code)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(**model_source(model_cfg, path))
