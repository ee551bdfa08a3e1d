"""Intervals over seeds, shared by every chapter.

The interval is Student's t on the per-seed values (paired differences for a
contrast): mean ± t_{0.975, n−1} · sd / √n. The verdict on a claim is not made here but
by the book's one rule, `anticip_lib.verdicts.judge` (issue 17).
"""

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float
    n: int  # values used (finite ones)
    n_dropped: int = 0  # non-finite values (e.g. diverged runs): counted, not averaged

    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.lo > 0 or self.hi < 0)

    def text(self, fmt: str = ".2f") -> str:
        """'0.12 [0.05, 0.19], n = 10' (or 'n/a (why)')."""
        if self.n == 0:
            return "n/a (no finite values)"
        if self.n == 1:
            return f"{self.mean:{fmt}} (n = 1, no interval)"
        extra = f", {self.n_dropped} non-finite left out" if self.n_dropped else ""
        return f"{self.mean:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}], n = {self.n}{extra}"


def t_interval(values, level: float = 0.95) -> Interval:
    """Mean and two-sided t interval of the finite values (n−1 degrees of freedom)."""
    from scipy import stats

    v = np.asarray(values, dtype=float).ravel()
    finite = v[np.isfinite(v)]
    n, dropped = finite.size, v.size - finite.size
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, dropped)
    m = float(finite.mean())
    if n == 1:
        return Interval(m, math.nan, math.nan, 1, dropped)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(finite.std(ddof=1)) / n**0.5
    return Interval(m, m - half, m + half, n, dropped)


def paired_interval(a, b, level: float = 0.95) -> Interval:
    """Interval of a − b over pairs (a[i], b[i]) from the same seed."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal shapes, got {a.shape} and {b.shape}")
    return t_interval(a - b, level)
