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

import numpy as np

from . import compare, metrics, stats


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
        verdict=stats.verdict(contrast), fit=np.asarray(fit),
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


def null_verdict(iv: stats.Interval, margin: float) -> str:
    """Verdict on a claim of *no* effect ("little effect", Fig. 14): "reproduced" when
    the whole interval lies within ±margin, "not reproduced" when it excludes zero,
    else "inconclusive" (too wide to tell). Fewer than 5 seeds: "inconclusive"."""
    if iv.n < stats.MIN_SEEDS or not np.isfinite(iv.lo):
        return "inconclusive"
    if -margin < iv.lo and iv.hi < margin:
        return "reproduced"
    return "not reproduced" if iv.excludes_zero() else "inconclusive"


# A chapter's claims, one per paper figure: (item, axis, what the paper says, the
# per-seed statistic compared, and how). "trend": the last point minus the first, the
# paper predicting a rise; "falls": the same, the paper predicting a fall; "null":
# first vs last point, the paper predicting little effect; "none_first": no recovery
# at the first point (its cyclic − shuffled contrast within the null margin); "every":
# recovery at every point; "pairs": each (first, second) pair of points, the first
# predicted higher; "single": the one point's contrast. Chapter 2's:
CLAIMS = (
    # its estimand is the contrast (cyclic − shuffled), declared before the family's
    # runs; the cyclic-only trend is shown beside it, not judged
    ("Fig. 2(a)", "pretrained", "larger pre-trained models recover more (RS(4) rises "
     "with pre-trained Pythia size; sharp jump 160M → 410M)", "contrast", "trend"),
    ("Fig. 2(b)", "size", "random-init models recover more weakly; RS still grows with "
     "size", "contrast", "trend"),
    ("Fig. 3(a)", "width", "recovery needs width ≥ 512 (random init, 1B config)",
     "contrast", "trend"),
    ("Fig. 3(b)", "depth", "recovery needs depth ≥ 8 (random init, 1B config)",
     "contrast", "trend"),
    ("Fig. 14", "heads", "number of attention heads has little effect", "contrast", "null"),
    ("Fig. 15", "init", "Pythia init: lower loss and stronger recovery than isotropic "
     "N(0, 0.02²)", "cyclic", "pairs"),
    # judged on the contrast since the one-estimand rule (issue 17); it was judged on the
    # cyclic RS alone before, which the chapter still shows beside it
    ("Fig. 16", "steps", "more pre-training steps → more recovery", "contrast", "trend"),
    ("Fig. 20", "gpt2", "GPT-2-large shows recovery", "contrast", "single"),
)
# Chapter 3's (Figs. 5(a-c), 6, 13, 17, 19(a)), written down with the presets, before
# any of their runs was computed
TRAINING_CLAIMS = (
    ("Fig. 5(a)", "docs", "clear recovery for every number of documents T (10 to 200)",
     "contrast", "every"),
    ("Fig. 5(b)", "steps", "more gradient steps per document M → higher RS", "contrast",
     "trend"),
    ("Fig. 5(b), M = 1", "steps", "one step per document (M = 1) shows no anticipation "
     "at lr 1e-3", "contrast", "none_first"),
    ("Fig. 5(c)", "context", "longer context C → lower RS at fixed M", "contrast",
     "falls"),
    # added with their axes, before any of their runs was computed
    ("Fig. 13", "one_step", "one step per document at a larger lr (0.01) shows slight "
     "recovery", "contrast", "single"),
    ("Fig. 17", "cosine", "recovery survives a cosine learning-rate schedule (10 "
     "epochs)", "contrast", "single"),
    ("Fig. 19(a)", "same_update", "the same total update split into more steps → "
     "stronger recovery", "contrast", "trend"),
    ("Fig. 6", "optimizer", "Adam (reset per document) recovers more than GD",
     "contrast", "pairs"),
)
WHAT = {"contrast": "cyclic − shuffled RS", "cyclic": "RS of the cyclic runs"}


def axis_stats(axes: dict, runs: dict, seeds, epoch: int) -> dict:
    """{axis: [point_stats, …]} for every axis of a preset (`presets.ch2_axes`)."""
    return {name: [point_stats(p, point_runs(p, runs, seeds), epoch) for p in pts]
            for name, pts in axes.items()}


def claim(item: str, st: dict, epoch: int, margin: float | None = None,
          table=CLAIMS) -> dict:
    """The verdict row of one figure of `table` from `axis_stats(...)`; `margin` (for
    the "null" and "none_first" claims: how large an effect still counts as "little")
    is, unless given, half the effect itself: half the mean cyclic − shuffled contrast
    over the axis's points."""
    _, axis, paper, what, kind = next(c for c in table if c[0] == item)
    row = dict(item=item, paper=paper, verdict="not in this preset", measured="—")
    if axis not in st:
        return row
    pts = [p for p in st[axis] if p.get("n")]
    short = [p["label"] for p in st[axis] if p.get("n", 0) < p.get("expected", 0)]
    if short or not pts:
        return {**row, "verdict": "not yet computed",
                "measured": f"seeds missing at {', '.join(short)}"}
    stat = f"{WHAT[what]} at RS({epoch})"
    if kind == "single":
        iv = pts[0]["contrast"]
        return {**row, "verdict": pts[0]["verdict"], "measured": f"{stat}: {iv.text()}"}
    if kind in ("trend", "falls"):  # the interval is of the predicted-positive side
        hi, lo = (pts[-1], pts[0]) if kind == "trend" else (pts[0], pts[-1])
        iv = change(lo, hi, what)
        return {**row, "verdict": stats.verdict(iv),
                "measured": f"{stat}, {hi['label']} minus {lo['label']}: {iv.text()}"}
    if kind == "every":
        verdicts = [p["verdict"] for p in pts]
        n_ok = verdicts.count("reproduced")
        verdict = (verdicts[0] if len(set(verdicts)) == 1 else
                   f"partly: reproduced at {n_ok} of {len(pts)} points")
        return {**row, "verdict": verdict, "measured": f"{stat}: " + "; ".join(
            f"{p['label']} {p['contrast'].text()}" for p in pts)}
    if kind in ("null", "none_first"):  # the paper predicts (almost) no effect
        if margin is None:
            margin = 0.5 * abs(float(np.mean([p["contrast"].mean for p in pts])))
        little = f"'little' = within ±{margin:.3f} (half the mean contrast along the axis)"
        if kind == "null":
            lo, hi = pts[0], pts[-1]
            iv = change(lo, hi, what)
            return {**row, "verdict": null_verdict(iv, margin),
                    "measured": f"{stat}, {hi['label']} minus {lo['label']}: {iv.text()}; "
                                f"{little}"}
        iv = pts[0]["contrast"]  # none_first: no recovery at the first point
        return {**row, "verdict": null_verdict(iv, margin),
                "measured": f"{stat} at {pts[0]['label']}: {iv.text()}; {little}"}
    # pairs: (first, second), (third, fourth), ...: the first of each predicted higher
    parts, verdicts = [], []
    for a, b in zip(pts[0::2], pts[1::2]):
        iv = change(b, a, what)
        loss = change(a, b, "final")  # second − first: positive = first has lower loss
        verdicts.append(stats.verdict(iv))
        parts.append(f"{a['label']} minus {b['label']}: {iv.text()} ({verdicts[-1]}); "
                     f"final loss, second minus first: {loss.text()}")
    verdict = verdicts[0] if len(set(verdicts)) == 1 else "partly: " + ", ".join(verdicts)
    return {**row, "verdict": verdict, "measured": f"{stat}: " + "; ".join(parts)}


def claims(st: dict, epoch: int, table=CLAIMS) -> list[dict]:
    """Every figure's verdict row (`claim`) of a claims table, in the paper's order."""
    return [claim(c[0], st, epoch, table=table) for c in table]


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
