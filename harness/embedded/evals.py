"""Offline lm-eval tasks, MT-Bench questions and a tiny judge for the embedded default.

`build_embedded_evals(root)` writes, once, under an embedded build `root` (harness.embedded.build):
- `evals/lm_eval/`: two lm-eval YAML tasks with JSONL data (absolute `data_files` paths):
  `embedded_facts_mc` (multiple choice: which sentence states a country's capital, language or
  export correctly) and `embedded_lists_gen` (generate-until: sort or reverse a word list,
  exact match), both drawn from the same generators as the embedded SFT tasks;
- `evals/mt_bench/`: `question.jsonl` (a handful of two-turn questions in FastChat's format),
  `reference_answer/reference.jsonl` (FastChat answer format, for reasoning questions) and
  `judge_prompts.jsonl` (FastChat's four single-answer grading prompts, harness.embedded.prompts);
- `judge/`: the embedded judge (harness.embedded.judge), served by `transformers serve` like
  any local judge; a plumbing judge whose scores carry no quality signal.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

from harness.embedded.build import build_embedded
from harness.embedded.corpus import SUMMARIZE_INSTRUCTION, summarize_prompt
from harness.embedded.general import ensure_general_task
from harness.embedded.judge import SEED, build_judge
from harness.embedded.prompts import JUDGE_PROMPTS
from harness.embedded.text import (
    FACT_QUESTIONS,
    fact_question,
    knowledge_base,
    list_task,
    make_lexicon,
    make_report,
)

log = logging.getLogger(__name__)

EVALS_VERSION = "1"
EVALS_DIR = "evals"
JUDGE_DIR = "judge"
MARKER = "EVALS_INFO.json"

# ------------------------------------------------------------------------------- generators


def facts_mc_rows(kb: list[dict[str, str]], rng: random.Random) -> list[dict]:
    """Multiple choice: the true sentence among three with another country's value."""
    rows = []
    for record in kb:
        for attribute in FACT_QUESTIONS:
            question, answer = fact_question(record, attribute, rng)
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
        prompt, answer = list_task(rng)
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
    c1, c2, c3 = rng.sample(kb, 3)
    q1, a1 = fact_question(c1, "capital", rng)
    q2, a2 = fact_question(c1, "language", rng)
    l1, la1 = list_task(rng)
    l2, la2 = list_task(rng)
    l3, _ = list_task(rng)
    l4, _ = list_task(rng)
    e1, _ = fact_question(c2, "export", rng)
    e2, _ = fact_question(c3, "capital", rng)
    e3, _ = fact_question(c2, "export", rng)
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


# ------------------------------------------------------------------------------- build


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_eval_files(out: Path, final_root: Path, seed: int = SEED) -> None:
    """lm-eval tasks and MT-Bench files under `out`, data paths pointing into `final_root`."""
    rng = random.Random(f"evals-{seed}")
    kb = knowledge_base(seed)
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
        ensure_general_task(root, seed)     # own marker: the cache key above is unchanged
        return root
    with FileLock(str(root.parent / f".{root.name}.evals.lock")):
        if is_complete(root):
            ensure_general_task(root, seed)
            return root
        start = time.time()
        tmp = root / f".evals.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        write_eval_files(tmp / EVALS_DIR, root, seed)
        info = {"version": EVALS_VERSION, "seed": seed}
        if judge:
            info["judge"] = build_judge(root, tmp / JUDGE_DIR, seed)
        for name in (JUDGE_DIR, EVALS_DIR):
            if (tmp / name).exists():
                shutil.rmtree(root / name, ignore_errors=True)
                os.replace(tmp / name, root / name)
        shutil.rmtree(tmp, ignore_errors=True)
        info["seconds"] = round(time.time() - start, 1)
        (root / EVALS_DIR / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        ensure_general_task(root, seed)
    return root


def ensure_for_config(cfg) -> None:
    """Build the embedded evals if an eval input of `cfg` points into `paths.embedded`."""
    embedded = str(Path(str(cfg.paths.embedded)).absolute())
    ev = cfg.eval
    paths = [(ev.get("lm_eval") or {}).get("include_path"),
             (ev.get("mt_bench") or {}).get("question_path"),
             ((ev.get("judge") or {}).get("serve") or {}).get("model_path")]
    if any(p and str(Path(str(p)).absolute()).startswith(embedded) for p in paths):
        build_embedded(embedded)
        build_embedded_evals(embedded)

