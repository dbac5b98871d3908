"""MT-Bench pairwise mode (`eval.mt_bench.mode: pairwise`): the trial's answers against a
reference's (the base model's, or a chosen trial's), FastChat's pairwise prompts, each pair
judged in both orders.

Follows FastChat's llm_judge pairwise grading (play_a_match_pair, Apache-2.0) without importing
it: `pair-v2` / `pair-v2-multi-turn`, and `pair-math-v1(-multi-turn)` with reference answers for
math, reasoning and coding; game 1 shows the trial as assistant A, game 2 as assistant B; the
verdicts ([[A]], [[B]], [[C]] = tie) are mapped back to the models and a pair whose two games
disagree is "inconsistent" and counted as a tie (FastChat's rule). Rows are written as FastChat's
`model_judgment/<judge>_pair.jsonl`; judgments go through the same cached JudgeClient as single
grading (the key holds both answers, their order and the prompt), so a re-run sends nothing.

Metrics (`mt_pair/...`): win_rate = (wins + ties/2) / decided pairs with its CI (bootstrap t
over pairs, harness.stats), wins, ties, losses, inconsistent, errors, pairs,
position_consistency (share of pairs with two parseable verdicts that agree), and
answer_words / reference_words / longer_wins (length bias: the share of decisive verdicts won
by the longer answer).

`mt_bench_stage` (harness.registry.EVAL_STAGES "mt_bench") picks the mode.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from harness.embedded.pair_prompts import PAIR_PROMPTS
from harness.errors import ConfigError
from harness.eval.judge import JudgeReply, JudgeRequest, cache_key, parse_pairwise, sha256
from harness.eval.judge_server import judge_endpoint
from harness.eval.mt_bench import (
    NEED_REF_CATS,
    MTBenchError,
    MTBenchResult,
    answer_path,
    answer_questions,
    load_judge_prompts,
    load_references,
    read_jsonl,
    reference_kwargs,
    write_jsonl,
)
from harness.eval.mt_bench import (
    mt_bench_stage as single_stage,
)
from harness.records import TrialSpec
from harness.stats import mean_interval

PREFIX = "mt_pair/"
PAIR_NAMES = {"single": "pair-v2", "multi": "pair-v2-multi-turn",
              "single_ref": "pair-math-v1", "multi_ref": "pair-math-v1-multi-turn"}
TRIAL, REFERENCE, TIE, ERROR, INCONSISTENT = "trial", "reference", "tie", "error", "inconsistent"


@dataclass
class PairMatch:
    """One question turn: the trial's answer against the reference's."""

    question: dict
    ours: dict
    theirs: dict
    prompt: dict
    turn: int
    reference: dict | None = None


def mt_bench_stage(model, tokenizer, cfg, spec: TrialSpec, out_dir: Path) -> tuple[dict, dict]:
    """The `mt_bench` stage: single grading (harness.eval.mt_bench) or pairwise (here)."""
    mode = str(cfg.eval.mt_bench.get("mode", "single"))
    if mode == "single":
        return single_stage(model, tokenizer, cfg, spec, out_dir)
    if mode != "pairwise":
        raise ConfigError(f"eval.mt_bench.mode must be single or pairwise, got {mode!r}")
    result = run_pairwise(model, tokenizer, cfg, Path(out_dir) / "mt_bench", spec.model_id, spec)
    return result.metrics, result.extra


def load_pair_prompts(path) -> dict[str, dict]:
    """Pairwise prompts by name: FastChat's file at `path`, else the copy shipped here."""
    rows = load_judge_prompts(path) if path else {p["name"]: p for p in PAIR_PROMPTS}
    missing = [n for n in PAIR_NAMES.values() if n not in rows]
    if missing:
        raise MTBenchError(f"eval.mt_bench.pairwise.prompts_path: no {missing} in {path}")
    return rows


def reference_answers_path(cfg, spec: TrialSpec | None) -> Path:
    """The reference's FastChat answer file: `base` (the sweep's base model), a trial number,
    or a path to a model_answer JSONL."""
    ref = (cfg.eval.mt_bench.get("pairwise") or {}).get("reference", "base")
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        trial_dir = Path(spec.dir).parent / f"{int(ref):04d}" if spec and spec.dir else None
        if trial_dir is None:
            raise ConfigError("eval.mt_bench.pairwise.reference: a trial number needs a sweep")
        return answer_path(trial_dir / "mt_bench", f"trial-{int(ref):04d}")
    if str(ref) == "base":
        if not spec or not spec.baseline_dir:
            raise ConfigError("eval.mt_bench.pairwise.reference=base needs the sweep's base "
                              "model folder (run inside a sweep)")
        return answer_path(Path(spec.baseline_dir) / "mt_bench", "base")
    return Path(str(ref))


def is_reference(cfg, spec: TrialSpec | None) -> bool:
    """This run is the pairwise reference itself (it answers, nobody judges it)."""
    ref = str((cfg.eval.mt_bench.get("pairwise") or {}).get("reference", "base"))
    if spec is None:
        return False
    return (ref == "base" and spec.baseline) or (ref.isdigit() and not spec.baseline
                                                 and int(ref) == spec.number)


def make_pair_matches(questions: list[dict], ours: dict, theirs: dict, references: dict,
                      prompts: dict, ref_categories=NEED_REF_CATS) -> list[PairMatch]:
    """Turn 1 and (two-turn questions) turn 2 of every question both sides answered."""
    matches = []
    for q in questions:
        qid = q["question_id"]
        if qid not in ours or qid not in theirs:
            continue
        ref = references.get(qid) if q["category"] in set(ref_categories) else None
        single, multi = ("single_ref", "multi_ref") if ref else ("single", "multi")
        matches.append(PairMatch(q, ours[qid], theirs[qid], prompts[PAIR_NAMES[single]], 1, ref))
        if len(q["turns"]) >= 2:
            matches.append(PairMatch(q, ours[qid], theirs[qid], prompts[PAIR_NAMES[multi]], 2,
                                     ref))
    return matches


def render_pair(match: PairMatch, trial_first: bool) -> tuple[str, str]:
    """(system, user) as FastChat's run_judge_pair builds them; A is the trial if trial_first."""
    a, b = (match.ours, match.theirs) if trial_first else (match.theirs, match.ours)
    qa, qb = a["choices"][0]["turns"], b["choices"][0]["turns"]
    q = match.question["turns"]
    kwargs = reference_kwargs(match.reference, match.turn)
    template = match.prompt["prompt_template"]
    if match.turn == 2:
        user = template.format(question_1=q[0], question_2=q[1], answer_a_1=qa[0],
                               answer_b_1=qb[0], answer_a_2=qa[1], answer_b_2=qb[1], **kwargs)
    else:
        user = template.format(question=q[0], answer_a=qa[0], answer_b=qb[0], **kwargs)
    return match.prompt["system_prompt"], user


def pair_request(match: PairMatch, judge_model: str, trial_first: bool) -> JudgeRequest:
    system, user = render_pair(match, trial_first)
    turns = [match.ours["choices"][0]["turns"][: match.turn],
             match.theirs["choices"][0]["turns"][: match.turn]]
    key = cache_key(match.question["question_id"], match.turn,
                    sha256(json.dumps([turns, "trial-first" if trial_first else "ref-first"])),
                    judge_model, match.prompt["name"], sha256(system + "\0" + user))
    return JudgeRequest(key=key, system_prompt=system, user_prompt=user)


def to_model(verdict: str, trial_first: bool) -> str:
    """A game's verdict (A / B / tie / error) as the model it favours."""
    if verdict in (TIE, ERROR):
        return verdict
    return TRIAL if (verdict == "A") == trial_first else REFERENCE


def combine(g1: str, g2: str) -> str:
    """FastChat: the same winner in both orders wins, else the pair is inconsistent."""
    if g1 == g2:
        return g1
    return INCONSISTENT


def words(answer: dict, turn: int) -> int:
    return len(str(answer["choices"][0]["turns"][turn - 1]).split())


def pair_metrics(matches: list[PairMatch], winners: list[tuple[str, str]],
                 level: float = 0.95) -> dict[str, float]:
    """Win/tie/loss, win rate with its CI, position consistency and length statistics."""
    final = [combine(g1, g2) for g1, g2 in winners]
    parsed = [(g1, g2) for g1, g2 in winners if ERROR not in (g1, g2)]
    scores = [1.0 if w == TRIAL else 0.0 if w == REFERENCE else 0.5
              for w in final if w != ERROR]
    out = {"wins": final.count(TRIAL), "losses": final.count(REFERENCE),
           "ties": final.count(TIE) + final.count(INCONSISTENT),
           "inconsistent": final.count(INCONSISTENT), "errors": final.count(ERROR),
           "pairs": len(final), "judgments": 2 * len(final)}
    if parsed:
        out["position_consistency"] = sum(g1 == g2 for g1, g2 in parsed) / len(parsed)
    if scores:
        out["win_rate"] = sum(scores) / len(scores)
        iv = mean_interval(scores) if len(set(scores)) > 1 else None
        lo, hi = (iv.low, iv.high) if iv else (out["win_rate"], out["win_rate"])
        out["win_rate_low"], out["win_rate_high"] = max(0.0, lo), min(1.0, hi)
    ours = [words(m.ours, m.turn) for m in matches]
    theirs = [words(m.theirs, m.turn) for m in matches]
    if matches:
        out["answer_words"] = sum(ours) / len(ours)
        out["reference_words"] = sum(theirs) / len(theirs)
    decisive = [(w, a, b) for w, a, b in zip(final, ours, theirs, strict=True)
                if w in (TRIAL, REFERENCE) and a != b]
    if decisive:
        out["longer_wins"] = sum((w == TRIAL) == (a > b) for w, a, b in decisive) / len(decisive)
    return {f"{PREFIX}{k}": float(v) for k, v in out.items()}


def pair_row(match: PairMatch, model_id: str, ref_id: str, judge_model: str,
             games: list[tuple[JudgeRequest, JudgeReply, str]]) -> dict:
    """A row of FastChat's model_judgment/<judge>_pair.jsonl (model_1 = the trial)."""
    (r1, p1, w1), (r2, p2, w2) = games
    return {"question_id": match.question["question_id"], "model_1": model_id,
            "model_2": ref_id, "g1_winner": w1, "g2_winner": w2,
            "judge": [judge_model, match.prompt["name"]], "g1_user_prompt": r1.user_prompt,
            "g1_judgment": p1.judgment, "g2_user_prompt": r2.user_prompt,
            "g2_judgment": p2.judgment, "turn": match.turn, "tstamp": time.time()}


def run_pairwise(model, tokenizer, cfg, out_dir: str | Path, model_id: str,
                 spec: TrialSpec | None = None) -> MTBenchResult:
    """Answer MT-Bench, then judge every turn against the reference's answers in both orders.

    The reference run itself (the base model with reference=base) only answers. A missing
    reference answer file or a judge that is down is noted in `extra`, never raised.
    """
    mt = cfg.eval.mt_bench
    pair_cfg = mt.get("pairwise") or {}
    out_dir = Path(out_dir)
    questions, result = answer_questions(model, tokenizer, mt, model_id, out_dir)
    answers = result.answers
    result.extra["mode"] = "pairwise"
    if is_reference(cfg, spec):
        result.extra["pairwise"] = "this run is the pairwise reference: answers only"
        return result
    ref_path = reference_answers_path(cfg, spec)
    if not ref_path.is_file():
        result.extra["judge_error"] = f"no reference answers at {ref_path}"
        return result
    theirs = {r["question_id"]: r for r in read_jsonl(ref_path, ("question_id", "choices"))}
    prompts = load_pair_prompts(pair_cfg.get("prompts_path"))
    matches = make_pair_matches(questions, {a["question_id"]: a for a in answers}, theirs,
                                load_references(mt.get("reference_path")), prompts,
                                list(mt.get("ref_categories") or NEED_REF_CATS))
    ref_id = next(iter(theirs.values()))["model_id"] if theirs else "reference"
    with judge_endpoint(cfg, out_dir, spec) as endpoint:
        if endpoint.error:
            result.extra["judge_error"] = endpoint.error
            return result
        client = endpoint.client()
        requests = [pair_request(m, endpoint.model, first) for m in matches
                    for first in (True, False)]
        replies = client.judge_many(requests)
    winners, rows = [], []
    for i, match in enumerate(matches):
        games = []
        for j, first in enumerate((True, False)):
            request, reply = requests[2 * i + j], replies[2 * i + j]
            games.append((request, reply, to_model(parse_pairwise(reply.judgment), first)))
        winners.append((games[0][2], games[1][2]))
        rows.append(pair_row(match, model_id, ref_id, endpoint.model, games))
    name = Path(endpoint.model).name if "/" in endpoint.model else endpoint.model
    path = write_jsonl(out_dir / "model_judgment" / f"{name}_pair.jsonl", rows)
    result.judgments = rows
    result.extra.update(judgment_file=str(path), reference_answers=str(ref_path),
                        judge={"model": endpoint.model, **client.stats.as_dict()})
    result.metrics = {**pair_metrics(matches, winners),
                      f"{PREFIX}judge_requests": float(client.stats.requests),
                      f"{PREFIX}judge_cache_hits": float(client.stats.cache_hits)}
    return result
