"""Cyclic against shuffled: per-seed statistics, paired contrasts and verdict rows.

Used by chapter 1 and by the scorecard, so a number on the scorecard is the number in
the chapter. Runs of the two orders are paired by seed (the same seed trains the same
documents in both orders). The shuffled runs' statistics are computed with their
actual order: they are the floor that drift alone gives, without anticipation.
"""

from dataclasses import dataclass

import numpy as np

from . import metrics, stats
from .verdicts import Claim

MAX_RISE = 1.5  # the stability rule of chapter 1's pilot, applied to every run

# Chapter 1's claims, each with its estimand (one number per seed, the two orders paired
# by seed), margin and the paper's magnitude, declared before the main runs of the
# pre-trained protocol (seeds 10-19). Margins: 0.05 in RS units (a twentieth of the
# forgetting; a tenth of the paper's "more than half"), 0.02 nats of online loss (4 %
# of the paper's 0.48). The paper's magnitudes: Fig. 1(a) "more than half" recovered
# (Pythia-1B, T = 100; its shuffled floor is not given, so 0.5 is a lower bound on the
# contrast); Table 1, Pythia-1B: shuffled 1.51 − cyclic 1.03 = 0.48 nats (T = 100,
# C = 512); the others are figure-only.
CH1_CLAIMS = {
    "doc1": Claim("Fig. 1(a)", "the loss on document 1 falls before its revisit: more "
                  "than half of its epoch-2 forgetting is recovered",
                  "cyclic − shuffled share of x_1's epoch-2 forgetting recovered",
                  margin=0.05, paper=0.5),
    "rs": Claim("Fig. 1(b)", "every document recovers before its revisit, and "
                "shuffling the order removes it", "cyclic − shuffled RS(E−1)",
                margin=0.05),
    "growth": Claim("Fig. 1(a, b)", "recovery grows from epoch to epoch",
                    "(cyclic − shuffled RS(E−1)) − (cyclic − shuffled RS(1))",
                    margin=0.05),
    "online": Claim("Table 1", "the cyclic order gives the lower online loss over "
                    "epochs 2..E", "shuffled − cyclic online loss (nats)", margin=0.02,
                    paper=0.48),
}


def model_label(run) -> str:
    """The run's model as the book names it, with its tokenizer when it is not the
    model's own (a random-init shape reading bytes says so: C then counts bytes)."""
    label = run.meta.get("model_label", run.config.model)
    tok = run.config.tokenizer
    if tok == "tiny-gpt":
        return label + "; byte-level tokenizer (C counts bytes)"
    return label if tok == "auto" else f"{label}; tokenizer of {tok}"


def per_seed(runs, n_docs: int) -> dict:
    """Arrays over runs (in the given order) of the statistics the chapter reports.

    rs[n-1]: RS(n), order-aware; doc1[n-1]: share of document 1's forgetting in epoch n
    recovered before its next visit; online: mean online loss over epochs 2..E (Table
    1); degenerate[n-1]: RS(n) flagged as not meaningful; unstable: max rise above
    MAX_RISE or non-finite losses.
    """
    n_epochs = runs[0].eval_loss.shape[0] // n_docs
    out = {k: [] for k in ("rs", "doc1", "degenerate", "online", "unstable", "max_rise")}
    for r in runs:
        e = np.asarray(r.eval_loss)
        finite = np.isfinite(e).all()
        rs, d1, deg = [], [], []
        for n in range(1, n_epochs):
            if not finite:
                rs.append(np.nan), d1.append(np.nan), deg.append(True)
                continue
            rs.append(metrics.recovery_score(e, n_docs, n, r.order))
            p = metrics.recovery_per_doc(e, n_docs, n, r.order)
            forgot = p["l_max"][0] - p["l_after"][0]
            d1.append((p["l_max"][0] - p["l_before"][0]) / forgot if forgot > 0 else np.nan)
            deg.append(metrics.recovery_is_degenerate(e, n_docs, n, r.order))
        out["rs"].append(rs), out["doc1"].append(d1), out["degenerate"].append(deg)
        out["online"].append(metrics.average_online_loss(e, r.order, n_docs)
                             if finite else np.nan)
        rise = metrics.max_relative_rise(e) if finite else np.inf
        out["max_rise"].append(rise)
        out["unstable"].append(not rise <= MAX_RISE)
    res = {k: np.asarray(v, dtype=float) for k, v in out.items()}
    res["rs"], res["doc1"], res["degenerate"] = (
        res["rs"].T, res["doc1"].T, res["degenerate"].T.astype(bool))
    res["unstable"] = res["unstable"].astype(bool)
    return res


def paired(cyclic, shuffled) -> tuple[list, list]:
    """Runs of both orders sorted by seed; raises unless they pair up one to one."""
    c = sorted(cyclic, key=lambda r: r.config.seed)
    s = sorted(shuffled, key=lambda r: r.config.seed)
    if [r.config.seed for r in c] != [r.config.seed for r in s]:
        raise ValueError("cyclic and shuffled runs must have the same seeds to pair them")
    return c, s


@dataclass
class Row:
    """One line of a comparison: a statistic for each order and their contrast."""

    statistic: str
    cyclic: stats.Interval
    shuffled: stats.Interval
    contrast: stats.Interval  # the paper's predicted sign is positive
    contrast_name: str
    verdict: str
    flags: str = ""  # e.g. how many per-seed values were flagged degenerate


# The per-epoch rows below are descriptive: each is judged as a difference claim with
# the chapter's RS margin (0.05; the online loss: 0.02 nats), no paper magnitude.
ROW_MARGIN = {"rs": 0.05, "online": 0.02}


def _row_verdict(interval_values, what: str = "rs") -> str:
    from . import verdicts

    claim = Claim("—", "—", what, margin=ROW_MARGIN[what])
    return verdicts.judge(claim, interval_values).word


def compare(cyclic, shuffled, n_docs: int) -> dict:
    """Per-seed statistics of both orders and the paired contrasts with verdicts.

    Returns {"cyclic": per_seed(...), "shuffled": per_seed(...), "rows": [Row, …],
    "seeds": [...]}. Rows: RS(n) for every epoch, document 1's recovery in epoch 2
    (Fig. 1a's claim), RS growth from epoch 1 to the last (cyclic only) and the Table 1
    online loss (shuffled − cyclic: positive when cyclic is better).
    """
    c_runs, s_runs = paired(cyclic, shuffled)
    c, s = per_seed(c_runs, n_docs), per_seed(s_runs, n_docs)
    rows = []
    for n in range(1, c["rs"].shape[0] + 1):
        d = stats.paired_interval(c["rs"][n - 1], s["rs"][n - 1])
        flags = (f"degenerate: cyclic {int(c['degenerate'][n - 1].sum())}/{len(c_runs)}, "
                 f"shuffled {int(s['degenerate'][n - 1].sum())}/{len(s_runs)}")
        rows.append(Row(f"RS({n})", stats.t_interval(c["rs"][n - 1]),
                        stats.t_interval(s["rs"][n - 1]), d, "cyclic − shuffled",
                        _row_verdict(c["rs"][n - 1] - s["rs"][n - 1]), flags))
    if c["doc1"].shape[0] >= 2:
        d = stats.paired_interval(c["doc1"][1], s["doc1"][1])
        rows.append(Row("document 1, epoch 2: share of forgetting recovered",
                        stats.t_interval(c["doc1"][1]), stats.t_interval(s["doc1"][1]),
                        d, "cyclic − shuffled", _row_verdict(c["doc1"][1] - s["doc1"][1])))
    if c["rs"].shape[0] >= 2:  # the growth of each order, and of their contrast
        grow = (c["rs"][-1] - s["rs"][-1]) - (c["rs"][0] - s["rs"][0])
        rows.append(Row(f"growth RS({c['rs'].shape[0]}) − RS(1)",
                        stats.paired_interval(c["rs"][-1], c["rs"][0]),
                        stats.paired_interval(s["rs"][-1], s["rs"][0]),
                        stats.t_interval(grow), "contrast's growth", _row_verdict(grow)))
    d = stats.paired_interval(s["online"], c["online"])
    rows.append(Row("online loss, epochs 2..E (Table 1)", stats.t_interval(c["online"]),
                    stats.t_interval(s["online"]), d, "shuffled − cyclic",
                    _row_verdict(s["online"] - c["online"], "online")))
    return {"cyclic": c, "shuffled": s, "rows": rows,
            "seeds": [r.config.seed for r in c_runs]}


def rows_table(rows, fmt: str = ".2f"):
    """The rows as a Markdown table (rendered as a table in the book)."""
    from . import plots

    return plots.records_table([
        {"statistic": r.statistic, "cyclic": r.cyclic.text(fmt),
         "shuffled (floor)": r.shuffled.text(fmt),
         "contrast": f"{r.contrast_name}: {r.contrast.text(fmt)}", "verdict": r.verdict,
         "flags": r.flags} for r in rows])


# ---- chapter 1's claims, judged by the one verdict rule -------------------------------

def ch1_estimands(result: dict) -> dict:
    """{claim key: per-seed values of its estimand} from `compare(...)`'s result."""
    c, s = result["cyclic"], result["shuffled"]
    first, last = c["rs"][0] - s["rs"][0], c["rs"][-1] - s["rs"][-1]
    out = {"rs": last, "growth": last - first, "online": s["online"] - c["online"]}
    if c["doc1"].shape[0] >= 2:
        out["doc1"] = c["doc1"][1] - s["doc1"][1]
    return out


def judge_ch1(result: dict, claims: dict | None = None) -> dict:
    """{claim key: Judgement} of chapter 1's claims (`CH1_CLAIMS`) on these runs."""
    from . import verdicts

    claims = CH1_CLAIMS if claims is None else claims
    values = ch1_estimands(result)
    return {k: verdicts.judge(claim, values[k]) for k, claim in claims.items()
            if k in values}


def judgement_rows(judgements: dict) -> list[dict]:
    """Table rows: the claim, its estimand, the measured value with interval and p,
    the paper's magnitude and the verdict."""
    return [{"claim": f"{j.claim.item}: {j.claim.statement}",
             "estimand (margin)": f"{j.claim.estimand} (±{j.claim.margin:g})",
             "measured, 95 % interval": j.text().rsplit(" — ", 1)[0],
             "paper": j.magnitude() if j.claim.paper is not None else "figure only",
             "verdict": j.word} for j in judgements.values()]


def floor_rows(cyclic, shuffled, n_docs: int, tol: int = 2) -> list[dict]:
    """The shuffled floor two ways, over epochs 1..E−1 of each run: over every revisit
    (RS as usual), and over the revisits whose gap is within `tol` episodes of the
    cyclic gap T (`metrics.gap_matched_recovery`); the cyclic runs beside them."""
    def per_run(runs, matched):
        vals, kept = [], 0
        for r in runs:
            e = np.asarray(r.eval_loss)
            epochs = range(1, e.shape[0] // n_docs)
            g = metrics.gap_matched_recovery(e, n_docs, list(epochs), r.order,
                                             tol=tol if matched else 10**9)
            vals.append(g["rs"])
            kept += g["n_matched"]
        return stats.t_interval(vals), kept

    rows = []
    for name, runs, matched in (("cyclic (gap = T always)", cyclic, False),
                                ("shuffled, every revisit (today's floor)", shuffled,
                                 False),
                                (f"shuffled, revisits with gap T ± {tol}", shuffled,
                                 True)):
        iv, kept = per_run(runs, matched)
        rows.append({"runs": name, "RS over epochs 1..E−1, pooled": iv.text(),
                     "revisits used": kept})
    return rows


def nats_rows(result: dict, runs: dict, n_docs: int) -> list[dict]:
    """RS(n) beside its numerator and denominator in nats (means over seeds)."""
    rows = []
    for order in ("cyclic", "shuffled"):
        parts = [metrics.recovery_nats(r.eval_loss, n_docs, r.order) for r in runs[order]]
        for i, n in enumerate(parts[0]["epoch"]):
            rec = np.nanmean([p["recovered"][i] for p in parts])
            forg = np.nanmean([p["forgotten"][i] for p in parts])
            rs = np.nanmean(result[order]["rs"][i])
            rows.append({"order": order, "epoch n": int(n),
                         "RS(n) (recovered of forgotten, nats; means over seeds)":
                             metrics.rs_nats_text(rs, rec, forg)})
    return rows


# ---- Table 1 and the verdict box ------------------------------------------------------

# Table 1 of the paper (v2, exact): average online loss over epochs 2–5, mean ± sd over
# 10 seeds, pre-trained Pythia, T = 100, C = 512, M = 10, E = 5
PAPER_TABLE1 = {"pythia-410m": ((1.09, 0.03), (1.34, 0.02)),
                "pythia-1b": ((1.03, 0.03), (1.51, 0.04)),
                "pythia-1.4b": ((1.14, 0.06), (1.51, 0.04)),
                "pythia-2.8b": ((1.34, 0.06), (1.79, 0.06))}


def by_model(runs) -> dict:
    """{model: {"cyclic": [...], "shuffled": [...]}} in first-seen order."""
    out: dict = {}
    for r in runs:
        out.setdefault(r.config.model, {"cyclic": [], "shuffled": []})[r.config.order].append(r)
    return out


def online_contrasts(table_runs: dict, n_docs: int) -> list[dict]:
    """Per model: the Table 1 statistic of each paired run of both orders, their
    shuffled − cyclic interval, and the paper's row for the same model (or None)."""
    out = []
    for model, rr in table_runs.items():
        c, s = paired(rr["cyclic"], rr["shuffled"])
        oc, os_ = ([metrics.average_online_loss(r.eval_loss, r.order, n_docs) for r in x]
                   for x in (c, s))
        out.append({"model": model, "label": model_label(c[0]), "cyclic": oc,
                    "shuffled": os_, "contrast": stats.paired_interval(os_, oc),
                    "paper": PAPER_TABLE1.get(model)})
    return out


def table1_judgements(table_runs: dict, n_docs: int) -> list:
    """Per model: (online_contrasts row, Judgement of the Table 1 claim on its seeds),
    the claim's paper magnitude being the paper's own row where the model is in it."""
    from dataclasses import replace as _replace

    from . import verdicts

    out = []
    for t in online_contrasts(table_runs, n_docs):
        claim = CH1_CLAIMS["online"]
        if t["paper"] is not None:  # the paper's gap for this very model
            claim = _replace(claim, paper=round(t["paper"][1][0] - t["paper"][0][0], 2))
        values = np.asarray(t["shuffled"]) - np.asarray(t["cyclic"])
        out.append((t, verdicts.judge(claim, values)))
    return out


def table1(table_runs: dict, n_docs: int):
    """Table 1 as Markdown: ours per model, beside the paper's row for the SAME model
    (none for a stand-in: a stand-in is never set beside another model's numbers)."""
    from . import plots

    rows = []
    for t, j in table1_judgements(table_runs, n_docs):
        paper = t["paper"]
        rows.append({
            "model": t["model"], "cyclic": _mean_sd(t["cyclic"]),
            "shuffled": _mean_sd(t["shuffled"]),
            "shuffled − cyclic (95 % CI)": j.text().rsplit(" — ", 1)[0],
            "verdict": j.word,
            "paper, same model: cyclic / shuffled": (
                "no paper row (stand-in model)" if paper is None else
                f"{paper[0][0]:.2f} ± {paper[0][1]:.2f} / {paper[1][0]:.2f} ± "
                f"{paper[1][1]:.2f}")})
    return plots.records_table(rows)


def _mean_sd(values) -> str:
    """'mean ± sd (n = k)' over the finite values (no ± for one value)."""
    v = [x for x in values if np.isfinite(x)]
    if not v:
        return "n/a (no finite values)"
    m, sd = metrics.mean_sd(v)
    return f"{m:.2f}" + (f" ± {sd:.2f}" if len(v) > 1 else "") + f" (n = {len(v)})"


def verdict_box(judgements: dict, result: dict, label: str, preset: str,
                table_runs: dict, n_docs: int, note: str = ""):
    """The chapter's "What we see vs. the paper" box, generated from the runs shown:
    one row per claim of `CH1_CLAIMS` (its estimand, the measured interval and p, the
    paper's magnitude and the ratio, the verdict), Table 1 per model."""
    from IPython.display import Markdown

    lines = ["```{admonition} What we see vs. the paper",
             ":class: note",
             f"Preset `{preset}`; model: {label}; {len(result['seeds'])} seeds per "
             "order, paired by seed; 95 % t intervals, two-sided p." + (
                 f" {note}" if note else ""),
             "",
             "| claim (estimand) | paper | here | verdict |", "|---|---|---|---|"]
    for key, j in judgements.items():
        if key == "online":
            continue  # per model below
        c = j.claim
        paper = "figure only" if c.paper is None else j.magnitude()
        lines.append(f"| {c.item}: {c.statement} ({c.estimand}) | {paper} | "
                     f"{j.text().rsplit(' — ', 1)[0]} | **{j.word}** |")
    for t, j in table1_judgements(table_runs, n_docs):
        where = ("the paper's row for this model" if t["paper"] else
                 "paper: Pythia-1B, T = 100, C = 512")
        lines.append(f"| Table 1: {j.claim.statement}, {t['model']} | {j.magnitude()} "
                     f"({where}) | {j.text().rsplit(' — ', 1)[0]} | **{j.word}** |")
    lines += ["", "Verdict words as defined on {doc}`../book/scorecard` (one rule for the "
              "whole book, `anticip_lib.verdicts`); margins fixed with the claims before "
              "the runs. See also {doc}`../book/deviations`.", "```"]
    return Markdown("\n".join(lines))
