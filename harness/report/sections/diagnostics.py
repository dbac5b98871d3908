"""Diagnostics: the bookkeeping counters of each run (judge requests, cache hits, judged and
unparseable counts, judge errors, the lm-eval identical-to-base adapter check), and the judge
that graded (model, endpoint kind, prompt version, agreement figures).

    extract_diagnostics(data) -> DiagnosticsInfo    render_diagnostics(info, figs) -> HTML
    extract_judge(data)       -> JudgeInfo          render_judge(info, figs)       -> HTML

Counters say how an evaluation ran, not how good a model is, so they are tabled here and never
drawn as results (harness.report.kinds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from harness.report.figures import Figures
from harness.report.html import e, fmt, note, table
from harness.report.kinds import metric_kind
from harness.sweep.results import SweepData, num, plain

IDENTICAL = "lm_eval/identical_to_base"
PAIR_PREFIX = "mt_pair/"
EMBEDDED_JUDGE_NOTE = ("The embedded tiny judge graded these runs: its MT-Bench scores check "
                       "the plumbing (prompts, parsing, caching) and carry no quality signal. "
                       "Judge with a real model (eval.judge.base_url or "
                       "eval.judge.serve.model_path) before reading them as quality.")


@dataclass(frozen=True)
class DiagnosticsInfo:
    names: tuple[str, ...] = ()         # bookkeeping metrics recorded
    rows: tuple[tuple[str, tuple], ...] = ()   # (run label, values by name)
    identical: tuple[int, ...] = ()     # trials whose lm-eval outputs equal the base model's


def _runs(data: SweepData) -> list[tuple[str, object]]:
    runs = [("base model", data.baseline)] if data.baseline else []
    return runs + [(f"#{r.number} {r.method}", r) for r in data.ranked]


def extract_diagnostics(data: SweepData) -> DiagnosticsInfo:
    names = tuple(m for m in data.metric_names if metric_kind(m) == "bookkeeping")
    rows = tuple((label, tuple(plain(r.metrics.get(n)) for n in names))
                 for label, r in _runs(data) if any(n in r.metrics for n in names))
    identical = tuple(r.number for r in data.ranked if num(r.metrics.get(IDENTICAL)) == 1.0)
    return DiagnosticsInfo(names, rows, identical)


def render_diagnostics(info: DiagnosticsInfo, figs: Figures) -> str:
    if not info.names:
        return note("No bookkeeping counters recorded (no lm-eval or MT-Bench stage ran).")
    out = ""
    if info.identical:
        out += (f'<p class="worse">lm-eval answers of trial(s) '
                f"{e(', '.join(f'#{n}' for n in info.identical))} are identical to the base "
                "model's on every example: the adapter may not have been applied.</p>")
    rows = table(["run", *info.names], [[label, *v] for label, v in info.rows])
    return out + note("How each evaluation ran (counts, cache use, the adapter check); not "
                      "quality.") + f'<div class="scroll">{rows}</div>'


# -- the judge ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgeInfo:
    enabled: bool = False
    model: str | None = None            # the judge model that graded (from the records)
    endpoint: str = ""                  # how it was reached
    embedded: bool = False              # the embedded tiny judge
    mode: str = "single"                # eval.mt_bench.mode
    prompts: tuple[str, ...] = ()       # FastChat prompt names (the prompt version)
    reference: str | None = None        # pairwise: what the trials were compared against
    agreement: tuple[tuple, ...] = ()
    # per run: (label, position consistency, win rate, low, high, answer/reference words,
    #           share of decisive verdicts the longer answer won, pairs, unparseable pairs)


def _judge_model(data: SweepData) -> str | None:
    for record in [data.baseline, *data.ranked]:
        if record is None:
            continue
        extra = (record.extra or {}).get("mt_bench") or {}
        judge = extra.get("judge") if isinstance(extra, dict) else None
        if isinstance(judge, dict) and judge.get("model"):
            return str(judge["model"])
    return None


def extract_judge(data: SweepData) -> JudgeInfo:
    ev = data.cfg.get("eval") or {}
    mt, judge = ev.get("mt_bench") or {}, ev.get("judge") or {}
    if not mt or not mt.get("enabled", False):
        return JudgeInfo()
    model = _judge_model(data)
    serve = (judge.get("serve") or {}).get("model_path")
    embedded_root = str(((data.cfg.get("paths") or {}).get("embedded")) or "")
    if judge.get("base_url"):
        endpoint = (f"OpenAI-compatible endpoint {judge.get('base_url')} "
                    f"(model {judge.get('model')})")
    elif serve:
        endpoint = f"local `transformers serve` of {serve}"
    else:
        endpoint = "none configured"
    candidates = [str(p) for p in (model, serve) if p]
    embedded = bool(embedded_root) and not judge.get("base_url") and any(
        str(Path(p)).startswith(str(Path(embedded_root))) for p in candidates)
    mode = str(mt.get("mode", "single"))
    prompts = OmegaConf.to_container(mt.get("prompts"), resolve=True) if OmegaConf.is_config(
        mt.get("prompts")) else dict(mt.get("prompts") or {})
    names = tuple(str(v) for v in prompts.values())
    pair = mt.get("pairwise") or {}
    if mode == "pairwise":
        names = ("pair-v2", "pair-v2-multi-turn", "pair-math-v1", "pair-math-v1-multi-turn")
    agreement = tuple(
        (label, *(num(r.metrics.get(f"{PAIR_PREFIX}{k}")) for k in
                  ("position_consistency", "win_rate", "win_rate_low", "win_rate_high")),
         _length_ratio(r.metrics), num(r.metrics.get(f"{PAIR_PREFIX}longer_wins")),
         num(r.metrics.get(f"{PAIR_PREFIX}pairs")),
         num(r.metrics.get(f"{PAIR_PREFIX}errors")))
        for label, r in _runs(data) if f"{PAIR_PREFIX}pairs" in r.metrics)
    return JudgeInfo(True, model, endpoint, embedded, mode, names,
                     str(pair.get("reference", "base")) if mode == "pairwise" else None,
                     agreement)


def _length_ratio(metrics: dict) -> float | None:
    ours, ref = num(metrics.get(f"{PAIR_PREFIX}answer_words")), num(
        metrics.get(f"{PAIR_PREFIX}reference_words"))
    return ours / ref if ours is not None and ref else None


def render_judge(info: JudgeInfo, figs: Figures) -> str:
    if not info.enabled:
        return note("MT-Bench is off (eval.mt_bench.enabled): no judge graded this sweep.")
    out = table(["", ""], [["judge model", info.model or "(no judged record)"],
                           ["endpoint", info.endpoint], ["mode", info.mode],
                           ["prompt version (FastChat)", ", ".join(info.prompts)]]
                + ([["pairwise reference", info.reference]] if info.reference else []),
                "compact")
    if info.embedded:
        out = f'<p class="worse">{e(EMBEDDED_JUDGE_NOTE)}</p>' + out
    if info.agreement:
        rows = [[label, fmt(pc), fmt(w), f"[{fmt(lo)}, {fmt(hi)}]", fmt(ratio), fmt(longer),
                 f"{fmt(errors)} of {fmt(pairs)}"]
                for label, pc, w, lo, hi, ratio, longer, pairs, errors in info.agreement]
        out += ("<h3>Pairwise agreement</h3>" + note(
            "Each pair is judged in both orders; position consistency is the share of pairs "
            "with the same verdict both ways (inconsistent pairs count as ties). Length "
            "ratio: mean answer words over the reference's (judges favour longer answers).")
            + table(["run", "position consistency", "win rate", "95% CI",
                     "length ratio (ours / reference)", "longer answer won",
                     "pairs with an unparseable verdict"],
                    rows, "compact"))
    return out
