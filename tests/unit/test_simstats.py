"""server.simstats: confidence intervals and Welch's t-test, checked against values worked
out by hand from the textbook formulas (t quantiles from printed tables)."""

from __future__ import annotations

import math

import pytest

from server.simstats import compare, summarize


def test_mean_and_95_percent_interval_of_five_samples():
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd = sqrt(2.5); t(0.975, 4) = 2.776 (table); half-width = 2.776 * sd / sqrt(5)
    assert s.n == 5 and s.mean == 3.0 and s.sd == pytest.approx(math.sqrt(2.5))
    half = 2.7764 * math.sqrt(2.5) / math.sqrt(5)
    assert s.ci95 == pytest.approx((3.0 - half, 3.0 + half), abs=1e-4)


def test_a_large_sample_interval_approaches_the_normal_one():
    values = [float(i % 10) for i in range(1000)]
    s = summarize(values)
    half = 1.9623 * s.sd / math.sqrt(1000)  # t(0.975, 999) = 1.9623
    assert s.ci95[1] - s.mean == pytest.approx(half, rel=1e-4)


def test_missing_values_are_left_out_and_small_samples_have_no_interval():
    assert summarize([None, 4.0, None, 6.0]).n == 2
    one = summarize([None, 7.0])
    assert (one.n, one.mean, one.sd, one.ci95) == (1, 7.0, None, None)
    assert summarize([None]).mean is None


def test_welch_difference_interval_and_p_value():
    c = compare([3.0, 4.0, 5.0, 6.0], [1.0, 2.0, 3.0, 4.0])
    # equal variances 5/3, n = 4: se = sqrt(2 * 5/12), df = 6, t = 2 / se = 2.191
    se = math.sqrt(2 * (5 / 3) / 4)
    assert c.diff == 2.0 and c.df == pytest.approx(6.0)
    assert c.ci95 == pytest.approx((2.0 - 2.4469 * se, 2.0 + 2.4469 * se), abs=1e-3)
    assert c.p == pytest.approx(0.0710, abs=5e-4)  # two-sided, t = 2.191, df = 6
    assert not c.significant


def test_welch_with_unequal_variances_uses_satterthwaite_df():
    a, b = [10.0, 11.0, 12.0, 13.0, 14.0], [0.0, 10.0, 20.0]
    c = compare(a, b)
    va, vb = 2.5 / 5, 100.0 / 3
    assert c.df == pytest.approx((va + vb) ** 2 / (va**2 / 4 + vb**2 / 2))
    assert c.diff == 2.0 and not c.significant


def test_a_clear_shift_is_significant_and_identical_samples_are_not():
    assert compare([10.0, 11.0, 12.0, 10.5], [1.0, 2.0, 1.5, 2.5]).significant
    same = compare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same.diff == 0.0 and same.p == pytest.approx(1.0) and not same.significant


def test_constant_samples_have_no_noise_to_test_against():
    assert compare([5.0, 5.0], [5.0, 5.0]).p == 1.0
    moved = compare([6.0, 6.0], [5.0, 5.0])
    assert moved.significant and moved.ci95 == (1.0, 1.0)
    assert compare([1.0], [2.0, 3.0]).p is None
