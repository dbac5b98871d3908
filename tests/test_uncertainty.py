"""harness.stats: bootstrap confidence intervals over seeds."""

from __future__ import annotations

import numpy as np
import pytest

from harness.stats import CISettings, difference_interval, mean_interval, spread

PERCENTILE = CISettings(method="percentile")


def test_fewer_than_two_values_give_no_interval() -> None:
    assert mean_interval([1.0]) is None
    assert difference_interval([1.0, 2.0], [3.0]) is None


def test_interval_contains_the_mean_and_is_reproducible() -> None:
    values = [10.2, 10.8, 9.9, 10.5]
    for settings in (CISettings(), PERCENTILE):
        iv = mean_interval(values, settings)
        assert iv.low < np.mean(values) < iv.high and iv.n == 4
        assert mean_interval(values, settings) == iv


def test_t_interval_matches_the_t_formula_for_the_mean() -> None:
    values = np.array([3.0, 5.0, 4.0, 6.0, 5.5])
    iv = mean_interval(values, CISettings(resamples=20000))
    from scipy import stats

    half = stats.t.ppf(0.975, 4) * values.std(ddof=1) / np.sqrt(5)
    assert iv.width / 2 == pytest.approx(half, rel=0.05)   # bootstrap SE ~ s / sqrt(n)


@pytest.mark.parametrize("settings", [CISettings(), PERCENTILE], ids=["t", "percentile"])
def test_interval_narrows_when_the_same_spread_has_more_seeds(settings: CISettings) -> None:
    values = [10.0, 11.0, 10.4, 10.7]
    few = mean_interval(values, settings)
    many = mean_interval(values * 4, settings)       # same spread, 4x the runs
    assert many.width < few.width


def test_t_interval_narrows_as_seeds_are_added_on_average() -> None:
    rng = np.random.default_rng(0)
    widths = {n: [] for n in (2, 3, 5, 10)}
    for _ in range(200):
        draws = rng.normal(10.0, 0.5, size=10)
        for n in widths:
            widths[n].append(mean_interval(draws[:n]).width)
    medians = [float(np.median(widths[n])) for n in sorted(widths)]
    assert medians == sorted(medians, reverse=True)


def test_t_interval_covers_the_true_mean_about_95_percent() -> None:
    rng = np.random.default_rng(1)
    covered = sum(mean_interval(rng.normal(0.0, 1.0, size=3), CISettings(resamples=500))
                  .contains(0.0) for _ in range(400))
    assert 0.88 <= covered / 400 <= 0.995


def test_difference_interval_tells_apart_only_separated_groups() -> None:
    a = [10.0, 10.3, 9.8, 10.1]
    same = difference_interval(a, [10.1, 9.9, 10.2, 10.0])
    apart = difference_interval(a, [12.0, 12.4, 11.9, 12.2])
    assert same.contains(0.0)
    assert not apart.contains(0.0) and apart.high < 0
    assert apart.estimate == pytest.approx(np.mean(a) - 12.125)


def test_identical_values_give_a_point_interval() -> None:
    iv = difference_interval([1.0, 1.0], [1.0, 1.0])
    assert iv.low == iv.high == 0.0 and iv.contains(0.0)


def test_shift_and_overlap() -> None:
    iv = mean_interval([5.0, 6.0, 5.5])
    delta = iv.shifted(4.0)
    assert delta.estimate == pytest.approx(1.5) and delta.width == pytest.approx(iv.width)
    assert iv.overlaps(iv) and not iv.overlaps(iv.shifted(-100.0))


def test_spread() -> None:
    s = spread([1.0, 3.0])
    assert (s.n, s.mean, s.low, s.high) == (2, 2.0, 1.0, 3.0)
    assert s.sd == pytest.approx(np.sqrt(2))
    assert spread([4.0]).sd == 0.0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="replicate.ci.method"):
        CISettings(method="bca")
    with pytest.raises(ValueError, match="replicate.ci.level"):
        CISettings(level=95)
    assert CISettings.from_config({"method": "percentile"}).method == "percentile"
    assert CISettings.from_config(None) == CISettings()
