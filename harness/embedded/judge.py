"""The embedded judge and the toy models of the tests.

- `build_judge(root, out)`: the embedded judge, served by `transformers serve` like any local
  judge: a copy of the tiny model fine-tuned briefly on FastChat grading prompts to answer
  `Rating: [[N]]`, N from a lexical rule (1 + 9 x token F1 between the answer and the correct
  one). It is a plumbing judge: its replies follow FastChat's format and parse, but a
  1M-parameter model does not learn the rule in a build-sized budget (Pearson r about 0.03
  against the rule on held-out synthetic prompts after 100 steps; 60 steps do not even fix the
  format), so embedded MT-Bench scores carry no quality signal. Real sweeps judge with a real
  model (`eval.judge.base_url` or `eval.judge.serve.model_path`).
- `toy_models(root)`: two tiny models for tests, built in seconds: a chat model with random
  weights and a judge that answers every grading request with the same reply.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from harness.embedded.build import train_tokenizer
from harness.embedded.corpus import CHAT_TEMPLATE, summarize_prompt
from harness.embedded.prompts import JUDGE_PROMPTS
from harness.embedded.text import (
    fact_question,
    knowledge_base,
    list_task,
    make_lexicon,
    make_report,
)

SEED = 0

# ------------------------------------------------------------------------------- judge data


def token_f1(candidate: str, truth: str) -> float:
    """Bag-of-words F1 between two texts (lower-cased, punctuation split off)."""
    def words(text: str) -> list[str]:
        return text.lower().replace(",", " ").replace(".", " ").split()

    cand, ref = words(candidate), words(truth)
    if not cand or not ref:
        return 0.0
    common = sum(min(cand.count(w), ref.count(w)) for w in set(cand))
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rule_rating(candidate: str, truth: str) -> int:
    """The embedded judge's target rating: 1 + 9 x token F1, rounded (1..10)."""
    return 1 + round(9 * token_f1(candidate, truth))


def _candidate(truth: str, rng: random.Random, pool: list[str]) -> str:
    """A candidate answer of varied quality: correct, damaged, another answer, or junk."""
    kind = rng.random()
    words = truth.split()
    if kind < 0.3:
        return truth
    if kind < 0.5:
        keep = max(1, int(len(words) * rng.uniform(0.3, 0.8)))
        return " ".join(words[:keep])
    if kind < 0.7:
        return " ".join(w if rng.random() < 0.6 else rng.choice(pool).split()[0] for w in words)
    if kind < 0.9:
        return rng.choice(pool)
    return rng.choice(["", "I don't know.", "<|end|>", "list list list"])


def _judge_tasks(kb, reports, rng: random.Random) -> list[tuple[str, str]]:
    """(question, correct answer) pairs from every embedded task family."""
    tasks = []
    for _ in range(200):
        attribute = ["capital", "language", "export"]
        tasks.append(fact_question(rng.choice(kb), rng.choice(attribute), rng))
        tasks.append(list_task(rng))
    for report in reports:
        tasks.append((summarize_prompt(report.document), report.summary))
    return tasks


def judge_conversations(n: int, kb, reports, seed: int = SEED) -> list[dict]:
    """Synthetic grading chats: FastChat prompts filled with candidates, target
    'Rating: [[N]]' with N = rule_rating(candidate, correct answer)."""
    rng = random.Random(f"judge-{seed}")
    tasks = _judge_tasks(kb, reports, rng)
    pool = [a for _, a in tasks]
    prompts = {p["name"]: p for p in JUDGE_PROMPTS}
    rows = []
    for _ in range(n):
        (q1, t1), (q2, t2) = rng.sample(tasks, 2)
        c1, c2 = _candidate(t1, rng, pool), _candidate(t2, rng, pool)
        name = rng.choice(list(prompts))
        prompt = prompts[name]
        fields = {"question": q1, "answer": c1, "ref_answer_1": t1, "question_1": q1,
                  "answer_1": c1, "question_2": q2, "answer_2": c2, "ref_answer_2": t2}
        multi = "multi-turn" in name
        rating = rule_rating(c2, t2) if multi else rule_rating(c1, t1)
        rows.append({"messages": [
            {"role": "system", "content": prompt["system_prompt"]},
            {"role": "user", "content": prompt["prompt_template"].format(**fields)},
            {"role": "assistant", "content": f"Rating: [[{rating}]]"}]})
    return rows


# ------------------------------------------------------------------------------- judge model

JUDGE_STEPS = 100
JUDGE_BATCH = 8
JUDGE_LR = 2e-3
JUDGE_MAX_TOKENS = 1024
JUDGE_EXAMPLES = 1200
JUDGE_READS_CHARS = 400
# The embedded judge reads only the tail of a grading request: its chat template drops the
# system message and keeps the last JUDGE_READS_CHARS characters of the user message (where
# FastChat's templates put the question, the reference and the answer). That keeps a 1M-param
# judge cheap to train and to run; the harness still sends FastChat's full prompts.
JUDGE_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'][-" + str(JUDGE_READS_CHARS) + ":] + '<|end|>\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}"
    "{% endgeneration %}{{ '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _encode_chat(tokenizer, row: dict, max_tokens: int) -> tuple[list[int], list[int]]:
    """Token ids and labels (assistant reply only) of one chat, left-truncated to fit."""
    prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=False,
                                           add_generation_prompt=True)
    reply = row["messages"][-1]["content"] + tokenizer.eos_token
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    p_ids = p_ids[-(max_tokens - len(r_ids)):]
    return p_ids + r_ids, [-100] * len(p_ids) + r_ids


def _batch(tokenizer, encoded: list[tuple[list[int], list[int]]]):
    import torch

    width = max(len(ids) for ids, _ in encoded)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(encoded), width), pad)
    labels = torch.full((len(encoded), width), -100)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (row_ids, row_labels) in enumerate(encoded):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
        labels[i, : len(row_ids)] = torch.tensor(row_labels)
        mask[i, : len(row_ids)] = 1
    return ids, mask, labels


def train_judge(model_dir: str | Path, out_dir: str | Path, rows: list[dict], *,
                steps: int = JUDGE_STEPS, batch_size: int = JUDGE_BATCH, lr: float = JUDGE_LR,
                seed: int = SEED, max_tokens: int = JUDGE_MAX_TOKENS) -> dict:
    """Fine-tune a copy of the model in `model_dir` on judge chats; save it to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.chat_template = JUDGE_CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    encoded = [_encode_chat(tokenizer, r, max_tokens) for r in rows]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    rng, losses = random.Random(seed), []
    model.train()
    start = time.time()
    for _ in range(steps):
        ids, mask, labels = _batch(tokenizer, rng.sample(encoded, batch_size))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    model.config.max_position_embeddings = max(model.config.max_position_embeddings, max_tokens)
    tokenizer.model_max_length = max(int(tokenizer.model_max_length), max_tokens)
    model.generation_config.max_new_tokens = 24
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    tail = losses[-20:]
    return {"steps": steps, "seconds": round(time.time() - start, 1),
            "final_loss": round(sum(tail) / len(tail), 4),
            "max_prompt_tokens": max(len(ids) for ids, _ in encoded)}


def build_judge(root: Path, out: Path, seed: int) -> dict:
    """Train the embedded judge from the model in `root/model` into `out`; training stats."""
    rng = random.Random(f"judge-reports-{seed}")
    lex = make_lexicon(seed)
    reports = [make_report(rng, lex) for _ in range(150)]
    rows = judge_conversations(JUDGE_EXAMPLES, knowledge_base(seed), reports, seed)
    return train_judge(root / "model", out, rows, seed=seed)


# ------------------------------------------------------------------------------- toy models


def build_toy_models(out_dir: str | Path, reply: str = "Rating: [[7]]",
                     steps: int = 60) -> tuple[Path, Path]:
    """Two tiny models for tests, in seconds: `out/model` (random weights, chat template) and
    `out/judge`, trained to answer every grading request with `reply`. Returns their dirs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    texts = [p["system_prompt"] + p["prompt_template"] for p in JUDGE_PROMPTS] + [reply] * 5
    tokenizer = train_tokenizer(texts * 4)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    for name, template in (("model", CHAT_TEMPLATE), ("judge", _toy_judge_template())):
        tokenizer.chat_template = template
        model = LlamaForCausalLM(config)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        if name == "judge":
            _fit_constant_reply(model, tokenizer, reply, steps)
        model.save_pretrained(out_dir / name)
        tokenizer.save_pretrained(out_dir / name)
    return out_dir / "model", out_dir / "judge"


def _toy_judge_template() -> str:
    return JUDGE_CHAT_TEMPLATE.replace(f"[-{JUDGE_READS_CHARS}:]", "[-120:]")


def _fit_constant_reply(model, tokenizer, reply: str, steps: int) -> None:
    """Train `model` to answer any user message with `reply` (then eos)."""
    import torch

    rng = random.Random(0)
    words = " ".join(p["prompt_template"] for p in JUDGE_PROMPTS).split()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        rows = [{"messages": [{"role": "user", "content": " ".join(rng.sample(words, 40))},
                              {"role": "assistant", "content": reply}]} for _ in range(8)]
        ids, mask, labels = _batch(tokenizer, [_encode_chat(tokenizer, r, 256) for r in rows])
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


def toy_models(root: str | Path) -> tuple[Path, Path]:
    """`build_toy_models` once per folder (locked; reused when already built)."""
    from filelock import FileLock

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        if not (root / "judge" / "config.json").is_file():
            build_toy_models(root)
    return root / "model", root / "judge"
