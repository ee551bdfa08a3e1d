"""Tests for anticip_lib.orders: cyclic, shuffled and partially shuffled orders (paper §2,
Table 1, Fig. 12; SPEC §3.4)."""

import numpy as np
import pytest

from anticip_lib import orders


def _epochs(order, n_docs):
    """(E, T) view: row n-1 is epoch n."""
    return np.asarray(order).reshape(-1, n_docs)


# ---- cyclic --------------------------------------------------------------------------

def test_cyclic_small_by_hand():
    # T=3, E=2: x_1 x_2 x_3 x_1 x_2 x_3, 0-based
    assert orders.cyclic(3, 2).tolist() == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("n_docs, n_epochs", [(1, 1), (3, 5), (25, 5), (100, 5)])
def test_cyclic_is_periodic_and_covers_each_doc_once_per_epoch(n_docs, n_epochs):
    order = orders.cyclic(n_docs, n_epochs)
    assert order.shape == (n_docs * n_epochs,)
    assert np.issubdtype(order.dtype, np.integer)
    # periodic with period T
    assert np.array_equal(order[n_docs:], order[:-n_docs])
    for epoch in _epochs(order, n_docs):
        assert epoch.tolist() == list(range(n_docs))


# ---- shuffled ------------------------------------------------------------------------

def test_shuffled_keeps_doc0_first_and_permutes_the_rest_each_epoch():
    T, E = 25, 5
    order = orders.shuffled(T, E, seed=0)
    assert order.shape == (T * E,)
    assert np.issubdtype(order.dtype, np.integer)
    for epoch in _epochs(order, T):
        assert epoch[0] == 0
        assert sorted(epoch.tolist()) == list(range(T))  # a permutation of 0..T-1
        assert sorted(epoch[1:].tolist()) == list(range(1, T))


def test_shuffled_differs_between_epochs():
    # with T=25 two equal epochs would need two equal draws out of 24! permutations
    ep = _epochs(orders.shuffled(25, 5, seed=0), 25)
    for i in range(len(ep)):
        for j in range(i + 1, len(ep)):
            assert not np.array_equal(ep[i], ep[j])
    # the last document moves too (the official default S = T-1 would pin it)
    assert len(set(ep[:, -1].tolist())) > 1


def test_shuffled_is_deterministic_per_seed_and_differs_across_seeds():
    a, b = orders.shuffled(25, 5, seed=3), orders.shuffled(25, 5, seed=3)
    assert np.array_equal(a, b)
    c = orders.shuffled(25, 5, seed=4)
    assert not np.array_equal(a, c)


def test_shuffled_is_partial_shuffle_with_n_equal_t():
    for seed in (0, 1, 7):
        assert np.array_equal(orders.shuffled(10, 4, seed), orders.partial_shuffle(10, 4, 10, seed))


def test_shuffled_with_one_or_two_docs_is_cyclic():
    # nothing left to permute: doc 0 first, and (for T=2) doc 1 is the only "rest"
    assert orders.shuffled(1, 3, seed=0).tolist() == [0, 0, 0]
    assert orders.shuffled(2, 3, seed=0).tolist() == [0, 1, 0, 1, 0, 1]


# ---- partial shuffle (Fig. 12) -------------------------------------------------------

@pytest.mark.parametrize("n_shuffled", [2, 8, 16, 24])
def test_partial_shuffle_keeps_head_and_tail_in_place(n_shuffled):
    T, E = 25, 5
    order = orders.partial_shuffle(T, E, n_shuffled, seed=0)
    assert order.shape == (T * E,)
    for epoch in _epochs(order, T):
        assert epoch[0] == 0
        assert sorted(epoch[1:n_shuffled].tolist()) == list(range(1, n_shuffled))
        assert epoch[n_shuffled:].tolist() == list(range(n_shuffled, T))  # x_{N+1}..x_T fixed


def test_partial_shuffle_actually_shuffles():
    ep = _epochs(orders.partial_shuffle(25, 5, 16, seed=0), 25)
    assert any(not np.array_equal(ep[0, 1:16], e[1:16]) for e in ep[1:])
    assert any(e[1:16].tolist() != list(range(1, 16)) for e in ep)


def test_partial_shuffle_with_n_equal_1_is_cyclic():
    assert np.array_equal(orders.partial_shuffle(6, 3, 1, seed=5), orders.cyclic(6, 3))


def test_partial_shuffle_deterministic_per_seed():
    a = orders.partial_shuffle(25, 5, 8, seed=11)
    assert np.array_equal(a, orders.partial_shuffle(25, 5, 8, seed=11))
    assert not np.array_equal(a, orders.partial_shuffle(25, 5, 8, seed=12))


# ---- make ----------------------------------------------------------------------------

def test_make_dispatches_on_kind():
    assert np.array_equal(orders.make("cyclic", 5, 2), orders.cyclic(5, 2))
    assert np.array_equal(orders.make("shuffled", 5, 2, seed=3), orders.shuffled(5, 2, 3))
    assert np.array_equal(
        orders.make("partial", 5, 2, seed=3, n_shuffled=3), orders.partial_shuffle(5, 2, 3, 3)
    )


# ---- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize(
    "call, field",
    [
        (lambda: orders.cyclic(0, 5), "n_docs"),
        (lambda: orders.cyclic(-1, 5), "n_docs"),
        (lambda: orders.cyclic(3, 0), "n_epochs"),
        (lambda: orders.shuffled(0, 5, seed=0), "n_docs"),
        (lambda: orders.shuffled(3, 0, seed=0), "n_epochs"),
        (lambda: orders.partial_shuffle(0, 5, 1, seed=0), "n_docs"),
        (lambda: orders.partial_shuffle(10, 5, 0, seed=0), "n_shuffled"),
        (lambda: orders.partial_shuffle(10, 5, 11, seed=0), "n_shuffled"),
        (lambda: orders.partial_shuffle(10, 5, -3, seed=0), "n_shuffled"),
        (lambda: orders.make("random", 10, 5), "order"),
        (lambda: orders.make("partial", 10, 5), "n_shuffled"),
        (lambda: orders.make("partial", 10, 5, n_shuffled=20), "n_shuffled"),
    ],
)
def test_bad_input_raises_value_error_naming_the_parameter(call, field):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        call()
