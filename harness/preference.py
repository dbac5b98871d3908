"""Preference data, preference/RL training stages (DPO, reward model, PPO, GRPO) and metrics.

Rows are {prompt, chosen, rejected}: plain strings (prompt = the user message) or chat form
(prompt = list of turns, chosen/rejected = assistant turn(s), or whole chats that start with
the prompt, as in UltraFeedback-binarized). Every row is checked before training: a bad row
raises DataError `file:line: problem`; nothing is dropped silently.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig, OmegaConf

from harness.data import DataError, is_local_file, limit, load_rows

if TYPE_CHECKING:   # harness.train imports transformers' Trainer (seconds): only when training
    from harness.train import LossHistory, TrainResult

log = logging.getLogger(__name__)

FIELDS = ("prompt", "chosen", "rejected")


# ----------------------------------------------------------------------------- data


def _raw_rows(spec: DictConfig) -> list[tuple[str, dict]]:
    """(where, row) pairs: `file:line` for local JSONL, `path[row N]` for other sources."""
    path = str(spec.path)
    if not is_local_file(path):
        return [(f"{path}[row {i}]", r) for i, r in enumerate(load_rows(spec, []), 1)]
    if not Path(path).is_file():
        raise DataError(f"{path}: data file not found")
    out = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object")
            out.append((f"{path}:{number}", row))
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def _text(value) -> str:
    """The text of a field: a string, or the joined contents of a list of chat turns."""
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return "" if value is None else str(value)


def _role(turn) -> str | None:
    return turn.get("role") if isinstance(turn, dict) else None


def _as_turns(value, role: str) -> list[dict]:
    return value if isinstance(value, list) else [{"role": role, "content": str(value)}]


def _split_prompt(row: dict) -> dict:
    """Chat rows without a prompt field (chosen/rejected = whole chats): shared prefix = prompt."""
    if row.get("prompt") not in (None, "", []) or not isinstance(row.get("chosen"), list):
        return row
    chosen, rejected = row["chosen"], row.get("rejected") or []
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return {**row, "prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}


def check_preference_row(where: str, row: dict) -> dict:
    """One validated row in trl's conversational form; DataError names `where` and the problem."""
    row = _split_prompt(row)
    for key in FIELDS:
        if key not in row or row[key] is None:
            raise DataError(f"{where}: missing field '{key}'")
        if not _text(row[key]).strip():
            raise DataError(f"{where}: empty '{key}'")
    if _text(row["chosen"]).strip() == _text(row["rejected"]).strip():
        raise DataError(f"{where}: 'chosen' is identical to 'rejected'")
    if isinstance(row["prompt"], list) and _role(row["prompt"][-1]) == "assistant":
        raise DataError(f"{where}: prompt ends with an assistant turn")
    return {"prompt": _as_turns(row["prompt"], "user"),
            "chosen": _as_turns(row["chosen"], "assistant"),
            "rejected": _as_turns(row["rejected"], "assistant")}


def preference_rows(spec: DictConfig, max_samples: int | None = None) -> list[dict]:
    """Validated conversational preference rows of a spec (every row checked, then capped)."""
    rows = [check_preference_row(where, row) for where, row in _raw_rows(spec)]
    kept = limit(rows, max_samples)
    if len(kept) < len(rows):
        log.info("%s: using %d of %d preference pairs (cap %s)", spec.path, len(kept),
                 len(rows), max_samples)
    return kept


def check_preference_data(data: DictConfig) -> None:
    """Validate data.preference.train/test now (called before any training)."""
    pref = data.get("preference")
    if not pref:
        return
    for key in ("train", "test"):
        if pref.get(key) and pref[key].get("path"):
            preference_rows(pref[key])


def prompt_text(row: dict) -> str:
    """The user text of a conversational row's last prompt turn (what generation is asked)."""
    return str(row["prompt"][-1]["content"])


# ----------------------------------------------------------------------------- trainer args


def _common_args(method: DictConfig, output_dir: Path, seed: int, model_cfg: DictConfig) -> dict:
    """TrainingArguments shared by the DPO, reward, GRPO and PPO configs: the SFT trainer's
    common fields, no checkpoints and no experiment trackers."""
    from harness.train import training_args

    return {**training_args(method.train, model_cfg, output_dir, seed),
            "save_strategy": "no", "report_to": []}


def _steps(train: DictConfig) -> dict:
    from harness.train import step_args

    return step_args(train)


def _run(trainer, history: LossHistory) -> TrainResult:
    from harness.train import TrainResult

    start = time.perf_counter()
    trainer.train()
    return TrainResult(seconds=time.perf_counter() - start, steps=trainer.state.global_step,
                       loss_history=history.rows)


# ----------------------------------------------------------------------------- DPO


def dpo_reference(method: DictConfig) -> str:
    """Which reference model DPO uses for this method (recorded in the trial record)."""
    return "adapter-disabled policy (PEFT, ref_model=None)" if method.peft == "lora" \
        else "frozen copy of the SFT model"


def train_dpo(model, tokenizer, method: DictConfig, model_cfg: DictConfig, rows: list[dict],
              output_dir: Path, seed: int, ref_model=None) -> TrainResult:
    """DPO on a (PEFT or full) policy; full runs pass a frozen `ref_model` copy."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from harness.train import LossHistory

    dpo = method.dpo
    args = DPOConfig(**_common_args(method, output_dir, seed, model_cfg), **_steps(method.train),
                     beta=float(dpo.beta), loss_type=str(dpo.loss_type),
                     max_length=int(dpo.max_length),
                     precompute_ref_log_probs=bool(dpo.get("precompute_ref_log_probs", False)))
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[history])
    return _run(trainer, history)


def frozen_copy(model):
    """A frozen, eval-mode deep copy (the full-weights DPO/PPO reference)."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


# ----------------------------------------------------------------------------- reward model


def load_reward_model(path: str | Path, model_cfg: DictConfig):
    """(sequence classifier with one label, tokenizer) from a model dir; pad id set."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from harness.modeling import DTYPES

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=1, dtype=DTYPES[model_cfg.dtype])
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def train_reward(init_dir: str | Path, method: DictConfig, model_cfg: DictConfig,
                 rows: list[dict], output_dir: Path, seed: int) -> tuple[object, TrainResult]:
    """Train a reward model (full or LoRA) from `init_dir`; returns (merged model, result)."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from harness.train import LossHistory

    model, tokenizer = load_reward_model(init_dir, model_cfg)
    peft_config = None
    if method.peft == "lora":
        from harness.modeling import lora_config

        peft_config = lora_config(method.lora)
        peft_config.task_type, peft_config.modules_to_save = "SEQ_CLS", ["score"]
    rows = [{"chosen": reward_text(tokenizer, prompt_text(r), _text(r["chosen"])),
             "rejected": reward_text(tokenizer, prompt_text(r), _text(r["rejected"]))}
            for r in rows]
    args = RewardConfig(**_common_args(method, output_dir, seed, model_cfg),
                        **_steps(method.train), max_length=int(method.max_length),
                        center_rewards_coefficient=method.get("center_rewards_coefficient"))
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer, peft_config=peft_config,
                            callbacks=[history])
    result = _run(trainer, history)
    trained = trainer.model
    if hasattr(trained, "merge_and_unload"):
        trained = trained.merge_and_unload()
    return trained, result


# ----------------------------------------------------------------------------- PPO / GRPO


def _prompt_dataset(tokenizer, prompts: list[str]):
    """input_ids of chat-rendered prompts with a generation prompt (PPOTrainer's input)."""
    from datasets import Dataset

    ids = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=True,
                                         add_generation_prompt=True, return_dict=False)
           for p in prompts]
    return Dataset.from_dict({"input_ids": [list(map(int, x)) for x in ids]})


def train_ppo(sft_dir: str | Path, reward_dir: str | Path, method: DictConfig,
              model_cfg: DictConfig, prompts: list[str], output_dir: Path,
              seed: int) -> tuple[object, object, TrainResult]:
    """PPO (trl.experimental.ppo) from the SFT policy against the reward stage; value model
    initialized from the reward model. Returns (policy, tokenizer, result)."""
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from harness.modeling import DTYPES, lora_config
    from harness.train import LossHistory, TrainResult

    tokenizer = AutoTokenizer.from_pretrained(str(sft_dir), padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = DTYPES[model_cfg.dtype]
    policy = AutoModelForCausalLM.from_pretrained(str(sft_dir), dtype=dtype)
    lora = method.peft == "lora"
    ref = None if lora else frozen_copy(AutoModelForCausalLM.from_pretrained(str(sft_dir),
                                                                             dtype=dtype))
    reward, _ = load_reward_model(reward_dir, model_cfg)
    value, _ = load_reward_model(reward_dir, model_cfg)
    ppo = method.ppo
    args = PPOConfig(**_common_args(method, output_dir, seed, model_cfg),
                     kl_coef=float(ppo.kl_coef), cliprange=float(ppo.cliprange),
                     vf_coef=float(ppo.vf_coef), response_length=int(ppo.response_length),
                     num_ppo_epochs=int(ppo.num_ppo_epochs),
                     num_mini_batches=int(ppo.num_mini_batches),
                     temperature=float(ppo.temperature),
                     missing_eos_penalty=ppo.get("missing_eos_penalty"),
                     total_episodes=int(ppo.total_episodes), stop_token="eos",
                     local_rollout_forward_batch_size=int(method.train.per_device_train_batch_size),
                     num_sample_generations=0)
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref,
                         reward_model=reward, value_model=value,
                         train_dataset=_prompt_dataset(tokenizer, prompts),
                         peft_config=lora_config(method.lora) if lora else None,
                         callbacks=[history])
    start = time.perf_counter()
    trainer.train()
    result = TrainResult(seconds=time.perf_counter() - start, steps=trainer.state.global_step,
                         loss_history=history.rows)
    trained = getattr(trainer.model, "policy", policy)
    if hasattr(trained, "merge_and_unload"):
        trained = trained.merge_and_unload()
    from transformers import GenerationConfig

    trained.generation_config = GenerationConfig.from_pretrained(str(sft_dir))  # PPO clears eos
    tokenizer.padding_side = "right"
    return trained, tokenizer, result


def train_grpo(model, tokenizer, reward_dir: str | Path, method: DictConfig,
               model_cfg: DictConfig, prompts: list[str], output_dir: Path,
               seed: int) -> TrainResult:
    """GRPO (trl GRPOTrainer) on the SFT policy with the reward stage as reward function."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from harness.train import LossHistory

    reward, reward_tok = load_reward_model(reward_dir, model_cfg)
    grpo = method.grpo
    args = GRPOConfig(**_common_args(method, output_dir, seed, model_cfg),
                      **_steps(method.train), beta=float(grpo.beta),
                      epsilon=float(grpo.epsilon), num_generations=int(grpo.num_generations),
                      max_completion_length=int(grpo.max_completion_length),
                      temperature=float(grpo.temperature), loss_type=str(grpo.loss_type))
    history = LossHistory(Path(output_dir) / "loss.jsonl")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                          processing_class=tokenizer, reward_processing_classes=reward_tok,
                          callbacks=[history])
    return _run(trainer, history)


# ----------------------------------------------------------------------------- metrics


def _chat(tokenizer, prompt: str, answer: str | None) -> str:
    turns = [{"role": "user", "content": prompt}]
    if answer is None:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    turns.append({"role": "assistant", "content": answer})
    return tokenizer.apply_chat_template(turns, tokenize=False)


@torch.inference_mode()
def completion_logprob(model, tokenizer, prompt: str, answers: list[str]) -> list[float]:
    """Summed log-probability of each answer after the chat-rendered prompt."""
    device = next(model.parameters()).device
    n_prompt = len(tokenizer(_chat(tokenizer, prompt, None), add_special_tokens=False).input_ids)
    out = []
    for answer in answers:
        ids = tokenizer(_chat(tokenizer, prompt, answer), add_special_tokens=False,
                        return_tensors="pt").input_ids.to(device)
        logits = model(input_ids=ids).logits[0, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
        out.append(float(logp[n_prompt - 1:].sum()))
    return out


def pref_accuracy(model, tokenizer, rows: list[dict]) -> float:
    """Share of held-out pairs whose chosen answer has a higher log-prob than the rejected."""
    was_training = model.training
    model.eval()
    wins = 0
    for row in rows:
        chosen, rejected = completion_logprob(model, tokenizer, prompt_text(row),
                                              [_text(row["chosen"]), _text(row["rejected"])])
        wins += chosen > rejected
    model.train(was_training)
    return wins / max(1, len(rows))


def reward_text(tokenizer, prompt: str, answer: str) -> str:
    """What the reward model reads: chat-rendered prompt + answer + eos, exactly the tokens a
    PPO rollout holds (query ids, response ids up to and including eos)."""
    return _chat(tokenizer, prompt, None) + answer + tokenizer.eos_token


@torch.inference_mode()
def reward_scores(reward_model, tokenizer, prompts: list[str], answers: list[str],
                  batch_size: int = 16) -> list[float]:
    """Reward-model score of each (prompt, answer) rendered as a chat."""
    reward_model.eval()
    texts = [reward_text(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    side, tokenizer.padding_side = tokenizer.padding_side, "right"
    scores: list[float] = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], add_special_tokens=False, padding=True,
                            truncation=True, max_length=512, return_tensors="pt")
            scores += reward_model(**enc).logits[:, 0].float().tolist()
    finally:
        tokenizer.padding_side = side
    return scores


def generations(model, tokenizer, prompts: list[str], metrics_cfg: DictConfig) -> list[str]:
    """Greedy answers to held-out prompts (harness.evaluate.generate)."""
    from harness.evaluate import generate

    return generate(model, tokenizer, prompts, max_new_tokens=int(metrics_cfg.max_new_tokens),
                    batch_size=int(metrics_cfg.batch_size))


def policy_eval(model, tokenizer, rows: list[dict], prompts: list[str], reward,
                metrics_cfg: DictConfig) -> dict:
    """pref_accuracy, generations, their reward scores and reward_mean for one policy."""
    outs = generations(model, tokenizer, prompts, metrics_cfg)
    scores = reward_scores(reward[0], reward[1], prompts, outs) if reward else []
    return {"pref_accuracy": pref_accuracy(model, tokenizer, rows), "generations": outs,
            "scores": scores, "reward_mean": sum(scores) / len(scores) if scores else None}


def win_rate(scores: list[float], reference: list[float]) -> float:
    """Share of prompts where the trial's answer out-scores the reference's (ties count half)."""
    pairs = list(zip(scores, reference, strict=True))
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / max(1, len(pairs))


def metric_rows(data: DictConfig) -> tuple[list[dict], list[str]]:
    """(held-out pairs for pref_accuracy, held-out prompts for generation)."""
    pref = data.preference
    m = pref.metrics
    rows = preference_rows(pref.test)
    return limit(rows, m.get("max_pairs")), [prompt_text(r) for r in limit(rows, m.max_prompts)]


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) \
        else dict(node)
