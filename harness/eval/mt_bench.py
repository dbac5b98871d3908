"""MT-Bench on a model in memory: two-turn answers, single-answer grading by an LLM judge.

Follows FastChat's llm_judge (Apache-2.0) step by step, without importing its judge code
(which needs `anthropic` and the pre-1.0 openai API):

- answers: each question's turns in one conversation, rendered with the model's chat template
  (fschat's conversation template `conv_template` for models without one), sampled at
  FastChat's per-category temperature (greedy at 0), seeded per question; written as
  FastChat's `model_answer/<model_id>.jsonl`;
- judging: `single-v1` for turn 1 and `single-v1-multi-turn` for turn 2, the reference-guided
  `single-math-v1(-multi-turn)` for math, reasoning and coding (references from a file in
  FastChat's answer format); written as FastChat's `model_judgment/<judge>_single.jsonl`;
- scores: mean rating per turn, per category and overall, ratings of -1 (unparseable or judge
  error) excluded and counted, as FastChat's show_result does.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.jsonl import jsonl_lines
from harness.errors import DataError
from harness.eval.batched import greedy_dialogues
from harness.eval.judge import (
    NO_RATING,
    JudgeClient,
    JudgeReply,
    JudgeRequest,
    cache_key,
    sha256,
)
from harness.eval.judge_server import judge_endpoint
from harness.progress import LogTqdm
from harness.records import TrialSpec

log = logging.getLogger(__name__)

# FastChat's sampling temperature per category (fastchat/llm_judge/common.py).
CATEGORY_TEMPERATURE = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
    "reasoning": 0.0, "stem": 0.1, "humanities": 0.1, "arena-hard-200": 0.0,
}
DEFAULT_TEMPERATURE = 0.7
NEED_REF_CATS = ("math", "reasoning", "coding", "arena-hard-200")
DEFAULT_PROMPTS = {"single": "single-v1", "single_ref": "single-math-v1",
                   "multi": "single-v1-multi-turn", "multi_ref": "single-math-v1-multi-turn"}


class MTBenchError(DataError):
    """Bad MT-Bench input (question, reference or prompt file); names the file and line."""


@dataclass
class Match:
    """One grading: a question's turn 1 (single) or turn 2 (multi-turn) answer."""

    question: dict
    answer: dict
    prompt: dict
    turn: int
    reference: dict | None = None


@dataclass
class MTBenchResult:
    """Metrics, the FastChat-format rows written, and notes for the record."""

    metrics: dict = field(default_factory=dict)
    answers: list = field(default_factory=list)
    judgments: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------- inputs


def read_jsonl(path: str | Path, required: tuple[str, ...]) -> list[dict]:
    """Rows of a JSONL file (harness.data.jsonl, the one JSONL reader); a bad line raises
    MTBenchError naming file and line."""
    rows = []
    try:
        for where, row in jsonl_lines(Path(path)):
            missing = [k for k in required if k not in row]
            if missing:
                raise MTBenchError(f"{where}: missing field(s) {missing}")
            rows.append(row)
    except MTBenchError:
        raise
    except DataError as exc:
        raise MTBenchError(str(exc)) from None
    return rows


def load_questions(path, limit: int | None = None,
                   categories: list[str] | None = None) -> list[dict]:
    """FastChat questions (`question_id`, `category`, `turns`), filtered, first `limit`."""
    rows = read_jsonl(path, ("question_id", "category", "turns"))
    if categories:
        rows = [r for r in rows if r["category"] in set(categories)]
    return rows[: int(limit)] if limit else rows


def load_references(path) -> dict:
    """Reference answers by question id (FastChat model-answer format), {} if no path."""
    if not path:
        return {}
    return {r["question_id"]: r for r in read_jsonl(path, ("question_id", "choices"))}


def load_judge_prompts(path) -> dict[str, dict]:
    """FastChat judge prompts by name (judge_prompts.jsonl)."""
    rows = read_jsonl(path, ("name", "system_prompt", "prompt_template", "output_format"))
    return {r["name"]: r for r in rows}


# ------------------------------------------------------------------------------- answers


def temperature_for(category: str, override: float | None = None) -> float:
    """FastChat's temperature for a category (0.7 for unknown ones), unless overridden."""
    if override is not None:
        return float(override)
    return CATEGORY_TEMPERATURE.get(category, DEFAULT_TEMPERATURE)


class Conversation:
    """Renders a growing conversation: the tokenizer's chat template, else an fschat template."""

    def __init__(self, tokenizer, conv_template: str = "vicuna_v1.1"):
        self.tokenizer = tokenizer
        self.messages: list[dict] = []
        self.conv = None
        if getattr(tokenizer, "chat_template", None) is None:
            from fastchat.conversation import get_conv_template

            self.conv = get_conv_template(conv_template)

    @property
    def stop_str(self):
        return self.conv.stop_str if self.conv is not None else None

    def prompt(self, user: str) -> tuple[str, bool]:
        """Add a user turn; the text to generate from and whether to add special tokens."""
        self.messages.append({"role": "user", "content": user})
        if self.conv is None:
            text = self.tokenizer.apply_chat_template(self.messages, tokenize=False,
                                                      add_generation_prompt=True)
            return text, False
        self.conv.append_message(self.conv.roles[0], user)
        self.conv.append_message(self.conv.roles[1], None)
        return self.conv.get_prompt(), True

    def reply(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})
        if self.conv is not None:
            self.conv.update_last_message(text)


def _eos_ids(model, tokenizer) -> list[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = tokenizer.eos_token_id if eos is None else eos
    ids = list(eos) if isinstance(eos, list | tuple) else [eos]
    return [i for i in ids if i is not None]


def _clean(text: str, tokenizer, stop_str) -> str:
    """FastChat's post-processing: cut at the stop string, drop special tokens, strip."""
    stops = stop_str if isinstance(stop_str, list) else [stop_str] if stop_str else []
    cuts = [text.find(s) for s in stops if text.find(s) > 0]
    if cuts:
        text = text[: min(cuts)]
    for token in tokenizer.all_special_tokens:
        text = text.replace(token, "")
    return text.strip()


def generate_turn(model, tokenizer, text: str, add_special: bool, *, temperature: float,
                  max_new_tokens: int, stop_str=None) -> str:
    """One answer: sampled at `temperature` (greedy below 1e-4), new tokens only."""
    import torch

    device = model.get_input_embeddings().weight.device
    enc = tokenizer(text, add_special_tokens=add_special, return_tensors="pt").to(device)
    sample = temperature >= 1e-4
    kwargs = {"do_sample": True, "temperature": temperature} if sample else {"do_sample": False}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=pad,
                             eos_token_id=_eos_ids(model, tokenizer) or None, **kwargs)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    text_out = tokenizer.decode(new, skip_special_tokens=False)
    return _clean(text_out, tokenizer, stop_str)


def answer_question(model, tokenizer, question: dict, *, max_new_tokens: int, seed: int,
                    conv_template: str, temperature: float | None = None) -> list[str]:
    """All turns of one question in one conversation (FastChat's gen_model_answer loop)."""
    import torch

    torch.manual_seed(seed + int(_numeric_id(question["question_id"])))
    temp = temperature_for(question["category"], temperature)
    conv, turns = Conversation(tokenizer, conv_template), []
    for user in question["turns"]:
        text, add_special = conv.prompt(user)
        output = generate_turn(model, tokenizer, text, add_special, temperature=temp,
                               max_new_tokens=max_new_tokens, stop_str=conv.stop_str)
        conv.reply(output)
        turns.append(output)
    return turns


def _numeric_id(question_id) -> int:
    try:
        return int(question_id)
    except (TypeError, ValueError):
        return int(sha256(str(question_id))[:8], 16)


def generate_answers(model, tokenizer, questions: list[dict], *, model_id: str,
                     max_new_tokens: int, seed: int = 0, conv_template: str = "vicuna_v1.1",
                     temperature: float | None = None, batch_size: int = 1) -> list[dict]:
    """FastChat model-answer rows for every question (model put in eval mode). Greedy
    questions (temperature 0) are answered together in batches of `batch_size`
    (harness.eval.batched: the same answers); sampled ones one by one, seeded per question."""
    was_training = model.training
    model.eval()
    try:
        greedy = [q for q in questions if batch_size > 1
                  and temperature_for(q["category"], temperature) < 1e-4]
        together = dict(zip((q["question_id"] for q in greedy), greedy_dialogues(
            model, tokenizer, [q["turns"] for q in greedy],
            lambda: Conversation(tokenizer, conv_template),
            lambda new, conv: _clean(tokenizer.decode(new, skip_special_tokens=False),
                                     tokenizer, conv.stop_str),
            max_new_tokens=max_new_tokens, batch_size=batch_size,
            eos_ids=_eos_ids(model, tokenizer)), strict=True))
        rows = []
        for question in LogTqdm(questions, desc="mt_bench answers", unit="question"):
            turns = together.get(question["question_id"]) or answer_question(
                model, tokenizer, question, max_new_tokens=max_new_tokens, seed=seed,
                conv_template=conv_template, temperature=temperature)
            rows.append({"question_id": question["question_id"],
                         "answer_id": uuid.uuid4().hex[:22], "model_id": model_id,
                         "choices": [{"index": 0, "turns": turns}], "tstamp": time.time()})
        return rows
    finally:
        model.train(was_training)


# ------------------------------------------------------------------------------- judging


def make_matches(questions: list[dict], answers: dict, references: dict, prompts: dict,
                 names: dict | None = None,
                 ref_categories=NEED_REF_CATS) -> tuple[list[Match], list]:
    """FastChat's single-mode matches: turn 1 and (two-turn questions) turn 2, reference-guided
    prompts for reference categories. Returns (matches, question ids missing a reference)."""
    names = {**DEFAULT_PROMPTS, **(names or {})}
    for key, name in names.items():
        if name not in prompts:
            raise MTBenchError(f"judge prompts have no '{name}' (mt_bench.prompts.{key}); "
                               f"available: {sorted(prompts)}")
    matches, missing = [], []
    for question in questions:
        qid = question["question_id"]
        ref = references.get(qid) if question["category"] in set(ref_categories) else None
        if question["category"] in set(ref_categories) and ref is None:
            missing.append(qid)
        single, multi = ("single_ref", "multi_ref") if ref else ("single", "multi")
        answer = answers[qid]
        matches.append(Match(question, answer, prompts[names[single]], 1, ref))
        if len(question["turns"]) >= 2:
            matches.append(Match(question, answer, prompts[names[multi]], 2, ref))
    return matches, missing


def answer_questions(model, tokenizer, mt, model_id: str,
                     out_dir: Path) -> tuple[list[dict], MTBenchResult]:
    """The configured questions (`eval.mt_bench`: limit, categories) and the model's answers
    to them, written as FastChat's answer file; shared by single and pairwise grading."""
    questions = load_questions(mt.question_path, mt.get("limit"), mt.get("categories"))
    if not questions:
        raise MTBenchError(f"{mt.question_path}: no questions left after limit/categories")
    answers = generate_answers(model, tokenizer, questions, model_id=model_id,
                               max_new_tokens=int(mt.max_new_tokens), seed=int(mt.get("seed", 0)),
                               conv_template=str(mt.get("conv_template", "vicuna_v1.1")),
                               temperature=mt.get("temperature"),
                               batch_size=int(mt.get("batch_size", 1)))
    result = MTBenchResult(answers=answers)
    result.extra["answer_file"] = str(write_jsonl(answer_path(out_dir, model_id), answers))
    return questions, result


def reference_kwargs(reference: dict | None, turn: int) -> dict[str, str]:
    """The reference answers a judge prompt is formatted with (FastChat's ref_answer_1/2)."""
    if reference is None:
        return {}
    ref = reference["choices"][0]["turns"]
    return {"ref_answer_1": ref[0], **({"ref_answer_2": ref[1]} if turn == 2 else {})}


def render(match: Match) -> tuple[str, str]:
    """(system prompt, user prompt) exactly as FastChat's run_judge_single builds them."""
    kwargs = reference_kwargs(match.reference, match.turn)
    q, a = match.question["turns"], match.answer["choices"][0]["turns"]
    template = match.prompt["prompt_template"]
    if match.turn == 2:
        user = template.format(question_1=q[0], question_2=q[1], answer_1=a[0], answer_2=a[1],
                               **kwargs)
    else:
        user = template.format(question=q[0], answer=a[0], **kwargs)
    return match.prompt["system_prompt"], user


def judge_request(match: Match, judge_model: str) -> JudgeRequest:
    """The cached request for a match (key: question, turn, answer, judge, prompt name)."""
    system, user = render(match)
    answer_turns = match.answer["choices"][0]["turns"][: match.turn]
    key = cache_key(match.question["question_id"], match.turn, sha256(json.dumps(answer_turns)),
                    judge_model, match.prompt["name"], sha256(system + "\0" + user))
    return JudgeRequest(key=key, system_prompt=system, user_prompt=user)


def judgment_row(match: Match, request: JudgeRequest, reply: JudgeReply, model_id: str,
                 judge_model: str) -> dict:
    """A row of FastChat's model_judgment/<judge>_single.jsonl."""
    return {"question_id": match.question["question_id"], "model": model_id,
            "judge": [judge_model, match.prompt["name"]], "user_prompt": request.user_prompt,
            "judgment": reply.judgment, "score": reply.score, "turn": match.turn,
            "tstamp": time.time()}


def judge_matches(client: JudgeClient, matches: list[Match], model_id: str,
                  judge_model: str) -> tuple[list[dict], list[JudgeReply]]:
    """Judge every match through the client (cache first); rows in match order."""
    requests = [judge_request(m, judge_model) for m in matches]
    replies = client.judge_many(requests)
    rows = [judgment_row(m, r, p, model_id, judge_model)
            for m, r, p in zip(matches, requests, replies, strict=True)]
    return rows, replies


# ------------------------------------------------------------------------------- scores


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def scores(judgments: list[dict], categories: dict) -> dict[str, float]:
    """mt_bench/score, turn1, turn2, <category>: means of valid ratings (score != -1)."""
    valid = [j for j in judgments if j["score"] != NO_RATING and not math.isnan(j["score"])]
    metrics: dict[str, float] = {}
    pairs = [("score", valid)] + [(f"turn{t}", [j for j in valid if j["turn"] == t])
                                  for t in (1, 2)]
    for category in sorted(set(categories.values())):
        pairs.append((_safe(category),
                      [j for j in valid if categories.get(j["question_id"]) == category]))
    for name, rows in pairs:
        mean = _mean([float(j["score"]) for j in rows])
        if mean is not None:
            metrics[f"mt_bench/{name}"] = mean
    metrics["mt_bench/judged"] = float(len(valid))
    return metrics


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))


def count_metrics(replies: list[JudgeReply], client: JudgeClient) -> dict[str, float]:
    """Unparseable ratings, judge errors and what the client sent (requests, cache hits)."""
    stats = client.stats
    return {"mt_bench/unparseable": float(sum(r.error is None and r.score == NO_RATING
                                              for r in replies)),
            "mt_bench/judge_errors": float(sum(r.error is not None for r in replies)),
            "mt_bench/judge_requests": float(stats.requests),
            "mt_bench/judge_cache_hits": float(stats.cache_hits)}


# ------------------------------------------------------------------------------- files


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows atomically (a re-run replaces the file, never appends duplicates)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def judge_file_name(judge_model: str) -> str:
    """FastChat names judgments `<judge>_single.jsonl`; a path-like judge uses its last part."""
    name = Path(judge_model).name if "/" in judge_model else judge_model
    return f"{_safe(name)}_single.jsonl"


def answer_path(out_dir: Path, model_id: str) -> Path:
    return out_dir / "model_answer" / f"{_safe(model_id)}.jsonl"


def judgment_path(out_dir: Path, judge_model: str) -> Path:
    return out_dir / "model_judgment" / judge_file_name(judge_model)


# ------------------------------------------------------------------------------- run


def run_mt_bench(model, tokenizer, cfg, out_dir: str | Path, model_id: str,
                 spec: TrialSpec | None = None) -> MTBenchResult:
    """Answer, judge and score MT-Bench as `cfg.eval.mt_bench` / `cfg.eval.judge` say (the
    judge: the spec's sweep-wide server when it names one, see judge_server.judge_endpoint).

    Answers are written first; a judge that is missing, down or talking garbage only adds
    counted judge errors / unparseable ratings and a note in `extra`, it never raises.
    """
    mt = cfg.eval.mt_bench
    out_dir = Path(out_dir)
    questions, result = answer_questions(model, tokenizer, mt, model_id, out_dir)
    answers = result.answers
    prompts = load_judge_prompts(mt.judge_prompts_path)
    references = load_references(mt.get("reference_path"))
    names = dict(mt.get("prompts") or {})
    ref_cats = list(mt.get("ref_categories") or NEED_REF_CATS)
    matches, missing = make_matches(questions, {a["question_id"]: a for a in answers},
                                    references, prompts, names, ref_cats)
    if missing:
        result.extra["missing_references"] = missing
    with judge_endpoint(cfg, out_dir, spec) as endpoint:
        if endpoint.error:
            return _unjudged(result, matches, endpoint.error)
        client = endpoint.client()
        rows, replies = judge_matches(client, matches, model_id, endpoint.model)
    result.judgments = rows
    result.extra["judgment_file"] = str(write_jsonl(judgment_path(out_dir, endpoint.model), rows))
    result.extra["judge"] = {"model": endpoint.model, **client.stats.as_dict()}
    if client.down:
        result.extra["judge_error"] = f"judge endpoint down: {client.down}"
    categories = {q["question_id"]: q["category"] for q in questions}
    result.metrics = {**scores(rows, categories), **count_metrics(replies, client)}
    return result


def mt_bench_stage(model, tokenizer, cfg, spec: TrialSpec, out_dir: Path) -> tuple[dict, dict]:
    """The `mt_bench` stage (harness.registry.EVAL_STAGES): answers and judgments under
    `out_dir/mt_bench`, FastChat model id 'base' or 'trial-NNNN'."""
    result = run_mt_bench(model, tokenizer, cfg, Path(out_dir) / "mt_bench", spec.model_id, spec)
    return result.metrics, result.extra


def _unjudged(result: MTBenchResult, matches: list[Match], reason: str) -> MTBenchResult:
    """Answers kept, every grading counted as a judge error, the reason in `extra`."""
    log.warning("MT-Bench not judged: %s", reason)
    result.extra["judge_error"] = reason
    result.metrics = {"mt_bench/judged": 0.0, "mt_bench/unparseable": 0.0,
                      "mt_bench/judge_errors": float(len(matches)),
                      "mt_bench/judge_requests": 0.0, "mt_bench/judge_cache_hits": 0.0}
    return result
