"""MT-Bench pairwise mode (harness.eval.pairwise): FastChat's verdict parsing and position-swap
rule, the win/tie/loss numbers against a hand count, and an end-to-end run on the embedded
model with a real local judge server that judges every pair in both orders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.embedded.build import build_embedded
from harness.embedded.evals import build_embedded_evals
from harness.embedded.pair_prompts import PAIR_PROMPTS
from harness.eval import pairwise
from harness.eval.judge import parse_pairwise
from harness.eval.mt_bench import generate_answers, load_questions, write_jsonl
from tests.conftest import REPO


def test_fastchat_verdicts_and_position_swap() -> None:
    assert parse_pairwise("... [[A]]") == "A" and parse_pairwise("[[B]]") == "B"
    assert parse_pairwise("[[C]]") == "tie" and parse_pairwise("Rating: [[7]]") == "error"
    # game 1 shows the trial as A, game 2 as B
    assert pairwise.to_model("A", True) == "trial" and pairwise.to_model("A", False) == \
        "reference"
    assert pairwise.to_model("B", False) == "trial" and pairwise.to_model("tie", True) == "tie"
    assert pairwise.combine("trial", "trial") == "trial"
    assert pairwise.combine("trial", "reference") == "inconsistent"
    assert {p["name"] for p in PAIR_PROMPTS} == set(pairwise.PAIR_NAMES.values())


def _answer(qid: int, turns: list[str]) -> dict:
    return {"question_id": qid, "model_id": "m", "choices": [{"index": 0, "turns": turns}]}


def test_pair_metrics_match_a_hand_count() -> None:
    q = {"question_id": 1, "category": "writing", "turns": ["q"]}
    prompt = {"name": "pair-v2"}
    long, short = _answer(1, ["one two three four"]), _answer(1, ["one two"])
    matches = [pairwise.PairMatch(q, long, short, prompt, 1)] * 5
    winners = [("trial", "trial"), ("trial", "trial"), ("reference", "reference"),
               ("trial", "reference"), ("error", "error")]
    m = pairwise.pair_metrics(matches, winners)
    # final: win, win, loss, inconsistent (a tie), error (left out)
    assert (m["mt_pair/wins"], m["mt_pair/losses"], m["mt_pair/ties"]) == (2, 1, 1)
    assert m["mt_pair/inconsistent"] == 1 and m["mt_pair/errors"] == 1
    assert m["mt_pair/pairs"] == 5 and m["mt_pair/judgments"] == 10
    assert m["mt_pair/win_rate"] == pytest.approx((2 + 0.5) / 4)
    assert m["mt_pair/position_consistency"] == pytest.approx(3 / 4)
    assert m["mt_pair/win_rate_low"] < m["mt_pair/win_rate"] < m["mt_pair/win_rate_high"]
    assert m["mt_pair/answer_words"] == 4 and m["mt_pair/reference_words"] == 2
    assert m["mt_pair/longer_wins"] == pytest.approx(2 / 3)   # the longer answer won 2 of 3


@pytest.fixture(scope="module")
def embedded() -> Path:
    root = Path(os.environ.get("HARNESS_CACHE", REPO / ".cache" / "harness")) / "embedded-v2"
    build_embedded(root)
    build_embedded_evals(root)
    return root


def test_pairwise_on_the_embedded_model_judges_both_orders(embedded, tmp_path) -> None:
    """The embedded model's answers against its own sampled ones; the judge always answers
    [[A]] (the purest position bias), so every pair is inconsistent and consistency is 0."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.embedded.judge import build_toy_models

    _, judge = build_toy_models(tmp_path / "toy", reply="[[A]]", steps=40)
    model = AutoModelForCausalLM.from_pretrained(embedded / "model")
    tokenizer = AutoTokenizer.from_pretrained(embedded / "model")
    mt_dir = embedded / "evals" / "mt_bench"
    mt = {"enabled": True, "mode": "pairwise", "limit": 2, "max_new_tokens": 8, "seed": 0,
          "question_path": str(mt_dir / "question.jsonl"),
          "reference_path": str(mt_dir / "reference_answer" / "reference.jsonl"),
          "judge_prompts_path": str(mt_dir / "judge_prompts.jsonl")}
    questions = load_questions(mt["question_path"], 2)
    ref_file = write_jsonl(tmp_path / "ref" / "sampled.jsonl", generate_answers(
        model, tokenizer, questions, model_id="sampled", max_new_tokens=6, temperature=1.0,
        seed=5))                                         # the reference: other, shorter answers
    cfg = OmegaConf.create({"eval": {
        "mt_bench": {**mt, "pairwise": {"reference": str(ref_file), "prompts_path": None}},
        "judge": {"max_tokens": 8, "concurrency": 2, "max_retries": 1, "backoff_s": 0.0,
                  "timeout_s": 60, "cache_dir": str(tmp_path / "cache"),
                  "serve": {"model_path": str(judge), "threads": 1, "startup_timeout_s": 300}}}})
    first = pairwise.run_pairwise(model, tokenizer, cfg, tmp_path / "out", "trial-0001")
    m = first.metrics
    assert m["mt_pair/pairs"] == 4                       # 2 questions x 2 turns
    assert m["mt_pair/judge_requests"] == 8             # every pair judged twice
    rows = [json.loads(x) for x in Path(first.extra["judgment_file"]).read_text().splitlines()]
    assert len(rows) == 4 and {r["judge"][1] for r in rows} == {"pair-math-v1",
                                                                  "pair-math-v1-multi-turn"}
    for row in rows:                                     # [[A]] both times = trial, then reference
        assert (row["g1_winner"], row["g2_winner"]) == ("trial", "reference")
        assert "[[A]]" in row["g1_judgment"] and row["g1_user_prompt"] != row["g2_user_prompt"]
    assert m["mt_pair/position_consistency"] == 0.0
    assert m["mt_pair/inconsistent"] == 4 and m["mt_pair/ties"] == 4
    assert m["mt_pair/win_rate"] == 0.5
    assert m["mt_pair/answer_words"] > 0 and m["mt_pair/reference_words"] > 0
    again = pairwise.run_pairwise(model, tokenizer, cfg, tmp_path / "out", "trial-0001")
    assert again.metrics["mt_pair/judge_requests"] == 0          # cached like single grading
    assert again.metrics["mt_pair/judge_cache_hits"] == 8
