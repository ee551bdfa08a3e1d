"""Plots: one function per kind of figure (STYLE §6), shared by every chapter.

Each takes its data first and `ax=None`, and returns the Figure. Runs are grouped as
`{label: [run, run, …]}` (one run per seed); a run is anything with `.eval_loss`
(E·T+1, T) and, optionally, `.order`. Bands are ±1 sd. No titles.

The book's figure conventions (checked in a browser by tests/test_browser.py):

- **Named by the paper's numbers only.** A caption starts with the paper's figure,
  "Fig. 5(a) at CPU scale: …"; Sphinx's own numbering is off (`numfig: false`), so
  no "Fig. 6 Fig. 7(a)". Figures that are not the paper's say "beyond the paper".
- **Every figure captioned** with what is plotted, the model and scale, and n:
  `caption(...)` writes it in one form, and `show(fig, text)` displays a figure with
  its caption when library code shows several figures from one cell; a notebook
  cell showing one figure may instead carry the same text as `mystnb.figure.caption`.
  A long model description goes in the chapter's text once, the caption names the
  model compactly.
- **Readable at 100 % zoom.** Text is at least 8 pt (`rcParams` below) and figures at
  most `COLUMN_IN` wide, so no text renders under 8 CSS px in the book's text column.
  Every PNG shown in a notebook records its smallest text in pixels
  (`TEXT_PX_KEY`), which the browser check scales by the image's rendered size.
- **RS is a share.** Recovery scores outside [0, 1] are degenerate (`share`): they
  are left out of means and intervals and marked, never plotted as a share.
- **Tables fit the column**: few columns, compact labels (`scale.row`), cells wrap
  (book/css/overrides.css).
"""

import html
import re

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from . import metrics

COLORS = {"cyclic": "#1f5fa8", "shuffled": "#d4631a"}  # fixed across the book
_CYCLE = ["#1f5fa8", "#d4631a", "#2a9d55", "#8e44ad", "#b8860b", "#c0392b", "#555555"]
# The text column of the book is 688 CSS px at a 1280 px window; a figure of
# COLUMN_IN inches at the figure dpi (110) is shown at about 0.83 of its size, so
# 8 pt text renders at about 10 px (≥ 8, the browser check's floor).
COLUMN_IN = 7.5
MIN_FONT_PT = 8.0
plt.rcParams.update({
    "lines.linewidth": 2, "figure.figsize": (COLUMN_IN, 3.6), "figure.dpi": 110,
    "font.size": 10, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
    "legend.fontsize": 9, "legend.title_fontsize": 9, "figure.titlesize": 10,
})
TEXT_PX_KEY = "anticip smallest text px"  # PNG tEXt key, read by tests/test_browser.py


def text_px(fig) -> float:
    """The smallest font size of any visible, non-empty text in `fig`, in pixels at
    the figure's dpi (pt × dpi / 72); inf when the figure has no text."""
    fig.draw_without_rendering()  # tick labels exist only once the figure is laid out
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)
             if t.get_visible() and t.get_text().strip()]
    return min(sizes, default=float("inf")) * fig.dpi / 72


def png(fig) -> str:
    """The figure as base64 PNG (as IPython shows it), with `text_px` in its tEXt."""
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, "png", base64=True, bbox_inches="tight",
                        metadata={TEXT_PX_KEY: f"{text_px(fig):.2f}"})


def _record_text_size() -> None:
    """In a kernel, show every Matplotlib figure through `png` (so the book's pages
    carry each figure's text size). The inline backend registers its own PNG
    formatter when it is first loaded, so load it first, then replace the formatter."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None or "inline" not in matplotlib.get_backend().lower():
        return
    import matplotlib_inline.backend_inline  # noqa: F401  (registers its formatter)

    ip.display_formatter.formatters["image/png"].for_type(matplotlib.figure.Figure, png)


_record_text_size()


def caption(paper: str | None, what: str, *, model: str | None = None,
            n: str | int | None = None, note: str = "") -> str:
    """A caption in the book's one form: "<paper figure> at CPU scale: <what>. Model:
    <model>. n = <n>. <note>"; `paper` None marks a figure beyond the paper."""
    head = f"{paper}: " if paper else "Beyond the paper: "
    parts = [head + what.rstrip(". ") + "."]
    if model:
        parts.append(f"Model: {model.rstrip('. ')}.")
    if n is not None:
        parts.append(f"n = {n}." if isinstance(n, int) else f"{n.rstrip('. ')}.")
    if note:
        parts.append(note.rstrip(". ") + ".")
    return " ".join(parts)


# A model label as `compare.model_label` writes it: "<name>, random init (<init
# recipe>)[; byte-level tokenizer (C counts bytes)]" (some 25 words).
_FULL_MODEL = re.compile(r"(?P<head>[^;|()\s][^;|()]*?, random init) "
                         r"\((?P<recipe>(?:[^()]|\([^()]*\))*)\)"
                         r"(?P<tok>; byte-level tokenizer \(C counts bytes\))?")


def compact_model(label: str) -> str:
    """A model label short enough for a caption or a table cell: "Pythia-14M
    architecture, random init (Pythia recipe: …); byte-level tokenizer (C counts
    bytes)" → "Pythia-14M architecture, random init, bytes". Give the full label once
    per page (`compact_models`)."""
    m = _FULL_MODEL.search(label)
    if m:  # Pythia's own init recipe is the default; any other init is named
        init = "" if m["recipe"].startswith("Pythia recipe") else f" ({m['recipe']})"
        return m["head"].strip() + init + (", bytes" if m["tok"] else "")
    return label.split(";")[0].strip()


def compact_models(text: str) -> tuple[str, dict]:
    """`text` with every full model label replaced by its `compact_model` form, and
    {compact: full} of those replaced (to print once)."""
    full = {}

    def short(m):
        c = compact_model(m[0])
        full[c] = m[0]
        return c

    return _FULL_MODEL.sub(short, text), full


def show(fig, text: str) -> None:
    """Display `fig` and, right below it, `text` as its caption (styled as Sphinx
    styles a figure caption: book/css/overrides.css), then close the figure. For
    cells that show several figures. The image is a plain PNG output (through `png`,
    with its text-size record), so no image data sits in the page's text."""
    from IPython.display import HTML, display

    display(fig)
    display(HTML(f'<p class="anticip-caption">{html.escape(text)}</p>'))
    plt.close(fig)


def share(scores) -> tuple[np.ndarray, np.ndarray]:
    """(scores with values outside [0, 1] set to nan, the mask of those values).

    RS is the share of the forgetting recovered before the revisit: a value above 1
    (the loss ended below its post-training value) or below 0 is degenerate, not a
    share, and is left out of every mean and interval drawn."""
    a = np.asarray(scores, dtype=float)
    bad = np.isfinite(a) & ((a < 0) | (a > 1))
    return np.where(bad, np.nan, a), bad


def mark_degenerate(ax, x, counts, c: str) -> None:
    """Mark, at the top of an RS axis, the x positions where `counts` (> 0) seeds had a
    degenerate RS (outside [0, 1]; left out of the mean): an open triangle and the
    count."""
    x, counts = np.asarray(x, float), np.asarray(counts)
    if not counts.any():
        return
    for xi, k in zip(x[counts > 0], counts[counts > 0]):
        ax.plot([xi], [1.0], "^", mfc="white", mec=c, ms=6, zorder=3, clip_on=False)
        ax.annotate(str(int(k)), (xi, 1.0), textcoords="offset points", xytext=(5, -3),
                    fontsize=8, color=c)
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, 0), max(hi, 1.08))


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


def band(ax, x, ys, label, c, floor=None):
    """Mean of the rows of `ys` over `x`, with a ±1 sd band (ddof=1) when there are
    several rows; returns the mean. `floor`: clip the band there (0 for losses)."""
    ys = np.asarray(ys)
    mean = ys.mean(axis=0)
    ax.plot(x, mean, color=c, label=label)
    if ys.shape[0] > 1:
        sd = ys.std(axis=0, ddof=1)
        lo = mean - sd if floor is None else np.maximum(mean - sd, floor)
        ax.fill_between(x, lo, mean + sd, color=c, alpha=0.2, lw=0)
    return mean


def n_label(label: str, n: int) -> str:
    """Legend text: the label with its n (flagged when below 3)."""
    tail = f"n = {n}" + (", too few for a band" if n < 2 else " only" if n < 3 else "")
    return f"{label} ({tail})"


def model_note(ax, note: str | None) -> None:
    """Name the model (e.g. the stand-in for the paper's) in small type under the axes."""
    if note:
        ax.text(0.0, -0.2, f"model: {note}", transform=ax.transAxes, fontsize=8.5,
                color="0.3", va="top", wrap=True)


def rs_axes(ax) -> None:
    """The recovery-score axes of every chapter: RS(n) over integer epochs, a zero line."""
    ax.axhline(0, color="0.6", lw=1, zorder=0)
    ax.xaxis.set_major_locator(plt.MaxNLocator(nbins="auto", integer=True))  # fits the panel
    ax.set_xlabel("epoch n")
    ax.set_ylabel("recovery score RS(n)")


def doc_curve(runs_by_label: dict, *, doc: int = 0, note: str | None = None, ax=None):
    """Loss on one document over episodes, mean ± sd over seeds (Fig. 1a).

    Black circles: just before each training episode on that document. The legend
    gives n per label; `note` (e.g. the model) goes under the first label.
    """
    fig, ax = axes(ax)
    for i, (label, runs) in enumerate(runs_by_label.items()):
        ys = [metrics.doc_curve(r.eval_loss, doc) for r in runs]
        text = n_label(label, len(runs))
        mean = band(ax, np.arange(len(ys[0])), ys, text, color(label, i), floor=0.0)
        rows = metrics.revisit_rows(_order(runs[0]), doc)
        same = all(np.array_equal(metrics.revisit_rows(_order(r), doc), rows) for r in runs)
        if same and len(rows):
            ax.plot(rows, mean[rows], "o", color="black", ms=4, zorder=3)
    ax.set_xlabel("episode k (documents trained)")
    ax.set_ylabel(f"loss on document {doc + 1}")
    ax.legend(frameon=False, loc="upper right", fontsize=9)
    model_note(ax, note)
    return fig


def shift_averaged(runs_by_label: dict, *, note: str | None = None, ax=None):
    """Shift-averaged loss vs epochs since first training (Fig. 1b; App. A.4).

    The band is ±1 sd over seeds and documents, as in the paper.
    """
    fig, ax = axes(ax)
    for i, (label, runs) in enumerate(runs_by_label.items()):
        n_docs = runs[0].eval_loss.shape[1]
        aligned = np.concatenate([metrics.shift_aligned(r.eval_loss, n_docs) for r in runs])
        x = np.arange(aligned.shape[1]) / n_docs
        text = n_label(label, len(runs))
        band(ax, x, aligned, text, color(label, i), floor=0.0)
    ax.set_xlabel("epochs since the document was first trained")
    ax.set_ylabel("shift-averaged loss")
    ax.legend(frameon=False)
    model_note(ax, note)
    return fig


def online_loss(runs_by_label: dict, *, note: str | None = None, ax=None):
    """Online (prequential) loss per episode, mean ± sd over seeds (Fig. 1c)."""
    fig, ax = axes(ax)
    for i, (label, runs) in enumerate(runs_by_label.items()):
        ys = [metrics.online_loss(r.eval_loss, _order(r)) for r in runs]
        text = n_label(label, len(runs))
        band(ax, np.arange(1, len(ys[0]) + 1), ys, text, color(label, i), floor=0.0)
    n_docs = next(iter(runs_by_label.values()))[0].eval_loss.shape[1]
    for e in range(1, len(ys[0]) // n_docs):
        ax.axvline(e * n_docs + 0.5, color="0.8", lw=1, zorder=0)
    ax.set_xlabel("episode k")
    ax.set_ylabel("online loss (before training)")
    ax.legend(frameon=False)
    model_note(ax, note)
    return fig


def recovery_by_epoch(scores_by_label: dict, *, ax=None):
    """Recovery score RS(n) per epoch n, mean ± sd over seeds.

    `scores_by_label` maps a label to an array (seeds, epochs) of RS values. Values
    outside [0, 1] are degenerate (`share`): left out of the mean and band, and
    counted by a mark at the top of the axes.
    """
    fig, ax = axes(ax)
    for i, (label, scores) in enumerate(scores_by_label.items()):
        scores, bad = share(np.atleast_2d(scores))
        x, c = np.arange(1, scores.shape[1] + 1), color(label, i)
        cols = [col[np.isfinite(col)] for col in scores.T]  # the finite seeds per epoch
        mean = np.array([v.mean() if v.size else np.nan for v in cols])
        sd = np.array([v.std(ddof=1) if v.size > 1 else np.nan for v in cols])
        ax.plot(x, mean, color=c, label=label)
        if np.isfinite(sd).any():
            ax.fill_between(x, mean - sd, mean + sd, color=c, alpha=0.2, lw=0)
        mark_degenerate(ax, x, bad.sum(axis=0), c)
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


def interval_bars(ax, x, ivs, label: str, c: str) -> None:
    """Intervals (`stats.Interval`s) drawn at `x` as their means joined by a line, with
    error bars to their ends (none where an interval is undefined)."""
    m = np.array([iv.mean for iv in ivs])
    err = np.array([[iv.mean - iv.lo, iv.hi - iv.mean] for iv in ivs]).T
    ax.errorbar(x, m, yerr=np.nan_to_num(err), fmt="o-", color=c, capsize=3, label=label)


def recovery_intervals(scores_by_label: dict, *, note: str | None = None, ax=None):
    """RS(n) per epoch with the mean and a 95 % t interval over seeds per label.

    `scores_by_label` maps a label to an array (epochs, seeds) of RS values (as
    `compare.per_seed(...)["rs"]`); non-finite values are left out and counted, and
    values outside [0, 1] are degenerate (`share`): left out and marked.
    """
    from . import stats

    fig, ax = axes(ax)
    labels = list(scores_by_label)
    width = 0.12 * (len(labels) - 1)
    for i, label in enumerate(labels):
        raw = np.atleast_2d(np.asarray(scores_by_label[label], dtype=float))
        scores, bad = share(raw)  # RS outside [0, 1]: degenerate, marked, not averaged
        ivs = [stats.t_interval(row) for row in scores]
        x = np.arange(1, len(ivs) + 1) + (i * 0.12 - width / 2)
        n = int(np.isfinite(raw).sum(axis=1).max()) if raw.size else 0
        interval_bars(ax, x, ivs, n_label(label, n), color(label, i))
        mark_degenerate(ax, x, bad.sum(axis=1), color(label, i))
    rs_axes(ax)
    ax.legend(frameon=False)
    model_note(ax, note)
    return fig


def contrasts(rows, *, ax=None):
    """A forest plot: each row's contrast (e.g. cyclic − shuffled) with its interval.

    `rows`: objects with `.statistic`, `.contrast_name`, `.contrast` (stats.Interval)
    and `.verdict` (as `compare.compare(...)["rows"]`).
    """
    fig, ax = axes(ax)
    fig.set_size_inches(7.5, 0.55 * len(rows) + 1.2)
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
        iv = r.contrast
        c = {"reproduced": "#2a9d55", "opposite": "#c0392b"}.get(r.verdict, "0.35")
        if np.isfinite(iv.lo):
            ax.plot([iv.lo, iv.hi], [yi, yi], color=c, lw=2.5)
        ax.plot([iv.mean], [yi], "o", color=c, ms=6)
    ax.axvline(0, color="0.5", lw=1, ls="--", zorder=0)
    ax.set_yticks(y, [f"{r.statistic}\n({r.contrast_name}; {r.verdict})" for r in rows],
                  fontsize=9)
    ax.set_xlabel("contrast, mean and 95 % interval over seeds")
    fig.tight_layout()
    return fig


def records_table(rows: list[dict]):
    """A Markdown table from a list of dicts with the same keys (one row each)."""
    from IPython.display import Markdown

    if not rows:
        return Markdown("*(no rows)*")
    keys = list(rows[0])
    esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    lines += ["| " + " | ".join(esc(r.get(k, "")) for k in keys) + " |" for r in rows]
    return Markdown("\n".join(lines))


def along_axis(points: list[dict], *, epoch: int, xlabel: str, note: str | None = None,
               ax=None):
    """RS(epoch) of both orders at each point of a model axis (chapter 2), mean and
    95 % t interval over seeds; points are evenly spaced, in the axis's order.

    `points`: dicts with "label", "rs_cyc" and "rs_shuf" (per-seed arrays), as
    `scale.point_stats`; points without runs are skipped. RS outside [0, 1] is
    degenerate (`share`): left out of the interval and marked. Many points, or long
    labels, turn the tick labels so that they do not overlap.
    """
    from . import stats

    fig, ax = axes(ax)
    pts = [p for p in points if p.get("n")]
    x = np.arange(len(pts))
    for i, (order, key) in enumerate((("cyclic", "rs_cyc"), ("shuffled", "rs_shuf"))):
        vals = [share(p[key]) for p in pts]  # RS outside [0, 1]: degenerate, marked
        ivs = [stats.t_interval(v) for v, _ in vals]
        n = min((int(np.isfinite(p[key]).sum()) for p in pts), default=0)
        xi = x + (i - 0.5) * 0.1
        interval_bars(ax, xi, ivs, n_label(order, n), color(order))
        mark_degenerate(ax, xi, [b.sum() for _, b in vals], color(order))
    ax.axhline(0, color="0.6", lw=1, zorder=0)
    ax.set_xlim(-0.5, len(pts) - 0.5)  # one point sits in the middle, not at the edges
    ax.set_xticks(x, [p["label"] for p in pts])
    if sum(len(str(p["label"])) for p in pts) > 60:
        ax.tick_params(axis="x", labelrotation=25)
        for t in ax.get_xticklabels():
            t.set_ha("right")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"recovery score RS({epoch})")
    ax.legend(frameon=False)
    model_note(ax, note)
    return fig
