"""Plots: one function per kind of figure (STYLE §6), shared by every chapter.

Each takes its data first and `ax=None`, and returns the Figure. Runs are grouped as
`{label: [run, run, …]}` (one run per seed); a run is anything with `.eval_loss`
(E·T+1, T) and, optionally, `.order`. Bands are ±1 sd. No titles: captions live in the
notebook cell's metadata.
"""

import matplotlib.pyplot as plt
import numpy as np

from . import metrics

COLORS = {"cyclic": "#1f5fa8", "shuffled": "#d4631a"}  # fixed across the book
_CYCLE = ["#1f5fa8", "#d4631a", "#2a9d55", "#8e44ad", "#b8860b", "#c0392b", "#555555"]
plt.rcParams.update({"lines.linewidth": 2, "figure.figsize": (7.5, 3.6), "figure.dpi": 110})


def color(label: str, i: int = 0) -> str:
    """The book's colour for a label: fixed for cyclic/shuffled, else the i-th of a cycle."""
    return COLORS.get(label, _CYCLE[i % len(_CYCLE)])


def axes(ax):
    """(figure, axes): `ax`'s, or a new figure's when `ax` is None."""
    if ax is None:
        fig, ax = plt.subplots()
    return ax.figure, ax


def _order(run) -> np.ndarray:
    order = getattr(run, "order", None)
    if order is None:
        n_ep, n_docs = run.eval_loss.shape[0] - 1, run.eval_loss.shape[1]
        order = np.tile(np.arange(n_docs), n_ep // n_docs)
    return np.asarray(order)


def band(ax, x, ys, label, c):
    """Mean of the rows of `ys` over `x`, with a ±1 sd band (ddof=1) when there are
    several rows; returns the mean."""
    ys = np.asarray(ys)
    mean = ys.mean(axis=0)
    ax.plot(x, mean, color=c, label=label)
    if ys.shape[0] > 1:
        sd = ys.std(axis=0, ddof=1)
        ax.fill_between(x, mean - sd, mean + sd, color=c, alpha=0.2, lw=0)
    return mean


def rs_axes(ax) -> None:
    """The recovery-score axes of every chapter: RS(n) over integer epochs, a zero line."""
    ax.axhline(0, color="0.6", lw=1, zorder=0)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_xlabel("epoch n")
    ax.set_ylabel("recovery score RS(n)")


def doc_curve(runs_by_label: dict, *, doc: int = 0, ax=None):
    """Loss on one document over episodes, mean ± sd over seeds (Fig. 1a).

    Black circles: just before each training episode on that document.
    """
    fig, ax = axes(ax)
    for i, (label, runs) in enumerate(runs_by_label.items()):
        ys = [metrics.doc_curve(r.eval_loss, doc) for r in runs]
        mean = band(ax, np.arange(len(ys[0])), ys, label, color(label, i))
        rows = metrics.revisit_rows(_order(runs[0]), doc)
        same = all(np.array_equal(metrics.revisit_rows(_order(r), doc), rows) for r in runs)
        if same and len(rows):
            ax.plot(rows, mean[rows], "o", color="black", ms=4, zorder=3)
    ax.set_xlabel("episode k (documents trained)")
    ax.set_ylabel(f"loss on document {doc + 1}")
    ax.legend(frameon=False)
    return fig


def shift_averaged(runs_by_label: dict, *, ax=None):
    """Shift-averaged loss vs epochs since first training (Fig. 1b; App. A.4).

    The band is ±1 sd over seeds and documents, as in the paper.
    """
    fig, ax = axes(ax)
    for i, (label, runs) in enumerate(runs_by_label.items()):
        n_docs = runs[0].eval_loss.shape[1]
        aligned = np.concatenate([metrics.shift_aligned(r.eval_loss, n_docs) for r in runs])
        x = np.arange(aligned.shape[1]) / n_docs
        band(ax, x, aligned, label, color(label, i))
    ax.set_xlabel("epochs since the document was first trained")
    ax.set_ylabel("shift-averaged loss")
    ax.legend(frameon=False)
    return fig


def online_loss(runs_by_label: dict, *, ax=None):
    """Online (prequential) loss per episode, mean ± sd over seeds (Fig. 1c)."""
    fig, ax = axes(ax)
    for i, (label, runs) in enumerate(runs_by_label.items()):
        ys = [metrics.online_loss(r.eval_loss, _order(r)) for r in runs]
        band(ax, np.arange(1, len(ys[0]) + 1), ys, label, color(label, i))
    n_docs = next(iter(runs_by_label.values()))[0].eval_loss.shape[1]
    for e in range(1, len(ys[0]) // n_docs):
        ax.axvline(e * n_docs + 0.5, color="0.8", lw=1, zorder=0)
    ax.set_xlabel("episode k")
    ax.set_ylabel("online loss (before training)")
    ax.legend(frameon=False)
    return fig


def recovery_by_epoch(scores_by_label: dict, *, ax=None):
    """Recovery score RS(n) per epoch n, mean ± sd over seeds.

    `scores_by_label` maps a label to an array (seeds, epochs) of RS values.
    """
    fig, ax = axes(ax)
    for i, (label, scores) in enumerate(scores_by_label.items()):
        scores = np.atleast_2d(scores)
        band(ax, np.arange(1, scores.shape[1] + 1), scores, label, color(label, i))
    rs_axes(ax)
    ax.legend(frameon=False)
    return fig


def table(columns: dict, *, fmt: str = ".3f"):
    """A Markdown table of mean ± sd over seeds: `{column: {row: [values]}}`."""
    from IPython.display import Markdown

    rows = list(dict.fromkeys(r for col in columns.values() for r in col))
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for r in rows:
        cells = []
        for col in columns.values():
            m, s = metrics.mean_sd(col[r]) if r in col else (float("nan"), 0.0)
            cells.append(f"{m:{fmt}} ± {s:{fmt}} (n={len(col.get(r, []))})")
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return Markdown("\n".join(lines))
