"""MT-Bench: FastChat matching, prompts, temperatures, scores, files, and end-to-end runs
against the real 80-question set with a real local judge server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import harness.eval.mt_bench as mt_bench
from harness.embedded.prompts import JUDGE_PROMPTS

SHARED = Path(os.environ.get("HARNESS_MT_BENCH_DIR",
                             Path(__file__).resolve().parents[2] / "shared" / "mt_bench"))
needs_real_set = pytest.mark.skipif(not (SHARED / "question.jsonl").is_file(),
                                    reason="FastChat's MT-Bench files not in ../shared/mt_bench")
SENTINEL = "sk-SENTINEL-mt-bench-never-on-disk"


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory):
    from harness.embedded.judge import toy_models as build

    return build(tmp_path_factory.getbasetemp() / "toy_models")


def _prompts() -> dict:
    return {p["name"]: p for p in JUDGE_PROMPTS}


def _answer(qid, turns) -> dict:
    return {"question_id": qid, "model_id": "m", "choices": [{"index": 0, "turns": turns}]}


def test_temperatures_are_fastchats():
    assert mt_bench.temperature_for("writing") == 0.7
    assert mt_bench.temperature_for("math") == 0.0
    assert mt_bench.temperature_for("stem") == 0.1
    assert mt_bench.temperature_for("unknown-category") == 0.7
    assert mt_bench.temperature_for("writing", 0.0) == 0.0


def test_matches_use_reference_prompts_for_math_reasoning_coding():
    questions = [{"question_id": 1, "category": "writing", "turns": ["w1", "w2"]},
                 {"question_id": 2, "category": "math", "turns": ["m1", "m2"]},
                 {"question_id": 3, "category": "coding", "turns": ["c1"]}]
    answers = {1: _answer(1, ["a1", "a2"]), 2: _answer(2, ["b1", "b2"]), 3: _answer(3, ["x"])}
    refs = {2: _answer(2, ["r1", "r2"])}
    matches, missing = mt_bench.make_matches(questions, answers, refs, _prompts())
    names = [(m.question["question_id"], m.turn, m.prompt["name"]) for m in matches]
    assert names == [(1, 1, "single-v1"), (1, 2, "single-v1-multi-turn"),
                     (2, 1, "single-math-v1"), (2, 2, "single-math-v1-multi-turn"),
                     (3, 1, "single-v1")]
    assert missing == [3]
    system, user = mt_bench.render(matches[3])
    assert "### Reference answer:\nr2" in user and "### Assistant A:\nb2" in user
    assert "second question" in system
    _, user1 = mt_bench.render(matches[0])
    assert "[Question]\nw1" in user1 and "[The Start of Assistant's Answer]\na1" in user1


def test_cache_key_changes_with_answer_and_prompt():
    question = {"question_id": 7, "category": "writing", "turns": ["q1", "q2"]}
    one = mt_bench.Match(question, _answer(7, ["a", "b"]), _prompts()["single-v1"], 1)
    same_turn1 = mt_bench.Match(question, _answer(7, ["a", "other"]),
                                _prompts()["single-v1"], 1)
    other = mt_bench.Match(question, _answer(7, ["a2", "b"]), _prompts()["single-v1"], 1)
    key = mt_bench.judge_request(one, "judge").key
    assert key == mt_bench.judge_request(same_turn1, "judge").key  # turn 2 unseen in turn 1
    assert key != mt_bench.judge_request(other, "judge").key
    assert key != mt_bench.judge_request(one, "judge-2").key


def test_scores_exclude_unparseable_ratings():
    rows = [{"question_id": 1, "turn": 1, "score": 8}, {"question_id": 1, "turn": 2, "score": 6},
            {"question_id": 2, "turn": 1, "score": -1}, {"question_id": 2, "turn": 2, "score": 3}]
    metrics = mt_bench.scores(rows, {1: "writing", 2: "math"})
    assert metrics["mt_bench/score"] == pytest.approx(17 / 3)
    assert metrics["mt_bench/turn1"] == 8 and metrics["mt_bench/turn2"] == 4.5
    assert metrics["mt_bench/writing"] == 7 and metrics["mt_bench/math"] == 3
    assert metrics["mt_bench/judged"] == 3


def test_bad_question_file_names_the_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question_id": 1, "category": "x", "turns": ["a"]}\n{"question_id": 2}\n')
    with pytest.raises(mt_bench.MTBenchError, match=r"q.jsonl:2: missing field"):
        mt_bench.load_questions(path)


def test_fallback_conversation_template(toy_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(toy_models[0])
    tokenizer.chat_template = None
    conv = mt_bench.Conversation(tokenizer, "vicuna_v1.1")
    text, add_special = conv.prompt("Hello there")
    conv.reply("Hi")
    text2, _ = conv.prompt("Again")
    assert "USER: Hello there ASSISTANT:" in text and add_special
    assert "ASSISTANT: Hi" in text2 and text2.endswith("ASSISTANT:")


def _cfg(tmp_path: Path, judge: dict, **mt) -> OmegaConf:
    files = {"question_path": str(SHARED / "question.jsonl"),
             "reference_path": str(SHARED / "reference_answer_gpt-4.jsonl"),
             "judge_prompts_path": str(SHARED / "judge_prompts.jsonl")}
    return OmegaConf.create({"eval": {
        "mt_bench": {**files, "enabled": True, "limit": 3, "max_new_tokens": 8, "seed": 0,
                     **mt},
        "judge": {"max_tokens": 24, "concurrency": 2, "max_retries": 1, "backoff_s": 0.0,
                  "cache_dir": str(tmp_path / "cache"), "timeout_s": 30, **judge}}})


def _load(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(
        model_dir)


@needs_real_set
def test_real_question_set_with_local_judge(toy_models, tmp_path, monkeypatch):
    """Real 80-question file with a limit: FastChat-format files, scores, a re-run that sends
    no request twice, and no trace of the API key on disk."""
    monkeypatch.setenv("HARNESS_TEST_MT_KEY", SENTINEL)
    model_dir, judge_dir = toy_models
    model, tokenizer = _load(model_dir)
    cfg = _cfg(tmp_path, {"api_key_env": "HARNESS_TEST_MT_KEY",
                          "serve": {"model_path": str(judge_dir), "threads": 1}}, limit=4)
    first = mt_bench.run_mt_bench(model, tokenizer, cfg, tmp_path / "out", "trial-0001")
    again = mt_bench.run_mt_bench(model, tokenizer, cfg, tmp_path / "out", "trial-0001")

    answers = [json.loads(x) for x in (tmp_path / "out/model_answer/trial-0001.jsonl")
               .read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [81, 82, 83, 84]
    assert set(answers[0]) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert len(answers[0]["choices"][0]["turns"]) == 2
    judgment_file = tmp_path / "out/model_judgment" / mt_bench.judge_file_name(str(judge_dir))
    rows = [json.loads(x) for x in judgment_file.read_text().splitlines()]
    assert len(rows) == 8 and {r["turn"] for r in rows} == {1, 2}
    assert set(rows[0]) == {"question_id", "model", "judge", "user_prompt", "judgment",
                            "score", "turn", "tstamp"}
    assert rows[0]["judge"][1] == "single-v1" and rows[1]["judge"][1] == "single-v1-multi-turn"
    m = first.metrics
    assert m["mt_bench/score"] == 7.0 and m["mt_bench/turn1"] == 7.0 and m["mt_bench/turn2"] == 7
    assert m["mt_bench/writing"] == 7.0 and m["mt_bench/unparseable"] == 0
    assert m["mt_bench/judge_requests"] == 8 and m["mt_bench/judge_cache_hits"] == 0
    assert again.metrics["mt_bench/judge_requests"] == 0
    assert again.metrics["mt_bench/judge_cache_hits"] == 8
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SENTINEL not in path.read_text(errors="replace"), path


@needs_real_set
def test_reference_guided_math_with_real_references(toy_models, tmp_path):
    model, tokenizer = _load(toy_models[0])
    from harness.eval.judge import JudgeClient, JudgeSettings, JudgmentCache

    questions = mt_bench.load_questions(SHARED / "question.jsonl", 2, ["math"])
    refs = mt_bench.load_references(SHARED / "reference_answer_gpt-4.jsonl")
    answers = mt_bench.generate_answers(model, tokenizer, questions, model_id="m",
                                        max_new_tokens=4)
    matches, missing = mt_bench.make_matches(
        questions, {a["question_id"]: a for a in answers}, refs,
        mt_bench.load_judge_prompts(SHARED / "judge_prompts.jsonl"))
    assert not missing and {m.prompt["name"] for m in matches} == {
        "single-math-v1", "single-math-v1-multi-turn"}
    ref_text = refs[questions[0]["question_id"]]["choices"][0]["turns"][0]
    assert ref_text in mt_bench.render(matches[0])[1]
    client = JudgeClient(JudgeSettings(base_url="http://127.0.0.1:9/v1", model="j",
                                       max_retries=0), JudgmentCache(None))
    rows, replies = mt_bench.judge_matches(client, matches, "m", "j")
    assert all(r["score"] == -1 for r in rows) and all(r.error for r in replies)


def test_judge_down_keeps_answers_and_counts_errors(toy_models, tmp_path):
    """A dead endpoint: answers written, every grading a counted judge error, no exception."""
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "category": "writing",
                                             "turns": [f"Say {i}", "Again"]}) + "\n"
                                 for i in range(3)))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in JUDGE_PROMPTS))
    model, tokenizer = _load(toy_models[0])
    cfg = _cfg(tmp_path, {"base_url": "http://127.0.0.1:9/v1", "model": "gpt-4",
                          "max_consecutive_failures": 2},
               question_path=str(questions), reference_path=None,
               judge_prompts_path=str(prompts))
    result = mt_bench.run_mt_bench(model, tokenizer, cfg, tmp_path / "out", "base")
    assert (tmp_path / "out/model_answer/base.jsonl").is_file()
    assert result.metrics["mt_bench/judge_errors"] == 6
    assert result.metrics["mt_bench/judged"] == 0 and "mt_bench/score" not in result.metrics
    assert "judge endpoint down" in result.extra["judge_error"]
    assert result.metrics["mt_bench/judge_requests"] <= 2 + 2  # circuit open after 2 failures


def test_answers_are_deterministic_for_a_seed(toy_models):
    model, tokenizer = _load(toy_models[0])
    question = [{"question_id": 5, "category": "writing", "turns": ["Write", "More"]}]
    runs = [mt_bench.generate_answers(model, tokenizer, question, model_id="m",
                                      max_new_tokens=6, seed=3)[0]["choices"] for _ in range(2)]
    assert runs[0] == runs[1]
