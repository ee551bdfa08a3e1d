"""metrics.gap_matched_recovery, revisit_gaps and recovery_nats on a hand-built
shuffled run (issue 17). Every expected number is worked out in the comments.

T = 3, E = 3; order (0-based docs): 0 1 2 | 0 2 1 | 0 1 2, episodes k = 1..9.
k_n(t): doc 0 → 1, 4, 7   doc 1 → 2, 6, 8   doc 2 → 3, 5, 9
gaps k_{n+1} − k_n:  doc 0 → 3, 3   doc 1 → 4, 2   doc 2 → 2, 4   (cyclic gap T = 3)
"""

import math

import numpy as np
import pytest

from anticip_lib import metrics

ORDER = np.array([0, 1, 2, 0, 2, 1, 0, 1, 2])
T = 3
#              doc0 doc1 doc2
L = np.array([[10, 10, 10],   # k=0
              [4, 11, 10],    # k=1 trained doc0
              [6, 5, 12],     # k=2 trained doc1
              [5, 8, 6],      # k=3 trained doc2
              [3, 7, 9],      # k=4 trained doc0
              [5, 9, 4],      # k=5 trained doc2
              [4, 3, 7],      # k=6 trained doc1
              [2, 6, 8],      # k=7 trained doc0
              [4, 2, 6],      # k=8 trained doc1
              [3, 5, 3]],     # k=9 trained doc2
             dtype=float)
# Per revisit (rows k_n .. k_{n+1}−1 of the document's column): l_after, l_max, l_before
#   epoch 1: doc0 rows 1-3: 4 6 5 → 4, 6, 5     (gap 3)
#            doc1 rows 2-5: 5 8 7 9 → 5, 9, 9   (gap 4)
#            doc2 rows 3-4: 6 9 → 6, 9, 9       (gap 2)
#   epoch 2: doc0 rows 4-6: 3 5 4 → 3, 5, 4     (gap 3)
#            doc1 rows 6-7: 3 6 → 3, 6, 6       (gap 2)
#            doc2 rows 5-8: 4 7 8 6 → 4, 8, 6   (gap 4)


def test_revisit_gaps():
    assert metrics.revisit_gaps(ORDER, T).tolist() == [[3, 3], [4, 2], [2, 4]]
    assert (metrics.revisit_gaps(np.tile(np.arange(4), 3), 4) == 4).all()


def test_gap_matched_exact():
    # gap 3 exactly: doc 0 in both epochs. max (6+5)/2 = 5.5, before 4.5, after 3.5
    # → RS = (5.5 − 4.5) / (5.5 − 3.5) = 0.5, from 1 of 2 nats
    g = metrics.gap_matched_recovery(L, T, (1, 2), ORDER)
    assert g["rs"] == pytest.approx(0.5)
    assert (g["recovered"], g["forgotten"]) == pytest.approx((1.0, 2.0))
    assert g["n_matched"] == 2 and g["n_revisits"] == 6 and g["why"] == ""
    assert g["gaps"].tolist() == [3, 3]
    # epoch 2 alone: doc 0 → (5 − 4) / (5 − 3) = 0.5
    assert metrics.gap_matched_recovery(L, T, 2, ORDER)["rs"] == pytest.approx(0.5)


def test_gap_matched_other_target_and_window():
    # gap 4: doc 1 epoch 1 (5, 9, 9) and doc 2 epoch 2 (4, 8, 6):
    # max 8.5, before 7.5, after 4.5 → RS = 1 / 4 = 0.25
    g = metrics.gap_matched_recovery(L, T, (1, 2), ORDER, gap=4)
    assert g["rs"] == pytest.approx(0.25) and g["n_matched"] == 2
    # tol = 1 keeps every revisit: max 43/6, before 39/6, after 25/6 → RS = 4/18
    g = metrics.gap_matched_recovery(L, T, [1, 2], ORDER, tol=1)
    assert g["rs"] == pytest.approx(4 / 18) and g["n_matched"] == 6
    # one epoch, every revisit kept: the ordinary RS(n) of the shuffled run
    for n in (1, 2):
        g = metrics.gap_matched_recovery(L, T, n, ORDER, tol=T)
        assert g["rs"] == pytest.approx(metrics.recovery_score(L, T, n, ORDER))


def test_gap_matched_nan_with_a_reason():
    g = metrics.gap_matched_recovery(L, T, (1, 2), ORDER, gap=5)
    assert math.isnan(g["rs"]) and g["n_matched"] == 0
    assert "no revisit" in g["why"] and "within 0 of 5" in g["why"]
    flat = np.ones_like(L)
    g = metrics.gap_matched_recovery(flat, T, 1, ORDER)
    assert math.isnan(g["rs"]) and g["why"] == "no forgetting over the matched revisits"


def test_gap_matched_on_a_cyclic_run_is_rs():
    rng = np.random.default_rng(0)
    cyc = rng.uniform(1, 5, size=(13, 4))  # T = 4, E = 3
    for n in (1, 2):
        g = metrics.gap_matched_recovery(cyc, 4, n, None)
        assert g["n_matched"] == 4
        assert g["rs"] == pytest.approx(metrics.recovery_score(cyc, 4, n))


def test_recovery_nats():
    # epoch 1: max 24/3, before 23/3, after 15/3 → 1/3 of 3 nats, RS 1/9
    # epoch 2: max 19/3, before 16/3, after 10/3 → 1 of 3 nats, RS 1/3
    r = metrics.recovery_nats(L, T, ORDER)
    assert r["epoch"].tolist() == [1, 2]
    assert r["recovered"] == pytest.approx([1 / 3, 1.0])
    assert r["forgotten"] == pytest.approx([3.0, 3.0])
    assert r["rs"] == pytest.approx([1 / 9, 1 / 3])
    assert r["rs"][1] == pytest.approx(metrics.recovery_score(L, T, 2, ORDER))
    assert np.isnan(metrics.recovery_nats(np.ones_like(L), T, ORDER, epochs=[2])["rs"][0])
    assert metrics.rs_nats_text(0.333, 1.0, 3.0) == "0.33 (1.00 of 3.00 nats recovered)"
