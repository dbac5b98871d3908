"""Chained training stages (SFT -> DPO, SFT + reward model -> PPO/GRPO) with a per-sweep cache.

A cached stage's output lives in `sweeps/<sweep>/stages/<stage>-<hash>/` where the hash covers
the stage's own resolved config (method block, data spec, seed) and its input stage's hash. A
file lock makes parallel trials that need the same stage wait for one build; later trials
reuse it. A stage dir holds `model/` (a full model: LoRA adapters are merged into the base
before the next stage; QLoRA adapters are merged into the base re-loaded in model dtype) and
`stage.json`. The trial's own last stage (DPO/PPO/GRPO) is not cached: it is the trial.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness import preference as pref
from harness.records import TrialRecord

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
STAGE_VERSION = 2   # bump when a stage's code changes what it produces (invalidates caches)
CHAINED_KINDS = {"dpo", "ppo", "grpo"}


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


def _plain(node) -> object:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def stage_hash(config: dict, input_hash: str | None) -> str:
    """12 hex digits of sha256 over the stage's resolved config and its input's hash."""
    blob = json.dumps({"config": config, "input": input_hash, "version": STAGE_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def stages_root(cfg: DictConfig) -> Path:
    return Path(str(cfg.paths.sweeps)) / str(cfg.sweep.name) / "stages"


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
    return stage_hash({"model": _plain(cfg.model)}, None)


def stage_model_cfg(model_cfg: DictConfig, stage: Stage) -> DictConfig:
    """cfg.model pointing at a stage's saved model."""
    out = OmegaConf.create(_plain(model_cfg))
    out.source, out.path = "local", str(Path(stage.dir) / "model")
    return out


def reward_method(cfg: DictConfig) -> DictConfig:
    """The reward stage config: method.reward (ppo/grpo), else conf/method/_reward.yaml."""
    if cfg.method.get("reward") is not None:
        return cfg.method.reward
    from harness.config import conf_dir

    root = OmegaConf.create(_plain(cfg))
    root._reward = OmegaConf.load(conf_dir() / "method" / "_reward.yaml")
    return OmegaConf.create(_plain(root._reward))


# ----------------------------------------------------------------------------- SFT stage


def merged_model(model, model_cfg: DictConfig, method: DictConfig, work: Path):
    """A plain full model from a trained one: LoRA merged; QLoRA merged into the base
    re-loaded in model dtype (the 4-bit weights are not merged into)."""
    if method.peft != "lora":
        return model
    if method.quantization.get("bits") is None:
        return model.merge_and_unload()
    from peft import PeftModel

    from harness.modeling import load_base_model

    model.save_pretrained(work / "adapter")
    base = load_base_model(model_cfg)
    merged = PeftModel.from_pretrained(base, str(work / "adapter")).merge_and_unload()
    shutil.rmtree(work / "adapter", ignore_errors=True)
    return merged


def _build_sft(cfg: DictConfig, tmp: Path) -> dict:
    from harness import data
    from harness.modeling import load_trial_model
    from harness.train import train_sft

    sft = cfg.method.sft
    model, tokenizer = load_trial_model(cfg.model, sft)
    rows = data.sft_rows(cfg.data.train, cfg.data.get("max_train_samples"))
    spec = cfg.data.get("eval_loss")
    eval_rows = data.sft_rows(spec) if spec and spec.get("path") else None
    result = train_sft(model, tokenizer, sft, cfg.model, rows, eval_rows,
                       output_dir=tmp / "checkpoints", seed=int(cfg.seed), log_dir=tmp)
    merged_model(model, cfg.model, sft, tmp).save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
    return {"train_seconds": result.seconds, "steps": result.steps,
            "loss_history": result.loss_history}


def sft_stage(cfg: DictConfig, root: Path) -> Stage:
    config = {"method": _plain(cfg.method.sft), "data": _plain(cfg.data.train),
              "eval_loss": _plain(cfg.data.get("eval_loss")),
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
    config = {"method": _plain(method), "data": _plain(rows_spec), "seed": int(cfg.seed),
              "max_train_samples": cfg.data.preference.get("max_train_samples")}

    def build(tmp: Path) -> dict:
        rows = pref.preference_rows(rows_spec, cfg.data.preference.get("max_train_samples"))
        model, result = pref.train_reward(init_dir, method, cfg.model, rows, tmp / "train",
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


# ----------------------------------------------------------------------------- chained trials


def run_chained_trial(cfg: DictConfig, trial_dir: Path, record: TrialRecord) -> None:
    """A dpo/ppo/grpo trial: cached SFT (and reward) stages, then the trial's own stage,
    the evaluation battery and the preference metrics."""
    from harness.battery import run_battery
    from harness.modeling import count_parameters

    kind = str(cfg.method.kind)
    if cfg.data.get("preference") is None:
        from harness.data import DataError

        raise DataError(f"method {kind} needs data.preference (train/test preference pairs)")
    pref.check_preference_data(cfg.data)
    root = stages_root(cfg)
    sft = sft_stage(cfg, root)
    chain = [sft]
    if kind == "dpo":
        model, tokenizer, result, extra = _dpo(cfg, sft, trial_dir)
    else:
        reward = reward_stage(cfg, root, sft)
        chain.append(reward)
        model, tokenizer, result, extra = _online(cfg, kind, sft, reward, trial_dir)
    record.trainable_params, record.total_params = count_parameters(model)
    record.train_seconds, record.loss_history = result.seconds, result.loss_history
    record.extra.update(extra, train_steps=result.steps)
    final = Stage(kind, str(trial_dir / "model"), stage_hash(_plain(cfg.method), chain[-1].hash),
                  False, result.seconds)
    record.stages = [asdict(s) for s in [*chain, final]]
    record.extra["stages_reused"] = [s.name for s in chain if s.reused]
    battery = run_battery(model, tokenizer, cfg)
    record.metrics, record.samples = battery.metrics, battery.samples
    record.eval_seconds = battery.seconds
    record.extra.update(battery.extra)
    add_preference_metrics(cfg, model, tokenizer, record, reference=sft)
    model.save_pretrained(trial_dir / "model")
    tokenizer.save_pretrained(trial_dir / "model")
    record.output_dir = str(trial_dir / "model")


def _dpo(cfg: DictConfig, sft: Stage, trial_dir: Path):
    from harness.modeling import load_trial_model

    method = cfg.method
    model, tokenizer = load_trial_model(stage_model_cfg(cfg.model, sft), method)
    ref = None if method.peft == "lora" else pref.frozen_copy(model)
    rows = pref.preference_rows(cfg.data.preference.train,
                                cfg.data.preference.get("max_train_samples"))
    log.info("DPO on %d preference pairs, reference: %s", len(rows), pref.dpo_reference(method))
    result = pref.train_dpo(model, tokenizer, method, cfg.model, rows, trial_dir / "dpo",
                            int(cfg.seed), ref_model=ref)
    return model, tokenizer, result, {"dpo_reference": pref.dpo_reference(method),
                                      "train_pairs": len(rows)}


def _online(cfg: DictConfig, kind: str, sft: Stage, reward: Stage, trial_dir: Path):
    """PPO or GRPO from the SFT stage against the reward stage."""
    rows = pref.preference_rows(cfg.data.preference.train,
                                cfg.data.preference.get("max_train_samples"))
    prompts = [pref.prompt_text(r) for r in rows]
    method, sft_dir = cfg.method, Path(sft.dir) / "model"
    reward_dir = Path(reward.dir) / "model"
    reference = "adapter-disabled policy (PEFT)" if method.peft == "lora" \
        else "frozen copy of the SFT model"
    if kind == "ppo":
        cap = method.ppo.get("max_prompts")
        prompts = prompts[: int(cap)] if cap else prompts
        model, tokenizer, result = pref.train_ppo(sft_dir, reward_dir, method, cfg.model,
                                                  prompts, trial_dir / "ppo", int(cfg.seed))
        return model, tokenizer, result, {"ppo_reference": reference,
                                          "value_model_init": str(reward_dir)}
    from harness.modeling import load_trial_model

    model, tokenizer = load_trial_model(stage_model_cfg(cfg.model, sft), method)
    result = pref.train_grpo(model, tokenizer, reward_dir, method, cfg.model, prompts,
                             trial_dir / "grpo", int(cfg.seed))
    return model, tokenizer, result, {"grpo_reference": reference}


# ----------------------------------------------------------------------------- metrics


def add_preference_metrics(cfg: DictConfig, model, tokenizer, record: TrialRecord,
                           reference: Stage | None = None) -> None:
    """pref_accuracy, reward_mean and win_rate_vs_sft into record.metrics; the reference
    (SFT stage, or the base model for SFT-only trials) figures into record.extra."""
    pdata = cfg.data.get("preference")
    if pdata is None or not pdata.metrics.get("enabled", True):
        record.extra["preference_metrics"] = "skipped: no data.preference or disabled"
        return
    start = time.perf_counter()
    root = stages_root(cfg)
    rows, prompts = pref.metric_rows(cfg.data)
    scorer = reward_stage(cfg, root)
    record.stages.append(asdict(Stage(**{**asdict(scorer), "role": "scoring"})))
    rm = pref.load_reward_model(Path(scorer.dir) / "model", cfg.model)
    ours = pref.policy_eval(model, tokenizer, rows, prompts, rm, pdata.metrics)
    ref = _reference_eval(cfg, root, reference, scorer, rows, prompts, rm)
    name = "sft" if reference is not None else "base"
    record.metrics.update({"pref_accuracy": ours["pref_accuracy"],
                           "reward_mean": ours["reward_mean"],
                           "win_rate_vs_sft": pref.win_rate(ours["scores"], ref["scores"])})
    record.extra.update({f"{name}_pref_accuracy": ref["pref_accuracy"],
                         f"{name}_reward_mean": ref["reward_mean"],
                         "win_rate_reference": name if reference else "base (SFT-only trial)",
                         "preference_samples": [
                             {"prompt": p, "generation": g, "reward": s, f"{name}_reward": r}
                             for p, g, s, r in list(zip(prompts, ours["generations"],
                                                        ours["scores"], ref["scores"],
                                                        strict=True))[:4]]})
    # evaluation time, including the sweep's reward model when this trial had to train it
    record.eval_seconds += time.perf_counter() - start


def _reference_eval(cfg: DictConfig, root: Path, reference: Stage | None, scorer: Stage,
                    rows: list[dict], prompts: list[str], rm) -> dict:
    """The reference policy's preference eval, cached in its stage dir per scorer/settings."""
    settings = stage_hash({"metrics": _plain(cfg.data.preference.metrics),
                           "test": _plain(cfg.data.preference.test)}, scorer.hash)
    folder = Path(reference.dir) if reference else root / f"base-{base_hash(cfg)}"
    folder.mkdir(parents=True, exist_ok=True)

    def build() -> dict:
        from harness.modeling import load_base_model, load_tokenizer

        model_cfg = stage_model_cfg(cfg.model, reference) if reference else cfg.model
        model, tok = load_base_model(model_cfg), load_tokenizer(model_cfg)
        return pref.policy_eval(model, tok, rows, prompts, rm, cfg.data.preference.metrics)

    return cached_json(folder / f"pref_eval-{settings}.json", build)
