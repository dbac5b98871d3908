"""Human evaluation (action=human_eval): per-system mean ratings with CIs, and inter-rater
agreement (Krippendorff's alpha, ordinal, from the `krippendorff` package) per criterion.

    extract_human(data) -> HumanInfo      render_human(info, figs) -> HTML

A unit is one blinded answer (item, label); each rater gives it 1-5 per criterion. A system's
mean is over its answers (each answer first averaged over its raters), its CI is harness.stats'
bootstrap t interval over those answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import krippendorff
import numpy as np

from harness.report.figures import Figures
from harness.report.html import fmt, fmt_interval, note, table
from harness.stats import Interval, mean_interval
from harness.sweep.results import SweepData, read_human_eval

CRITERIA = ("relevance", "coherence", "correctness")


@dataclass(frozen=True)
class SystemRating:
    system: str                          # "base" or "trial-NNNN" (unblinded)
    criterion: str
    n_answers: int
    n_ratings: int
    mean: float
    interval: Interval | None


@dataclass(frozen=True)
class HumanInfo:
    skip: str | None = None
    raters: tuple[str, ...] = ()
    units: int = 0
    ratings: tuple[SystemRating, ...] = ()
    alpha: tuple[tuple[str, float | None], ...] = ()    # per criterion


def _value(raw: object) -> float | None:
    try:
        value = float(str(raw).strip())
    except ValueError:
        return None
    return value if 1 <= value <= 5 else None


def reliability_matrix(rows: list[dict], criterion: str) -> tuple[list[str], list[tuple],
                                                                  np.ndarray]:
    """(raters, units, raters x units matrix of ratings with NaN where missing)."""
    raters = sorted({str(r.get("rater") or r["sheet"]) for r in rows})
    units = sorted({(r["item"], r["system"]) for r in rows})
    index = {u: j for j, u in enumerate(units)}
    matrix = np.full((len(raters), len(units)), np.nan)
    for r in rows:
        value = _value(r.get(criterion))
        if value is not None:
            matrix[raters.index(str(r.get("rater") or r["sheet"])), index[(r["item"],
                                                                            r["system"])]] = value
    return raters, units, matrix


def extract_human(data: SweepData) -> HumanInfo:
    key, rows = read_human_eval(data.sweep_dir)
    if not key:
        return HumanInfo("No human evaluation yet: python -m harness action=human_eval "
                         f"sweep={data.name} writes a blinded sheet; fill it, then import it "
                         "with human_eval.ratings=[path.csv].")
    if not rows:
        return HumanInfo("A sheet was exported; no ratings imported yet "
                         "(action=human_eval human_eval.ratings=[filled.csv]).")
    items = key.get("items") or {}
    rows = [r for r in rows if r.get("item") in items and r.get("system") in items[r["item"]]]
    ratings, alphas, raters, units = [], [], (), 0
    for criterion in CRITERIA:
        raters, unit_ids, matrix = reliability_matrix(rows, criterion)
        units = len(unit_ids)
        alpha = None
        if len(raters) >= 2 and np.isfinite(matrix).sum() >= 2:
            value = float(krippendorff.alpha(reliability_data=matrix,
                                             level_of_measurement="ordinal"))
            alpha = value if math.isfinite(value) else None
        alphas.append((criterion, alpha))
        per_system: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        for j, (item, label) in enumerate(unit_ids):
            column = matrix[:, j][np.isfinite(matrix[:, j])]
            if len(column):
                system = items[item][label]
                per_system.setdefault(system, []).append(float(column.mean()))
                counts[system] = counts.get(system, 0) + len(column)
        for system in sorted(per_system):
            values = per_system[system]
            ratings.append(SystemRating(system, criterion, len(values), counts[system],
                                        float(np.mean(values)), mean_interval(values, data.ci)))
    return HumanInfo(None, tuple(raters), units, tuple(ratings), tuple(alphas))


def render_human(info: HumanInfo, figs: Figures) -> str:
    if info.skip is not None:
        return note(info.skip)
    rows = [[r.system, r.criterion, r.n_answers, r.n_ratings, fmt(r.mean),
             fmt_interval(r.interval)] for r in info.ratings]
    agreement = [[c, fmt(a)] for c, a in info.alpha]
    return (note(f"{len(info.raters)} rater(s), {info.units} blinded answers. Alpha: "
                 "Krippendorff's, ordinal (1 = perfect agreement, 0 = chance).")
            + table(["system", "criterion", "answers", "ratings", "mean (1-5)", "95% CI"], rows,
                    "compact")
            + "<h3>Inter-rater agreement</h3>"
            + table(["criterion", "Krippendorff's alpha"], agreement, "compact"))
