"""Data orders: which document each episode trains on (paper §2, Table 1, Fig. 12).

Every function returns an int array of length E·T holding the 0-based document index
of each episode. Episode k (1-based, as in `eval_loss[k]`) trains on `order[k - 1]`.
"""

import numpy as np


def _check(n_docs: int, n_epochs: int) -> None:
    if int(n_docs) < 1:
        raise ValueError(f"n_docs must be >= 1, got {n_docs}")
    if int(n_epochs) < 1:
        raise ValueError(f"n_epochs must be >= 1, got {n_epochs}")


def cyclic(n_docs: int, n_epochs: int) -> np.ndarray:
    """x_1, …, x_T repeated E times: the paper's structured order."""
    _check(n_docs, n_epochs)
    return np.tile(np.arange(n_docs), n_epochs)


def partial_shuffle(n_docs: int, n_epochs: int, n_shuffled: int, seed: int) -> np.ndarray:
    """Documents 2..N reshuffled every epoch; x_1 and x_{N+1}..x_T stay in place.

    Fig. 12 (App. B.1): with T=25 and N ∈ {8, 16, 24}, x_1 and x_25 stay fixed. The
    official sampler (`train_interleave_rev.py`, S = N) yields 0, a fresh permutation
    of 1..N−1 (0-based), then N..T−1 in order.
    """
    _check(n_docs, n_epochs)
    if not 1 <= int(n_shuffled) <= n_docs:
        raise ValueError(f"n_shuffled must be in 1..n_docs={n_docs}, got {n_shuffled}")
    rng = np.random.default_rng(seed)
    head, tail = np.arange(1, n_shuffled), np.arange(n_shuffled, n_docs)
    epochs = [np.concatenate([[0], rng.permutation(head), tail]) for _ in range(n_epochs)]
    return np.concatenate(epochs).astype(np.int64)


def shuffled(n_docs: int, n_epochs: int, seed: int) -> np.ndarray:
    """The Table 1 / Fig. 1 baseline: x_1 first, the other T−1 reshuffled every epoch.

    This is `partial_shuffle` with N = T (SPEC §3.4: the official default S = T−1
    would keep the last document fixed too).
    """
    return partial_shuffle(n_docs, n_epochs, n_docs, seed)


def make(kind: str, n_docs: int, n_epochs: int, *, seed: int = 0, n_shuffled: int | None = None):
    """Dispatch on a config's `order` name: "cyclic", "shuffled" or "partial"."""
    if kind == "cyclic":
        return cyclic(n_docs, n_epochs)
    if kind == "shuffled":
        return shuffled(n_docs, n_epochs, seed)
    if kind == "partial":
        if n_shuffled is None:
            raise ValueError("order='partial' needs n_shuffled (N of Fig. 12)")
        return partial_shuffle(n_docs, n_epochs, n_shuffled, seed)
    raise ValueError(f"order must be 'cyclic', 'shuffled' or 'partial', got {kind!r}")
