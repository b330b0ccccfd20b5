"""River-U versus River-V measured so that a number means the same for two models.

Pure numpy. Every function here compares two (or more) spectra on one footing; none of
them thresholds a model against its own largest eigenvalue, which is what made the
per-model ``kappa(H_valley) <= 1 / eps_rel`` of :mod:`landscape.geometry.valley` a measurement of
the threshold rather than of the valley.

* :func:`sweep`: kappa, the count of valley eigenvalues and their force ``sum 1/lambda``
  at absolute thresholds ``eps = eps_rel * reference`` for ``eps_rel`` over a log grid
  (:data:`EPS_SWEEP`, 1e-4 to 1e-1, 13 points). The reference is one number shared by
  the runs compared (e.g. Single-Attn's lambda_max at the same epoch), so both models are
  split at the same curvature. A point is *saturated* when the smallest valley
  eigenvalue sits within a factor :data:`SATURATION` of eps: the spectrum then runs
  continuously through the threshold and kappa is ``lambda_max / eps`` up to that
  factor, i.e. it measures eps.
* :func:`bulk_edge` and :func:`outlier_kappa`: kappa of the outlier subspace, the top k
  eigenvalues above the bulk, with the same k for the models compared.
* :func:`assumption_1`: the paper's Assumption 1 as it is stated: below a common tau,
  Looped has more valley eigenvalues, and its i-th smallest is at or below Single's
  i-th smallest for every i.
* :func:`valley_directions`, :func:`spread`, :func:`expected_cv`: the paper's own words
  ("uniformly steep cliffs" for U, "cliffs of highly varied steepness" for V) as a
  threshold-free measurement: the loss rise along many random unit directions inside
  the span of the top-k valley eigenvectors, and the spread of those rises
  (coefficient of variation, 90th over 10th percentile). On a quadratic the rise along
  a unit ``u = sum_i c_i q_i`` at distance r is ``r^2/2 sum_i c_i^2 lambda_i``, and for
  ``c`` uniform on the sphere its CV is exactly ``sqrt(2 / (k + 2)) std(lambda) /
  mean(lambda)`` (population std), see :func:`expected_cv`: 0 for a perfectly U valley,
  large for a spread one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from landscape.errors import LandscapeError

EPS_SWEEP = np.logspace(-4, -1, 13)  # thresholds relative to the shared reference
SATURATION = 2.0  # valley_min <= SATURATION * eps: kappa measures the threshold
MAX_OUTLIERS = 64  # bulk_edge looks for the edge among this many top eigenvalues
# The outlier kappa's k where the spectra show no bulk edge (their common edge is k = 1,
# whose kappa is 1 by construction): the top 5, the valley span of the direction spread.
NO_EDGE_K = 5
TAU_REL = 0.1  # Assumption 1's common tau, relative to the shared reference


def _vector(x: object, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0 or not np.all(np.isfinite(a)):
        raise LandscapeError(f"{name} must be a non-empty array of finite numbers")
    return a


def _positive(x: float, name: str) -> float:
    if not (x > 0 and math.isfinite(x)):
        raise LandscapeError(f"{name} must be finite and > 0, got {x}")
    return float(x)


# ------------------------------------------------------------------------------ sweep


@dataclass(frozen=True)
class SweepPoint:
    """The valley of one spectrum at one absolute threshold.

    Attributes:
        eps_rel: the threshold relative to the shared reference.
        eps: the absolute threshold ``eps_rel * reference``.
        lambda_max: the spectrum's own largest eigenvalue.
        valley_min: its smallest eigenvalue above eps (NaN if none).
        kappa: ``lambda_max / valley_min`` (NaN for an empty valley).
        count: number of eigenvalues in ``(eps, tau]`` (``tau`` None: above eps).
        force: ``sum 1/lambda`` over the same eigenvalues.
        saturated: ``valley_min <= SATURATION * eps``: kappa is set by the threshold.
    """

    eps_rel: float
    eps: float
    lambda_max: float
    valley_min: float
    kappa: float
    count: int
    force: float
    saturated: bool


def sweep(eigvals: object, reference: float, eps_rels: object = EPS_SWEEP,
          tau: float | None = None, saturation: float = SATURATION) -> list[SweepPoint]:
    """kappa, count and force of a spectrum's valley over a grid of shared thresholds.

    Args:
        eigvals: ``[P]`` eigenvalues (any order).
        reference: the shared scale (> 0), e.g. Single-Attn's lambda_max at this epoch;
            the same number for every spectrum compared.
        eps_rels: thresholds relative to ``reference``, each in (0, 1).
        tau: absolute upper bound of the counted band (None: every valley eigenvalue).
        saturation: factor of :data:`SATURATION`.

    Returns:
        One :class:`SweepPoint` per threshold, in the order given.

    Example:
        >>> [p.kappa for p in sweep([4.0, 2.0, 1e-9], 4.0, [1e-3])]
        [2.0]
    """
    lam = _vector(eigvals, "eigvals")
    ref = _positive(reference, "reference")
    rels = _vector(eps_rels, "eps_rels")
    if np.any((rels <= 0) | (rels >= 1)):
        raise LandscapeError("every eps_rel must lie in (0, 1)")
    lmax = float(lam.max())
    out = []
    for r in rels:
        eps = float(r * ref)
        valley = lam[lam > eps]
        band = valley if tau is None else valley[valley <= tau]
        vmin = float(valley.min()) if valley.size else math.nan
        out.append(SweepPoint(
            eps_rel=float(r), eps=eps, lambda_max=lmax, valley_min=vmin,
            kappa=lmax / vmin if valley.size else math.nan, count=int(band.size),
            force=float(np.sum(1.0 / band)),
            saturated=bool(valley.size and vmin <= saturation * eps)))
    return out


# --------------------------------------------------------------------- outlier subspace


def bulk_edge(eigvals: object, max_outliers: int = MAX_OUTLIERS) -> int:
    """The number k of outliers above the bulk: the largest log-gap among the top values.

    The positive eigenvalues are sorted downwards, ``l_1 >= l_2 >= ...``; among the first
    ``max_outliers + 1`` of them k is the index maximising ``log(l_k / l_{k+1})``. A
    spectrum with a few well-separated outliers over a bulk near zero gives the number of
    outliers; a spectrum without a gap gives a noisy k, which is why two models are
    compared at a *common* k (:func:`common_k`), never each at its own.

    Args:
        eigvals: ``[P]`` eigenvalues.
        max_outliers: the largest k considered (>= 1).

    Returns:
        k >= 1 (1 when fewer than two eigenvalues are positive).
    """
    lam = _vector(eigvals, "eigvals")
    if int(max_outliers) != max_outliers or max_outliers < 1:
        raise LandscapeError(f"max_outliers must be a positive integer, got {max_outliers}")
    pos = np.sort(lam[lam > 0])[::-1][: max_outliers + 1]
    if pos.size < 2:
        return 1
    return int(np.argmax(np.log(pos[:-1] / pos[1:]))) + 1


def common_k(spectra: list) -> int:
    """The k shared by several spectra: the smallest of their :func:`bulk_edge` values."""
    if not spectra:
        raise LandscapeError("common_k needs at least one spectrum")
    return min(bulk_edge(s) for s in spectra)


def outlier_k(spectra: list) -> tuple[int, bool]:
    """The k at which :func:`outlier_kappa` compares several spectra, and whether an edge set it.

    The common bulk edge (:func:`common_k`) where every spectrum has one (k >= 2). Where
    one has none (a spectrum that runs continuously from its top into the bulk, as trained
    networks' do: the largest log-gap is then the first, k = 1, and ``l_1 / l_1 = 1`` would
    make the comparison empty by construction), :data:`NO_EDGE_K`: the spread of the top
    few valley eigenvalues, the eigenvalue form of the direction spread.

    >>> outlier_k([[10.0, 9.0, 8.0, 0.01, 0.009]])
    (3, True)
    >>> outlier_k([[1.0, 0.5, 0.4, 0.3, 0.2, 0.1]])
    (5, False)
    """
    k = common_k(spectra)
    return (k, True) if k >= 2 else (NO_EDGE_K, False)


def outlier_kappa(eigvals: object, k: int) -> float:
    """``l_1 / l_k``: the condition number of the top-k (outlier) subspace.

    Args:
        eigvals: ``[P]`` eigenvalues.
        k: the number of outliers (>= 1), the same for every model compared.

    Returns:
        The ratio (NaN if fewer than k eigenvalues are positive).
    """
    lam = _vector(eigvals, "eigvals")
    if int(k) != k or k < 1:
        raise LandscapeError(f"k must be a positive integer, got {k}")
    pos = np.sort(lam[lam > 0])[::-1]
    return float(pos[0] / pos[k - 1]) if pos.size >= k else math.nan


# ------------------------------------------------------------------------ Assumption 1


@dataclass(frozen=True)
class Assumption1:
    """Assumption 1 of the paper on one pair of spectra at common thresholds.

    Attributes:
        eps: the common river threshold (valley eigenvalues are > eps).
        tau: the common upper bound of the small valley eigenvalues.
        count_single: Single's eigenvalues in (eps, tau].
        count_looped: Looped's eigenvalues in (eps, tau].
        more: ``count_looped > count_single``.
        componentwise: for every i < count_single, Looped's i-th smallest in (eps, tau]
            is <= Single's i-th smallest (needs ``count_looped >= count_single``).
        violations: the number of i where it is not.
        holds: ``more and componentwise``.
    """

    eps: float
    tau: float
    count_single: int
    count_looped: int
    more: bool
    componentwise: bool
    violations: int
    holds: bool


def assumption_1(single: object, looped: object, eps: float, tau: float) -> Assumption1:
    """Check Assumption 1 below a common ``tau``, component by component.

    Args:
        single: Single-Attn's eigenvalues.
        looped: Looped-Attn's eigenvalues.
        eps: common absolute river threshold (>= 0).
        tau: common absolute bound (> eps).

    Returns:
        The check, see :class:`Assumption1`.
    """
    s, lo = _vector(single, "single"), _vector(looped, "looped")
    if not (eps >= 0 and tau > eps and math.isfinite(tau)):
        raise LandscapeError(f"need 0 <= eps < tau < inf, got eps={eps}, tau={tau}")
    small_s = np.sort(s[(s > eps) & (s <= tau)])
    small_l = np.sort(lo[(lo > eps) & (lo <= tau)])
    more = small_l.size > small_s.size
    n = min(small_s.size, small_l.size)
    violations = int(np.count_nonzero(small_l[:n] > small_s[:n])) + (small_s.size - n)
    return Assumption1(eps=float(eps), tau=float(tau), count_single=int(small_s.size),
                       count_looped=int(small_l.size), more=bool(more),
                       componentwise=violations == 0, violations=violations,
                       holds=bool(more and violations == 0))


# ------------------------------------------------------------------- direction spread


def sphere_coefficients(k: int, n: int, seed: int = 0) -> np.ndarray:
    """``[n, k]`` rows drawn uniformly from the unit sphere in R^k (seeded)."""
    if int(k) != k or k < 1 or int(n) != n or n < 1:
        raise LandscapeError(f"need k >= 1 and n >= 1 directions, got k={k}, n={n}")
    g = np.random.default_rng(seed).standard_normal((n, k))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def valley_directions(basis: object, n: int, seed: int = 0) -> np.ndarray:
    """``[n, P]`` random unit directions in the span of ``basis`` ``[P, k]``.

    The basis is orthonormalised first (QR), so each row is ``Q c`` with ``c`` uniform on
    the unit sphere of the span: every direction of the valley subspace is equally likely.
    """
    b = np.asarray(basis, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] < 1 or b.shape[0] < b.shape[1] or not np.all(np.isfinite(b)):
        raise LandscapeError(f"basis must be a finite [P, k] array with P >= k >= 1, got "
                             f"{b.shape}")
    q, r = np.linalg.qr(b)
    if np.min(np.abs(np.diag(r))) <= 1e-10 * np.max(np.abs(np.diag(r))):
        raise LandscapeError("the valley basis is rank deficient")
    return sphere_coefficients(b.shape[1], n, seed) @ q.T


@dataclass(frozen=True)
class Spread:
    """How much the loss rise varies from one valley direction to another.

    Attributes:
        n: number of directions.
        mean: mean rise.
        cv: coefficient of variation, ``std / mean`` (population std).
        p90_p10: 90th over 10th percentile of the rises (inf if the 10th is <= 0).
    """

    n: int
    mean: float
    cv: float
    p90_p10: float

    def as_dict(self) -> dict:
        """Plain dict (JSON-friendly)."""
        return {k: (v if math.isfinite(v) else str(v)) if isinstance(v, float) else v
                for k, v in asdict(self).items()}


def spread(rises: object) -> Spread:
    """CV and p90/p10 of the loss rises along random valley directions.

    Args:
        rises: ``[n]`` loss rises (n >= 2), e.g. from
            :func:`landscape.geometry.measurements.direction_rises`.

    Returns:
        The spread, see :class:`Spread`.
    """
    x = _vector(rises, "rises")
    if x.size < 2:
        raise LandscapeError("spread needs at least two directions")
    mean = float(x.mean())
    if not mean > 0:
        raise LandscapeError(f"the mean loss rise is {mean:.3g} <= 0: not a valley "
                             "(the point is not near a minimum of the subspace)")
    p10, p90 = np.percentile(x, [10, 90])
    return Spread(n=int(x.size), mean=mean, cv=float(x.std() / mean),
                  p90_p10=float(p90 / p10) if p10 > 0 else math.inf)


def quadratic_rises(eigvals: object, coefficients: object, radius: float = 1.0) -> np.ndarray:
    """Rises ``r^2/2 sum_i c_i^2 lambda_i`` of a quadratic along ``u = sum_i c_i q_i``.

    Args:
        eigvals: ``[k]`` eigenvalues of the valley subspace.
        coefficients: ``[n, k]`` unit coefficient rows (:func:`sphere_coefficients`).
        radius: the distance r.

    Returns:
        ``[n]`` rises.
    """
    lam = _vector(eigvals, "eigvals")
    c = np.asarray(coefficients, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != lam.size:
        raise LandscapeError(f"coefficients must be [n, k={lam.size}], got {c.shape}")
    return 0.5 * radius**2 * (c**2 @ lam)


def expected_cv(eigvals: object) -> float:
    """Closed-form CV of the quadratic rise over directions uniform on the valley sphere.

    For ``c`` uniform on the unit sphere of R^k, ``E c_i^2 = 1/k``,
    ``E c_i^4 = 3 / (k (k+2))`` and ``E c_i^2 c_j^2 = 1 / (k (k+2))``, so
    ``Var(sum c_i^2 l_i) = 2 var(l) / (k + 2)`` with ``var`` the population variance and
    the mean is ``mean(l)``: ``CV = sqrt(2 / (k+2)) std(l) / mean(l)``.
    """
    lam = _vector(eigvals, "eigvals")
    if not lam.mean() > 0:
        raise LandscapeError("expected_cv needs eigenvalues with a positive mean")
    return float(math.sqrt(2.0 / (lam.size + 2)) * lam.std() / lam.mean())


def precondition_denominator(exp_avg_sq: object, step: int, beta2: float,
                             eps: float = 1e-8) -> np.ndarray:
    """AdamW's update denominator ``sqrt(v / (1 - beta2^step)) + eps`` (as torch computes it).

    ``torch.optim.AdamW`` divides the first moment by ``exp_avg_sq.sqrt() /
    sqrt(bias_correction2) + eps``: eps is added *after* the square root and the bias
    correction, and the preconditioned Hessian the optimiser sees is
    ``D^-1/2 H D^-1/2`` with ``D = diag(denominator)`` (up to the learning rate and the
    first moment's bias correction, which scale every eigenvalue alike).

    Args:
        exp_avg_sq: ``[P]`` AdamW's second moment (>= 0).
        step: AdamW's step count (>= 1).
        beta2: AdamW's beta2 in [0, 1).
        eps: AdamW's eps (>= 0).

    Returns:
        ``[P]`` the denominator (> 0).
    """
    v = _vector(exp_avg_sq, "exp_avg_sq")
    if step < 1 or not 0 <= beta2 < 1 or eps < 0 or np.any(v < 0):
        raise LandscapeError(f"need step >= 1, 0 <= beta2 < 1, eps >= 0 and v >= 0 (got "
                             f"step={step}, beta2={beta2}, eps={eps})")
    d = np.sqrt(v) / math.sqrt(1.0 - beta2**step) + eps
    if np.any(d <= 0):
        raise LandscapeError("zero preconditioner entries (exp_avg_sq = 0 with eps = 0)")
    return d


def preconditioned(hessian: object, denominator: object) -> np.ndarray:
    """``D^-1/2 H D^-1/2`` of a dense symmetric Hessian, ``D = diag(denominator)``."""
    h = np.asarray(hessian, dtype=np.float64)
    d = _vector(denominator, "denominator")
    if h.shape != (d.size, d.size):
        raise LandscapeError(f"hessian {h.shape} and denominator [{d.size}] disagree")
    s = 1.0 / np.sqrt(d)
    return s[:, None] * h * s[None, :]
