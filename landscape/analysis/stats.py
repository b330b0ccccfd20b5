"""Seed statistics for verdicts: a confidence interval and a comparison of two.

A landscape verdict compares a number measured on several seeds of one architecture
with the same number on several seeds of another. Each side is summarised by the mean
and a Student-t confidence interval over its seeds (:func:`interval`); two sides are
*separated* when their intervals do not overlap (:func:`compare`). With one seed there
is no interval (it spans the whole line), so nothing is ever separated on one seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from landscape.errors import LandscapeError

LEVEL = 0.95  # two-sided confidence level of every interval in a verdict


@dataclass(frozen=True)
class Interval:
    """Mean and confidence interval of per-seed values.

    Attributes:
        mean: the mean of the finite values (NaN if none).
        lo: lower end of the interval (-inf with fewer than 2 finite values).
        hi: upper end (+inf with fewer than 2 finite values).
        n: number of finite values.
        values: the values as given (NaN kept, so a missing seed stays visible).
        level: the confidence level.
    """

    mean: float
    lo: float
    hi: float
    n: int
    values: tuple[float, ...]
    level: float

    def as_dict(self) -> dict:
        """JSON-friendly form (infinities as strings)."""
        def j(x: float):
            return x if math.isfinite(x) else str(x)
        return {"mean": j(self.mean), "lo": j(self.lo), "hi": j(self.hi), "n": self.n,
                "values": [j(v) for v in self.values], "level": self.level}

    def text(self, fmt: str = ".3g") -> str:
        """``mean [lo, hi] (n seeds)``."""
        if self.n == 0:
            return "missing"
        if self.n == 1:
            return f"{self.mean:{fmt}} (1 seed, no interval)"
        return f"{self.mean:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}] ({self.n} seeds)"


def interval(values, level: float = LEVEL) -> Interval:
    """Student-t confidence interval of the mean of per-seed values.

    Args:
        values: per-seed numbers; NaN entries are kept in ``values`` and left out of the
            mean and the interval.
        level: two-sided confidence level in (0, 1).

    Returns:
        The interval; with fewer than two finite values it is ``(-inf, inf)``.

    Example:
        >>> iv = interval([1.0, 2.0, 3.0])
        >>> round(iv.mean, 6), round(iv.hi - iv.mean, 3)
        (2.0, 2.484)
    """
    if not 0 < level < 1:
        raise LandscapeError(f"level must be in (0, 1), got {level}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = x[np.isfinite(x)]
    if ok.size == 0:
        return Interval(math.nan, -math.inf, math.inf, 0, tuple(x.tolist()), level)
    mean = float(ok.mean())
    if ok.size < 2:
        return Interval(mean, -math.inf, math.inf, 1, tuple(x.tolist()), level)
    half = float(_st.t.ppf(0.5 + level / 2, ok.size - 1) * ok.std(ddof=1) / math.sqrt(ok.size))
    return Interval(mean, mean - half, mean + half, int(ok.size), tuple(x.tolist()), level)


def compare(a: Interval, b: Interval) -> int:
    """+1 if ``a`` lies entirely above ``b``, -1 if entirely below, 0 if they overlap.

    An empty side (no finite value) or a one-seed side always overlaps.
    """
    if a.n < 2 or b.n < 2:
        return 0
    if a.lo > b.hi:
        return 1
    if a.hi < b.lo:
        return -1
    return 0
