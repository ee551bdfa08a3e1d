"""The one verdict rule and vocabulary of the book (issue 17).

Every claim of the paper that the book tests is written down as a `Claim` *before* its
runs: the figure it comes from, what the paper says, the estimand it is judged on
(one per-seed number, e.g. cyclic − shuffled RS(4), paired by seed), whether the paper
claims a difference or the absence of one, the paper's predicted sign, a margin fixed
in advance (the smallest effect of interest; for a claim of no effect, the equivalence
margin), and the paper's own magnitude of the same estimand where it gives one.
`judge(claim, values)` then returns a `Judgement` with one word of `VOCABULARY`.

Tests (values = the per-seed estimand; non-finite runs are counted, not averaged):
- interval: Student's t interval at `level` (95 %), `stats.t_interval`;
- p_zero: two-sided one-sample t-test of mean = 0 (a paired t-test: the pairing is
  already in the values);
- p_tost: two one-sided tests (TOST) of |mean| < margin: p_tost = max(p of
  H0: mean ≤ −margin, p of H0: mean ≥ +margin). p_tost < α, α = 1 − level = 0.05,
  exactly when the (1 − 2α) = 90 % interval lies strictly inside (−margin, +margin).
  Computed for every claim that has a margin;
- p: the claim's own test, p_zero for a difference claim and p_tost for an
  equivalence claim. It is the p that Holm's correction adjusts.

Rules, in order (n = finite values):
1. No runs at all: "not tested", only through `not_tested(claim, why)`, which must say
   why; `judge` refuses empty values.
2. n < n_required (5): "undetermined" (fewer than 5 seeds).
3. A difference claim (the paper predicts the sign `direction` of the estimand):
   - the 95 % interval excludes 0 on the paper's side (p_zero < α with the predicted
     sign): "reproduced"; but where the paper gives its magnitude and
     |mean| < sign_only_fraction · |paper|: "reproduced in sign only";
   - it excludes 0 on the other side: "opposite";
   - it holds 0 and the TOST shows |mean| < margin (p_tost < α): "not reproduced"
     (an absence of the effect is shown);
   - it holds 0 otherwise (no margin, or the 90 % interval reaches past ±margin):
     "undetermined" (neither the effect nor its absence is shown).
4. An equivalence claim ("little effect", "no recovery at M = 1"):
   - TOST within ±margin (p_tost < α): "reproduced";
   - else the 95 % interval lies wholly beyond the margin (lo > +margin or
     hi < −margin): "not reproduced" (an effect larger than "little" is shown);
   - else: "undetermined" (an interval that excludes 0 but reaches into ±margin shows
     an effect, not that it is more than little: the opposite of the claim is not shown).
   (Until phase 2 of issue 17 the middle rule read "the 95 % interval excludes 0". It
   was changed in phase 2, before any chapter's equivalence claim was judged by this
   module but with Fig. 14's interval known (issue 17 had named it), so that "not
   reproduced" means what `VOCABULARY` says: the opposite of the claim is shown.)

Claims made of parts ("recovery at every T", "Pythia init above N(0, 0.02²) at each
of two shapes"): each part is judged by `judge` as a claim of its own, and `combine`
gives the claim one word: every part the same word → that word; parts that differ →
"undetermined", each part's word listed in the text. Its p is the largest of the
parts' (an intersection–union test: "every part holds" is shown at α when each part's
own test is), its TOST p likewise the largest; its interval is the weakest part's.

An unpaired difference of two groups (vision against language, different models and
seeds): `judge_unpaired`, Welch's t (Welch–Satterthwaite degrees of freedom) in place
of the one-sample t, then the same rules; each group needs n_required finite values.

Holm's step-down correction across a family of claims (`holm`): the family is every
judgement made on ≥ n_required seeds (those decided by rule 2 or not tested are left
out). Sort their p ascending, p_(1) ≤ … ≤ p_(m); the adjusted
p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)). A claim keeps a verdict that rests on
its own test only if p̃ < α:
- difference claim: "reproduced", "reproduced in sign only" or "opposite" with p̃ ≥ α
  becomes "not reproduced" if its (uncorrected) TOST holds, else "undetermined";
- equivalence claim: "reproduced" with p̃ ≥ α becomes "undetermined" (the interval
  of a "reproduced" equivalence lies inside the margin, so it never shows more).
Verdicts that do not rest on the claim's own test ("not reproduced", "undetermined")
are not changed: the secondary test behind a "not reproduced" is not corrected.
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from .stats import Interval, t_interval

VOCABULARY = {
    "reproduced": "The paper's claim is shown: for a difference, the 95 % interval of the "
    "estimand excludes zero on the paper's side (and, where the paper gives a magnitude, "
    "the mean is at least the stated fraction of it); for a claim of no effect, the 90 % "
    "interval lies within the margin fixed in advance (two one-sided tests).",
    "reproduced in sign only": "The 95 % interval excludes zero on the paper's side, but "
    "the mean is smaller than the stated fraction (25 % unless said) of the paper's "
    "magnitude of the same estimand.",
    "not reproduced": "The opposite of the paper's claim is shown: for a difference, the "
    "90 % interval lies within the margin (no effect of interest); for a claim of no "
    "effect, the 95 % interval lies wholly beyond the margin (more than a little effect).",
    "opposite": "The 95 % interval excludes zero on the side opposite to the paper's "
    "predicted sign.",
    "undetermined": "Neither the claim nor its opposite is shown: fewer than 5 seeds; an "
    "interval that holds zero and also reaches past the margin; for a claim of no effect, "
    "an interval that reaches past the margin without lying wholly beyond it; or a claim "
    "of several parts whose parts' words differ (each part's word is given).",
    "not tested": "The book ran nothing for this claim; the reason is always given.",
}
WORDS = tuple(VOCABULARY)
KINDS = ("difference", "equivalence")


@dataclass(frozen=True)
class Claim:
    """A claim as declared before its runs (see the module docstring for the rules).

    item: the paper's figure or table ("Fig. 1(a)"); statement: what the paper says;
    estimand: the per-seed number judged ("cyclic − shuffled RS(4)"); kind:
    "difference" or "equivalence"; direction: the paper's predicted sign (+1 / −1) of
    the estimand, for a difference claim; margin: the smallest effect of interest
    (difference) or the equivalence margin, in the estimand's units, fixed in advance;
    paper: the paper's magnitude of the same estimand, or None; sign_only_fraction:
    under this fraction of |paper| a shown difference is "reproduced in sign only".
    """

    item: str
    statement: str
    estimand: str
    kind: str = "difference"
    direction: int = +1
    margin: float | None = None
    paper: float | None = None
    sign_only_fraction: float = 0.25

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.direction not in (+1, -1):
            raise ValueError(f"direction must be +1 or -1, got {self.direction!r}")
        if self.margin is not None and not self.margin > 0:
            raise ValueError(f"margin must be positive, got {self.margin!r}")
        if self.kind == "equivalence" and self.margin is None:
            raise ValueError(f"{self.item}: an equivalence claim needs its margin")
        if not 0 < self.sign_only_fraction < 1:
            raise ValueError("sign_only_fraction must be in (0, 1)")
        if (self.kind == "difference" and self.paper is not None
                and self.direction * self.paper <= 0):
            raise ValueError(f"{self.item}: the paper's value {self.paper} does not have "
                             f"the predicted sign {self.direction:+d}")


@dataclass(frozen=True)
class Judgement:
    """A claim's verdict and the numbers behind it.

    word: one of `VOCABULARY`; interval: the 95 % t interval of the estimand; p: the
    claim's own test (p_zero for a difference claim, p_tost for an equivalence claim);
    p_zero: two-sided t-test of mean = 0; p_tost: TOST against ±margin (None without a
    margin); ratio: mean / paper (None without a paper value); reason: why this word;
    p_holm: Holm-adjusted p once `holm` has run; uncorrected: the word before Holm's
    correction where it changed it; parts: ((label, Judgement), …) of a claim made of
    parts (`combine`); n_text: how n reads where it is not one paired sample
    (`judge_unpaired`: 'n = 5 and 10, unpaired').
    """

    claim: Claim
    word: str
    interval: Interval
    p: float
    p_zero: float
    p_tost: float | None
    ratio: float | None
    reason: str
    n_required: int = 5
    p_holm: float | None = None
    uncorrected: str | None = None
    parts: tuple = ()
    n_text: str | None = None

    def __post_init__(self):
        if self.word not in VOCABULARY:
            raise ValueError(f"{self.word!r} is not a verdict word; use one of {WORDS}")

    def text(self, fmt: str = ".2f") -> str:
        """'0.12 [0.05, 0.19], p = 0.003, n = 10 — reproduced' (Holm's p and the word
        before correction where they exist; 'not tested (why)')."""
        if self.word == "not tested":
            return f"not tested ({self.reason})"
        word = self.word
        if self.uncorrected:
            word += f" ({self.uncorrected} before Holm's correction)"
        name = "p_TOST" if self.claim.kind == "equivalence" else "p"
        if self.parts:  # each part's own text, then the claim's p and word
            ps = f"{name} (largest of the parts') {p_text(self.p)}"
            if self.p_holm is not None:
                ps += f" (Holm {p_text(self.p_holm)})"
            return "; ".join(f"{k}: {j.text(fmt)}" for k, j in self.parts) + \
                f"; {ps} — {word}"
        iv = self.interval
        if iv.n < 2:
            return f"{iv.text(fmt)} — {self.word} ({self.reason})"
        ps = f"{name} {p_text(self.p)}"
        if self.p_holm is not None:
            ps += f" (Holm {p_text(self.p_holm)})"
        drop = f", {iv.n_dropped} non-finite left out" if iv.n_dropped else ""
        n = self.n_text or f"n = {iv.n}"
        return (f"{iv.mean:{fmt}} [{iv.lo:{fmt}}, {iv.hi:{fmt}}], {ps}, {n}{drop}"
                f" — {word}")

    def magnitude(self, fmt: str = ".2f") -> str:
        """'0.04 vs paper 0.48 (ratio 0.08)': the measured mean beside the paper's."""
        return magnitude_text(self.interval.mean, self.claim.paper, fmt)


def p_text(p: float) -> str:
    """The p of a text, to two significant digits: '= 0.013', '= 0.12', '< 0.001'."""
    if not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"= {p:.2g}"


def _t_tests(finite: np.ndarray, margin: float | None) -> tuple[float, float | None]:
    """(two-sided p of mean = 0, TOST p against ±margin) for n ≥ 2 finite values."""
    n, m = finite.size, float(finite.mean())
    return _tests(m, float(finite.std(ddof=1)) / n**0.5, n - 1, margin)


def _tests(m: float, se: float, df: float,
           margin: float | None) -> tuple[float, float | None]:
    """(two-sided p of mean = 0, TOST p against ±margin) of a t statistic: mean m,
    standard error se, df degrees of freedom."""
    from scipy import stats

    if se == 0:  # all values equal: the tests are decided by the mean alone
        p_zero = 1.0 if m == 0 else 0.0
        p_tost = None if margin is None else (0.0 if abs(m) < margin else 1.0)
        return p_zero, p_tost
    p_zero = float(2 * stats.t.sf(abs(m) / se, df))
    if margin is None:
        return p_zero, None
    p_low = float(stats.t.sf((m + margin) / se, df))  # H0: mean ≤ −margin
    p_high = float(stats.t.cdf((m - margin) / se, df))  # H0: mean ≥ +margin
    return p_zero, max(p_low, p_high)


def judge(claim: Claim, values, *, n_required: int = 5, level: float = 0.95) -> Judgement:
    """The verdict on `claim` from per-seed values of its estimand (module docstring).

    NaN / inf values (diverged runs) are counted in the interval's n_dropped, not
    averaged. Empty `values`: use `not_tested(claim, why)` instead.
    """
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0:
        raise ValueError(f"{claim.item}: no values; use not_tested(claim, why)")
    alpha = 1 - level
    iv = t_interval(v, level)
    finite = v[np.isfinite(v)]
    ratio = (iv.mean / claim.paper if claim.paper and iv.n else None)
    if iv.n < 2:
        p_zero, p_tost = math.nan, None
    else:
        p_zero, p_tost = _t_tests(finite, claim.margin)
    p = p_zero if claim.kind == "difference" else (math.nan if p_tost is None else p_tost)
    word, reason = _rule(claim, iv, p_zero, p_tost, alpha, n_required)
    return Judgement(claim, word, iv, p, p_zero, p_tost, ratio, reason, n_required)


def _rule(claim, iv, p_zero, p_tost, alpha, n_required) -> tuple[str, str]:
    """(word, reason) of rules 2–4 of the module docstring."""
    if iv.n < n_required:
        extra = f" ({iv.n_dropped} non-finite)" if iv.n_dropped else ""
        return "undetermined", f"fewer than {n_required} seeds: n = {iv.n}{extra}"
    equivalent = p_tost is not None and p_tost < alpha
    excludes = iv.excludes_zero()
    m = claim.margin
    if claim.kind == "equivalence":
        if equivalent:
            return "reproduced", f"90 % interval within ±{m:g}"
        if iv.lo > m or iv.hi < -m:
            return "not reproduced", f"95 % interval wholly beyond ±{m:g}: more than a " \
                "little effect is shown"
        if excludes:
            return "undetermined", (f"95 % interval excludes 0 but reaches into ±{m:g}: an "
                                    "effect is shown, not that it is more than little")
        return "undetermined", f"interval holds 0 but reaches past ±{m:g}"
    if excludes and claim.direction * iv.mean > 0:
        if (claim.paper is not None
                and abs(iv.mean) < claim.sign_only_fraction * abs(claim.paper)):
            return ("reproduced in sign only", f"under {claim.sign_only_fraction:.0%} of "
                    f"the paper's {claim.paper:g}")
        return "reproduced", "95 % interval excludes 0 on the paper's side"
    if excludes:
        return "opposite", "95 % interval excludes 0 on the other side"
    if equivalent:
        return "not reproduced", f"90 % interval within ±{m:g}: no effect of interest"
    why = "no margin declared" if m is None else f"90 % interval reaches past ±{m:g}"
    return "undetermined", f"interval holds 0; {why}"


def judge_unpaired(claim: Claim, a, b, *, n_required: int = 5,
                   level: float = 0.95) -> Judgement:
    """The verdict on `claim` whose estimand is mean(a) − mean(b) of two unpaired groups
    (different models, seeds or documents): Welch's t interval and tests (module
    docstring), then the same rules as `judge`; "undetermined" unless each group has
    `n_required` finite values."""
    from scipy import stats

    a, b = (np.asarray(x, dtype=float).ravel() for x in (a, b))
    if a.size == 0 or b.size == 0:
        raise ValueError(f"{claim.item}: a group has no values; use not_tested(claim, why)")
    fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
    dropped = a.size - fa.size + b.size - fb.size
    n = min(fa.size, fb.size)
    n_text = f"n = {fa.size} and {fb.size}, unpaired (Welch)"
    alpha = 1 - level
    if n < 2:
        iv = Interval(math.nan if n == 0 else float(fa.mean() - fb.mean()), math.nan,
                      math.nan, n, dropped)
        return Judgement(claim, "undetermined", iv, math.nan, math.nan, None, None,
                         f"fewer than 2 finite values in a group ({n_text})", n_required,
                         n_text=n_text)
    va, vb = fa.var(ddof=1) / fa.size, fb.var(ddof=1) / fb.size
    m, se = float(fa.mean() - fb.mean()), float((va + vb) ** 0.5)
    df = (va + vb) ** 2 / (va**2 / (fa.size - 1) + vb**2 / (fb.size - 1)) if se else 1.0
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    iv = Interval(m, m - half, m + half, n, dropped)
    p_zero, p_tost = _tests(m, se, df, claim.margin)
    p = p_zero if claim.kind == "difference" else (math.nan if p_tost is None else p_tost)
    word, reason = _rule(claim, iv, p_zero, p_tost, alpha, n_required)
    ratio = m / claim.paper if claim.paper else None
    return Judgement(claim, word, iv, p, p_zero, p_tost, ratio, reason, n_required,
                     n_text=n_text)


def combine(claim: Claim, parts, *, n_required: int = 5) -> Judgement:
    """One judgement of a claim made of parts, from each part's own ((label,
    Judgement), …), every part judged on a claim of the same kind (module docstring):
    every part the same word → that word, else "undetermined"; p (and p_tost) the
    largest of the parts'; interval, ratio and reason those of the weakest part (fewest
    values, then largest p). A single part is that part under `claim`."""
    parts = tuple(parts)
    if not parts:
        raise ValueError(f"{claim.item}: no parts; use not_tested(claim, why)")
    js = [j for _, j in parts]
    if any(j.word == "not tested" for j in js):
        why = "; ".join(f"{k}: {j.reason}" for k, j in parts if j.word == "not tested")
        return not_tested(claim, f"a part is not tested ({why})")
    words = [j.word for j in js]
    word = words[0] if len(set(words)) == 1 else "undetermined"

    weak = max(js, key=lambda j: (j.interval.n < n_required,
                                  j.p if math.isfinite(j.p) else math.inf))
    p_zero = max((j.p_zero for j in js), key=lambda x: x if math.isfinite(x) else math.inf)
    p_tost = (None if any(j.p_tost is None for j in js)
              else max(j.p_tost for j in js))
    p = max((j.p for j in js), key=lambda x: x if math.isfinite(x) else math.inf)
    reason = (weak.reason if len(set(words)) == 1 else
              "the parts differ: " + ", ".join(f"{k} {j.word}" for k, j in parts))
    if len(parts) == 1:
        return replace(js[0], claim=claim)
    return Judgement(claim, word, weak.interval, p, p_zero, p_tost,
                     weak.ratio, reason, n_required, parts=parts)


def not_tested(claim: Claim, why: str) -> Judgement:
    """The judgement of a claim the book ran nothing for; `why` is required."""
    if not why or not why.strip():
        raise ValueError(f"{claim.item}: 'not tested' needs a reason")
    iv = Interval(math.nan, math.nan, math.nan, 0)
    return Judgement(claim, "not tested", iv, math.nan, math.nan, None, None, why.strip())


def holm_adjust(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order:
    p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j)) over the ascending p_(j)."""
    p = np.asarray(pvalues, dtype=float)
    m = p.size
    idx = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[idx])
    adj = np.empty(m)
    adj[idx] = np.maximum.accumulate(scaled) if m else scaled
    return adj


def holm(judgements, alpha: float = 0.05) -> list[Judgement]:
    """The judgements after Holm's correction across them (module docstring): each
    judged on ≥ n_required seeds gets p_holm; one whose verdict rests on its own test
    and whose p_holm ≥ α gets the corrected word, the old one kept in `uncorrected`.
    Others are returned unchanged."""
    judgements = list(judgements)
    family = [i for i, j in enumerate(judgements)
              if j.word != "not tested" and j.interval.n >= j.n_required
              and math.isfinite(j.p)]
    adj = holm_adjust([judgements[i].p for i in family])
    out = list(judgements)
    for i, p_adj in zip(family, adj):
        j = judgements[i]
        new = replace(j, p_holm=float(p_adj))
        if p_adj >= alpha:
            if j.claim.kind == "difference" and j.word in (
                    "reproduced", "reproduced in sign only", "opposite"):
                tost = j.p_tost is not None and j.p_tost < alpha
                new = replace(new, word="not reproduced" if tost else "undetermined",
                              uncorrected=j.word,
                              reason=f"Holm-adjusted p {p_text(p_adj)} ≥ {alpha:g}"
                              + ("; 90 % interval within the margin" if tost else ""))
            elif j.claim.kind == "equivalence" and j.word == "reproduced":
                new = replace(new, word="undetermined", uncorrected=j.word,
                              reason=f"Holm-adjusted p_TOST {p_text(p_adj)} ≥ {alpha:g}")
        out[i] = new
    return out


def magnitude_text(mean: float, paper: float | None, fmt: str = ".2f") -> str:
    """'0.04 vs paper 0.48 (ratio 0.08)', or '0.04 (no paper value)'."""
    if paper is None:
        return f"{mean:{fmt}} (no paper value)"
    ratio = f"ratio {mean / paper:.2f}" if paper else "paper value 0"
    return f"{mean:{fmt}} vs paper {paper:{fmt}} ({ratio})"
