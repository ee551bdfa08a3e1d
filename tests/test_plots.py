"""Tests for metrics.mean_sd and the shared plot helpers, on hand-worked numbers."""

import math

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from anticip_lib import metrics, plots  # noqa: E402


def test_mean_sd_by_hand():
    m, s = metrics.mean_sd([1, 2, 3, 4])
    # mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n − 1 = 3
    assert m == 2.5 and s == pytest.approx(math.sqrt(5 / 3), rel=1e-12)
    assert metrics.mean_sd([7.0]) == (7.0, 0.0)  # one value: no spread, not nan
    m, s = metrics.mean_sd([])
    assert math.isnan(m) and math.isnan(s)
    m, s = metrics.mean_sd([1.0, float("nan")])  # a diverged seed shows, not hides
    assert math.isnan(m) and math.isnan(s)


def test_table_by_hand():
    md = plots.table({"RS(1)": {"cyclic": [0.5, 0.7], "shuffled": [0.1]},
                      "RS(2)": {"cyclic": [1, 2, 3]}}, fmt=".2f")
    assert md.data.splitlines() == [
        "| | RS(1) | RS(2) |",
        "|---|---|---|",
        "| cyclic | 0.60 ± 0.14 (n=2) | 2.00 ± 1.00 (n=3) |",
        "| shuffled | 0.10 ± 0.00 (n=1) | nan ± 0.00 (n=0) |",
    ]


def test_band_draws_mean_and_one_sd():
    fig, ax = plots.axes(None)
    mean = plots.band(ax, [0, 1], [[0.0, 2.0], [2.0, 6.0]], "cyclic", "red")
    assert np.array_equal(mean, [1.0, 4.0])
    (line,) = ax.lines
    assert np.array_equal(line.get_ydata(), [1.0, 4.0]) and line.get_label() == "cyclic"
    (fill,) = ax.collections
    y = fill.get_paths()[0].vertices[:, 1]
    # sd (ddof=1) of (0, 2) is √2, of (2, 6) is 2√2: the band spans mean ± sd
    assert y.min() == pytest.approx(1 - math.sqrt(2))
    assert y.max() == pytest.approx(4 + 2 * math.sqrt(2))
    fig2, ax2 = plots.axes(ax)
    assert ax2 is ax and fig2 is fig
    plots.band(ax, [0, 1], [[0.0, 2.0]], "one seed", "blue")
    assert len(ax.collections) == 1  # one run: no band


def test_recovery_by_epoch_axes():
    fig = plots.recovery_by_epoch({"cyclic": [[0.2, 0.4, 0.6], [0.4, 0.6, 1.0]]})
    ax = fig.axes[0]
    line = ax.lines[0]  # the mean over seeds, at epochs 1, 2, 3
    assert np.array_equal(line.get_xdata(), [1, 2, 3])
    assert np.allclose(line.get_ydata(), [0.3, 0.5, 0.8])
    assert ax.get_xlabel() == "epoch n" and ax.get_ylabel() == "recovery score RS(n)"
    assert [t for t in ax.get_xticks() if 1 <= t <= 3] == [1, 2, 3]  # whole epochs


def test_toy_summary_of_a_diverged_run():
    from anticip_lib import toy, toy_plots

    run = toy.run(n_tasks=6, dim_in=20, dim_embed=20, lr=0.5, n_epochs=4)
    assert run.diverged and np.isnan(toy.recovery_curve(run)[0]).all()
    fig = toy_plots.summary(run)
    rs_ax = fig.axes[1]
    assert rs_ax.get_xlim() == (0.5, 3.5)  # RS(1..3) have places though all are nan
