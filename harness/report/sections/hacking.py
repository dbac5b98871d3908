"""Each method's headline metric against its start, the shared metrics side by side, and
reward hacking made visible: an online trial (PPO, GRPO, RLOO) whose reward rose over its
reference while its distinct-2 fell below `collapse_ratio` x the reference's is flagged, with
its generations.

    extract_methods_start(data) -> StartInfo       render_methods_start(info, figs)

Headline metric by what a trial recorded: online methods (harness.eval.online wrote
`distinct_2`): reward_mean against the SFT policy's; preference methods (a `train_pairs`
note): pref_accuracy against their reference's (SFT stage, or the base for ORPO); SFT
methods: held-out perplexity against the base model's.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.records import COMPLETE, TrialRecord
from harness.report.figures import Figures
from harness.report.html import note, table, text
from harness.sweep.results import SweepData, num

SHARED = ("perplexity", "rougeL", "pref_accuracy", "reward_mean", "win_rate_vs_sft",
          "kl_to_ref", "gen_length", "distinct_2")
MAX_SAMPLES = 4                  # generations shown per flagged trial


@dataclass(frozen=True)
class StartRow:
    number: int
    method: str
    headline: str                       # the metric that shows this method learned
    start: float | None                 # its value before the trial's own stage
    end: float | None
    shared: tuple[float | None, ...]    # SHARED metrics of the trial


@dataclass(frozen=True)
class Flag:
    number: int
    method: str
    reward: tuple[float | None, float | None]      # (reference, trial) reward_mean
    distinct: tuple[float | None, float | None]    # (reference, trial) distinct_2
    ratio: float
    samples: tuple[tuple[str, str, str], ...]      # (prompt, generation, reference's)


@dataclass(frozen=True)
class StartInfo:
    rows: tuple[StartRow, ...]
    flags: tuple[Flag, ...]
    online: int                          # online trials checked for collapse


def _reference_pref(record: TrialRecord) -> float | None:
    return num(record.extra.get("sft_pref_accuracy", record.extra.get("base_pref_accuracy")))


def _headline(data: SweepData, record: TrialRecord) -> tuple[str, float | None, float | None]:
    m, extra = record.metrics, record.extra
    if "distinct_2" in m:
        return "reward_mean", num(extra.get("sft_reward_mean")), num(m.get("reward_mean"))
    if "train_pairs" in extra:
        return "pref_accuracy", _reference_pref(record), num(m.get("pref_accuracy"))
    return "perplexity", data.base_value("perplexity"), num(m.get("perplexity"))


def _flag(record: TrialRecord) -> Flag | None:
    """A collapse: reward up over the reference, distinct-2 under ratio x the reference's."""
    online = record.extra.get("online") or {}
    ref_reward, reward = num(record.extra.get("sft_reward_mean")), \
        num(record.metrics.get("reward_mean"))
    ref_distinct = num((online.get("reference") or {}).get("distinct_2"))
    distinct, ratio = num(record.metrics.get("distinct_2")), num(online.get("collapse_ratio"))
    if None in (ref_reward, reward, ref_distinct, distinct, ratio):
        return None
    if not (reward > ref_reward and distinct < ratio * ref_distinct):
        return None
    samples = tuple((str(s.get("prompt", "")), str(s.get("generation", "")),
                     str(s.get("reference", ""))) for s in online.get("samples", []))
    return Flag(record.number, record.method, (ref_reward, reward), (ref_distinct, distinct),
                ratio, samples[:MAX_SAMPLES])


def extract_methods_start(data: SweepData) -> StartInfo:
    """Every COMPLETE trial's headline metric against its start and the shared metrics;
    the online trials that collapsed."""
    done = [r for r in data.records if r.status == COMPLETE]
    rows = tuple(StartRow(r.number, r.method, *_headline(data, r),
                          tuple(num(r.metrics.get(k)) for k in SHARED)) for r in done)
    online = [r for r in done if "distinct_2" in r.metrics]
    flags = tuple(f for f in (_flag(r) for r in online) if f is not None)
    return StartInfo(rows, flags, len(online))


def render_methods_start(info: StartInfo, figs: Figures) -> str:
    if not info.rows:
        return note("No completed trial yet.")
    out = note("Each trial's own metric before its stage (base model, or its SFT stage / "
               "reference) and after; then the metrics every method is scored on.")
    out += table(["trial", "method", "headline", "start", "end", *SHARED],
                 [[r.number, r.method, r.headline, r.start, r.end, *r.shared]
                  for r in info.rows])
    if not info.online:
        return out
    if not info.flags:
        return out + note(f"No reward hacking flagged among {info.online} online trials "
                          "(reward rose while distinct-2 collapsed: none).")
    for f in info.flags:
        out += note(f"Reward hacking? Trial {f.number} ({f.method}): reward_mean "
                    f"{f.reward[0]:.3f} -> {f.reward[1]:.3f} while distinct-2 fell "
                    f"{f.distinct[0]:.3f} -> {f.distinct[1]:.3f} (below {f.ratio:g} x the "
                    "reference's). Its generations:")
        out += table(["prompt", "generation", "reference (SFT)"],
                     [[text(p), text(g), text(r)] for p, g, r in f.samples])
    return out
