"""Bootstrap confidence intervals over seeds (numpy resampling, scipy's Student-t quantile).

    mean_interval(values)          95% CI of the mean of one configuration's runs
    difference_interval(a, b)      95% CI of mean(a) - mean(b) (two configurations, resampled
                                   independently); "not distinguishable" when it contains 0
    compare(a, b)                  mean(a) - mean(b) with its CI and two-sided p-value, paired by
                                   seed when the runs share seeds (`paired_comparison`), else
                                   Welch's (`unpaired_comparison`); `level` sets the CI level
    holm(p_values)                 Holm's step-down adjusted p-values (several comparisons)

Two interval methods (`replicate.ci.method`):

- ``t`` (default): the bootstrap standard error of the mean (standard deviation of the resampled
  means, times sqrt(n/(n-1)) to undo the plug-in bias) times the Student-t quantile with n-1
  degrees of freedom (Welch's for a difference). With the 2-5 seeds a sweep can afford this keeps
  close to its nominal coverage, and it narrows as seeds are added.
- ``percentile``: the plain percentile bootstrap interval. It is too narrow below ~10 seeds (with
  2 or 3 seeds it is the range of the values), so it is offered for many-seed studies only.

Every interval resamples with its own generator seeded from `CISettings.seed`, so a report shows
the same numbers each time it is made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("t", "percentile")


@dataclass(frozen=True)
class CISettings:
    """How intervals are computed (`replicate.ci` in conf/config.yaml)."""

    method: str = "t"
    level: float = 0.95
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"replicate.ci.method must be one of {METHODS}, got {self.method!r}")
        if not 0 < self.level < 1:
            raise ValueError(f"replicate.ci.level must be in (0, 1), got {self.level!r}")
        if int(self.resamples) < 100:
            raise ValueError(f"replicate.ci.resamples must be >= 100, got {self.resamples!r}")

    @classmethod
    def from_config(cls, node: object) -> CISettings:
        """From a `replicate.ci` mapping (missing keys keep their defaults)."""
        if not node:
            return cls()
        get = node.get  # DictConfig or dict
        return cls(method=str(get("method", "t")), level=float(get("level", 0.95)),
                   resamples=int(get("resamples", 2000)), seed=int(get("seed", 0)))

    def describe(self) -> str:
        how = ("bootstrap standard error x Student-t quantile" if self.method == "t"
               else "percentile bootstrap")
        return (f"{100 * self.level:g}% CI, {how} over seeds "
                f"(numpy, {self.resamples} resamples, seed {self.seed})")


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval, from n runs (two groups: the smaller n)."""

    estimate: float
    low: float
    high: float
    n: int

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def shifted(self, by: float) -> Interval:
        """The interval of (value - by): a mean's interval as a delta against a fixed value."""
        return Interval(self.estimate - by, self.low - by, self.high - by, self.n)


@dataclass(frozen=True)
class Spread:
    """How one configuration's metric varies across seeds."""

    n: int
    mean: float
    sd: float
    low: float
    high: float


def spread(values: Sequence[float]) -> Spread:
    """Count, mean, sample standard deviation (0 for one value), min and max."""
    x = np.asarray(values, dtype=float)
    sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return Spread(len(x), float(x.mean()), sd, float(x.min()), float(x.max()))


def _resampled_means(x: np.ndarray, settings: CISettings) -> np.ndarray:
    rng = np.random.default_rng(settings.seed)
    return x[rng.integers(0, len(x), size=(settings.resamples, len(x)))].mean(axis=1)


def _bootstrap_se(means: np.ndarray, n: int) -> float:
    """Standard deviation of the resampled means, plug-in bias undone."""
    return float(means.std(ddof=1)) * math.sqrt(n / (n - 1))


def mean_interval(values: Sequence[float], settings: CISettings = CISettings()) -> Interval | None:
    """The CI of the mean of `values`; None with fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return None
    means = _resampled_means(x, settings)
    mean = float(x.mean())
    if settings.method == "percentile":
        tail = (1 - settings.level) / 2
        low, high = np.quantile(means, [tail, 1 - tail])
        return Interval(mean, float(low), float(high), n)
    half = _t_quantile(1 - (1 - settings.level) / 2, n - 1) * _bootstrap_se(means, n)
    return Interval(mean, mean - half, mean + half, n)


def difference_interval(a: Sequence[float], b: Sequence[float],
                        settings: CISettings = CISettings()) -> Interval | None:
    """The CI of mean(a) - mean(b), each group resampled on its own; None if either has < 2."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return None
    mx = _resampled_means(x, settings)
    my = _resampled_means(y, CISettings(settings.method, settings.level, settings.resamples,
                                        settings.seed + 1))
    diff = float(x.mean() - y.mean())
    n = min(len(x), len(y))
    if settings.method == "percentile":
        tail = (1 - settings.level) / 2
        low, high = np.quantile(mx - my, [tail, 1 - tail])
        return Interval(diff, float(low), float(high), n)
    se_x, se_y = _bootstrap_se(mx, len(x)), _bootstrap_se(my, len(y))
    se = math.hypot(se_x, se_y)
    if se == 0:
        return Interval(diff, diff, diff, n)
    dof = se**4 / (se_x**4 / (len(x) - 1) + se_y**4 / (len(y) - 1))  # Welch-Satterthwaite
    half = _t_quantile(1 - (1 - settings.level) / 2, dof) * se
    return Interval(diff, diff - half, diff + half, n)


def _t_quantile(q: float, dof: float) -> float:
    """Student-t quantile (scipy, imported on first use: the sweep driver imports this module
    through the results reader and never draws an interval)."""
    from scipy import stats

    return float(stats.t.ppf(q, dof))


# -- comparisons with a p-value: paired by seed, Holm across comparisons ----------------------
@dataclass(frozen=True)
class Comparison:
    """mean(a) - mean(b): its CI at `level`, a two-sided p-value and how it was paired."""

    interval: Interval
    p_value: float
    paired: bool                        # differences taken seed by seed
    level: float

    def distinguishable(self, alpha: float) -> bool:
        return self.p_value < alpha and not self.interval.contains(0.0)


def paired_comparison(a: dict[int, float], b: dict[int, float],
                      level: float = 0.95) -> Comparison | None:
    """Paired t: the differences a[s] - b[s] over the seeds both have (None below 2).

    Interval mean(d) +- t(1 - (1-level)/2, n-1) * sd(d)/sqrt(n), p from the same t statistic
    (scipy.stats.ttest_rel's). Pairing removes the seed's shared effect (data order, init),
    which is what makes replicates of different methods comparable at 3 seeds.
    """
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    n, mean = len(d), float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return Comparison(Interval(mean, mean, mean, n), 0.0 if mean else 1.0, True, level)
    half = _t_quantile(1 - (1 - level) / 2, n - 1) * se
    p = float(2 * stats.t.sf(abs(mean / se), n - 1))
    return Comparison(Interval(mean, mean - half, mean + half, n), p, True, level)


def unpaired_comparison(a: Sequence[float], b: Sequence[float],
                        level: float = 0.95) -> Comparison | None:
    """Welch's t (unequal variances): CI and p of mean(a) - mean(b); None if either has < 2."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return None
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    diff, se = float(x.mean() - y.mean()), math.sqrt(vx + vy)
    n = min(len(x), len(y))
    if se == 0:
        return Comparison(Interval(diff, diff, diff, n), 0.0 if diff else 1.0, False, level)
    dof = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = _t_quantile(1 - (1 - level) / 2, dof) * se
    p = float(2 * stats.t.sf(abs(diff / se), dof))
    return Comparison(Interval(diff, diff - half, diff + half, n), p, False, level)


def compare(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> Comparison | None:
    """Paired by seed when a and b share >= 2 seeds, else Welch's on all values."""
    if len(set(a) & set(b)) >= 2:
        return paired_comparison(a, b, level)
    return unpaired_comparison(list(a.values()), list(b.values()), level)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Written here (8 lines) rather than importing statsmodels' multipletests for one function:
    sorted p(1) <= ... <= p(m), adjusted p(k) = max over j <= k of min(1, (m - j + 1) p(j)).
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def holm_levels(p_values: Sequence[float], level: float = 0.95) -> list[float]:
    """The CI level of each comparison at its Holm step: 1 - alpha / (m - rank), rank by p."""
    alpha, m = 1 - level, len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    levels = [level] * m
    for rank, i in enumerate(order):
        levels[i] = 1 - alpha / (m - rank)
    return levels
