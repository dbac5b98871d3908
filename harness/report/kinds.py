"""What kind of number a record's metric is, and the report's settings (`report:` block).

    metric_kind(name) -> "quality" | "stderr" | "bookkeeping"
    ReportSettings.from_config(cfg.report)

Quality metrics (objectives, perplexity, ROUGE, lm-eval task scores, MT-Bench scores, win
rates, preference metrics) are results and get figures. A `<metric>_stderr` is the error bar
of its metric, never a metric of its own. Bookkeeping counters (judge requests, cache hits,
judged and unparseable counts, judge errors, the identical-to-base adapter check, the cascade's
judged flag) say how the evaluation ran: they go to the diagnostics section.
"""

from __future__ import annotations

from dataclasses import dataclass

STDERR_SUFFIX = "_stderr"
# Last path part of a counter (mt_bench/judge_requests, mt_pair/pairs, ...).
BOOKKEEPING_NAMES = frozenset({
    "judged", "unparseable", "judge_errors", "judge_requests", "judge_cache_hits",
    "identical_to_base", "pairs", "judgments", "inconsistent", "position_consistency",
    "errors", "requests", "cache_hits", "answer_words", "reference_words", "wins", "ties",
    "losses", "win_rate_low", "win_rate_high", "longer_wins",
})
BOOKKEEPING_PREFIXES = ("cascade/",)


def metric_kind(name: str) -> str:
    """'stderr' for a `_stderr` value, 'bookkeeping' for a counter, else 'quality'."""
    if name.endswith(STDERR_SUFFIX):
        return "stderr"
    if name.startswith(BOOKKEEPING_PREFIXES) or name.rsplit("/", 1)[-1] in BOOKKEEPING_NAMES:
        return "bookkeeping"
    return "quality"


def is_quality(name: str) -> bool:
    return metric_kind(name) == "quality"


def stderr_of(name: str) -> str:
    """The name of a metric's standard error in a record."""
    return f"{name}{STDERR_SUFFIX}"


@dataclass(frozen=True)
class ReportSettings:
    """The `report:` block of conf/config.yaml (defaults in brackets there)."""

    metrics: tuple[str, ...] = ()       # extra metrics drawn against the parameters
    edge_fraction: float = 0.1          # "at the edge": within this share of the (log) range
    edge_top_k: int = 3                 # the top trials the edge warning looks at
    importance_floor: float = 0.01      # importance below this: "near-zero importance"
    forgetting_tasks: tuple[str, ...] = ("lm_eval/embedded_general_mc/acc",)  # checked for
    #                                     forgetting (conf/config.yaml's default)
    forgetting_threshold: float = 0.02  # a drop larger than this ...
    forgetting_stderrs: float = 2.0     # ... and larger than this many standard errors

    @classmethod
    def from_config(cls, node: object) -> ReportSettings:
        if not node:
            return cls()
        get = node.get  # DictConfig or dict
        forgetting = get("forgetting") or {}
        tasks = forgetting.get("tasks", cls.forgetting_tasks)
        return cls(metrics=tuple(str(m) for m in get("metrics") or ()),
                   edge_fraction=float(get("edge_fraction", 0.1)),
                   edge_top_k=int(get("edge_top_k", 3)),
                   importance_floor=float(get("importance_floor", 0.01)),
                   forgetting_tasks=tuple(str(t) for t in tasks or ()),
                   forgetting_threshold=float(forgetting.get("threshold", 0.02)),
                   forgetting_stderrs=float(forgetting.get("stderrs", 2.0)))
