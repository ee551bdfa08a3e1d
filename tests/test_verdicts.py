"""anticip_lib.verdicts on hand-worked cases, one for each outcome of `judge` (issue 17).

Expected intervals and p-values are worked out by hand in the comments and checked
against scipy's own tests (ttest_1samp), never against the module under test.
t table: t_{0.975,4} = 2.776, t_{0.95,4} = 2.132.
"""

import math

import numpy as np
import pytest
from scipy import stats as ss

from anticip_lib import verdicts as V

UP = [0.1, 0.2, 0.3, 0.4, 0.5]  # mean 0.3, sd √0.025 = 0.1581, se 0.0707, t = 4.243
FLAT = [0.01, -0.01, 0.02, -0.02, 0.0]  # mean 0, sd √2.5e-4 = 0.0158, se 0.00707


def diff(**kw):
    return V.Claim("Fig. X", "cyclic recovers more", "cyclic − shuffled RS(4)", **kw)


def equiv(margin, **kw):
    return V.Claim("Fig. 14", "heads have little effect", "RS(4) last − first",
                   kind="equivalence", margin=margin, **kw)


def scipy_p(values):
    return ss.ttest_1samp(values, 0.0).pvalue


def scipy_tost(values, margin):
    lo = ss.ttest_1samp(values, -margin, alternative="greater").pvalue
    hi = ss.ttest_1samp(values, margin, alternative="less").pvalue
    return max(lo, hi)


def with_p(p, mean=0.1, n=5):
    """n values of the given mean whose two-sided t-test p is exactly p."""
    z = np.arange(n) - (n - 1) / 2
    z = z / z.std(ddof=1)
    t = ss.t.isf(p / 2, n - 1)
    return mean + abs(mean) * n**0.5 / t * z


def test_vocabulary_is_the_six_words():
    assert list(V.VOCABULARY) == ["reproduced", "reproduced in sign only", "not reproduced",
                                  "opposite", "undetermined", "not tested"]
    assert all(d.strip().endswith(".") for d in V.VOCABULARY.values())
    iv = V.judge(diff(), UP).interval
    with pytest.raises(ValueError, match="not a verdict word"):
        V.Judgement(diff(), "inconclusive", iv, 0.1, 0.1, None, None, "")


def test_reproduced_and_opposite():
    j = V.judge(diff(), UP)
    # 0.3 ± 2.776 · 0.0707 = [0.104, 0.496]; t = 0.3 / 0.0707 = 4.243, p = 0.0132
    assert j.word == "reproduced"
    assert (j.interval.lo, j.interval.hi) == pytest.approx((0.1037, 0.4963), abs=1e-4)
    assert j.p == pytest.approx(scipy_p(UP)) and j.p == pytest.approx(0.0132, abs=1e-4)
    assert j.p_tost is None and j.ratio is None
    assert j.text() == "0.30 [0.10, 0.50], p = 0.013, n = 5 — reproduced"
    assert V.judge(diff(direction=-1), UP).word == "opposite"
    neg = [-v for v in UP]
    assert V.judge(diff(direction=-1), neg).word == "reproduced"
    assert V.judge(diff(), neg).word == "opposite"


def test_sign_only_and_magnitude():
    j = V.judge(diff(paper=1.5), UP)  # 0.3 < 0.25 · 1.5 = 0.375
    assert j.word == "reproduced in sign only" and j.ratio == pytest.approx(0.2)
    assert j.magnitude() == "0.30 vs paper 1.50 (ratio 0.20)"
    j = V.judge(diff(paper=1.0), UP)  # 0.3 ≥ 0.25
    assert j.word == "reproduced" and j.ratio == pytest.approx(0.3)
    assert V.judge(diff(paper=1.5, sign_only_fraction=0.1), UP).word == "reproduced"
    assert V.magnitude_text(0.04, 0.48) == "0.04 vs paper 0.48 (ratio 0.08)"
    assert V.magnitude_text(0.04, None) == "0.04 (no paper value)"


def test_difference_absent_is_not_reproduced_only_within_margin():
    # 90 % interval 0 ± 2.132 · 0.00707 = ±0.0151: inside ±0.05, not inside ±0.01
    j = V.judge(diff(margin=0.05), FLAT)
    assert j.word == "not reproduced"
    assert j.p_tost == pytest.approx(scipy_tost(FLAT, 0.05))
    assert j.p_tost < 0.05 and j.p == pytest.approx(1.0)
    j = V.judge(diff(margin=0.01), FLAT)
    assert j.word == "undetermined" and j.p_tost == pytest.approx(scipy_tost(FLAT, 0.01))
    assert j.p_tost > 0.05
    assert V.judge(diff(), FLAT).word == "undetermined"  # no margin: no absence shown
    # off-centre means: the binding one-sided test is the one nearer the mean
    for shift in (-0.02, 0.02):
        v = np.asarray(FLAT) + shift
        j = V.judge(diff(margin=0.05), v)
        assert j.p_tost == pytest.approx(scipy_tost(v, 0.05)) and j.p_tost > 0.002


def test_equivalence_claims():
    j = V.judge(equiv(0.05), FLAT)
    assert j.word == "reproduced" and j.p == j.p_tost == pytest.approx(scipy_tost(FLAT, 0.05))
    assert j.text().startswith("0.00 [-0.02, 0.02], p_TOST = 0.0011, n = 5")
    assert V.judge(equiv(0.01), FLAT).word == "undetermined"
    j = V.judge(equiv(0.05), UP)  # a difference shown: [0.10, 0.50] excludes 0
    assert j.word == "not reproduced" and j.p == pytest.approx(scipy_tost(UP, 0.05))
    # a small, non-zero effect inside the margin: "little effect" holds
    small = [0.010, 0.011, 0.010, 0.011, 0.010]
    j = V.judge(equiv(0.05), small)
    assert j.interval.excludes_zero() and j.word == "reproduced"


def test_undetermined_with_few_seeds_and_not_tested():
    j = V.judge(diff(), [0.3, 0.31, 0.29])
    assert j.word == "undetermined" and "fewer than 5 seeds" in j.reason
    j = V.judge(diff(), [0.1, 0.2, math.nan, 0.3, 0.4, math.inf])  # 4 finite
    assert j.word == "undetermined" and j.interval.n == 4 and j.interval.n_dropped == 2
    assert V.judge(diff(), [0.3, 0.31, 0.29], n_required=3).word == "reproduced"
    with pytest.raises(ValueError, match="not_tested"):
        V.judge(diff(), [])
    with pytest.raises(ValueError, match="reason"):
        V.not_tested(diff(), "  ")
    j = V.not_tested(diff(), "needs d = 2048")
    assert j.word == "not tested" and j.text() == "not tested (needs d = 2048)"


def test_claim_is_checked():
    with pytest.raises(ValueError):
        V.Claim("a", "b", "c", kind="trend")
    with pytest.raises(ValueError):
        V.Claim("a", "b", "c", direction=0)
    with pytest.raises(ValueError, match="needs its margin"):
        V.Claim("a", "b", "c", kind="equivalence")
    with pytest.raises(ValueError, match="predicted sign"):
        V.Claim("a", "b", "c", direction=-1, paper=0.5)


def test_holm_adjust_hand_worked():
    # sorted 0.001, 0.01, 0.03, 0.2 → ×4, ×3, ×2, ×1 = 0.004, 0.03, 0.06, 0.2
    adj = V.holm_adjust([0.03, 0.001, 0.2, 0.01])
    assert adj == pytest.approx([0.06, 0.004, 0.2, 0.03])
    # step-down monotone: 0.02·3 = 0.06 > 0.025·2 = 0.05 → the second is raised to 0.06
    assert V.holm_adjust([0.02, 0.025, 0.9]) == pytest.approx([0.06, 0.06, 0.9])


def test_holm_takes_away_a_p_of_003():
    vals = {p: with_p(p) for p in (0.03, 0.001, 0.01, 0.5)}
    assert [scipy_p(v) for v in vals.values()] == pytest.approx(list(vals))
    js = [V.judge(diff(), v) for v in vals.values()]
    assert [j.word for j in js] == ["reproduced"] * 3 + ["undetermined"]
    few = V.judge(diff(), [0.3, 0.31, 0.29])  # not in the family (n < 5)
    skip = V.not_tested(diff(), "no model")
    out = V.holm(js + [few, skip])
    # family of 4: sorted 0.001, 0.01, 0.03, 0.5 → 0.004, 0.03, 0.06, 0.5
    assert [j.p_holm for j in out[:4]] == pytest.approx([0.06, 0.004, 0.03, 0.5])
    assert [j.word for j in out[:4]] == ["undetermined", "reproduced", "reproduced",
                                         "undetermined"]
    assert out[0].uncorrected == "reproduced" and out[1].uncorrected is None
    assert "(Holm = 0.06)" in out[0].text()
    assert out[0].text().endswith("— undetermined (reproduced before Holm's correction)")
    assert out[4] is few and out[5] is skip
    # with a margin its TOST passes, the absence of an effect of interest is what remains
    wide = V.holm([V.judge(diff(margin=1.0), vals[0.03])] + js[1:])
    assert wide[0].word == "not reproduced" and wide[0].uncorrected == "reproduced"


def test_holm_on_equivalence_uses_the_tost_p():
    # v = 2·FLAT: mean 0, se 0.01414; a margin of t_{0.97,4}·se makes scipy's TOST p 0.03
    v = np.asarray(FLAT) * 2
    margin = ss.t.isf(0.03, 4) * np.std(v, ddof=1) / 5**0.5
    assert scipy_tost(v, margin) == pytest.approx(0.03)
    j = V.judge(equiv(margin), v)
    assert j.word == "reproduced" and j.p == pytest.approx(0.03)
    others = [V.judge(diff(), with_p(p)) for p in (0.001, 0.002, 0.5)]
    out = V.holm([j] + others)
    # sorted 0.001, 0.002, 0.03, 0.5 → ×4, ×3, ×2, ×1 = 0.004, 0.006, 0.06, 0.5
    assert [o.p_holm for o in out] == pytest.approx([0.06, 0.004, 0.006, 0.5])
    assert out[0].word == "undetermined" and out[0].uncorrected == "reproduced"
    assert "p_TOST = 0.03 (Holm = 0.06)" in out[0].text()


def test_equivalence_not_reproduced_only_beyond_the_margin():
    # 0.05, 0.1, 0.08, 0.06, 0.11: mean 0.08, sd 0.0255, se 0.0114; 95 % 0.08 ± 0.0317 =
    # [0.048, 0.112]: an effect is shown (excludes 0) but not that it is more than
    # "little" (0.048 < 0.05): undetermined, not "not reproduced"
    v = [0.05, 0.1, 0.08, 0.06, 0.11]
    j = V.judge(equiv(0.05), v)
    assert j.interval.lo == pytest.approx(0.0483, abs=1e-4) and j.interval.excludes_zero()
    assert j.word == "undetermined" and "reaches into ±0.05" in j.reason
    assert V.judge(equiv(0.04), v).word == "not reproduced"  # 0.048 > 0.04
    neg = [-x for x in v]
    assert V.judge(equiv(0.05), neg).word == "undetermined"
    assert V.judge(equiv(0.04), neg).word == "not reproduced"


def test_combine_parts():
    up, flat = V.judge(diff(margin=0.05), UP), V.judge(diff(margin=0.05), FLAT)
    assert (up.word, flat.word) == ("reproduced", "not reproduced")
    j = V.combine(diff(margin=0.05), [("T=5", up), ("T=40", up)])
    assert j.word == "reproduced" and j.p == pytest.approx(scipy_p(UP))
    j = V.combine(diff(margin=0.05), [("T=5", up), ("T=40", flat)])
    # the parts differ: "undetermined", each part's word in the text; p the largest
    assert j.word == "undetermined" and j.p == pytest.approx(1.0)
    assert j.reason == "the parts differ: T=5 reproduced, T=40 not reproduced"
    assert j.text() == ("T=5: 0.30 [0.10, 0.50], p = 0.013, n = 5 — reproduced; T=40: "
                        "0.00 [-0.02, 0.02], p = 1, n = 5 — not reproduced; p (largest "
                        "of the parts') = 1 — undetermined")
    # a single part is that part under the combined claim
    one = V.combine(V.Claim("Fig. 6", "Adam more", "Adam − GD"), [("Adam − GD", up)])
    assert one.word == "reproduced" and one.claim.item == "Fig. 6" and not one.parts
    skip = V.not_tested(diff(), "no runs")
    assert V.combine(diff(), [("a", up), ("b", skip)]).word == "not tested"
    # Holm on a combined claim uses its (largest) p: sorted 0.013, 0.5 → 0.013 · 2 =
    # 0.026 < 0.05, the word stays
    both = V.combine(diff(), [("a", up), ("b", up)])
    out = V.holm([both, V.judge(diff(), with_p(0.5))])
    assert out[0].p_holm == pytest.approx(2 * scipy_p(UP)) and out[0].word == "reproduced"


def test_unpaired_difference_is_welch():
    a = [0.1, 0.2, 0.15, 0.12, 0.18]  # vision: mean 0.15
    b = [0.3, 0.25, 0.35, 0.28, 0.32, 0.3, 0.27, 0.33, 0.29, 0.31]  # language: mean 0.30
    claim = V.Claim("§1", "weaker in vision", "vision − language", direction=-1,
                    margin=0.05)
    j = V.judge_unpaired(claim, a, b)
    ref = ss.ttest_ind(a, b, equal_var=False)
    assert j.interval.mean == pytest.approx(-0.15) and j.p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (j.interval.lo, j.interval.hi) == pytest.approx((ci.low, ci.high))
    assert j.word == "reproduced" and "n = 5 and 10, unpaired (Welch)" in j.text()
    assert V.judge_unpaired(claim, a[:3], b).word == "undetermined"  # 3 < 5 seeds
    assert V.judge_unpaired(claim, b, a).word == "opposite"
