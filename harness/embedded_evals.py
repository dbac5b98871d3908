"""Offline lm-eval tasks, MT-Bench questions and a tiny judge for the embedded default.

`build_embedded_evals(root)` writes, once, under an embedded build `root` (harness.embedded):

- `evals/lm_eval/`: two lm-eval YAML tasks with JSONL data (absolute `data_files` paths):
  `embedded_facts_mc` (multiple choice: which sentence states a country's capital, language or
  export correctly) and `embedded_lists_gen` (generate-until: sort or reverse a word list,
  exact match), both drawn from the same generators as the embedded SFT tasks;
- `evals/mt_bench/`: `question.jsonl` (a handful of two-turn questions in FastChat's format),
  `reference_answer/reference.jsonl` (FastChat answer format, for reasoning questions) and
  `judge_prompts.jsonl` (FastChat's four single-answer grading prompts);
- `judge/`: the embedded judge, served by `transformers serve` like any local judge: a copy of
  the tiny model fine-tuned briefly on FastChat grading prompts to answer `Rating: [[N]]`, N
  from a lexical rule (1 + 9 x token F1 between the answer and the correct one). It is a
  plumbing judge: its replies follow FastChat's format and parse, but a 1M-parameter model
  does not learn the rule in a build-sized budget (Pearson r about 0.03 against the rule on
  held-out synthetic prompts after 100 steps; 60 steps do not even fix the format), so
  embedded MT-Bench scores carry no quality signal. Real sweeps judge with a real model
  (`eval.judge.base_url` or `eval.judge.serve.model_path`).

The judge prompt texts below are FastChat's (lm-sys/FastChat, fastchat/llm_judge/data/
judge_prompts.jsonl, Apache License 2.0, Copyright the FastChat authors), reproduced verbatim.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

EVALS_VERSION = "1"
EVALS_DIR = "evals"
JUDGE_DIR = "judge"
MARKER = "EVALS_INFO.json"
SEED = 0

# ------------------------------------------------------------------------------- FastChat text

_JUDGE_INTRO = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an "
    "AI assistant to the user question displayed below. ")
_RATE = ("After providing your explanation, you must rate the response on a scale of 1 to 10 "
         "by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".")
_GENERAL = ("Your evaluation should consider factors such as the helpfulness, relevance, "
            "accuracy, depth, creativity, and level of detail of the response. ")
_MATH = ("Your evaluation should consider correctness and helpfulness. You will be given a "
         "reference answer and the assistant's answer. ")
_CONV = ("<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
         "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n"
         "{answer_2}\n\n<|The End of Assistant A's Conversation with User|>")
_REF_CONV = ("<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n"
             "### Reference answer:\n{ref_answer_1}\n\n### User:\n{question_2}\n\n"
             "### Reference answer:\n{ref_answer_2}\n\n<|The End of Reference Answer|>\n\n\n")

JUDGE_PROMPTS = [
    {"name": "single-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Instruction]\n" + _JUDGE_INTRO + _GENERAL + "Begin your evaluation "
     "by providing a short explanation. Be as objective as possible. " + _RATE +
     "\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
     "[The End of Assistant's Answer]",
     "description": "Prompt for general questions", "category": "general",
     "output_format": "[[rating]]"},
    {"name": "single-math-v1", "type": "single", "system_prompt": "You are a helpful assistant.",
     "prompt_template": "[Instruction]\n" + _JUDGE_INTRO + _MATH + "Begin your evaluation by "
     "comparing the assistant's answer with the reference answer. Identify and correct any "
     "mistakes. Be as objective as possible. " + _RATE + "\n\n[Question]\n{question}\n\n"
     "[The Start of Reference Answer]\n{ref_answer_1}\n[The End of Reference Answer]\n\n"
     "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]",
     "description": "Prompt for general questions", "category": "math",
     "output_format": "[[rating]]"},
    {"name": "single-v1-multi-turn", "type": "single",
     "system_prompt": _JUDGE_INTRO + _GENERAL + "You evaluation should focus on the "
     "assistant's answer to the second user question. Begin your evaluation by providing a "
     "short explanation. Be as objective as possible. " + _RATE + "\n\n",
     "prompt_template": _CONV, "description": "Prompt for general questions",
     "category": "general", "output_format": "[[rating]]"},
    {"name": "single-math-v1-multi-turn", "type": "single",
     "system_prompt": _JUDGE_INTRO.replace(" displayed below", "") + _MATH + "You evaluation "
     "should focus on the assistant's answer to the second question. Begin your evaluation by "
     "comparing the assistant's answer with the reference answer. Identify and correct any "
     "mistakes. Be as objective as possible. " + _RATE + "\n\n",
     "prompt_template": _REF_CONV + _CONV, "description": "Prompt for general questions",
     "category": "math", "output_format": "[[rating]]"},
]

# ------------------------------------------------------------------------------- generators


def _kb(seed: int = SEED) -> list[dict[str, str]]:
    from harness.embedded import make_knowledge_base, make_lexicon

    return make_knowledge_base(make_lexicon(seed), seed)


def _fact(record: dict[str, str], attribute: str, rng: random.Random) -> tuple[str, str]:
    """(question, answer sentence) about one attribute, phrased as in the SFT data."""
    from harness.embedded import FACT_QUESTIONS

    questions, answer = FACT_QUESTIONS[attribute]
    return rng.choice(questions).format(**record), answer.format(**record)


def _list_task(rng: random.Random) -> tuple[str, str]:
    """(instruction, answer) for sorting or reversing a few nouns, phrased as in SFT data."""
    from harness.embedded import NOUNS

    words = rng.sample(NOUNS, rng.randint(3, 5))
    if rng.random() < 0.5:
        return "Reverse this list: " + ", ".join(words), ", ".join(reversed(words))
    return "Sort these words alphabetically: " + ", ".join(words), ", ".join(sorted(words))


def facts_mc_rows(kb: list[dict[str, str]], rng: random.Random) -> list[dict]:
    """Multiple choice: the true sentence among three with another country's value."""
    from harness.embedded import FACT_QUESTIONS

    rows = []
    for record in kb:
        for attribute in FACT_QUESTIONS:
            question, answer = _fact(record, attribute, rng)
            others = sorted({r[attribute] for r in kb} - {record[attribute]})
            wrong = [answer.replace(record[attribute], v) for v in rng.sample(others, 3)]
            choices = [answer, *wrong]
            rng.shuffle(choices)
            rows.append({"question": question, "choices": choices,
                         "label": choices.index(answer)})
    rng.shuffle(rows)
    return rows


def lists_gen_rows(rng: random.Random, n: int = 60) -> list[dict]:
    """Generate-until: sort or reverse a word list; the exact answer is the target."""
    rows = []
    for _ in range(n):
        prompt, answer = _list_task(rng)
        rows.append({"prompt": prompt, "answer": answer})
    return rows


MC_YAML = """task: embedded_facts_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\n"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

GEN_YAML = """task: embedded_lists_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}\\n"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
generation_kwargs:
  until: ["\\n", "<|end|>"]
  max_gen_toks: 32
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    regexes_to_ignore: ["^\\\\s+", "\\\\s+$", "\\\\.$"]
metadata:
  version: 1.0
"""


def mt_bench_questions(kb: list[dict[str, str]], reports: list, rng: random.Random
                       ) -> tuple[list[dict], list[dict]]:
    """Six two-turn questions (FastChat format) and reference answers for reasoning ones."""
    from harness.embedded import SUMMARIZE_INSTRUCTION, summarize_prompt

    c1, c2, c3 = rng.sample(kb, 3)
    q1, a1 = _fact(c1, "capital", rng)
    q2, a2 = _fact(c1, "language", rng)
    l1, la1 = _list_task(rng)
    l2, la2 = _list_task(rng)
    l3, _ = _list_task(rng)
    l4, _ = _list_task(rng)
    e1, _ = _fact(c2, "export", rng)
    e2, _ = _fact(c3, "capital", rng)
    e3, _ = _fact(c2, "export", rng)
    summary = summarize_prompt(reports[0].document)
    questions = [
        (1001, "reasoning", [q1, q2], [a1, a2]),
        (1002, "reasoning", [l1, l2], [la1, la2]),
        (1003, "extraction", [summary, "Who leads the project? Answer in one sentence."], None),
        (1004, "humanities", [e1, e2], None),
        (1005, "writing", [summarize_prompt(reports[1].document, SUMMARIZE_INSTRUCTION), e3],
         None),
        (1006, "stem", [l3, l4], None),
    ]
    rows = [{"question_id": qid, "category": cat, "turns": turns}
            for qid, cat, turns, _ in questions]
    refs = [{"question_id": qid, "answer_id": f"ref-{qid}", "model_id": "reference",
             "choices": [{"index": 0, "turns": ref}], "tstamp": 0.0}
            for qid, _, _, ref in questions if ref]
    return rows, refs


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
    from harness.embedded import summarize_prompt

    tasks = []
    for _ in range(200):
        tasks.append(_fact(rng.choice(kb), rng.choice(["capital", "language", "export"]), rng))
        tasks.append(_list_task(rng))
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


# ------------------------------------------------------------------------------- build


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_eval_files(out: Path, final_root: Path, seed: int = SEED) -> None:
    """lm-eval tasks and MT-Bench files under `out`, data paths pointing into `final_root`."""
    from harness.embedded import Lexicon, make_lexicon, make_report  # noqa: F401

    rng = random.Random(f"evals-{seed}")
    kb = _kb(seed)
    lex = make_lexicon(seed)
    reports = [make_report(rng, lex) for _ in range(2)]
    lm_dir, final_lm = out / "lm_eval", final_root / EVALS_DIR / "lm_eval"
    _write_jsonl(lm_dir / "facts_mc.jsonl", facts_mc_rows(kb, rng))
    _write_jsonl(lm_dir / "lists_gen.jsonl", lists_gen_rows(rng))
    (lm_dir / "embedded_facts_mc.yaml").write_text(
        MC_YAML.format(data=json.dumps(str(final_lm / "facts_mc.jsonl"))))
    (lm_dir / "embedded_lists_gen.yaml").write_text(
        GEN_YAML.format(data=json.dumps(str(final_lm / "lists_gen.jsonl"))))
    questions, refs = mt_bench_questions(kb, reports, rng)
    _write_jsonl(out / "mt_bench" / "question.jsonl", questions)
    _write_jsonl(out / "mt_bench" / "reference_answer" / "reference.jsonl", refs)
    _write_jsonl(out / "mt_bench" / "judge_prompts.jsonl", JUDGE_PROMPTS)


def is_complete(root: str | Path) -> bool:
    try:
        info = json.loads((Path(root) / EVALS_DIR / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == EVALS_VERSION and (Path(root) / JUDGE_DIR /
                                                     "config.json").is_file()


def build_embedded_evals(root: str | Path, *, seed: int = SEED, judge: bool = True) -> Path:
    """Write `root/evals/` and train `root/judge/` once (file-locked, atomic renames)."""
    from filelock import FileLock

    root = Path(root).absolute()
    if is_complete(root):
        return root
    with FileLock(str(root.parent / f".{root.name}.evals.lock")):
        if is_complete(root):
            return root
        start = time.time()
        tmp = root / f".evals.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        write_eval_files(tmp / EVALS_DIR, root, seed)
        info = {"version": EVALS_VERSION, "seed": seed}
        if judge:
            info["judge"] = _build_judge(root, tmp / JUDGE_DIR, seed)
        for name in (JUDGE_DIR, EVALS_DIR):
            if (tmp / name).exists():
                shutil.rmtree(root / name, ignore_errors=True)
                os.replace(tmp / name, root / name)
        shutil.rmtree(tmp, ignore_errors=True)
        info["seconds"] = round(time.time() - start, 1)
        (root / EVALS_DIR / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    return root


def _build_judge(root: Path, out: Path, seed: int) -> dict:
    from harness.embedded import make_lexicon, make_report

    rng = random.Random(f"judge-reports-{seed}")
    lex = make_lexicon(seed)
    reports = [make_report(rng, lex) for _ in range(150)]
    rows = judge_conversations(JUDGE_EXAMPLES, _kb(seed), reports, seed)
    return train_judge(root / "model", out, rows, seed=seed)


def ensure_for_config(cfg) -> None:
    """Build the embedded evals if an eval input of `cfg` points into `paths.embedded`."""
    embedded = str(Path(str(cfg.paths.embedded)).absolute())
    ev = cfg.eval
    paths = [(ev.get("lm_eval") or {}).get("include_path"),
             (ev.get("mt_bench") or {}).get("question_path"),
             ((ev.get("judge") or {}).get("serve") or {}).get("model_path")]
    if any(p and str(Path(str(p)).absolute()).startswith(embedded) for p in paths):
        from harness.embedded import build_embedded

        build_embedded(embedded)
        build_embedded_evals(embedded)


# ------------------------------------------------------------------------------- toy models


def build_toy_models(out_dir: str | Path, reply: str = "Rating: [[7]]",
                     steps: int = 60) -> tuple[Path, Path]:
    """Two tiny models for tests, in seconds: `out/model` (random weights, chat template) and
    `out/judge`, trained to answer every grading request with `reply`. Returns their dirs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.embedded import CHAT_TEMPLATE, train_tokenizer

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
