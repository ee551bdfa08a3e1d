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


def test_share_marks_rs_outside_zero_one_as_degenerate():
    clean, bad = plots.share([0.2, 1.0, 7.0, -0.1, float("nan")])
    assert np.array_equal(bad, [False, False, True, True, False])
    assert np.allclose(clean[:2], [0.2, 1.0]) and np.isnan(clean[2:]).all()
    # RS(2) of the second seed is 7 (degenerate): the mean at epoch 2 is the first's
    fig = plots.recovery_by_epoch({"cyclic": [[0.2, 0.4], [0.4, 7.0]]})
    ax = fig.axes[0]
    assert np.allclose(ax.lines[0].get_ydata(), [0.3, 0.4])
    assert ax.get_ylim()[1] < 1.2  # the 7 is marked at the top, not plotted
    marks = [ln for ln in ax.lines if ln.get_marker() == "^"]
    assert len(marks) == 1 and marks[0].get_xdata()[0] == 2
    assert [t.get_text() for t in ax.texts] == ["1"]  # one seed degenerate there


def test_recovery_intervals_leave_out_degenerate_rs():
    fig = plots.recovery_intervals({"cyclic": [[0.1, 0.12, 0.11, 0.13],
                                               [0.5, 1.23, 0.52, 0.51]]})
    ax = fig.axes[0]
    means = ax.lines[0].get_ydata()  # the errorbar's line through the means
    assert np.allclose(means, [0.115, 0.51])  # epoch 2 without the 1.23
    assert ax.get_ylim()[1] < 1.5


def test_along_axis_one_point_sits_in_the_middle():
    from anticip_lib import stats  # noqa: F401

    pt = {"label": "cosine", "n": 3, "rs_cyc": np.array([0.2, 0.3, 0.4]),
          "rs_shuf": np.array([0.1, 0.1, 0.2])}
    ax = plots.along_axis([pt], epoch=4, xlabel="").axes[0]
    assert ax.get_xlim() == (-0.5, 0.5)


def test_text_px_and_png_record():
    fig, ax = plots.axes(None)
    ax.plot([0, 1])
    ax.set_xlabel("x", fontsize=6)
    assert plots.text_px(fig) == pytest.approx(6 * fig.dpi / 72)
    pytest.importorskip("IPython")
    import base64

    data = base64.b64decode(plots.png(fig))
    record = f"{6 * fig.dpi / 72:.2f}".encode()
    assert plots.TEXT_PX_KEY.encode() + b"\0" + record in data


def test_caption_form():
    assert plots.caption("Fig. 5(a) at CPU scale", "RS(n) per epoch", model="14M shape",
                         n=5) == ("Fig. 5(a) at CPU scale: RS(n) per epoch. "
                                  "Model: 14M shape. n = 5.")
    text = plots.caption(None, "a map.", n="3 seeds")
    assert text.startswith("Beyond the paper: a map.")


def test_compact_model_labels():
    full = ("Pythia-14M architecture, random init (Pythia recipe: small_init + "
            "wang_init); byte-level tokenizer (C counts bytes)")
    iso = ("Pythia-14M architecture, random init (isotropic N(0, 0.02²)); byte-level "
           "tokenizer (C counts bytes)")
    assert plots.compact_model(full) == "Pythia-14M architecture, random init, bytes"
    assert plots.compact_model(iso) == ("Pythia-14M architecture, random init "
                                        "(isotropic N(0, 0.02²)), bytes")
    text, models = plots.compact_models(
        f"T = 5–40 (paper 10–200); {full}; T = 10 | {iso}")
    assert text == ("T = 5–40 (paper 10–200); Pythia-14M architecture, random init, "
                    "bytes; T = 10 | Pythia-14M architecture, random init (isotropic "
                    "N(0, 0.02²)), bytes")
    assert sorted(models.values()) == sorted([full, iso])
    assert plots.compact_model("igpt-here-1m (Image GPT); stand-in") == \
        "igpt-here-1m (Image GPT)"


def test_show_displays_the_figure_then_its_caption(monkeypatch):
    import IPython.display
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    fig, ax = plots.axes(None)
    ax.plot([0, 1])
    plots.show(fig, "Fig. 5(a) at CPU scale: a <b> & c.")
    assert shown[0] is fig and not plt.fignum_exists(fig.number)
    assert shown[1].data == ('<p class="anticip-caption">Fig. 5(a) at CPU scale: '
                             'a &lt;b&gt; &amp; c.</p>')


def test_scale_row_fits_six_columns_and_never_shows_nan():
    from anticip_lib import scale, stats

    st = dict(label="M=1", n=2, n_params=1.3e5, rs_cyc=np.array([np.nan, np.nan]),
              rs_shuf=np.array([0.1, np.nan]), contrast=stats.t_interval([0.3]),
              verdict="inconclusive", fit=np.array([0.1, 0.2]),
              final=np.array([3.0, 3.2]), unstable=0, degenerate=2)
    row = scale.row(st, 4)
    assert list(row) == ["point", "RS(4) cyclic · shuffled", "cyclic − shuffled",
                         "verdict", "fit · final loss", "unstable / degenerate"]
    assert row["point"] == "M=1 (0.13M)"
    assert row["RS(4) cyclic · shuffled"] == "n/a · 0.10 (1 n/a)"
    assert row["fit · final loss"] == "0.15 · 3.10"
    assert "nan" not in " ".join(row.values()).lower()
    empty = scale.row({"label": "T=40"}, 4)
    assert list(empty) == list(row) and empty["point"] == "T=40"


def test_doc_explorer_follows_the_chosen_runs_t_and_e(monkeypatch):
    """Chapter 3's explorer: picking T = 40 or E = 10 runs gives the sliders that
    T and E (they kept the first choice's before)."""
    pytest.importorskip("ipywidgets")
    from types import SimpleNamespace

    from anticip_lib import widgets

    monkeypatch.setattr(widgets, "display", lambda *a, **k: None)
    monkeypatch.setattr(widgets.LiveFigure, "show", lambda self, fig: None)

    def runs(T, E):
        return [SimpleNamespace(eval_loss=np.ones((T * E + 1, T)), order=None)]

    box = widgets.explore_doc_curves({"T=5": {"cyclic": runs(5, 5)},
                                      "T=40": {"cyclic": runs(40, 5)},
                                      "cosine": {"cyclic": runs(10, 10)}})
    pick, shape, doc, epochs = box.children
    assert (doc.max, epochs.max, epochs.value) == (5, 5, (1, 5))
    pick.value = "T=40"
    assert (doc.max, epochs.max) == (40, 5) and "T = 40" in shape.value
    doc.value = 30
    pick.value = "cosine"
    assert (doc.max, doc.value, epochs.max, epochs.value) == (10, 10, 10, (1, 10))
