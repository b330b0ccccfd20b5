"""Time to a target, order of learning and confidence intervals, from training curves.

Pure functions of arrays (one value per evaluation), so that the claims and the figures
compute them the same way and tests can feed them synthetic curves.

>>> import numpy as np
>>> acc = np.array([0.1, 0.4, 0.7, 0.69, 0.8])
>>> time_to_target(np.array([0.0, 10, 20, 30, 40]), acc, 0.7)   # first evaluation at >= 0.7
20.0
>>> epoch_to_fraction(np.arange(5.0), acc, 0.9)                # 90 % of 0.8 is 0.72
4.0
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

CONFIDENCE = 0.95  # two-sided level of every interval


def time_to_target(cost: np.ndarray, acc: np.ndarray, target: float) -> float:
    """The cost (seconds, FLOPs, epochs) at the first evaluation whose accuracy reaches ``target``.

    Args:
        cost: ``[m]`` cumulative cost at each evaluation, non-decreasing.
        acc: ``[m]`` accuracy at each evaluation.
        target: the accuracy to reach (``acc >= target``).

    Returns:
        The cost at that evaluation (no interpolation: the cost actually spent before the
        target was seen), or ``inf`` if it is never reached.
    """
    cost, acc = np.asarray(cost, dtype=float), np.asarray(acc, dtype=float)
    hit = np.flatnonzero(acc >= target)
    return float(cost[hit[0]]) if hit.size else math.inf


def epoch_to_fraction(epochs: np.ndarray, acc: np.ndarray, fraction: float = 0.9,
                      final: float | None = None) -> float:
    """The first epoch at which ``acc`` reaches ``fraction`` of its final value.

    ``final`` defaults to the last evaluation's accuracy.
    """
    acc = np.asarray(acc, dtype=float)
    goal = fraction * (acc[-1] if final is None else final)
    return time_to_target(epochs, acc, goal)


def drop_after(step: np.ndarray, acc: np.ndarray, at: int, horizon: int = 3) -> dict:
    """How far ``acc`` falls right after step ``at`` (e.g. SHIFT's switch).

    Returns ``{"before", "min_after", "drop"}``: the accuracy at the last evaluation at or
    before ``at``, the lowest of the next ``horizon`` evaluations, and ``before - min_after``
    (positive: a drop; NaN where either side is missing).
    """
    step, acc = np.asarray(step), np.asarray(acc, dtype=float)
    before = np.flatnonzero(step <= at)
    after = np.flatnonzero(step > at)[:horizon]
    if not before.size or not after.size:
        return {"before": math.nan, "min_after": math.nan, "drop": math.nan}
    b, a = float(acc[before[-1]]), float(acc[after].min())
    return {"before": b, "min_after": a, "drop": b - a}


def mean_ci(values, confidence: float = CONFIDENCE) -> dict:
    """Mean and Student-t confidence interval over seeds.

    Returns ``{"mean", "low", "high", "n"}``; with one value the interval is infinite
    (nothing is known about the spread), with none everything is NaN.
    """
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    m = float(x.mean())
    if n == 1:
        return {"mean": m, "low": -math.inf, "high": math.inf, "n": 1}
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"mean": m, "low": m - half, "high": m + half, "n": n}


def ratio_ci(numerator, denominator, confidence: float = CONFIDENCE) -> dict:
    """Geometric-mean ratio over seeds with a t-interval on the log ratios.

    Returns ``{"mean", "low", "high", "n"}`` as ratios (1: equal). A pair with an infinite
    numerator (a target never reached) gives an infinite ratio and an interval
    ``[low, inf]``.
    """
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    logs = np.log(num / den)
    if np.isinf(logs).any():
        finite = logs[np.isfinite(logs)]
        low = float(np.exp(finite.min())) if finite.size else math.inf
        return {"mean": math.inf, "low": low, "high": math.inf, "n": int(logs.size)}
    ci = mean_ci(logs, confidence)
    return {k: (math.exp(v) if k != "n" else v) for k, v in ci.items()}
