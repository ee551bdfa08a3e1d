"""Intervals against hand-worked values (t table: t_{0.975,4} = 2.776)."""

import math

import pytest

from anticip_lib import stats


def test_t_interval_hand_worked():
    # values 1..5: mean 3, sd = sqrt(2.5) = 1.5811, se = 0.7071, half = 2.7764 * 0.7071
    iv = stats.t_interval([1, 2, 3, 4, 5])
    assert iv.mean == pytest.approx(3.0)
    assert iv.hi - iv.mean == pytest.approx(2.7764 * math.sqrt(2.5 / 5), abs=1e-3)
    assert iv.lo == pytest.approx(3.0 - 1.9632, abs=1e-3)
    assert iv.n == 5 and iv.excludes_zero()


def test_paired_interval_and_non_finite():
    # differences 1, 1, 1, 3 (inf dropped): mean 1.5, sd 1, t_{0.975,3} = 3.182
    iv = stats.paired_interval([2, 3, 4, 6, float("inf")], [1, 2, 3, 3, 0])
    assert iv.n == 4 and iv.n_dropped == 1
    assert iv.mean == pytest.approx(1.5)
    assert iv.hi == pytest.approx(1.5 + 3.1824 * 1 / 2, abs=1e-3)
    assert "1 non-finite left out" in iv.text()
    with pytest.raises(ValueError, match="equal shapes"):
        stats.paired_interval([1, 2], [1])


def test_interval_texts_and_no_verdict_here():
    # the verdict is verdicts.judge's (tests/test_verdicts.py); stats only gives intervals
    assert not hasattr(stats, "verdict") and not hasattr(stats, "MIN_SEEDS")
    assert stats.t_interval([]).text() == "n/a (no finite values)"
    assert "no interval" in stats.t_interval([0.3]).text()
    # 0.1, 0.12, 0.09, 0.11, 0.1: mean 0.104, sd 0.01140, half 2.7764 · 0.0051 = 0.01416
    assert stats.t_interval([0.1, 0.12, 0.09, 0.11, 0.1]).text(".3f") == \
        "0.104 [0.090, 0.118], n = 5"
