"""Metrics: pure functions on the `eval_loss` matrix (paper §3, App. A.4; SPEC §3).

`eval_loss` has shape (E·T+1, T): row k is the loss on every document after k
episodes, row 0 before any training (the official code's `eval_losses_ckpt`).
`order` is the length-E·T array from `anticip_lib.orders`; episode k (1-based) trains
document `order[k-1]`. Documents are 0-based here; the paper's x_1 is document 0.
Only numpy is imported: the toy model and every chapter share these functions.
"""

import numpy as np


def _order_for(eval_loss: np.ndarray, n_docs: int, order=None) -> np.ndarray:
    """The run's order (cyclic when None), after checking eval_loss is (len(order)+1, T)."""
    eval_loss = np.asarray(eval_loss)
    n_episodes = eval_loss.shape[0] - 1 if eval_loss.ndim == 2 else -1
    if order is None:
        order = np.tile(np.arange(n_docs), max(n_episodes, 0) // n_docs)
    order = np.asarray(order)
    if eval_loss.ndim != 2 or eval_loss.shape != (len(order) + 1, n_docs) or not len(order):
        raise ValueError(
            f"eval_loss must have shape (E·T+1, T) = ({len(order) + 1}, {n_docs}) for "
            f"T={n_docs} and an order of length {len(order)}; got {eval_loss.shape}"
        )
    return order


def doc_curve(eval_loss: np.ndarray, doc: int) -> np.ndarray:
    """L[k, doc] for k = 0..E·T: the loss on one document over training (Fig. 1a)."""
    return np.asarray(eval_loss)[:, doc]


def revisit_rows(order: np.ndarray, doc: int) -> np.ndarray:
    """Rows k of `eval_loss` just before each training episode on `doc`.

    These are the black circles of Fig. 1(a): k = k_n(doc) − 1 for every epoch n.
    """
    return np.flatnonzero(np.asarray(order) == doc)


def training_episodes(order: np.ndarray, n_docs: int) -> np.ndarray:
    """(T, E) array: k_n(t), the 1-based episode of the n-th training on document t.

    Requires every document to be trained exactly once per epoch (cyclic, shuffled and
    partially shuffled orders all are).
    """
    order = np.asarray(order)
    eps = [np.flatnonzero(order == t) + 1 for t in range(n_docs)]
    if len({len(e) for e in eps}) != 1:
        raise ValueError("every document must be trained the same number of times")
    return np.stack(eps)


def shift_aligned(eval_loss: np.ndarray, n_docs: int) -> np.ndarray:
    """(T, (E−1)·T+2) array A[t, s] = L[t + s, t] for a cyclic run (App. A.4).

    Column s = 0 is just before document t is first trained; x = s / T in epochs.
    """
    eval_loss = np.asarray(eval_loss)
    if (eval_loss.shape[0] - 1) % n_docs:
        raise ValueError(f"eval_loss has {eval_loss.shape[0]} rows: not E·T+1 for T={n_docs}")
    _order_for(eval_loss, n_docs)
    n_shift = eval_loss.shape[0] - n_docs + 1  # s = 0 .. (E−1)·T + 1
    t = np.arange(n_docs)[:, None]
    s = np.arange(n_shift)[None, :]
    return eval_loss[t + s, t]


def shift_average(eval_loss: np.ndarray, n_docs: int) -> np.ndarray:
    """S(s) = (1/T) Σ_t L[(t−1) + s, t], s = 0..(E−1)·T+1 (Fig. 1b; App. A.4).

    Each document's curve is realigned so that s = 0 is just before its first
    training, then averaged over documents. Plot against s / T (epochs).
    """
    return shift_aligned(eval_loss, n_docs).mean(axis=0)


def recovery_per_doc(eval_loss: np.ndarray, n_docs: int, epoch: int, order=None) -> dict:
    """Per-document pieces of RS(n), each an array of length T (SPEC §3.3, index form).

    l_max[t]    = max_{k_n(t) ≤ k ≤ k_{n+1}(t)−1} L[k, t]   (peak between two visits)
    l_before[t] = L[k_{n+1}(t) − 1, t]                      (just before the next visit)
    l_after[t]  = L[k_n(t), t]                              (just after the n-th visit)
    peak[t]     = episodes from the n-th visit to the peak (0 = right after training)
    """
    eval_loss = np.asarray(eval_loss)
    order = _order_for(eval_loss, n_docs, order)
    k = training_episodes(order, n_docs)  # (T, E), 1-based
    if not 1 <= epoch < k.shape[1]:
        raise ValueError(f"epoch must be in 1..E−1 = 1..{k.shape[1] - 1}, got {epoch}")
    k_n, k_next = k[:, epoch - 1], k[:, epoch]
    docs = np.arange(n_docs)
    between = [eval_loss[a:b, t] for t, (a, b) in enumerate(zip(k_n, k_next))]
    return {
        "l_max": np.array([w.max() for w in between]),
        "l_before": eval_loss[k_next - 1, docs],
        "l_after": eval_loss[k_n, docs],
        "peak": np.array([int(w.argmax()) for w in between]),
    }


def recovery_parts(eval_loss: np.ndarray, n_docs: int, epoch: int, order=None) -> dict:
    """The three means behind RS(n) (paper §3.1; SPEC §3.3), each a mean over documents.

    l_max(n)     = mean_t max_{k_n(t) ≤ k ≤ k_{n+1}(t)−1} L[k, t]
    l_before(n)  = mean_t L[k_{n+1}(t) − 1, t]
    l_after(n−1) = mean_t L[k_n(t), t]
    """
    p = recovery_per_doc(eval_loss, n_docs, epoch, order)
    return {key: float(p[key].mean()) for key in ("l_max", "l_before", "l_after")}


def recovery_score(eval_loss: np.ndarray, n_docs: int, epoch: int, order=None) -> float:
    """RS(n) = (l_max(n) − l_before(n)) / (l_max(n) − l_after(n−1)) (paper §3.1, Eq. 1).

    The share of the forgetting during epoch n that is recovered before the next
    visit: 0 = none (loss rises until the revisit), 1 = back to its post-training
    value. A ratio of means over documents, not a mean of per-document ratios.
    `epoch` is 1-based, as the paper's RS(n); the paper reports RS(4) for E = 5.
    NaN when there is no forgetting at all. Check `recovery_is_degenerate` before
    quoting the number.
    """
    p = recovery_parts(eval_loss, n_docs, epoch, order)
    forgetting = p["l_max"] - p["l_after"]
    return (p["l_max"] - p["l_before"]) / forgetting if forgetting else float("nan")


def recovery_is_degenerate(eval_loss, n_docs, epoch, order=None, min_forgetting=0.05):
    """True where RS(n) is not meaningful (PILOTS; paper §3.1 footnote).

    Two cases: too little forgetting to recover from (l_max − l_after below
    `min_forgetting` nats), or losses that fall below their post-training value
    before the revisit (l_before < l_after): positive transfer across documents,
    which the paper excludes because it inflates RS.
    """
    p = recovery_parts(eval_loss, n_docs, epoch, order)
    return bool(p["l_max"] - p["l_after"] < min_forgetting or p["l_before"] < p["l_after"])


def online_loss(eval_loss: np.ndarray, order) -> np.ndarray:
    """Prequential loss per episode: L[k−1, d(k)], k = 1..E·T (paper §3.5, Fig. 1c).

    The loss on the document about to be trained, before training on it.
    """
    order = np.asarray(order)
    eval_loss = np.asarray(eval_loss)
    if eval_loss.shape[0] != len(order) + 1:
        raise ValueError(
            f"eval_loss has {eval_loss.shape[0]} rows; order of length {len(order)} needs "
            f"{len(order) + 1}"
        )
    return eval_loss[np.arange(len(order)), order]


def average_online_loss(eval_loss: np.ndarray, order, n_docs: int, first_epoch=2) -> float:
    """Mean online loss over epochs `first_epoch`..E: the Table 1 statistic (epochs 2–5).

    Epoch 1 is excluded because every document is new there in both conditions.
    """
    return float(online_loss(eval_loss, order)[(first_epoch - 1) * n_docs :].mean())


def episode_fit(eval_loss: np.ndarray, order) -> np.ndarray:
    """Relative drop of the trained document's loss over each episode, shape (E·T,).

    fit(k) = 1 − L[k, d(k)] / L[k−1, d(k)]: 0.5 means an episode halves the loss of the
    document it trains on. The paper's premise (§3.2) is that each document is fitted
    strongly within its episode; stand-in models get their learning rate from this.
    """
    order = np.asarray(order)
    eval_loss = np.asarray(eval_loss)
    k = np.arange(1, len(order) + 1)
    return 1.0 - eval_loss[k, order] / eval_loss[k - 1, order]


def max_relative_rise(eval_loss: np.ndarray) -> float:
    """max over k, t of L[k, t] / L[0, t]: how far any document's loss rose above its start."""
    eval_loss = np.asarray(eval_loss)
    return float((eval_loss / eval_loss[0]).max())


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value; nan, nan for
    none): the ± of every table and band in the book."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


# ---- issue 17: a gap-matched shuffled floor, and RS in nats -------------------------


def revisit_gaps(order, n_docs: int) -> np.ndarray:
    """(T, E−1) array: k_{n+1}(t) − k_n(t), the episodes from the n-th to the (n+1)-th
    training of document t (column n−1 for epoch n). T everywhere in a cyclic order."""
    return np.diff(training_episodes(order, n_docs), axis=1)


def gap_matched_recovery(eval_loss, n_docs: int, epochs, order, *, gap=None,
                         tol: int = 0) -> dict:
    """Recovery of a shuffled run over the revisits whose gap matches the cyclic one.

    A shuffled document revisited after a short gap has had little time to be
    forgotten and recovered, so RS over all revisits (the usual floor) mixes gaps that
    a cyclic run never has. Here a revisit is the pair (document t, epoch n) and its
    gap is k_{n+1}(t) − k_n(t) (`revisit_gaps`); only revisits with
    |gap − target| ≤ tol are kept, target = `gap` or, by default, T = n_docs (the
    cyclic gap). Over the kept revisits of every epoch in `epochs` (an int or a
    sequence, 1-based as in RS(n)), with l_max, l_before, l_after per revisit exactly as
    in `recovery_per_doc`:

        RS_gap = (mean l_max − mean l_before) / (mean l_max − mean l_after)

    a ratio of means, as RS(n); for a cyclic order and one epoch it equals RS(n).

    This window is the primary definition. Weighting revisits to the cyclic gap
    distribution is the same thing: that distribution is a single point, T. In a
    shuffled order gap − T is the difference of a document's positions in two
    independent permutations, so it is symmetric about 0 and a symmetric window
    (tol > 0) adds bias only through the curvature of recovery in the gap, in exchange
    for more revisits: with tol = 0 about 1 in T−1 reshuffled revisits match (plus a
    document kept first in every epoch, whose gap is always T). Quote tol with the
    number.

    Returns {"rs", "recovered", "forgotten" (mean nats over the kept revisits),
    "n_matched", "n_revisits", "gaps" (of the kept revisits), "why"}; rs is NaN when no
    revisit matches or the kept ones show no forgetting, and "why" says which ("" when
    rs is a number).
    """
    order = _order_for(eval_loss, n_docs, order)
    target = n_docs if gap is None else gap
    gaps = revisit_gaps(order, n_docs)
    epochs = [int(epochs)] if np.ndim(epochs) == 0 else [int(n) for n in epochs]
    parts = {key: [] for key in ("l_max", "l_before", "l_after")}
    kept = []
    for n in epochs:
        p = recovery_per_doc(eval_loss, n_docs, n, order)
        match = np.abs(gaps[:, n - 1] - target) <= tol
        for key in parts:
            parts[key].append(p[key][match])
        kept.append(gaps[match, n - 1])
    l = {key: np.concatenate(v) for key, v in parts.items()}
    out = {"n_matched": int(l["l_max"].size), "n_revisits": len(epochs) * n_docs,
           "gaps": np.concatenate(kept), "rs": float("nan"),
           "recovered": float("nan"), "forgotten": float("nan"), "why": ""}
    if not out["n_matched"]:
        out["why"] = (f"no revisit in epochs {epochs} has a gap within {tol} of "
                      f"{target} episodes")
        return out
    out["recovered"] = float(l["l_max"].mean() - l["l_before"].mean())
    out["forgotten"] = float(l["l_max"].mean() - l["l_after"].mean())
    if out["forgotten"]:
        out["rs"] = out["recovered"] / out["forgotten"]
    else:
        out["why"] = "no forgetting over the matched revisits"
    return out


def recovery_nats(eval_loss, n_docs: int, order=None, epochs=None) -> dict:
    """RS(n) with its numerator and denominator in nats, for each epoch n in `epochs`
    (default 1..E−1): {"epoch", "recovered" = l_max(n) − l_before(n),
    "forgotten" = l_max(n) − l_after(n−1), "rs" = recovered / forgotten (NaN where
    nothing is forgotten)}, each an array over the epochs. rs equals `recovery_score`;
    the nats show how much is recovered where forgetting is small."""
    order = _order_for(eval_loss, n_docs, order)
    if epochs is None:
        epochs = range(1, len(order) // n_docs)
    epochs = np.asarray(list(epochs), dtype=int)
    parts = [recovery_parts(eval_loss, n_docs, int(n), order) for n in epochs]
    rec = np.array([p["l_max"] - p["l_before"] for p in parts])
    forg = np.array([p["l_max"] - p["l_after"] for p in parts])
    with np.errstate(divide="ignore", invalid="ignore"):
        rs = np.where(forg != 0, rec / np.where(forg != 0, forg, 1), np.nan)
    return {"epoch": epochs, "recovered": rec, "forgotten": forg, "rs": rs}


def rs_nats_text(rs: float, recovered: float, forgotten: float, fmt: str = ".2f") -> str:
    """'0.45 (0.13 of 0.29 nats recovered)': RS beside its numerator and denominator."""
    return f"{rs:{fmt}} ({recovered:{fmt}} of {forgotten:{fmt}} nats recovered)"
