"""Tests for anticip_lib.metrics on hand-built loss matrices (paper §3, App. A.4; SPEC §3).

Every expected number below is worked out by hand in the comments. Conventions, as in
the library: L[k, t] is the loss on document t (0-based; the paper's x_{t+1}) after k
episodes; episode k trains order[k-1]; in a cyclic run document t is trained in
episodes k_n(t) = (n-1)·T + t + 1.
"""

import math

import numpy as np
import pytest

from anticip_lib import metrics, orders

# ---- the main worked example: T=3, E=3, cyclic → a (E·T+1, T) = (10, 3) matrix -------
#
# order (0-based docs)  : 0 1 2 | 0 1 2 | 0 1 2      (episodes k = 1..9)
# k_n(t)                : doc 0 → 1, 4, 7   doc 1 → 2, 5, 8   doc 2 → 3, 6, 9
#
# Each document starts at 10, drops when trained, rises while the others train and
# partly recovers just before its next visit.
#
#        doc0 doc1 doc2
L = np.array(
    [
        [10, 10, 10],  # k=0 before training
        [4, 11, 10],   # k=1 trained doc0
        [6, 5, 12],    # k=2 trained doc1
        [5, 8, 6],     # k=3 trained doc2
        [3, 7, 9],     # k=4 trained doc0
        [5, 4, 8],     # k=5 trained doc1
        [4, 6, 5],     # k=6 trained doc2
        [2, 5, 7],     # k=7 trained doc0
        [4, 3, 6],     # k=8 trained doc1
        [3, 5, 4],     # k=9 trained doc2
    ],
    dtype=float,
)
T, E = 3, 3
ORDER = orders.cyclic(T, E)


def test_doc_curve():
    assert metrics.doc_curve(L, 0).tolist() == [10, 4, 6, 5, 3, 5, 4, 2, 4, 3]
    assert metrics.doc_curve(L, 2).tolist() == [10, 10, 12, 6, 9, 8, 5, 7, 6, 4]


def test_revisit_rows():
    # rows just before each training on the doc: k_n(t) - 1
    assert metrics.revisit_rows(ORDER, 0).tolist() == [0, 3, 6]
    assert metrics.revisit_rows(ORDER, 1).tolist() == [1, 4, 7]
    assert metrics.revisit_rows(ORDER, 2).tolist() == [2, 5, 8]
    # the black circles of Fig. 1(a) for doc 0: L[0], L[3], L[6] = 10, 5, 4
    assert L[metrics.revisit_rows(ORDER, 0), 0].tolist() == [10, 5, 4]


def test_training_episodes_cyclic():
    k = metrics.training_episodes(ORDER, T)
    assert k.shape == (T, E)
    assert k.tolist() == [[1, 4, 7], [2, 5, 8], [3, 6, 9]]


def test_training_episodes_shuffled():
    # epoch 1: 0 2 1, epoch 2: 0 1 2 → doc0 at 1, 4; doc1 at 3, 5; doc2 at 2, 6
    order = np.array([0, 2, 1, 0, 1, 2])
    assert metrics.training_episodes(order, 3).tolist() == [[1, 4], [3, 5], [2, 6]]


def test_training_episodes_rejects_unequal_counts():
    with pytest.raises(ValueError, match="same number"):
        metrics.training_episodes(np.array([0, 1, 0]), 2)  # doc0 twice, doc1 once
    with pytest.raises(ValueError, match="same number"):
        metrics.training_episodes(np.array([0, 1, 0, 1]), 3)  # doc2 never


# ---- shift-averaged curve (Fig. 1b; App. A.4) -----------------------------------------
#
# A[t, s] = L[t + s, t], s = 0..(E-1)·T+1 = 0..7  (8 columns)
#   doc0: L[0..7, 0] = 10  4  6  5  3  5  4  2
#   doc1: L[1..8, 1] = 11  5  8  7  4  6  5  3
#   doc2: L[2..9, 2] = 12  6  9  8  5  7  6  4
# S(s) = column means:
#   s=0: 33/3 = 11     s=1: 15/3 = 5     s=2: 23/3     s=3: 20/3
#   s=4: 12/3 = 4      s=5: 18/3 = 6     s=6: 15/3 = 5 s=7: 9/3 = 3
A_EXPECTED = [
    [10, 4, 6, 5, 3, 5, 4, 2],
    [11, 5, 8, 7, 4, 6, 5, 3],
    [12, 6, 9, 8, 5, 7, 6, 4],
]
S_EXPECTED = [11, 5, 23 / 3, 20 / 3, 4, 6, 5, 3]


def test_shift_aligned():
    A = metrics.shift_aligned(L, T)
    assert A.shape == (T, (E - 1) * T + 2)
    assert A.tolist() == A_EXPECTED


def test_shift_average_by_hand():
    np.testing.assert_allclose(metrics.shift_average(L, T), S_EXPECTED)


@pytest.mark.parametrize("s", [0, 1, 3, 4, 7])
def test_shift_average_matches_spec_formula(s):
    # SPEC §3.2 with 1-based t: S(s) = (1/T) Σ_t L[(t−1) + s, t]; here t' = t − 1 is 0-based
    by_formula = sum(L[(t - 1) + s, t - 1] for t in range(1, T + 1)) / T
    assert metrics.shift_average(L, T)[s] == pytest.approx(by_formula)
    assert by_formula == pytest.approx(S_EXPECTED[s])


def test_shift_average_paper_example_alignment():
    # paper example, T=50, x = 0.5 (s = 25): "document 1 is taken after training
    # document 25, document 2 after document 26, …, document 50 after document 24 of
    # the next epoch". Row k of doc t (1-based) is k = (t−1) + s; the doc trained last
    # at row k is order[k−1] (0-based).
    T50, E50, s = 50, 5, 25
    order = orders.cyclic(T50, E50)
    last_trained = {t: order[(t - 1) + s - 1] + 1 for t in (1, 2, 50)}  # 1-based
    assert last_trained == {1: 25, 2: 26, 50: 24}
    assert (50 - 1) + s > T50  # doc 50's cell lies in the next epoch
    # put a 1 in exactly those cells: the shift average picks them all at s = 25 only
    M = np.zeros((E50 * T50 + 1, T50))
    for t in range(1, T50 + 1):
        M[(t - 1) + s, t - 1] = 1.0
    S = metrics.shift_average(M, T50)
    assert S[s] == 1.0
    assert S.sum() == 1.0


# ---- recovery score (paper §3.1, Eq. 1; SPEC §3.3) -----------------------------------
#
# epoch 1: k_1 = (1, 2, 3), k_2 = (4, 5, 6)
#   l_max    : doc0 max L[1..3, 0] = max(4, 6, 5) = 6
#              doc1 max L[2..4, 1] = max(5, 8, 7) = 8
#              doc2 max L[3..5, 2] = max(6, 9, 8) = 9      → mean 23/3
#   l_before : L[3,0]=5, L[4,1]=7, L[5,2]=8                → mean 20/3
#   l_after  : L[1,0]=4, L[2,1]=5, L[3,2]=6                → mean 15/3 = 5
#   RS(1) = (23/3 − 20/3) / (23/3 − 5) = (3/3) / (8/3) = 3/8
#
# epoch 2: k_2 = (4, 5, 6), k_3 = (7, 8, 9)
#   l_max    : max(3,5,4)=5, max(4,6,5)=6, max(5,7,6)=7    → 6
#   l_before : L[6,0]=4, L[7,1]=5, L[8,2]=6                → 5
#   l_after  : L[4,0]=3, L[5,1]=4, L[6,2]=5                → 4
#   RS(2) = (6 − 5) / (6 − 4) = 1/2


def test_recovery_parts_epoch1():
    p = metrics.recovery_parts(L, T, 1)
    assert p == pytest.approx({"l_max": 23 / 3, "l_before": 20 / 3, "l_after": 5.0})


def test_recovery_parts_epoch2():
    p = metrics.recovery_parts(L, T, 2)
    assert p == pytest.approx({"l_max": 6.0, "l_before": 5.0, "l_after": 4.0})


def test_recovery_score_by_hand():
    assert metrics.recovery_score(L, T, 1) == pytest.approx(3 / 8)
    assert metrics.recovery_score(L, T, 2) == pytest.approx(1 / 2)


def test_recovery_score_explicit_cyclic_order_is_the_default():
    for n in (1, 2):
        assert metrics.recovery_score(L, T, n, order=ORDER) == metrics.recovery_score(L, T, n)


@pytest.mark.parametrize("epoch", [0, 3, -1])
def test_recovery_score_epoch_out_of_range(epoch):
    # RS(n) needs the (n+1)-th visit: n in 1..E−1 = 1..2
    with pytest.raises(ValueError, match="epoch"):
        metrics.recovery_score(L, T, epoch)


def test_recovery_score_is_ratio_of_means_not_mean_of_ratios():
    # T=3, E=2 (7×3). Epoch 1 intervals: doc0 rows 1..3, doc1 rows 2..4, doc2 rows 3..5.
    #   doc0: after 1, peak 11, before 1  → forgets 10, recovers 10: own ratio 1
    #   doc1: after 1, peak 2,  before 2  → forgets 1,  recovers 0:  own ratio 0
    #   doc2: after 1, peak 2,  before 2  → forgets 1,  recovers 0:  own ratio 0
    # mean of per-document ratios = 1/3
    # ratio of means: l_max = 15/3 = 5, l_before = 5/3, l_after = 1
    #   RS(1) = (5 − 5/3) / (5 − 1) = (10/3) / 4 = 5/6
    M = np.array(
        [
            [12, 12, 12],
            [1, 12, 12],
            [11, 1, 12],
            [1, 2, 1],
            [0.5, 2, 2],
            [0.5, 0.5, 2],
            [0.5, 0.5, 0.5],
        ]
    )
    p = metrics.recovery_parts(M, 3, 1)
    assert p == pytest.approx({"l_max": 5.0, "l_before": 5 / 3, "l_after": 1.0})
    rs = metrics.recovery_score(M, 3, 1)
    assert rs == pytest.approx(5 / 6)
    assert rs != pytest.approx(1 / 3)


def test_recovery_score_extremes():
    # T=3, E=2; every doc: after 1, then 2, then 3 right before its revisit
    #   → rises until the revisit: RS = 0 (no recovery)
    rising = np.array(
        [[5, 5, 5], [1, 5, 5], [2, 1, 5], [3, 2, 1], [1, 3, 2], [1, 1, 3], [1, 1, 1]],
        dtype=float,
    )
    assert metrics.recovery_score(rising, 3, 1) == pytest.approx(0.0)
    # every doc: after 1, peak 3, back to 1 right before the revisit → RS = 1
    full = np.array(
        [[5, 5, 5], [1, 5, 5], [3, 1, 5], [1, 3, 1], [1, 1, 3], [1, 1, 1], [1, 1, 1]],
        dtype=float,
    )
    assert metrics.recovery_score(full, 3, 1) == pytest.approx(1.0)


def test_recovery_score_with_shuffled_order():
    # T=3, E=2, order 0 2 1 | 0 1 2 → k_1 = (1, 3, 2), k_2 = (4, 5, 6)
    # epoch-1 intervals [k_1, k_2 − 1]: doc0 rows 1..3, doc1 rows 3..4, doc2 rows 2..5
    #        doc0 doc1 doc2
    M = np.array(
        [
            [9, 9, 9],  # k=0
            [2, 9, 9],  # k=1 trained doc0
            [6, 9, 2],  # k=2 trained doc2
            [4, 1, 5],  # k=3 trained doc1
            [3, 3, 8],  # k=4 trained doc0
            [3, 2, 5],  # k=5 trained doc1
            [3, 2, 1],  # k=6 trained doc2
        ],
        dtype=float,
    )
    order = np.array([0, 2, 1, 0, 1, 2])
    #   l_max    : max(2,6,4)=6, max(1,3)=3, max(2,5,8,5)=8  → 17/3
    #   l_before : L[3,0]=4, L[4,1]=3, L[5,2]=5              → 12/3 = 4
    #   l_after  : L[1,0]=2, L[3,1]=1, L[2,2]=2              → 5/3
    #   RS(1) = (17/3 − 12/3) / (17/3 − 5/3) = (5/3) / 4 = 5/12
    p = metrics.recovery_parts(M, 3, 1, order=order)
    assert p == pytest.approx({"l_max": 17 / 3, "l_before": 4.0, "l_after": 5 / 3})
    assert metrics.recovery_score(M, 3, 1, order=order) == pytest.approx(5 / 12)
    # read as if cyclic, the same matrix gives another number (doc1 rows 2..4: max 9,
    # before 3, after 9; doc2 rows 3..5: max 8, before 5, after 5):
    #   (23/3 − 12/3) / (23/3 − 16/3) = 11/7  → the order really is used
    assert metrics.recovery_score(M, 3, 1) == pytest.approx(11 / 7)


def test_recovery_per_doc_by_hand():
    # epoch 1 of L, per document (see the worked example above):
    #   l_max (6, 8, 9), l_before (5, 7, 8), l_after (4, 5, 6); each peak one episode
    #   after the visit (windows 4 6 5 | 5 8 7 | 6 9 8)
    d = metrics.recovery_per_doc(L, T, 1)
    assert d["l_max"].tolist() == [6, 8, 9]
    assert d["l_before"].tolist() == [5, 7, 8]
    assert d["l_after"].tolist() == [4, 5, 6]
    assert d["peak"].tolist() == [1, 1, 1]
    # its means are recovery_parts
    p = metrics.recovery_parts(L, T, 1)
    assert {k: d[k].mean() for k in p} == pytest.approx(p)


def test_recovery_per_doc_shuffled_peak_offsets():
    # the shuffled example: windows doc0 2 6 4, doc1 1 3, doc2 2 5 8 5 → peaks at 1, 1, 2
    M = np.array(
        [[9, 9, 9], [2, 9, 9], [6, 9, 2], [4, 1, 5], [3, 3, 8], [3, 2, 5], [3, 2, 1]],
        dtype=float,
    )
    d = metrics.recovery_per_doc(M, 3, 1, order=np.array([0, 2, 1, 0, 1, 2]))
    assert d["l_max"].tolist() == [6, 3, 8]
    assert d["l_before"].tolist() == [4, 3, 5]
    assert d["l_after"].tolist() == [2, 1, 2]
    assert d["peak"].tolist() == [1, 1, 2]


def test_recovery_window_ends_before_the_revisit_row():
    # SPEC §3.3: l_max(n) is the max over k_n(t) ≤ k ≤ k_{n+1}(t) − 1. The row k_{n+1}(t)
    # itself (the loss right AFTER the (n+1)-th training) is outside the window. Here it
    # is the largest value of every column (that training made things worse), so a
    # window that included it would change l_max and RS.
    # T=3, E=2, cyclic: k_1 = (1, 2, 3), k_2 = (4, 5, 6)
    #        doc0 doc1 doc2
    M = np.array(
        [
            [6, 6, 6],  # k=0
            [2, 7, 7],  # k=1 trained doc0
            [5, 2, 8],  # k=2 trained doc1
            [3, 6, 2],  # k=3 trained doc2
            [9, 4, 5],  # k=4 trained doc0: its revisit row k_2(0) = 4
            [4, 9, 3],  # k=5 trained doc1: revisit row k_2(1) = 5
            [4, 5, 9],  # k=6 trained doc2: revisit row k_2(2) = 6
        ],
        dtype=float,
    )
    # windows (rows k_1..k_2 − 1): doc0 rows 1..3 = 2 5 3, doc1 rows 2..4 = 2 6 4,
    #                              doc2 rows 3..5 = 2 5 3
    #   l_max = (5, 6, 5) → 16/3; l_before = (3, 4, 3) → 10/3; l_after = (2, 2, 2) → 2
    #   RS(1) = (16/3 − 10/3) / (16/3 − 2) = 2 / (10/3) = 3/5
    # (with the revisit row in the window: l_max = 9, RS = (9 − 10/3) / (9 − 2) = 17/21)
    d = metrics.recovery_per_doc(M, 3, 1)
    assert d["l_max"].tolist() == [5, 6, 5]
    assert d["l_before"].tolist() == [3, 4, 3]
    assert d["l_after"].tolist() == [2, 2, 2]
    assert d["peak"].tolist() == [1, 1, 1]
    assert metrics.recovery_parts(M, 3, 1) == pytest.approx(
        {"l_max": 16 / 3, "l_before": 10 / 3, "l_after": 2.0})
    assert metrics.recovery_score(M, 3, 1) == pytest.approx(3 / 5)
    assert metrics.recovery_score(M, 3, 1) != pytest.approx(17 / 21)


def test_recovery_score_nan_without_forgetting():
    flat = np.full((7, 3), 2.0)  # l_max = l_before = l_after = 2
    assert math.isnan(metrics.recovery_score(flat, 3, 1))


# ---- degenerate runs (paper §3.1 footnote) -------------------------------------------

def test_recovery_is_degenerate_normal_case():
    # L: forgetting 8/3 and 2 nats, l_before ≥ l_after → meaningful
    assert metrics.recovery_is_degenerate(L, T, 1) is False
    assert metrics.recovery_is_degenerate(L, T, 2) is False


def test_recovery_is_degenerate_tiny_forgetting():
    # L / 1000: forgetting at epoch 1 is (23/3 − 5)/1000 ≈ 0.0027 < 0.05 nats
    tiny = L / 1000
    assert metrics.recovery_score(tiny, T, 1) == pytest.approx(3 / 8)  # same ratio…
    assert metrics.recovery_is_degenerate(tiny, T, 1) is True  # …but not meaningful
    assert metrics.recovery_is_degenerate(tiny, T, 1, min_forgetting=0.001) is False
    assert metrics.recovery_is_degenerate(np.full((7, 3), 2.0), 3, 1) is True


def test_recovery_is_degenerate_loss_falls_below_post_training_value():
    # T=3, E=2; every doc: after 4, peak 6, then 3 before the revisit (below "after").
    # l_max = 6, l_before = 3, l_after = 4: forgetting 2 nats, but RS = (6−3)/(6−4) = 1.5
    M = np.array(
        [[8, 8, 8], [4, 8, 8], [6, 4, 8], [3, 6, 4], [2, 3, 6], [2, 2, 3], [2, 2, 2]],
        dtype=float,
    )
    assert metrics.recovery_parts(M, 3, 1) == pytest.approx(
        {"l_max": 6.0, "l_before": 3.0, "l_after": 4.0}
    )
    assert metrics.recovery_score(M, 3, 1) == pytest.approx(1.5)
    assert metrics.recovery_is_degenerate(M, 3, 1) is True


# ---- online (prequential) loss (paper §3.5, Table 1) ---------------------------------
#
# online(k) = L[k−1, d(k)], k = 1..9, cyclic d = 0 1 2 0 1 2 0 1 2:
#   L[0,0]=10 L[1,1]=11 L[2,2]=12 | L[3,0]=5 L[4,1]=7 L[5,2]=8 | L[6,0]=4 L[7,1]=5 L[8,2]=6
# average over epochs 2..3 = (5+7+8+4+5+6)/6 = 35/6; epoch 3 only: 15/3 = 5; all: 68/9


def test_online_loss_by_hand():
    assert metrics.online_loss(L, ORDER).tolist() == [10, 11, 12, 5, 7, 8, 4, 5, 6]


def test_online_loss_equals_loss_at_revisit_rows():
    online = metrics.online_loss(L, ORDER)
    for t in range(T):
        rows = metrics.revisit_rows(ORDER, t)
        assert online[ORDER == t].tolist() == L[rows, t].tolist()


def test_average_online_loss():
    assert metrics.average_online_loss(L, ORDER, T) == pytest.approx(35 / 6)  # epochs 2..E
    assert metrics.average_online_loss(L, ORDER, T, first_epoch=3) == pytest.approx(5.0)
    assert metrics.average_online_loss(L, ORDER, T, first_epoch=1) == pytest.approx(68 / 9)


def test_online_loss_with_shuffled_order():
    # order 0 2 1 | 0 1 2 on the shuffled example: L[0,0]=9 L[1,2]=9 L[2,1]=9 |
    # L[3,0]=4 L[4,1]=3 L[5,2]=5 → epoch-2 mean 4
    M = np.array(
        [[9, 9, 9], [2, 9, 9], [6, 9, 2], [4, 1, 5], [3, 3, 8], [3, 2, 5], [3, 2, 1]],
        dtype=float,
    )
    order = np.array([0, 2, 1, 0, 1, 2])
    assert metrics.online_loss(M, order).tolist() == [9, 9, 9, 4, 3, 5]
    assert metrics.average_online_loss(M, order, 3) == pytest.approx(4.0)


# ---- episode fit, max relative rise --------------------------------------------------

def test_episode_fit_by_hand():
    # fit(k) = 1 − L[k, d(k)] / L[k−1, d(k)]
    #   k=1: 1−4/10   k=2: 1−5/11  k=3: 1−6/12  k=4: 1−3/5  k=5: 1−4/7
    #   k=6: 1−5/8    k=7: 1−2/4   k=8: 1−3/5   k=9: 1−4/6
    expected = [0.6, 6 / 11, 0.5, 0.4, 3 / 7, 3 / 8, 0.5, 0.4, 1 / 3]
    np.testing.assert_allclose(metrics.episode_fit(L, ORDER), expected)


def test_max_relative_rise_by_hand():
    # column maxima 10, 11, 12 over a start of 10 each → 1.2 (doc2 at k=2)
    assert metrics.max_relative_rise(L) == pytest.approx(1.2)
    # a loss that only falls never rises above its start
    assert metrics.max_relative_rise(np.array([[2.0, 4.0], [1.0, 3.0]])) == 1.0


# ---- wrong shapes ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 4)),  # T columns ≠ n_docs
        np.zeros((9, 3)),  # rows − 1 not a multiple of T
        np.zeros(10),  # 1-D
        np.zeros((10, 3, 1)),  # 3-D
    ],
)
def test_wrong_shapes_raise(bad):
    with pytest.raises(ValueError, match="eval_loss"):
        metrics.shift_aligned(bad, 3)
    with pytest.raises(ValueError, match="eval_loss"):
        metrics.shift_average(bad, 3)
    with pytest.raises(ValueError, match="eval_loss"):
        metrics.recovery_score(bad, 3, 1)


def test_online_loss_wrong_rows_raises():
    with pytest.raises(ValueError, match="rows"):
        metrics.online_loss(L[:-1], ORDER)
    with pytest.raises(ValueError, match="rows"):
        metrics.average_online_loss(L, ORDER[:-1], T)


def test_recovery_score_with_order_checks_shape():
    order = orders.shuffled(3, 2, seed=0)  # needs a (7, 3) matrix
    with pytest.raises(ValueError):
        metrics.recovery_score(np.ones((10, 3)) + np.arange(10)[:, None], 3, 1, order=order)
    with pytest.raises(ValueError):
        metrics.recovery_score(np.ones((7, 4)) + np.arange(7)[:, None], 3, 1, order=order)
