"""The scorecard on the one verdict rule (issue 17): Holm's correction across its
claims, the claims' summary rule, what changed, and no word outside the vocabulary.

Hand-worked p-values as in tests/test_verdicts.py (values built to have an exact
two-sided p, checked against scipy's own t-test)."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as ss

import anticip_lib
from anticip_lib import scorecard, verdicts as V
from anticip_lib.scorecard import Item

LIB = Path(anticip_lib.__file__).parent


def with_p(p, mean=0.1, n=5):
    """n values of the given mean whose two-sided t-test p is exactly p."""
    z = np.arange(n) - (n - 1) / 2
    z = z / z.std(ddof=1)
    return mean + abs(mean) * n**0.5 / ss.t.isf(p / 2, n - 1) * z


def claim(item, **kw):
    return V.Claim(item, f"{item} recovers", "cyclic − shuffled RS(4)", **kw)


def row(item, j):
    """A scorecard row judged by j, its measured text starting 'contrast: '."""
    return Item(item, j.claim.statement, j.word if j.word != "not tested" else j.text(),
                judgement=j, label="contrast")


def test_holm_across_the_scorecards_claims():
    js = {k: V.judge(claim(k), with_p(p)) for k, p in
          (("Fig. A", 0.03), ("Fig. B", 0.001), ("Fig. C", 0.01), ("Fig. D", 0.5))}
    assert [j.word for j in js.values()] == ["reproduced"] * 3 + ["undetermined"]
    few = V.judge(claim("Fig. E"), [0.3, 0.31, 0.29])  # 3 seeds: not in the family
    skip = V.not_tested(claim("Fig. F"), "not yet covered")
    rows = [row(k, j) for k, j in js.items()] + [row("Fig. B again", js["Fig. B"]),
                                                  row("Fig. E", few), row("Fig. F", skip),
                                                  Item("Fig. G", "planned")]
    # the family: four claims (Fig. B's judgement on two rows counts once)
    assert len(scorecard.family(rows)) == 4
    out = scorecard.holm_correct(rows)
    # sorted 0.001, 0.01, 0.03, 0.5 → ×4, ×3, ×2, ×1 = 0.004, 0.03, 0.06, 0.5
    got = {r.item: r for r in out}
    assert got["Fig. A"].verdict == "undetermined (reproduced before Holm's correction)"
    assert scorecard.word(got["Fig. A"]) == "undetermined"
    # p = 0.03: t = t_{0.985,4} = 3.49, se = 0.1 / 3.49 = 0.0287, half 2.776 · se = 0.080
    assert got["Fig. A"].measured == "contrast: 0.10 [0.02, 0.18], p = 0.03 (Holm = " \
                                     "0.06), n = 5"
    assert got["Fig. B"].verdict == got["Fig. B again"].verdict == "reproduced"
    assert "(Holm = 0.004)" in got["Fig. B again"].measured
    assert got["Fig. C"].verdict == "reproduced" and "(Holm = 0.03)" in got["Fig. C"].measured
    assert got["Fig. D"].verdict == "undetermined"
    assert got["Fig. E"] is rows[5] and got["Fig. F"] is rows[6]  # left alone
    assert got["Fig. F"].verdict == "not tested (not yet covered)"


def test_claims_summary_uses_only_vocabulary_words():
    up = V.judge(claim("x"), with_p(0.001))
    down = V.judge(claim("y", direction=-1), with_p(0.001))
    rows = {"Fig. 1(c)": row("Fig. 1(c)", up), "Table 1": row("Table 1", up),
            "Fig. 7(a)": row("Fig. 7(a)", up), "Fig. 7(b)": row("Fig. 7(b)", down),
            "Fig. 1(a)": Item("Fig. 1(a)", "planned"), "Fig. 1(b)": Item("Fig. 1(b)", "p")}
    out = {c.item.split(":")[0]: c for c in scorecard.claims(rows)}
    assert out["Claim 5"].verdict == "reproduced"  # every figure the same word
    assert out["Claim 4"].verdict == "undetermined"  # the figures' words differ
    assert out["Claim 4"].measured == "from Fig. 7(a) reproduced; Fig. 7(b) opposite"
    assert out["The phenomenon itself (Fig. 1)"].verdict == \
        "not tested (no figure covered yet)"
    for c in out.values():
        assert c.verdict in V.WORDS or c.verdict.startswith("not tested (")


def test_what_changed_lists_old_and_new_words():
    up = V.judge(claim("Fig. 16"), with_p(0.001))
    flat = V.judge(claim("Fig. 14", kind="equivalence", margin=0.05),
                   [0.05, 0.1, 0.08, 0.06, 0.11])  # [0.048, 0.112]: undetermined
    rows = [row("Fig. 16", up), row("Fig. 14", flat),
            Item("Fig. 20", "GPT-2", "not tested (paper preset only: needs Hub weights)"),
            Item("Fig. 4", "masking")]
    assert scorecard.OLD_RULE["Fig. 16"] == "reproduced"
    ch = scorecard.changes(rows)
    assert [(c["item"], c["old"], c["new"]) for c in ch] == [
        ("Fig. 14", "not reproduced", "undetermined")]


def _string_constants(path: Path):
    """String constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef,
                              ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs]


def test_no_old_verdict_word_is_left_in_the_package():
    """No string the package can print as a verdict starts with an old word
    ('inconclusive', 'partly …'); the scorecard's record of the old rule's words
    (OLD_RULE) is the one place they are kept."""
    old = set(scorecard.OLD_RULE.values())
    bad = re.compile(r"^\s*(inconclusive|partly\b)", re.I)
    found = [(p.relative_to(LIB), s) for p in LIB.rglob("*.py")
             for s in _string_constants(p) if bad.match(s) and s not in old]
    assert not found, found


def test_every_scorecard_row_and_claim_uses_the_vocabulary():
    """From the committed results (nothing is trained): every verdict a word of
    verdicts.WORDS or 'not tested (why)', Holm's corrected word with the old one where
    it changed, and the vocabulary printed once on the page."""
    its = scorecard.items()
    for it in its:
        head = it.verdict.split(" (", 1)[0] if it.judgement is not None and \
            it.judgement.uncorrected else it.verdict
        assert head in V.WORDS or head.startswith("not tested ("), it
        if it.judgement is not None and it.judgement.uncorrected:
            assert it.verdict == (f"{it.judgement.word} ({it.judgement.uncorrected} "
                                  "before Holm's correction)")
    rows = {i.item: i for i in its}
    for c in scorecard.claims(rows):
        assert c.verdict in V.WORDS or c.verdict.startswith("not tested ("), c
    page = scorecard.markdown(its)
    for w, d in V.VOCABULARY.items():
        assert page.count(d) == 1 and f"**{w}**: {d}" in page
    assert "inconclusive" not in page.split("## What changed")[0]
