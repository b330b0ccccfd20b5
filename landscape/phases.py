"""Spectral phases of training: matrix entropy of a Hessian spectrum and a phase rule.

Pure numpy; arrays in, numbers and small frozen dataclasses out (claim 2; the definitions
are gathered in docs/paper.md).

**Matrix entropy.** For eigenvalues ``l_1..l_P`` let ``p_i = |l_i| / sum_j |l_j|``. The
matrix entropy is the Shannon entropy ``H = -sum_i p_i log p_i`` (natural log, nats;
``0 log 0 = 0``) and the effective rank is ``exp(H)``. ``H = log P`` when every
``|l_i|`` is equal, ``H = 0`` when one eigenvalue carries everything. Absolute values
because a Hessian away from a minimum has negative eigenvalues, whose magnitude is
curvature all the same. The paper names a "matrix entropy" without defining it; this is
ours (the von Neumann entropy of ``|H| / tr|H|``, as in Roy & Vetterli's effective rank).

**Phases.** :func:`detect_phases` cuts an entropy series into Collapse (the entropy falls),
Diversification (it rises again) and Stabilization (it stays put), with the rule and
its thresholds written in its docstring and fixed here before any data was seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from landscape.errors import LandscapeError

COLLAPSE = "collapse"
DIVERSIFICATION = "diversification"
STABILIZATION = "stabilization"
UNASSIGNED = "unassigned"
PHASES = (COLLAPSE, DIVERSIFICATION, STABILIZATION)

WINDOW = 3  # default smoothing: centred moving average over 3 checkpoints
COLLAPSE_DROP = 0.05  # Collapse: the entropy falls by >= 5 % of the series' scale
DIVERSIFY_RISE = 0.05  # Diversification: it then rises by >= 5 % of the scale
FLAT_CHANGE = 0.05  # Stabilization: its rate, kept over the whole run, moves it < 5 %
MIN_STABLE = 2  # Stabilization spans at least 2 checkpoints (one rate measured)


# ------------------------------------------------------------------------------- entropy


def _finite_vector(x: object, name: str) -> np.ndarray:
    """A finite, non-empty float64 vector from ``x`` (flattened), or a LandscapeError."""
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise LandscapeError(f"{name} must be a non-empty array of finite numbers")
    return a


def _entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of a probability vector, with ``0 log 0 = 0``."""
    nz = p[p > 0]
    return max(0.0, float(-np.sum(nz * np.log(nz))))  # never -0.0


def matrix_entropy(eigvals: object) -> float:
    """Shannon entropy of the normalised absolute spectrum, ``p_i = |l_i| / sum_j |l_j|``.

    Args:
        eigvals: ``[P]`` eigenvalues (any sign; at least one non-zero).

    Returns:
        ``-sum_i p_i log p_i`` in nats, in ``[0, log P]``.

    Raises:
        LandscapeError: empty, non-finite, or all-zero eigenvalues.

    Example:
        >>> round(matrix_entropy([1.0, -1.0, 1.0, 1.0]), 12) == round(float(np.log(4)), 12)
        True
        >>> matrix_entropy([0.0, 3.0, 0.0])
        0.0
    """
    a = np.abs(_finite_vector(eigvals, "eigvals"))
    total = a.sum()
    if not total > 0:
        raise LandscapeError("matrix_entropy: every eigenvalue is zero, the entropy is undefined")
    return _entropy(a / total)


def effective_rank(eigvals: object) -> float:
    """``exp(matrix_entropy(eigvals))``: between 1 (one direction) and P (all equal).

    Args:
        eigvals: ``[P]`` eigenvalues.

    Returns:
        The effective rank.
    """
    return float(np.exp(matrix_entropy(eigvals)))


def density_entropy(nodes: object, weights: object, dim: int) -> float:
    """Matrix entropy estimated from stochastic Lanczos quadrature (SLQ).

    The approximation. SLQ represents the spectrum of a ``dim x dim`` matrix by a
    quadrature measure: node ``t_rj`` of run ``r`` (of ``R``) stands for
    ``dim * w_rj / R`` eigenvalues, all equal to ``t_rj``. Put that discrete spectrum
    into :func:`matrix_entropy`: with ``m = (1/R) sum_rj w_rj |t_rj|`` (the estimate of
    ``tr|H| / dim``) and ``q_rj = w_rj |t_rj| / (R m)``::

        H ~= log(dim) + log(m) - sum_rj q_rj log|t_rj|

    Exact when the measure is exact (one run, ``dim`` steps, weights ``1/dim``, e.g. a
    Rademacher start on a diagonal matrix); otherwise an estimate that converges as the
    number of runs grows if the runs are complete (``dim`` Lanczos steps). With fewer
    steps the nodes are Ritz values, which resolve the spectrum's edges and outliers
    well and its bulk coarsely; the bulk's many equal eigenvalues then look like few,
    so the estimate errs low where the bulk carries much of ``sum |l|``. No Gaussian
    smoothing is involved: the smoothed density of the plots is for the eye only.

    Args:
        nodes: ``[R, m]`` (or ``[m]``) quadrature nodes.
        weights: same shape; each run's weights sum to 1.
        dim: the matrix dimension P (>= 1).

    Returns:
        The estimated entropy in nats.

    Raises:
        LandscapeError: shapes disagree, weights negative or not summing to 1 per run,
            ``dim < 1``, or every node is zero.
    """
    t = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if t.shape != w.shape or t.size == 0:
        raise LandscapeError(f"density_entropy: nodes {t.shape} and weights {w.shape} must "
                             "have the same non-empty shape [runs, steps]")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise LandscapeError("density_entropy: nodes and weights must be finite, weights >= 0")
    if not np.allclose(w.sum(axis=1), 1.0, rtol=0, atol=1e-6):
        raise LandscapeError("density_entropy: each run's weights must sum to 1")
    if int(dim) != dim or dim < 1:
        raise LandscapeError(f"density_entropy: dim must be a positive integer, got {dim}")
    mass = w * np.abs(t) / t.shape[0]  # [R, m], sums to m
    m = mass.sum()
    if not m > 0:
        raise LandscapeError("density_entropy: every node is zero, the entropy is undefined")
    q = mass[mass > 0] / m
    return float(np.log(dim) + np.log(m) - np.sum(q * np.log(np.abs(t)[mass > 0])))


# -------------------------------------------------------------------------------- phases


@dataclass(frozen=True)
class Phases:
    """Phases of an entropy series, see :func:`detect_phases`.

    Attributes:
        epochs: ``[n]`` the checkpoints' epochs.
        entropy: ``[n]`` the series as given.
        smoothed: ``[n]`` the series after smoothing (what the rule reads).
        labels: ``[n]`` one of ``"collapse"``, ``"diversification"``,
            ``"stabilization"`` or ``"unassigned"`` per checkpoint.
        collapse_end: epoch of the minimum that ends Collapse.
        stabilization_start: epoch where the flat tail begins (NaN if it has fewer
            than ``min_stable`` checkpoints).
        drop: fall from the start to the minimum, relative to the scale.
        rise: rise from the minimum to the highest point before the tail, relative to
            the scale.
        tail_len: number of checkpoints in the flat tail.
        scale: ``max |smoothed|``, the yardstick of every relative threshold.
        three_phases: whether Collapse, Diversification and Stabilization all passed
            their thresholds.
        params: the thresholds used.
    """

    epochs: np.ndarray
    entropy: np.ndarray
    smoothed: np.ndarray
    labels: tuple[str, ...]
    collapse_end: float
    stabilization_start: float
    drop: float
    rise: float
    tail_len: int
    scale: float
    three_phases: bool
    params: dict

    def label_at(self, epoch: float) -> str:
        """The label of the checkpoint nearest to ``epoch``."""
        return self.labels[int(np.argmin(np.abs(self.epochs - epoch)))]

    def boundaries(self) -> dict[str, float]:
        """Epochs where each phase begins (NaN for a phase that did not pass)."""
        out = {}
        for name in PHASES:
            idx = [i for i, lab in enumerate(self.labels) if lab == name]
            out[name] = float(self.epochs[idx[0]]) if idx else float("nan")
        return out


def smooth(series: object, window: int = WINDOW) -> np.ndarray:
    """Centred moving average over ``window`` points, the window shrinking at the ends.

    Args:
        series: ``[n]`` values.
        window: odd number of points (1 leaves the series as it is).

    Returns:
        ``[n]`` smoothed values.
    """
    x = _finite_vector(series, "series")
    if int(window) != window or window < 1 or window % 2 == 0:
        raise LandscapeError(f"smooth: window must be an odd positive integer, got {window}")
    half = window // 2
    csum = np.concatenate([[0.0], np.cumsum(x)])
    lo = np.maximum(np.arange(x.size) - half, 0)
    hi = np.minimum(np.arange(x.size) + half + 1, x.size)
    return (csum[hi] - csum[lo]) / (hi - lo)


def _flat_tail_start(e: np.ndarray, s: np.ndarray, scale: float, flat_change: float) -> int:
    """First index from which every step's rate, kept over the run's span, is small."""
    span = e[-1] - e[0]
    rate = np.abs(np.diff(s)) / np.diff(e) * span / scale  # [n-1] relative change per run
    k = s.size - 1
    while k > 0 and rate[k - 1] < flat_change:
        k -= 1
    return k


def _check_series(epochs: object, entropy_series: object) -> tuple[np.ndarray, np.ndarray]:
    """Finite, same-length, strictly increasing epochs with at least 3 checkpoints."""
    e = _finite_vector(epochs, "epochs")
    h = _finite_vector(entropy_series, "entropy_series")
    if e.shape != h.shape or e.size < 3:
        raise LandscapeError(f"detect_phases: need >= 3 checkpoints with one entropy each, "
                             f"got {e.size} epochs and {h.size} values")
    if not np.all(np.diff(e) > 0):
        raise LandscapeError("detect_phases: epochs must be strictly increasing")
    return e, h


def detect_phases(
    epochs: object,
    entropy_series: object,
    *,
    window: int = WINDOW,
    collapse_drop: float = COLLAPSE_DROP,
    diversify_rise: float = DIVERSIFY_RISE,
    flat_change: float = FLAT_CHANGE,
    min_stable: int = MIN_STABLE,
) -> Phases:
    """Collapse / Diversification / Stabilization of an entropy series over training.

    The rule (defaults fixed before any data was seen; never tune them to a run):

    1. Smooth the series with a centred moving average of ``window`` checkpoints; call
       it ``s`` and its scale ``S = max |s|``. Every threshold below is relative to S.
    2. **Stabilization** is the longest tail ``[d, n)`` in which every step's rate of
       change, ``|s[i+1] - s[i]| / (e[i+1] - e[i])``, would move the entropy by less
       than ``flat_change * S`` if it were kept over the whole run (``e[-1] - e[0]``
       epochs). It counts if it spans at least ``min_stable`` checkpoints.
    3. **Collapse** is ``[0, m]`` with ``m`` the minimum of ``s[0..d]`` (first one on a
       tie). It counts if ``(s[0] - s[m]) / S >= collapse_drop``.
    4. **Diversification** is ``(m, d)``. It counts if it is not empty and
       ``(max s[m..d] - s[m]) / S >= diversify_rise``.
    5. ``three_phases`` is true when all three count. A checkpoint in a stretch that
       does not count is labelled ``"unassigned"``.

    So a fall that levels off is Collapse then Stabilization (two phases); a monotone
    rise has no Collapse; a flat series is all Stabilization.

    Args:
        epochs: ``[n]`` strictly increasing epochs, n >= 3.
        entropy_series: ``[n]`` entropy at each epoch (e.g. :func:`matrix_entropy`).
        window: smoothing window (odd; 1 for none).
        collapse_drop: least relative fall of Collapse.
        diversify_rise: least relative rise of Diversification.
        flat_change: largest relative change of Stabilization, per run length.
        min_stable: fewest checkpoints of Stabilization (>= 2).

    Returns:
        The labels, boundaries, measured drop and rise, and the verdict; see
        :class:`Phases`.
    """
    e, h = _check_series(epochs, entropy_series)
    if min_stable < 2 or min(collapse_drop, diversify_rise, flat_change) <= 0:
        raise LandscapeError("detect_phases: thresholds must be > 0 and min_stable >= 2")
    s = smooth(h, window)
    scale = float(np.max(np.abs(s)))
    if scale == 0:
        scale = 1.0  # an all-zero series: flat, no fall, no rise
    d = _flat_tail_start(e, s, scale, flat_change)
    m = int(np.argmin(s[: d + 1]))
    drop = float((s[0] - s[m]) / scale)
    rise = float((np.max(s[m : d + 1]) - s[m]) / scale) if d > m else 0.0
    ok = {COLLAPSE: m > 0 and drop >= collapse_drop,
          DIVERSIFICATION: d > m + 1 and rise >= diversify_rise,
          STABILIZATION: s.size - d >= min_stable}  # fmt: skip
    labels = [UNASSIGNED] * s.size
    for name, idx in ((COLLAPSE, range(0, m + 1)), (DIVERSIFICATION, range(m + 1, d)),
                      (STABILIZATION, range(d, s.size))):  # fmt: skip
        for i in idx if ok[name] else ():
            labels[i] = name
    params = {"window": window, "collapse_drop": collapse_drop, "diversify_rise": diversify_rise,
              "flat_change": flat_change, "min_stable": min_stable}  # fmt: skip
    return Phases(
        epochs=e, entropy=h, smoothed=s, labels=tuple(labels), collapse_end=float(e[m]),
        stabilization_start=float(e[d]) if ok[STABILIZATION] else float("nan"),
        drop=drop, rise=rise, tail_len=int(s.size - d), scale=scale,
        three_phases=all(ok.values()), params=params,
    )  # fmt: skip
