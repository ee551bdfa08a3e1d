"""Recovery along an axis: a model's size, width, depth, heads, init or pre-training
(chapter 2), or a training factor, T, M or C (chapter 3).

An axis is a tuple of `presets.Point`s (one model each, under one protocol); each point
has cyclic and shuffled runs paired by seed. For every point we report RS(n) of both
orders and their paired contrast (`compare.compare`, the numbers chapter 1 uses); along
an axis, the change of a per-seed statistic between two points, paired by seed (the
same seed trains the same documents at every point).
"""

import os
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from . import compare, metrics, stats, verdicts


def point_runs(point, runs: dict, seeds) -> dict:
    """{"cyclic": [...], "shuffled": [...], "expected": n} of one point, in seed order,
    for the seeds that have runs of both orders (the point's own seeds where it has
    them, else `seeds`); `runs` maps a RunConfig to its Run (a seed missing either run
    is left out and shows as n < expected)."""
    seeds = point.seeds or seeds
    got = {o: {s: runs.get(replace(point.config, order=o, seed=s)) for s in seeds}
           for o in ("cyclic", "shuffled")}
    both = [s for s in seeds if got["cyclic"][s] is not None
            and got["shuffled"][s] is not None]
    return {**{o: [got[o][s] for s in both] for o in got}, "expected": len(seeds)}


# A point's own verdict (the table's column): recovery at this point, cyclic − shuffled
# RS(epoch) paired by seed, judged as a difference claim with the book's RS margin
POINT_CLAIM = verdicts.Claim("—", "recovery at this point", "cyclic − shuffled RS(n)",
                             margin=0.05)


def point_stats(point, by_order: dict, epoch: int) -> dict:
    """The statistics of one point at RS(epoch): per-seed arrays and intervals.

    Keys: label, n, rs_cyc / rs_shuf (per-seed arrays), contrast (paired Interval of
    cyclic − shuffled), verdict, fit (mean share of a document's loss removed by its
    own episode, cyclic runs), final (mean loss over documents at the end, cyclic),
    unstable (runs of both orders), n_params.
    """
    cyc, shuf = compare.paired(by_order["cyclic"], by_order["shuffled"])
    n_docs = point.config.n_docs
    expected = by_order.get("expected", len(cyc))
    if not cyc:
        return dict(label=point.label, n=0, expected=expected)
    c, s = compare.per_seed(cyc, n_docs), compare.per_seed(shuf, n_docs)
    contrast = stats.paired_interval(c["rs"][epoch - 1], s["rs"][epoch - 1])
    fit = [float(np.nanmean(metrics.episode_fit(r.eval_loss, r.order))) for r in cyc]
    return dict(
        label=point.label, n=len(cyc), expected=expected,
        seeds=[r.config.seed for r in cyc],
        rs_cyc=c["rs"][epoch - 1], rs_shuf=s["rs"][epoch - 1], contrast=contrast,
        rs_epochs=c["rs"],  # (epochs, seeds): RS(n) of the cyclic runs for every n
        verdict=verdicts.judge(POINT_CLAIM, c["rs"][epoch - 1] - s["rs"][epoch - 1]).word,
        fit=np.asarray(fit),
        final=np.asarray([float(np.mean(r.eval_loss[-1])) for r in cyc]),
        unstable=int(c["unstable"].sum() + s["unstable"].sum()),
        degenerate=int(c["degenerate"][epoch - 1].sum()),
        n_params=cyc[0].meta.get("n_params"),
        model=compare.model_label(cyc[0]),
    )


def row(st: dict, epoch: int) -> dict:
    """One table row of a point's statistics (for `plots.records_table`), in six
    columns that fit the book's text column: the point (and its parameter count),
    RS(epoch) of both orders (means over seeds), their paired contrast with its 95 %
    interval and n, the verdict, how hard an episode fits (the share of a document's
    loss its own episode removes · the final loss, cyclic means) and the unstable /
    degenerate counts. The model is described once per chapter, not per row."""
    keys = ("point", f"RS({epoch}) cyclic · shuffled", "cyclic − shuffled", "verdict",
            "fit · final loss", "unstable / degenerate")
    if not st.get("n"):
        return dict(zip(keys, (st["label"], "none computed yet", "—", "—", "—", "—")))
    def mean(v) -> str:  # over the finite values; non-finite ones counted, not hidden
        iv = stats.t_interval(v)
        text = f"{iv.mean:.2f}" if iv.n else "n/a"
        return text + (f" ({iv.n_dropped} n/a)" if iv.n and iv.n_dropped else "")

    params = st["n_params"]
    size = f" ({params / 1e6:.2f}M)" if params else ""
    return dict(zip(keys, (
        f"{st['label']}{size}",
        f"{mean(st['rs_cyc'])} · {mean(st['rs_shuf'])}",
        st["contrast"].text(),
        st["verdict"],
        f"{mean(st['fit'])} · {mean(st['final'])}",
        f"{st['unstable']} / {st['degenerate']}",
    )))


def per_seed_value(st: dict, what: str) -> dict:
    """{seed: value} of a point: what = "contrast" (cyclic − shuffled RS), "cyclic"
    (RS of the cyclic runs) or "final" (final loss of the cyclic runs)."""
    vals = {"contrast": st["rs_cyc"] - st["rs_shuf"], "cyclic": st["rs_cyc"],
            "final": st["final"]}[what]
    return dict(zip(st["seeds"], vals))


def change(lo: dict, hi: dict, what: str = "contrast") -> stats.Interval:
    """hi − lo of a per-seed statistic, paired by seed over the seeds both have."""
    a, b = per_seed_value(hi, what), per_seed_value(lo, what)
    seeds = sorted(set(a) & set(b))
    return stats.paired_interval([a[s] for s in seeds], [b[s] for s in seeds])


def change_values(lo: dict, hi: dict, what: str = "contrast") -> np.ndarray:
    """hi − lo of a per-seed statistic, one value per seed both points have (in seed
    order): the per-seed values `change` summarises and a trend claim is judged on."""
    a, b = per_seed_value(hi, what), per_seed_value(lo, what)
    seeds = sorted(set(a) & set(b))
    return np.asarray([a[s] - b[s] for s in seeds], dtype=float)


class AxisClaim(NamedTuple):
    """A figure's claim along an axis: the item, the axis it is read on, what the paper
    says, the per-seed statistic compared (`WHAT`), how the axis's points make its
    estimand (`KINDS`), and the `verdicts.Claim` declared with it (estimand, kind,
    direction, margin, the paper's magnitude), judged by `verdicts.judge`."""

    item: str
    axis: str
    statement: str
    what: str
    kind: str
    claim: verdicts.Claim


# How an axis's points make a claim's estimand (each per seed, paired by seed):
KINDS = {
    "trend": "last point minus first, the paper predicting a rise",
    "falls": "last point minus first, the paper predicting a fall (direction −1)",
    "equivalence": "last point minus first, the paper predicting little effect "
                   "(two one-sided tests against the margin)",
    "none_first": "the first point's contrast, the paper predicting none (two one-sided "
                  "tests against the margin)",
    "every": "each point's contrast, the paper predicting recovery at every point "
             "(`verdicts.combine`: every part the same word → that word, else "
             "'undetermined')",
    "pairs": "each (first, second) pair of points, first minus second, the first "
             "predicted higher (`verdicts.combine`, as 'every')",
    "single": "the one point's contrast",
}
MARGIN = 0.05  # RS units: the book's smallest effect of interest (chapter 1's)
CONTRAST = "cyclic − shuffled RS(4)"


def _claim(item, axis, statement, kind, estimand, direction=+1, paper=None,
           what="contrast"):
    vkind = "equivalence" if kind in ("equivalence", "none_first") else "difference"
    return AxisClaim(item, axis, statement, what, kind, verdicts.Claim(
        item, statement, estimand, kind=vkind, direction=direction, margin=MARGIN,
        paper=paper))


# A chapter's claims, one per paper figure, each with its estimand, direction and margin
# (0.05 RS for every contrast and trend; the equivalence margin of the two "no effect"
# claims is the same 0.05, fixed with the claim: until issue 17's phase 2 it was half
# the mean contrast along the axis, a margin taken from the data). Every estimand is the
# contrast cyclic − shuffled (issue 17: one estimand wherever the claim is about
# anticipation); cyclic-only values are shown beside, never judged. Chapter 2's:
CLAIMS = (
    _claim("Fig. 2(a)", "pretrained", "larger pre-trained models recover more (RS(4) "
           "rises with pre-trained Pythia size; sharp jump 160M → 410M)", "trend",
           f"{CONTRAST}, largest member minus smallest"),
    _claim("Fig. 2(b)", "size", "random-init models recover more weakly; RS still grows "
           "with size", "trend", f"{CONTRAST}, largest shape minus smallest"),
    _claim("Fig. 3(a)", "width", "recovery needs width ≥ 512 (random init, 1B config)",
           "trend", f"{CONTRAST}, widest minus narrowest"),
    # the paper's is a threshold at d = 2048 (depth ≥ 8); at d = 128 the book tests the
    # trend along depth, not the threshold
    _claim("Fig. 3(b)", "depth", "recovery needs depth ≥ 8 (random init, 1B config)",
           "trend", f"{CONTRAST}, deepest minus shallowest"),
    _claim("Fig. 14", "heads", "number of attention heads has little effect",
           "equivalence", f"{CONTRAST}, most heads minus fewest"),
    # the contrast since issue 17's phase 2 (it was the cyclic RS alone before, which the
    # measured text still shows, not judged)
    _claim("Fig. 15", "init", "Pythia init: lower loss and stronger recovery than "
           "isotropic N(0, 0.02²)", "pairs",
           f"{CONTRAST}, Pythia init minus N(0, 0.02²), per shape"),
    _claim("Fig. 16", "steps", "more pre-training steps → more recovery", "trend",
           f"{CONTRAST}, last checkpoint minus first"),
    _claim("Fig. 20", "gpt2", "GPT-2-large shows recovery", "single", CONTRAST),
)
# Chapter 3's (Figs. 5(a-c), 6, 13, 17, 19(a)), written down with the presets, before
# any of their runs was computed (their Claims, estimands and margins: issue 17's
# phase 2, after the runs; only the two equivalence margins moved, see above)
TRAINING_CLAIMS = (
    _claim("Fig. 5(a)", "docs", "clear recovery for every number of documents T (10 to "
           "200)", "every", f"{CONTRAST} at each T"),
    _claim("Fig. 5(b)", "steps", "more gradient steps per document M → higher RS",
           "trend", f"{CONTRAST}, largest M minus smallest"),
    _claim("Fig. 5(b), M = 1", "steps", "one step per document (M = 1) shows no "
           "anticipation at lr 1e-3", "none_first", f"{CONTRAST} at M = 1"),
    _claim("Fig. 5(c)", "context", "longer context C → lower RS at fixed M", "falls",
           f"{CONTRAST}, longest C minus shortest", direction=-1),
    # added with their axes, before any of their runs was computed
    _claim("Fig. 13", "one_step", "one step per document at a larger lr (0.01) shows "
           "slight recovery", "single", CONTRAST),
    _claim("Fig. 17", "cosine", "recovery survives a cosine learning-rate schedule (10 "
           "epochs)", "single", CONTRAST),
    _claim("Fig. 19(a)", "same_update", "the same total update split into more steps → "
           "stronger recovery", "trend", f"{CONTRAST}, most steps minus fewest"),
    # the paper's magnitude: v1's Fig. 6, average RS Adam 0.689 vs GD 0.211 (a difference
    # of cyclic RS; the paper gives no shuffled floor), 0.478
    _claim("Fig. 6", "optimizer", "Adam (reset per document) recovers more than GD",
           "pairs", f"{CONTRAST}, Adam reset minus GD", paper=0.478),
)
WHAT = {"contrast": "cyclic − shuffled RS", "cyclic": "RS of the cyclic runs"}


def axis_stats(axes: dict, runs: dict, seeds, epoch: int) -> dict:
    """{axis: [point_stats, …]} for every axis of a preset (`presets.ch2_axes`)."""
    return {name: [point_stats(p, point_runs(p, runs, seeds), epoch) for p in pts]
            for name, pts in axes.items()}


def measured(label: str, j, shown: str = "") -> str:
    """A claim's measured text: what was compared, the interval, p and n (the word left
    out: it is the verdict column), and what is shown beside it, not judged."""
    if j.word == "not tested":
        return "—"
    text = f"{label}: {j.text().rsplit(' — ', 1)[0]}"
    return text + (f"; shown, not judged: {shown}" if shown else "")


def verdict_text(j) -> str:
    """The verdict cell of a judgement: its word, 'not tested (why)', or the word after
    Holm's correction with the one before it."""
    if j.word == "not tested":
        return j.text()
    return j.word + (f" ({j.uncorrected} before Holm's correction)" if j.uncorrected
                     else "")


def judge_claim(c: AxisClaim, st: dict, epoch: int):
    """(Judgement, label of what was compared, text shown beside it and not judged) of
    one claim of a table from `axis_stats(...)`."""
    cl = c.claim
    if c.axis not in st:
        return verdicts.not_tested(cl, "not in this preset"), "", ""
    pts = [p for p in st[c.axis] if p.get("n")]
    short = [p["label"] for p in st[c.axis] if p.get("n", 0) < p.get("expected", 0)]
    if short or not pts:
        where = ", ".join(short) or "every point"
        return verdicts.not_tested(cl, f"not yet computed: seeds missing at {where}"), "", ""
    stat = f"{WHAT[c.what]} at RS({epoch})"
    contrast = lambda p: p["rs_cyc"] - p["rs_shuf"]  # noqa: E731
    if c.kind in ("single", "none_first"):
        p = pts[0]
        return verdicts.judge(cl, contrast(p)), f"{stat} at {p['label']}", ""
    if c.kind in ("trend", "falls", "equivalence"):
        if len(pts) < 2:
            return verdicts.not_tested(cl, f"one point on the axis so far "
                                           f"({pts[0]['label']})"), "", ""
        lo, hi = pts[0], pts[-1]
        return (verdicts.judge(cl, change_values(lo, hi, c.what)),
                f"{stat}, {hi['label']} minus {lo['label']}", "")
    parts, shown = [], []
    if c.kind == "every":
        for p in pts:
            part = replace(cl, item=f"{cl.item} at {p['label']}", paper=None)
            parts.append((p["label"], verdicts.judge(part, contrast(p))))
        return verdicts.combine(cl, parts), stat, ""
    # pairs: (first, second), (third, fourth), ...: the first of each predicted higher
    for a, b in zip(pts[0::2], pts[1::2]):
        label = f"{a['label']} minus {b['label']}"
        parts.append((label, verdicts.judge(replace(cl, item=f"{cl.item}, {label}"),
                                            change_values(b, a, c.what))))
        cyc = change(b, a, "cyclic")
        loss = change(a, b, "final")  # second − first: positive = first has lower loss
        shown.append(f"{label}: RS of the cyclic runs {cyc.text()}, final loss second "
                     f"minus first {loss.text()}")
    if not parts:
        return verdicts.not_tested(cl, "no pair of points on the axis"), "", ""
    if len(parts) == 1:
        stat = f"{stat}, {parts[0][0]}"
    return verdicts.combine(cl, parts), stat, "; ".join(shown)


def claim(item: str, st: dict, epoch: int, table=CLAIMS) -> dict:
    """The verdict row of one figure of `table` from `axis_stats(...)`: item, paper (what
    the paper says), estimand, verdict (a word of `verdicts.VOCABULARY`, or 'not
    tested (why)'), measured (interval, p and n of the estimand, then what is shown
    beside it and not judged), magnitude (the paper's value and measured/paper, or
    '—'), and judgement, label, shown (for `measured` after Holm's correction)."""
    c = next(c for c in table if c.item == item)
    j, label, shown = judge_claim(c, st, epoch)
    return dict(item=item, paper=c.statement, estimand=c.claim.estimand,
                verdict=verdict_text(j), measured=measured(label, j, shown),
                magnitude=(j.magnitude() if c.claim.paper is not None
                           and j.word != "not tested" else "—"),
                judgement=j, label=label, shown=shown)


def claims(st: dict, epoch: int, table=CLAIMS) -> list[dict]:
    """Every figure's verdict row (`claim`) of a claims table, in the paper's order."""
    return [claim(c.item, st, epoch, table=table) for c in table]


class Chapter:
    """A chapter's runs along its axes, with every point's statistics and verdict.

    axes: `presets.ch2_axes(preset)` (or `ch3_axes`); runs: {RunConfig: Run}; the
    recovery score is read at `epoch` (the paper: RS(4) with E = 5); table: the
    chapter's claims (`CLAIMS`, `TRAINING_CLAIMS`).
    """

    def __init__(self, axes: dict, runs: dict, seeds, epoch: int, table=CLAIMS):
        self.axes, self.runs, self.seeds, self.epoch = axes, runs, list(seeds), epoch
        self.table = table
        self.stats = axis_stats(axes, runs, self.seeds, epoch)
        self.verdicts = {r["item"]: r for r in claims(self.stats, epoch, table)}

    def points(self, axis: str) -> dict:
        """{label: {"cyclic": [...], "shuffled": [...]}} of an axis's computed points."""
        out = {p.label: point_runs(p, self.runs, self.seeds) for p in self.axes[axis]}
        return {k: {o: v[o] for o in ("cyclic", "shuffled")} for k, v in out.items()
                if v["cyclic"]}

    def show(self, axis: str, xlabel: str) -> None:
        """Shift-averaged curves and RS(n) per epoch (cyclic runs), RS of both orders
        along the axis, each captioned (`plots.caption`: the paper's figure, what is
        plotted, the model, n), the table of points and the axis's verdict; a line
        saying so when the preset lacks the axis."""
        import matplotlib.pyplot as plt
        from IPython.display import Markdown, display

        from . import plots

        if axis not in self.axes:
            display(Markdown(f"*This preset has no {axis!r} axis.*"))
            return
        items = [item for item, axis_of, *_ in self.table if axis_of == axis]
        figs = list(dict.fromkeys(item.split(",")[0] for item in items))  # Fig. 5(b)
        fig_no = f"{' and '.join(figs)} at CPU scale" if figs else None
        pts = [p for p in self.stats[axis] if p.get("n")]
        n = min((p["n"] for p in pts), default=0)
        seeds = f"n = {n} seeds per point and order, paired by seed"
        model = self.model_text(axis)
        curves = {k: v["cyclic"] for k, v in self.points(axis).items()}
        by_epoch = {p["label"]: p["rs_epochs"] for p in pts}
        e = self.epoch
        figures = (
            (plots.shift_averaged(curves),
             "shift-averaged loss of the cyclic runs, one curve per point (0 = just "
             "before a document is trained; band ±1 sd over seeds and documents)"),
            (plots.recovery_intervals(by_epoch),
             "RS(n) of the cyclic runs per epoch n, mean and 95 % interval over seeds "
             "per point (open triangles: seeds whose RS is outside [0, 1], degenerate "
             "and left out)"),
            (plots.along_axis(self.stats[axis], epoch=e, xlabel=xlabel),
             f"RS({e}) of both orders at each point, mean and 95 % interval over seeds"),
        )
        for fig, what in figures:
            plots.show(fig, plots.caption(fig_no, what, model=model, n=seeds))
            plt.close(fig)
        display(plots.records_table([row(p, e) for p in self.stats[axis]]))
        lines = [f"**{item}: {self.verdicts[item]['verdict']}** — "
                 f"{self.verdicts[item]['measured']}" for item in items]
        if not items and (text := self.check(axis)):  # the chapter's own check
            lines.append(f"Check of this chapter's own (no paper claim): {text}")
        if lines:
            display(Markdown("\n\n".join(lines)))

    def model_text(self, axis: str) -> str | None:
        """The model of an axis's figures, compactly (`plots.compact_model`); the full
        description is the chapter's `models()` text, given once."""
        from .plots import compact_model

        labels = {compact_model(p["model"]) for p in self.stats[axis] if p.get("n")}
        if len(labels) == 1:
            return next(iter(labels))
        return (f"each point's model as labelled ({'; '.join(sorted(labels))})"
                if labels else None)

    def models(self) -> str:
        """Every full model label of the chapter's runs, once (Markdown), with the
        compact name the captions and tables use."""
        from .plots import compact_model

        full = dict.fromkeys(p["model"] for pts in self.stats.values() for p in pts
                             if p.get("n"))
        return "\n".join(f"- *{compact_model(m)}*: {m}" for m in full)

    def note(self, axis: str) -> str | None:
        """The model note under an axis's figures: the model's label when every point
        has the same one, else a pointer to the labels (and the tokenizer they share)."""
        labels = {p["model"] for p in self.stats[axis] if p.get("n")}
        if len(labels) <= 1:
            return next(iter(labels), None)
        shared = os.path.commonprefix([x[::-1] for x in labels])[::-1]
        cut = min((i for i in (shared.find(", "), shared.find("; ")) if i >= 0), default=-1)
        shared = shared[cut:] if cut >= 0 else ""
        start = os.path.commonprefix(list(labels))
        if not shared and " @ " in start:  # checkpoints of one model: "<model> @ <rev>"
            return f"{start.rsplit(' @ ', 1)[0]}, at the checkpoint of each point"
        return f"each point's model as labelled (parameters in the table){shared}"

    def check(self, axis: str, what: str = "contrast") -> str | None:
        """A check of the chapter's own (no paper claim), or a statistic shown beside a
        claim and not judged (what="cyclic": the cyclic runs' RS alone): last point
        minus first, paired by seed; None until every point has all its seeds."""
        pts = self.stats.get(axis, [])
        if len(pts) < 2 or any(p.get("n", 0) < p.get("expected", 1) for p in pts):
            return None
        iv = change(pts[0], pts[-1], what)
        return (f"{WHAT[what]} at RS({self.epoch}), {pts[-1]['label']} minus "
                f"{pts[0]['label']}: {iv.text()}")


def committed(points, seeds, experiment: str, epoch: int) -> list[dict]:
    """`point_stats` of points from the saved runs only (nothing is trained): for runs
    computed elsewhere, e.g. on a GPU (`tools/gpu_02_scale.sh`)."""
    from . import results

    runs = {}
    for p in points:
        for o in ("cyclic", "shuffled"):
            for s in seeds:
                c = replace(p.config, order=o, seed=s)
                if (r := results.find_run(c, experiment)) is not None:
                    runs[c] = r
    return [point_stats(p, point_runs(p, runs, seeds), epoch) for p in points]
