"""Plots of the toy model (chapter 7; `anticip_lib.toy`), built on the shared
`anticip_lib.plots` (colours, axes, ±1 sd bands). Each takes its data first and
`ax=None`, and returns the Figure; composite figures are `plots.COLUMN_IN` wide, so
their text stays readable in the book's column.
"""

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap, Normalize

from . import metrics, plots, toy

_COLORS = {"no learning (α = 0)": "0.55"}  # the untrained reference, in grey


def _color(label: str, i: int) -> str:
    return _COLORS.get(label, plots.color(label, i))


def _log_axis(ax, curves):
    """Log y-axis for toy losses; exact zeros (the trained task) drop off the bottom."""
    pos = np.concatenate([c[np.isfinite(c) & (c > 0)] for c in curves])
    ax.set_yscale("log", nonpositive="clip")
    if pos.size:
        ax.set_ylim(pos.min() / 3, pos.max() * 3)


def loss(runs_by_label: dict, *, doc: int = 0, epochs=None, log: bool = True, ax=None):
    """Loss on one task over steps k, mean ± sd over seeds (Fig. 10).

    `epochs` = (first, last), 1-based and inclusive, shows only those epochs (default:
    all); `log` picks a log y-axis, where the exact zeros just after the task is
    trained drop off the bottom. Black circles: just before each step on that task
    (where all seeds share the order).
    """
    fig, ax = plots.axes(ax)
    curves = []
    for i, (label, runs) in enumerate(runs_by_label.items()):
        T = runs[0].config.n_tasks
        lo, hi = (1, runs[0].config.n_epochs) if epochs is None else epochs
        k = np.arange((lo - 1) * T, hi * T + 1)
        ys = [metrics.doc_curve(r.eval_loss, doc)[k] for r in runs]
        mean = plots.band(ax, k, ys, label, _color(label, i))
        curves.append(mean)
        rows = metrics.revisit_rows(runs[0].order, doc)
        if all(np.array_equal(metrics.revisit_rows(r.order, doc), rows) for r in runs):
            rows = rows[(rows >= k[0]) & (rows <= k[-1])]
            ax.plot(rows, mean[rows - k[0]], "o", color="black", ms=3, zorder=3)
    if log:
        _log_axis(ax, curves)
    ax.set_xlabel("step k (tasks trained)")
    ax.set_ylabel(f"loss on task {doc + 1}")
    ax.legend(frameon=False, fontsize="small")
    return fig


def recovery(runs_by_label: dict, *, doc: int = 0, loss_labels=None, zoom: int = 3,
             ax=None):
    """Loss on one task over all steps (log scale), the last `zoom` epochs of it
    (linear scale; 0 = no such panel), and RS(n) per epoch; mean ± sd over seeds.

    `runs_by_label` maps a label to a list of ToyRun (one per seed). `loss_labels`
    picks the labels drawn in the loss panels (default: all). In the RS panel an
    open circle marks an epoch where some seed's RS is degenerate
    (`toy.recovery_curve`); diverged runs have no RS.
    """
    if ax is None:
        widths = [1.6, 1, 1] if zoom else [1.6, 1]
        fig, ax = plt.subplots(1, len(widths), figsize=(plots.COLUMN_IN, 3.0),
                               width_ratios=widths, layout="constrained")
    fig = ax[0].figure
    keep = list(runs_by_label) if loss_labels is None else list(loss_labels)
    shown = {k: runs_by_label[k] for k in keep}
    loss(shown, doc=doc, ax=ax[0])
    if zoom:
        E = next(iter(shown.values()))[0].config.n_epochs
        loss(shown, doc=doc, epochs=(max(1, E - zoom + 1), E), log=False, ax=ax[1])
        ax[1].get_legend().remove()
        ax[1].set_ylim(bottom=0)
    _rs_panel(ax[-1], runs_by_label)
    ax[-1].legend(frameon=False, fontsize="small", loc="center right")
    return fig


def _rs_panel(a, runs_by_label: dict) -> None:
    """RS(n) per epoch, mean ± sd over seeds; open circles: degenerate in some seed."""
    for i, (label, runs) in enumerate(runs_by_label.items()):
        curves = [toy.recovery_curve(r) for r in runs]
        rs = np.array([c[0] for c in curves])
        deg = np.array([c[1] for c in curves]).any(axis=0)
        c = _color(label, i)
        n = np.arange(1, rs.shape[1] + 1)
        mean = plots.band(a, n, rs, label, c)
        a.plot(n[deg], mean[deg], "o", mfc="white", mec=c, ms=4, zorder=3)
    plots.rs_axes(a)
    a.set_xlim(0.5, n[-1] + 0.5)  # the epochs show even when every RS is nan (diverged)
    a.set_ylim(min(0, a.get_ylim()[0]), 1.02)


def circle(run, *, epochs=(0, 1, 2, 5, 10, 20), ax=None):
    """Fig. 11: the solutions f_i^{-1}(P x_i) projected on their first two principal
    axes, one panel per epoch, coloured by task index and joined in task order."""
    epochs = [e for e in epochs if e < len(run.solutions)]
    if ax is None:
        cols = min(4, len(epochs))
        rows = -(-len(epochs) // cols)
        side = min(2.3, (plots.COLUMN_IN - 0.8) / cols)  # 0.8 in for the colour bar
        fig, ax = plt.subplots(rows, cols, figsize=(side * cols + 0.8, (side + 0.3) * rows),
                               layout="constrained", squeeze=False)
        for a in ax.flat[len(epochs):]:
            a.set_axis_off()
    ax = np.ravel(ax)[: len(epochs)]
    T = run.config.n_tasks
    for a, e in zip(ax, epochs):
        if not np.isfinite(run.solutions[e]).all():
            a.text(0.5, 0.5, "diverged", ha="center", va="center", transform=a.transAxes)
            a.set_xticks([]), a.set_yticks([])
            a.set_xlabel(f"epoch {e}")
            continue
        xy, share = toy.pca2(run.solutions[e])
        xy = xy / np.abs(xy).max()
        loop = np.r_[np.arange(T), 0]
        a.plot(xy[loop, 0], xy[loop, 1], color="0.75", lw=1, zorder=1)
        sc = a.scatter(xy[:, 0], xy[:, 1], c=np.arange(1, T + 1), cmap="viridis", s=18,
                       zorder=2, vmin=1, vmax=T)
        a.set_aspect("equal")
        a.set_xticks([]), a.set_yticks([])
        a.set_xlabel(f"epoch {e}\norder {toy.circle_order(xy):.2f}, var {share:.2f}",
                     fontsize="small")
    fig = ax[0].figure
    fig.colorbar(sc, ax=list(ax), label="task i", shrink=0.8)
    return fig


def _log_edges(v):
    """Cell edges for values on a log axis: geometric midpoints, extended at both ends."""
    v = np.asarray(v, float)
    mid = np.sqrt(v[1:] * v[:-1])
    return np.r_[v[0] ** 2 / mid[0], mid, v[-1] ** 2 / mid[-1]]


def recovery_map(maps: dict, *, marks=None, ax=None):
    """Recovery score over step size α × one setting (`toy.recovery_map` output), one
    panel per map. Grey cells with a cross: diverged; a cyan dot: degenerate RS.
    Dashed line: the critical α of `toy.critical_lr` (α‖x‖² = T/(T−1)); dotted line:
    the single-step bound α‖x‖² = 2.

    `marks` maps a panel label to a list of (value, α, marker, text) points to mark.
    """
    if ax is None:
        cols = min(2, len(maps))
        rows = -(-len(maps) // cols)
        fig, ax = plt.subplots(rows, cols, figsize=(plots.COLUMN_IN, 2.9 * rows),
                               squeeze=False, layout="constrained")
    ax = np.ravel(ax)
    norm = Normalize(0, 1)
    for a, (label, m) in zip(ax, maps.items()):
        lr, v = np.asarray(m["lr"], float), np.asarray(m["values"], float)
        ex, ey = _log_edges(v), _log_edges(lr)
        a.pcolormesh(ex, ey, np.ma.masked_invalid(m["rs"]), cmap="magma", norm=norm)
        d = m["diverged"]
        a.pcolormesh(ex, ey, np.ma.masked_where(~d, d), cmap=ListedColormap(["0.82"]))
        ii, jj = np.nonzero(d)
        a.plot(v[jj], lr[ii], "x", color="0.55", ms=4)
        ii, jj = np.nonzero(m["degenerate"] & ~d)
        a.plot(v[jj], lr[ii], ".", color="cyan", ms=6)
        vv = np.geomspace(ex[0], ex[-1], 100)
        T, N = m["fixed"].get("n_tasks", 25), m["fixed"].get("dim_in", 100)
        if m["over"] == "dim":
            a.plot(vv, toy.critical_lr(vv, T), "--", color="white", lw=1.5)
            a.plot(vv, 6.0 / vv, ":", color="white", lw=1.5)
            a.set_xlabel("dimension N = M")
        else:
            a.plot(vv, toy.critical_lr(N, vv), "--", color="white", lw=1.5)
            a.plot(vv, np.full_like(vv, 6.0 / N), ":", color="white", lw=1.5)
            a.set_xlabel("number of tasks T")
        for value, alpha, marker, text in (marks or {}).get(label, []):
            a.plot(value, alpha, marker, color="cyan", ms=10, mew=2, mfc="none")
            a.annotate(text, (value, alpha), textcoords="offset points", xytext=(0, -16),
                       ha="center", color="cyan", fontsize="small")
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlim(ex[0], ex[-1])
        a.set_ylim(ey[0], ey[-1])
        a.set_ylabel("step size α")
        a.text(0.03, 0.03, label, transform=a.transAxes, color="white", fontsize="small")
    fig = ax[0].figure
    sm = plt.cm.ScalarMappable(norm=norm, cmap="magma")
    epoch = next(iter(maps.values()))["epoch"]
    fig.colorbar(sm, ax=list(ax), label=f"recovery score RS({epoch})", shrink=0.9)
    return fig


def summary(run, *, ax=None):
    """One toy run at a glance (the Explore widget): loss on task 1, RS(n) per epoch,
    and the solutions' 2-D PCA at the last epoch."""
    if ax is None:
        fig, ax = plt.subplots(1, 3, figsize=(plots.COLUMN_IN, 2.8),
                               width_ratios=[1.6, 1, 1], layout="constrained")
    T, E = run.config.n_tasks, run.config.n_epochs
    label = "cyclic" if np.array_equal(run.order, np.tile(np.arange(T), E)) else "shuffled"
    if run.diverged and np.isnan(run.eval_loss[1:, 0]).all():
        ax[0].text(0.5, 0.5, "diverged at once", ha="center", transform=ax[0].transAxes)
    else:
        loss({label: [run]}, ax=ax[0])
    _rs_panel(ax[1], {label: [run]})
    last = run.config.n_epochs
    while last > 0 and not np.isfinite(run.solutions[last]).all():
        last -= 1
    circle(run, epochs=(last,), ax=ax[2:])
    return ax[0].figure
