"""Paired seeds: per-seed differences, a decision against a smallest effect, and power.

Single-Attn and Looped-Attn trained on the same seed share the language, the data order
and the initial draw of everything but the model, so the two runs of a seed are a *pair*.
Comparing two separate intervals of 3 seeds (overlap or not) throws that design away and
is not a test of their difference (Schenker & Gentleman, The American Statistician
2001). This module reads the per-seed differences ``d_s = b_s - a_s`` (or log-ratios,
:func:`log_ratios`) instead:

* :func:`paired` -- their mean with a Student-t interval, and the sign count beside;
* :meth:`Paired.decision` -- three ways, against a smallest effect of interest ``m > 0``
  fixed before the runs (in the predicted direction):

  - ``"holds"``: the interval lies above 0 (the difference is in the predicted direction);
  - ``"does not hold"``: the interval lies below ``m`` (every effect of interest is
    excluded: what remains is smaller than ``m``, or of the other sign);
  - ``"inconclusive"``: neither (too few seeds, or too much spread, to tell);

* :func:`power` -- the probability that the rule says "holds" with ``n`` seeds when the
  true mean difference is ``effect`` and the per-seed spread ``sd`` (a noncentral t), and
  :func:`seeds_needed`, the smallest number of seeds that reaches a target power, capped;
* :func:`sd_upper` -- the upper end of a spread's interval, the value a power calculation
  should assume (a spread measured on 3 seeds is itself very uncertain).

>>> p = paired([0, 1, 2], [0.60, 0.62, 0.61], [0.66, 0.69, 0.66])
>>> round(p.mean, 3), p.positive, p.n
(0.06, 3, 3)
>>> p.decision(0.02)
'holds'
>>> seeds_needed(effect=0.06, sd=0.01, target=0.8)
3
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sst

from landscape.errors import LandscapeError

LEVEL = 0.95
"""Confidence of the paired interval (two-sided)."""
MAX_SEEDS = 8
"""The most seeds a power calculation may ask for (the time a preset can spend)."""
TARGET_POWER = 0.8


@dataclass(frozen=True)
class Paired:
    """Per-seed differences ``b - a`` of paired runs and their summary.

    Attributes:
        seeds: the seeds of the pairs, in order.
        differences: ``[n]`` the per-seed differences (or log-ratios).
        mean: their mean (NaN without pairs).
        lo: lower end of the ``level`` Student-t interval (``-inf`` with fewer than 2).
        hi: upper end (``inf`` with fewer than 2).
        positive: how many differences are > 0.
        negative: how many are < 0.
        level: the interval's confidence.
    """

    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    mean: float
    lo: float
    hi: float
    positive: int
    negative: int
    level: float = LEVEL

    @property
    def n(self) -> int:
        """The number of pairs."""
        return len(self.differences)

    @property
    def sd(self) -> float:
        """The differences' sample standard deviation (NaN with fewer than 2)."""
        return float(np.std(self.differences, ddof=1)) if self.n >= 2 else math.nan

    def decision(self, smallest_effect: float) -> str:
        """``"holds"``, ``"does not hold"`` or ``"inconclusive"`` (see the module)."""
        if not smallest_effect > 0:
            raise LandscapeError(f"smallest effect {smallest_effect} must be > 0")
        if self.lo > 0:
            return "holds"
        if self.hi < smallest_effect:
            return "does not hold"
        return "inconclusive"

    def as_dict(self, smallest_effect: float | None = None) -> dict:
        """The JSON form claims.json stores (``details.paired``)."""
        def j(x: float):
            return x if math.isfinite(x) else str(x)

        out = {"seeds": list(self.seeds), "differences": [j(d) for d in self.differences],
               "mean": j(self.mean), "lo": j(self.lo), "hi": j(self.hi),
               "level": self.level, "signs": {"positive": self.positive,
                                              "negative": self.negative, "n": self.n}}
        if smallest_effect is not None:
            out["smallest_effect"] = smallest_effect
            out["decision"] = self.decision(smallest_effect)
        return out

    def text(self, fmt: str = ".3g") -> str:
        """``"0.06 [0.03, 0.09], 3 of 3 seeds > 0"`` for reports."""
        if self.n == 0:
            return "no pairs"
        if self.n == 1:
            return f"{self.mean:{fmt}} (1 pair, no interval)"
        return (f"{self.mean:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}], "
                f"{self.positive} of {self.n} seeds > 0")


def paired(seeds: Sequence[int], a: Sequence[float], b: Sequence[float],
           level: float = LEVEL) -> Paired:
    """The differences ``b - a`` of paired values (one pair per seed), summarised.

    Args:
        seeds: ``[n]`` the seed of each pair.
        a: ``[n]`` the reference values (e.g. Single-Attn's).
        b: ``[n]`` the compared values (e.g. Looped-Attn's), same seeds in the same order.
        level: the interval's confidence, in (0, 1).

    Raises:
        LandscapeError: lengths that differ, a non-finite value, a repeated seed.
    """
    a_, b_ = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (len(seeds) == a_.size == b_.size):
        raise LandscapeError(f"paired: {len(seeds)} seeds, {a_.size} and {b_.size} values")
    if len(set(seeds)) != len(seeds):
        raise LandscapeError(f"paired: a seed appears twice in {list(seeds)}")
    if not (np.isfinite(a_).all() and np.isfinite(b_).all()):
        raise LandscapeError("paired: every value must be finite (leave a seed out instead)")
    if not 0 < level < 1:
        raise LandscapeError(f"paired: level {level} must be in (0, 1)")
    d = b_ - a_
    n = d.size
    mean = float(d.mean()) if n else math.nan
    lo, hi = -math.inf, math.inf
    if n >= 2:
        half = float(sst.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
        lo, hi = mean - half, mean + half
    return Paired(tuple(int(s) for s in seeds), tuple(d.tolist()), mean, lo, hi,
                  int((d > 0).sum()), int((d < 0).sum()), level)


def log_ratios(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(zeros, log(b / a))``: feed them to :func:`paired` to pair ratios on a log scale.

    Raises:
        LandscapeError: a value that is not > 0.
    """
    a_, b_ = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not ((a_ > 0).all() and (b_ > 0).all()):
        raise LandscapeError("log_ratios: every value must be > 0")
    return np.zeros_like(a_), np.log(b_ / a_)


def power(n: int, effect: float, sd: float, level: float = LEVEL) -> float:
    """Probability that the paired rule says "holds" with ``n`` seeds.

    The rule says "holds" when the ``level`` interval's lower end is above 0, i.e. when
    the t statistic of ``n`` differences exceeds ``t_crit = t_{n-1}(0.5 + level / 2)``.
    With a true mean ``effect`` and spread ``sd`` the statistic is noncentral t with
    ``n - 1`` degrees of freedom and noncentrality ``effect sqrt(n) / sd``.

    Args:
        n: seeds (pairs), >= 2.
        effect: the true mean difference (in the predicted direction).
        sd: the true per-seed spread of the differences, > 0.
        level: the interval's confidence.
    """
    if n < 2:
        return 0.0
    if not sd > 0:
        raise LandscapeError(f"power: sd {sd} must be > 0")
    t_crit = sst.t.ppf(0.5 + level / 2, n - 1)
    return float(sst.nct.sf(t_crit, n - 1, effect * math.sqrt(n) / sd))


def seeds_needed(effect: float, sd: float, target: float = TARGET_POWER,
                 cap: int = MAX_SEEDS, level: float = LEVEL) -> int | None:
    """The fewest seeds (2..``cap``) whose :func:`power` reaches ``target``; None if none."""
    for n in range(2, cap + 1):
        if power(n, effect, sd, level) >= target:
            return n
    return None


def sd_upper(values: Sequence[float], level: float = LEVEL) -> float:
    """Upper end of the ``level`` interval of the spread of ``values`` (chi-square).

    A power calculation assumes this, not the point estimate: from 3 seeds the sample
    spread can be a quarter of the true one.
    """
    x = np.asarray(values, np.float64)
    if x.size < 2:
        raise LandscapeError("sd_upper: needs at least 2 values")
    return sd_upper_of(float(x.std(ddof=1)), x.size, level)


def sd_upper_of(sd: float, n: int, level: float = LEVEL) -> float:
    """:func:`sd_upper` from a spread ``sd`` measured on ``n`` values (a reported summary)."""
    if n < 2 or not sd >= 0:
        raise LandscapeError(f"sd_upper_of: needs n >= 2 and sd >= 0, got n={n}, sd={sd}")
    df = n - 1
    return float(sd * math.sqrt(df / sst.chi2.ppf((1 - level) / 2, df)))


@dataclass(frozen=True)
class PowerPlan:
    """What a power calculation assumed and what it bought (``details.power``).

    Attributes:
        effect: the assumed true difference (the smallest effect of interest).
        sd: the assumed spread (the upper end of the measured one's interval).
        sd_source: where the spread came from (e.g. "paper preset, seeds 0-2").
        seeds_needed: seeds for :data:`TARGET_POWER`, or None beyond the cap.
        seeds_used: seeds the run had.
        power: the power with ``seeds_used``.
    """

    effect: float
    sd: float
    sd_source: str
    seeds_needed: int | None
    seeds_used: int
    power: float

    def as_dict(self) -> dict:
        """The JSON form."""
        return {"effect": self.effect, "sd": self.sd, "sd_source": self.sd_source,
                "seeds_needed": self.seeds_needed, "seeds_used": self.seeds_used,
                "power": self.power, "target": TARGET_POWER, "cap": MAX_SEEDS}


def plan(effect: float, sd: float, sd_source: str, seeds_used: int) -> PowerPlan:
    """The :class:`PowerPlan` of a claim: seeds needed and the power of those used."""
    return PowerPlan(effect, sd, sd_source, seeds_needed(effect, sd),
                     seeds_used, power(seeds_used, effect, sd))
