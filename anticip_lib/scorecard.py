"""The reproduction scorecard: one row per paper claim (SPEC §1) and per figure/table.

Rows of covered items are computed here from the committed `cpu` results with the
same functions the chapters use (`compare`, `scale`, `vision`, `toy`), so the
scorecard and the chapters cannot disagree. Nothing is trained (the toy model's runs
are exact and take milliseconds).

Every verdict is a word of `verdicts.VOCABULARY` from the book's one rule
(`verdicts.judge` on a claim declared with its estimand and margin), or "not tested
(why)": "not tested (not yet computed)" where a chapter's runs are missing, "not
tested (not yet covered)" where its chapter is still to come. Holm's step-down
correction (`verdicts.holm`) runs across every claim of the scorecard judged on at
least 5 seeds (a claim that two rows share, Fig. 1(c) and Table 1, counts once); a
row whose word it changes says so ('undetermined (reproduced before Holm's
correction)'). `changes()` lists every row whose word differs from the old rule's
(`OLD_RULE`).
"""

import math
from dataclasses import dataclass, field, replace

from . import presets, verdicts

NOT_YET = "not tested (not yet covered)"
NOT_COMPUTED = "not tested (not yet computed)"


@dataclass
class Item:
    item: str  # "Fig. 1(a)", "Table 1", "Claim 1: …"
    paper: str  # what the paper says, in a few words
    verdict: str = NOT_YET  # a word of verdicts.VOCABULARY, or "not tested (why)"
    measured: str = "—"  # the estimand's mean, 95 % interval, p and n
    scale: str = "—"
    where: str = "—"  # chapter link
    magnitude: str = "—"  # the paper's value and measured/paper, where the paper has one
    judgement: object = field(default=None, repr=False)  # the verdicts.Judgement
    label: str = ""  # what was compared (the measured text's start)
    shown: str = ""  # shown beside the estimand, not judged


def _measured(label: str, j, shown: str = "") -> str:
    from . import scale

    return scale.measured(label, j, shown)


def _magnitude(j) -> str:
    """'0.04 vs paper 0.48 (ratio 0.08)' where the claim has a paper value, else '—'."""
    if j is None or j.claim.paper is None or j.word == "not tested":
        return "—"
    return j.magnitude()


def _from_row(key: str, row: dict, scale_text: str, where: str) -> Item:
    """An Item from a `scale.claim` row."""
    j = row["judgement"]
    return Item(key, row["paper"], row["verdict"], row["measured"], scale_text, where,
                _magnitude(j), j, row["label"], row["shown"])


# items not covered yet: (item, what the paper says, planned chapter)
_PLANNED = [
    ("Fig. 4", "recovery survives random masking (p ≤ 0.3) and window shifts (≤ 128)", 4),
    ("Fig. 5(d)", "more frozen blocks → lower RS", 3),
    ("Fig. 8(a)", "gradient similarity highest near the centre of the map", 6),
    ("Fig. 8(b)", "pairwise recovery roughly symmetric; b ≈ 10–15", 6),
    ("Fig. 8(c)", "weight residuals: bright stripes aligned with epochs", 6),
    ("Fig. 8(d)", "last-layer activations: blocked similarity, rising each epoch", 6),
    ("Fig. 9", "last-layer weights trace a helix, one turn per epoch", 6),
    ("Fig. 12", "partial shuffling (N up to 24) still shows some recovery", 4),
    ("Fig. 18", "recovery with one-off random documents inserted", 4),
    ("Fig. 21", "Wikitext-103, random init: recovery present", 4),
    ("Fig. 22", "activation changes step-wise; weight updates shrink monotonically", 6),
    ("Fig. 23", "pairwise recovery for T = 50–200: two blobs, 10–15-wide boundary", 6),
]
_CHAPTER_FILES = {1: "01_phenomenon", 2: "02_scale", 3: "03_training", 4: "04_data",
                  5: "05_vision", 6: "06_mechanisms", 7: "07_toy_model"}


def _link(chapter: int) -> str:
    return f"{{doc}}`ch. {chapter} <../notebooks/{_CHAPTER_FILES[chapter]}>`"


def chapter1_items() -> list[Item]:
    """Fig. 1(a), 1(b), 1(c) and Table 1 from chapter 1's committed cpu runs, judged on
    the claims the chapter declared (`compare.CH1_CLAIMS`)."""
    from . import compare, results

    main = presets.group("01_phenomenon", "cpu", "main")
    runs = [results.find_run(c, main.experiment) for c in main.configs]
    n_missing = sum(r is None for r in runs)
    paper = {"Fig. 1(a)": "x_1's loss falls before its revisit; > 50 % recovered "
                          "(Pythia-1B, T = 100)",
             "Fig. 1(b)": "the same for all documents (shift-averaged)",
             "Fig. 1, growth": "recovery grows from epoch to epoch (Figs. 1(a, b))",
             "Fig. 1(c)": "online loss lower under the cyclic order",
             "Table 1": "online loss: cyclic < shuffled for Pythia 410M–2.8B"}
    if n_missing:
        return [Item(k, v, NOT_COMPUTED, f"{n_missing} of {len(runs)} runs missing",
                     where=_link(1)) for k, v in paper.items()]
    c = [r for r in runs if r.config.order == "cyclic"]
    s = [r for r in runs if r.config.order == "shuffled"]
    base = main.configs[0]
    J = compare.judge_ch1(compare.compare(c, s, base.n_docs))
    scale = (f"{base.model} (pre-trained here, bytes); T = {base.n_docs}, "
             f"C = {base.context_len}, M = {base.steps_per_doc}, E = {base.n_epochs}, "
             f"{base.optimizer} {base.lr:g}; {len(c)} seeds per order")

    def item(key, j):
        return Item(key, paper[key], j.word, _measured(j.claim.estimand, j), scale,
                    _link(1), _magnitude(j), j, j.claim.estimand)

    return [item("Fig. 1(a)", J["doc1"]), item("Fig. 1(b)", J["rs"]),
            item("Fig. 1, growth", J["growth"]), item("Fig. 1(c)", J["online"]),
            item("Table 1", J["online"])]


def _committed(chapter: str) -> dict:
    """{RunConfig: Run} of a chapter's cpu preset, from the saved runs only."""
    from . import results

    runs = {}
    for g in presets.groups(chapter, "cpu"):
        for c in g.configs:
            if (r := results.find_run(c, g.experiment)) is not None:
                runs[c] = r
    return runs


def chapter2_items() -> list[Item]:
    """Figs. 2(a, b), 3(a, b), 14, 15, 16 and 20 from chapter 2's committed cpu runs
    (the same `scale.Chapter` the chapter shows); Fig. 20 is paper-preset only."""
    from . import compare, scale

    axes = presets.ch2_axes("cpu")
    runs = _committed("02_scale")
    base = next(iter(presets.configs("02_scale", "cpu")))
    ch = scale.Chapter(axes, runs, presets.CH2_SEEDS, base.n_epochs - 1)
    v = ch.verdicts
    first = next(iter(runs.values()), None)
    tok = "; byte tokenizer" if first is not None and "byte" in compare.model_label(first) else ""
    tcme = (f"T = {base.n_docs}, C = {base.context_len}, M = {base.steps_per_doc}, "
            f"E = {base.n_epochs}")
    seeds = f"{len(presets.CH2_SEEDS)} seeds per order"
    proto = f"{tcme}, {base.optimizer} {base.lr:g}; {seeds}"
    where = _link(2)
    shapes = f"random-init Pythia shapes (14M–70M; widths 64–512, depths 2–12){tok}; {proto}"
    not_cpu = "not tested (paper preset only: needs Hub weights)"

    def item(key, row, scale_text):
        if row["judgement"].reason == "not in this preset":
            return Item(key, row["paper"], not_cpu, "—", "needs Hub weights", where,
                        judgement=row["judgement"])
        return _from_row(key, row, scale_text, where)

    lr_check = ch.check("width_lr")
    width = dict(v["Fig. 3(a)"], shown=(f"width at lr moved toward equal fit (a check of "
                                        f"the chapter's own): {lr_check}" if lr_check
                                        else ""))
    width["measured"] = _measured(width["label"], width["judgement"], width["shown"])
    return [
        item("Fig. 2(a)", v["Fig. 2(a)"],
             "the family pre-trained here (bytes, non-CNN news): "
             + ", ".join(f"{m} at GD {lr:g}" if lr else f"{m} not tested (no GD rate "
                         "passes chapter 1's rules)"
                         for m, lr in presets.CH2_FAMILY_LR.items())
             + f"; chapter 1's protocol otherwise ({tcme}); 5 seeds per order (10–14)"),
        item("Fig. 2(b)", v["Fig. 2(b)"], shapes),
        item("Fig. 3(a)", width, shapes),
        item("Fig. 3(b)", v["Fig. 3(b)"], shapes),
        item("Fig. 14", v["Fig. 14"], shapes),
        item("Fig. 15", v["Fig. 15"], shapes),
        item("Fig. 16", v["Fig. 16"], "a Pythia-14M shape pre-trained here (2,000 steps, "
                                      "non-CNN news, bytes), its checkpoints; Adam reset "
                                      f"{presets.CH2_STEPS_PROTOCOL['lr']:g} (chosen by "
                                      f"chapter 1's rules on pilot documents); {tcme}; "
                                      f"{seeds}"),
        item("Fig. 20", v["Fig. 20"], "—"),
    ]


def chapter3_items() -> list[Item]:
    """Figs. 5(a-c), 6(a) (random init), 13, 17 and 19(a) from chapter 3's committed cpu
    runs (the same `scale.Chapter` the chapter shows), one row per claim (Fig. 5(b)'s
    two: the trend and none at M = 1); Figs. 6(b) and 19(b) are not covered."""
    from . import compare, scale

    axes = presets.ch3_axes("cpu")
    runs = _committed("03_training")
    base = presets.CH1_CPU_BASE
    ch = scale.Chapter(axes, runs, presets.CH3_SEEDS, base.n_epochs - 1,
                       table=scale.TRAINING_CLAIMS)
    v = ch.verdicts
    first = next(iter(runs.values()), None)
    model = compare.model_label(first) if first is not None else base.model
    proto = (f"{model}; around T = {base.n_docs}, C = {base.context_len} bytes, "
             f"M = {base.steps_per_doc}, E = {base.n_epochs}, {base.optimizer} "
             f"{base.lr:g}; {len(presets.CH3_SEEDS)} seeds per order")
    where = _link(3)
    adam = "Adam reset per document where the paper uses GD"
    rows = [_from_row(key, v[name], scale_text, where) for key, name, scale_text in (
        ("Fig. 5(a)", "Fig. 5(a)", f"T = 5–40 (paper 10–200); {proto}"),
        ("Fig. 5(b)", "Fig. 5(b)", f"M = 1–20 (the paper's); {proto}"),
        ("Fig. 5(b), M = 1", "Fig. 5(b), M = 1", f"M = 1 at lr 1e-3; {proto}"),
        ("Fig. 5(c)", "Fig. 5(c)", f"C = 64–256 bytes (paper 128–1,024 tokens); {proto}"),
        ("Fig. 6(a)", "Fig. 6", f"random init; each optimizer at the lr chapter 1's rules "
                                f"pass (Adam reset 1e-3, GD {presets.CH3_GD_LR:g}; paper: "
                                f"1e-5, 1e-3); {proto}"),
        ("Fig. 13", "Fig. 13", f"M = 1 at lr 0.01, {adam}; {proto}"),
        ("Fig. 17", "Fig. 17", f"cosine to 0 over E = 10 epochs, RS(4); {proto}"),
        ("Fig. 19(a)", "Fig. 19(a)", f"lr = 0.01 / M for M = 1–20 (the paper's), {adam}; "
                                     f"{proto}"))]
    rows[4].paper += " (random init)"
    return rows + [
        Item("Fig. 6(b)", "Adam (reset per document) recovers more than GD (pre-trained)",
             NOT_YET, where="planned: ch. 3"),
        Item("Fig. 19(b)", "C = 1024 needs more steps M", NOT_YET, where="planned: ch. 3")]


def toy_items(seeds=(0, 1, 2, 3, 4)) -> list[Item]:
    """Figs. 10(a), 10(b), the growth of recovery (§4.4) and Fig. 11 from the toy model
    at the paper's (b) setting (`toy.judge_claims`, the chapter's claims; milliseconds)."""
    from . import toy

    J = toy.judge_claims(seeds)
    scale = (f"toy model: T = 25, N = M = 100, α = 0.01, E = 50, exact; "
             f"{len(seeds)} seeds per order (Fig. 10(a): the paper's N = M = 1000 "
             "diverges at α = 0.01)")
    keys = {"10a": "Fig. 10(a)", "10b": "Fig. 10(b)", "growth": "Fig. 10, growth",
            "11": "Fig. 11"}
    return [Item(keys[k], j.claim.statement, j.word, _measured(j.claim.estimand, j),
                 scale, _link(7), _magnitude(j), j, j.claim.estimand)
            for k, j in J.items()]


ORDER = ["Fig. 1(a)", "Fig. 1(b)", "Fig. 1, growth", "Fig. 1(c)", "Table 1", "Fig. 2(a)", "Fig. 2(b)",
         "Fig. 3(a)", "Fig. 3(b)", "Fig. 4", "Fig. 5(a)", "Fig. 5(b)", "Fig. 5(b), M = 1",
         "Fig. 5(c)", "Fig. 5(d)", "Fig. 6(a)", "Fig. 6(b)", "Fig. 7(a)", "Fig. 7(b)",
         "Fig. 8(a)", "Fig. 8(b)", "Fig. 8(c)", "Fig. 8(d)", "Fig. 9", "Fig. 10(a)",
         "Fig. 10(b)", "Fig. 10, growth", "Fig. 11", "Fig. 12", "Fig. 13", "Fig. 14",
         "Fig. 15", "Fig. 16", "Fig. 17", "Fig. 18", "Fig. 19(a)", "Fig. 19(b)", "Fig. 20",
         "Fig. 21", "Fig. 22", "Fig. 23"]


def items(correct: bool = True) -> list[Item]:
    """Every row of the scorecard, in the paper's order, Holm-corrected across the
    scorecard's judged claims (`holm_correct`) unless correct=False."""
    found = {i.item: i for i in chapter1_items() + chapter2_items() + chapter3_items()
             + toy_items()}
    for item, paper, chapter in _PLANNED:
        found.setdefault(item, Item(item, paper, NOT_YET, where=f"planned: ch. {chapter}"))
    for extra in _extra_items():
        found[extra.item] = extra
    for key in ORDER:
        found.setdefault(key, Item(key, "see SPEC §4", NOT_YET))
    out = [found[k] for k in ORDER]
    return holm_correct(out) if correct else out


def family(rows) -> list:
    """The distinct judgements of `rows` that Holm's correction counts: judged (not
    'not tested') on at least their n_required seeds with a finite p; a judgement two
    rows share (one claim) counts once."""
    seen = {}
    for r in rows:
        j = r.judgement
        if (j is not None and j.word != "not tested" and j.interval.n >= j.n_required
                and math.isfinite(j.p)):
            seen.setdefault(j.claim, j)
    return list(seen.values())


def holm_correct(rows, alpha: float = 0.05) -> list[Item]:
    """The rows with Holm's correction (`verdicts.holm`) across `family(rows)`: each
    judged row's verdict, measured text (with Holm's p) and magnitude from its
    corrected judgement."""
    from . import scale

    fam = family(rows)
    corrected = dict(zip((j.claim for j in fam), verdicts.holm(fam, alpha)))
    out = []
    for r in rows:
        j = r.judgement
        if j is None or j.claim not in corrected or j.word == "not tested":
            out.append(r)
            continue
        c = corrected[j.claim]
        out.append(replace(r, verdict=scale.verdict_text(c), judgement=c,
                           measured=_measured(r.label, c, r.shown)))
    return out


def word(item: Item) -> str:
    """The row's verdict word after Holm's correction: a word of `verdicts.WORDS`
    ('not tested' for every 'not tested (why)')."""
    if item.judgement is not None:
        return item.judgement.word
    return "not tested" if item.verdict.startswith("not tested") else item.verdict


def _extra_items() -> list[Item]:
    """Rows that chapters other than 1 and 7 compute (vision, when present)."""
    try:
        from . import vision
        rows = vision.scorecard_items()
    except (ImportError, AttributeError):
        return [Item("Fig. 7(a)", "Image GPT shows recovery (CIFAR-10)", NOT_YET,
                     where="planned: ch. 5"),
                Item("Fig. 7(b)", "ViT / VGG-19 ImageNet classification show recovery",
                     NOT_YET, where="planned: ch. 5")]
    out = []
    for row in rows:
        it = Item(**row)
        out.append(replace(it, magnitude=_magnitude(it.judgement)))
    return out


CLAIMS = [
    ("Claim 1: emerges with scale; width ≥ 512, depth ≥ 8", ("Fig. 2(a)", "Fig. 2(b)",
                                                             "Fig. 3(a)", "Fig. 3(b)")),
    ("Claim 2: stronger fitting → more recovery", ("Fig. 5(b)", "Fig. 5(c)", "Fig. 5(d)",
                                                    "Fig. 6(a)", "Fig. 6(b)", "Fig. 15",
                                                    "Fig. 16")),
    ("Claim 3: survives long cycles, noise, partial shuffling, one-off documents, "
     "cosine lr, GPT-2, Wikitext", ("Fig. 5(a)", "Fig. 4", "Fig. 12", "Fig. 18",
                                    "Fig. 17", "Fig. 20", "Fig. 21")),
    ("Claim 4: appears in vision, weaker than in LLMs", ("Fig. 7(a)", "Fig. 7(b)")),
    ("Claim 5: cyclic beats shuffled in online loss", ("Fig. 1(c)", "Table 1")),
    ("Claim 6: temporal structure in gradients, weights, activations; a helix; the toy "
     "model's circle", ("Fig. 8(a)", "Fig. 8(b)", "Fig. 8(c)", "Fig. 8(d)", "Fig. 9",
                        "Fig. 10(a)", "Fig. 10(b)", "Fig. 10, growth", "Fig. 11")),
    ("The phenomenon itself (Fig. 1): recovery before the revisit",
     ("Fig. 1(a)", "Fig. 1(b)")),
]


def claims(rows: dict) -> list[Item]:
    """The paper's claims (SPEC §1), each summarised from its figures' rows by one rule:
    every figure the same word (after Holm's correction; 'not tested' whatever its
    reason) → that word ('not tested (no figure covered yet)' when none is), else
    "undetermined"; the 'from' text lists each figure's word."""
    out = []
    for name, keys in CLAIMS:
        got = [rows[k] for k in keys if k in rows]
        words = [word(g) for g in got]
        if not got or set(words) == {"not tested"}:
            v = "not tested (no figure covered yet)"
        else:
            v = words[0] if len(set(words)) == 1 else "undetermined"
        out.append(Item(name, "", v, "from " + "; ".join(
            f"{g.item} {w}" for g, w in zip(got, words)) if got else "—"))
    return out


# The old rule's verdict of every judged row (stats.verdict: n < 5 "inconclusive", an
# interval holding zero "not reproduced"; scale.null_verdict's margin taken from the
# data; Fig. 15 on the cyclic RS alone; the toy chapter's hand-written words), on the
# results committed at 2ce8446, before issue 17's phase 2 (chapter 1's rows: the old
# rule applied to the same intervals; their new words date from phase 1, 5913ac9).
# Fig. 3's, 5(b)'s and 19's rows were one row each then; their parts' words are given.
OLD_RULE = {
    "Fig. 1(a)": "not reproduced", "Fig. 1(b)": "reproduced", "Fig. 1(c)": "reproduced",
    "Table 1": "reproduced", "Fig. 2(a)": "not reproduced", "Fig. 2(b)": "opposite",
    "Fig. 3(a)": "opposite", "Fig. 3(b)": "reproduced", "Fig. 5(a)": "reproduced",
    "Fig. 5(b)": "not reproduced", "Fig. 5(b), M = 1": "inconclusive",
    "Fig. 5(c)": "not reproduced", "Fig. 6(a)": "not reproduced",
    "Fig. 7(a)": "reproduced", "Fig. 7(b)": "not tested (no forgetting to recover from)",
    "Fig. 10(a)": "partly reproduced (stated setting unstable)",
    "Fig. 10(b)": "reproduced", "Fig. 10, growth": "reproduced", "Fig. 11": "reproduced",
    "Fig. 13": "not reproduced", "Fig. 14": "not reproduced",
    "Fig. 15": "not reproduced", "Fig. 16": "reproduced", "Fig. 17": "reproduced",
    "Fig. 19(a)": "not reproduced",
    "Fig. 20": "not tested at CPU scale (paper preset only)",
}


def changes(rows) -> list[dict]:
    """Every row whose word differs from the old rule's (`OLD_RULE`; two 'not tested'
    of any reason count as the same): item, old, new (with the word before Holm's
    correction where it changed it) and the measured text."""
    out = []
    for r in rows:
        old = OLD_RULE.get(r.item)
        if old is None:
            continue
        new = word(r)
        if old == new or (old.startswith("not tested") and new == "not tested"):
            continue
        out.append(dict(item=r.item, old=old, new=r.verdict, measured=r.measured))
    return out


def markdown(its: list[Item] | None = None) -> str:
    """The scorecard page: the verdict words (`verdicts.VOCABULARY`, once), the claims,
    every figure and table, and what changed under issue 17's rule; `its`: the rows
    (`items()` unless given)."""
    its = items() if its is None else its
    rows = {i.item: i for i in its}
    fam = family(its)
    n_holm = sum(1 for r in its if r.judgement is not None and r.judgement.uncorrected)

    def esc(t: str) -> str:
        return str(t).replace("|", "\\|")

    out = ["## Verdict words", ""]
    out += [f"- **{w}**: {d}" for w, d in verdicts.VOCABULARY.items()]
    out += ["", f"Holm's step-down correction runs across the {len(fam)} claims of this "
            "page judged on at least 5 seeds (each p beside its interval, Holm's p in "
            "brackets); it changes the word of "
            f"{n_holm} row{'s' if n_holm != 1 else ''}, each shown as 'new word (old "
            "word before Holm's correction)'. The magnitude column sets the measured mean "
            "beside the paper's own number of the same estimand, where the paper gives "
            "one.", ""]
    out += ["## Claims", "", "| claim | verdict | from |", "|---|---|---|"]
    out += [f"| {esc(c.item)} | {esc(c.verdict)} | {esc(c.measured)} |" for c in claims(rows)]
    out += ["", "## Every figure and table", "",
            "| item | the paper | verdict | measured (95 % interval over seeds, p) | "
            "magnitude (paper; ratio) | scale | where |", "|---|---|---|---|---|---|---|"]
    out += [f"| {esc(i.item)} | {esc(i.paper)} | {esc(i.verdict)} | {esc(i.measured)} | "
            f"{esc(i.magnitude)} | {esc(i.scale)} | {i.where} |" for i in its]
    ch = changes(its)
    out += ["", "## What changed with the one verdict rule", "",
            "The old rule judged every contrast by whether its 95 % interval held zero "
            "('not reproduced' whenever it did, 'inconclusive' under 5 seeds), took the "
            "margin of 'little effect' from the data, judged Fig. 15 on the cyclic runs "
            "alone and wrote 'partly' for claims of several parts. Rows whose word "
            "differs (old → new; 'not yet covered' / 'not yet computed' now read 'not "
            "tested (…)' and are not listed):", ""]
    out += [f"- {esc(c['item'])}: {esc(c['old'])} → **{esc(c['new'])}** — "
            f"{esc(c['measured'])}" for c in ch] or ["- none"]
    return "\n".join(out)
