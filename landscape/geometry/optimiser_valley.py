"""The valley the optimiser defines: where AdamW sits at its edge, where its updates alternate.

Pure numpy. A raw top-k Hessian span is a choice of k; these are two spans the optimiser
itself picks, and a way to say how much they agree.

**Edge span** (:func:`edge_valley`). AdamW with its preconditioner ``D`` frozen is heavy-ball
momentum on the preconditioned Hessian ``D^-1/2 H D^-1/2`` (``D = diag(denominator)``,
:func:`landscape.geometry.uv_measures.precondition_denominator`), stable below the edge
``(2 + 2 beta1) / ((1 - beta1) lr)`` (:func:`landscape.curvature.stability.adam_edge`).
The eigen-directions whose preconditioned eigenvalue is at least :data:`NEAR_EDGE` times
that edge are those the optimiser oscillates in. An eigenvector ``w`` of the preconditioned
Hessian lives in the coordinates ``y = D^1/2 theta`` the optimiser sees; in parameter space
the direction is ``D^-1/2 w``. The edge span is the span of those parameter-space
directions, orthonormalised (Euclidean, as updates are measured). Where no eigenvalue is
near the edge, the span of the top ``fallback_k`` is used and :attr:`EdgeValley.near_edge`
is False: a report must say so.

**Alternating span** (:func:`alternating_span`). Of ``n`` consecutive updates ``d_t`` (a
per-step window), the alternating component is the second difference
``e_t = d_t - (d_{t-1} + d_{t+1}) / 2`` for ``t = 1..n-2``. A coordinate that moves as
``c q^t`` gives ``e_t = c q^t (1 - (q + 1/q) / 2)``: 0 for a steady drift (``q = 1``),
``-c q^{t-1} (1 - q)^2 / 2`` for a decay (``0 < q < 1``, small), and
``c q^{t-1} (1 + |q|)^2 / 2`` in size for an alternation (``q < 0``: of size at least the
step's own). The alternating span is the top-k right singular vectors of ``E = [e_t]``.
Directions are told apart by their time profiles: modes alternating at nearly one rate
share one profile, so ask for no more directions than the singular values support (a
direction past them is set by the decaying modes' transient; ``singular_values`` and
``captured`` show where that happens).

**Agreement** (:func:`principal_angles`): the principal angles between two spans, ascending
(0: a shared direction, pi/2: orthogonal).

**U/V measures on a span** (:func:`restricted_measures`): the Hessian restricted to an
orthonormal basis ``Q`` (``[k, P]`` rows), ``Q H Q'`` (``[k, k]``), and of its eigenvalues
``mu``: ``kappa = max(mu) / min(mu)`` (NaN unless every ``mu > 0``), the force
``sum 1 / mu`` over the positive ones, and the steepness CV, the coefficient of variation
of the quadratic loss rise along directions uniform on the span's sphere,
``sqrt(2 / (k + 2)) std(mu) / mean(mu)``
(:func:`landscape.geometry.uv_measures.expected_cv`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from landscape.errors import LandscapeError
from landscape.geometry.uv_measures import expected_cv

NEAR_EDGE = 0.5
"""A preconditioned eigenvalue at least this fraction of the optimiser's edge is near it."""
FALLBACK_K = 5
"""The edge span's size where no eigenvalue is near the edge (the raw top-k's default)."""


def orthonormal_rows(rows: object) -> np.ndarray:
    """``[k, P]`` orthonormal rows spanning the rows of ``rows`` (QR, float64, signs kept).

    Raises:
        LandscapeError: not a finite ``[k >= 1, P >= k]`` array, or rank below k.

    >>> (orthonormal_rows([[2.0, 0.0], [1.0, 1.0]]) + 0.0).round(6).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    a = np.asarray(rows, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < a.shape[0] or not np.all(np.isfinite(a)):
        raise LandscapeError(f"a span needs a finite [k >= 1, P >= k] array, got {a.shape}")
    q, r = np.linalg.qr(a.T)
    diag = np.abs(np.diag(r))
    if diag.min() <= 1e-10 * max(diag.max(), 1e-300):
        raise LandscapeError(f"the {a.shape[0]} directions are linearly dependent")
    return (q * np.sign(np.diag(r))).T


@dataclass(frozen=True)
class EdgeValley:
    """The edge span: preconditioned eigen-directions near AdamW's stability edge.

    Attributes:
        eigvals: ``[m]`` the preconditioned eigenvalues examined, descending.
        edge: the optimiser's edge ``(2 + 2 beta1) / ((1 - beta1) lr)``.
        factor: the fraction of the edge that counts as near (:data:`NEAR_EDGE`).
        near_edge: at least one eigenvalue is ``>= factor * edge``; False: the span is the
            top ``k`` instead (a fallback a report must name).
        all_near: every examined eigenvalue is near the edge, so more beyond the ``m``
            examined may be too (the span may be incomplete).
        k: the span's dimension.
        basis: ``[k, P]`` orthonormal rows spanning ``D^-1/2 w_i`` of the chosen ``w_i``.
    """

    eigvals: np.ndarray
    edge: float
    factor: float
    near_edge: bool
    all_near: bool
    k: int
    basis: np.ndarray

    @property
    def note(self) -> str:
        """What the span is, in words (for reports)."""
        if not self.near_edge:
            return (f"no preconditioned eigenvalue within {self.factor:g}x of the edge "
                    f"{self.edge:.4g} (largest {self.eigvals[0]:.4g}): the top {self.k} used")
        more = " (all examined were: there may be more)" if self.all_near else ""
        return f"{self.k} preconditioned eigenvalues >= {self.factor:g}x the edge{more}"


def edge_valley(eigvals: object, vectors: object, denominator: object, edge: float,
                factor: float = NEAR_EDGE, fallback_k: int = FALLBACK_K) -> EdgeValley:
    """The edge span of the preconditioned Hessian's top eigenpairs (see the module).

    Args:
        eigvals: ``[m]`` top eigenvalues of ``D^-1/2 H D^-1/2`` (any order).
        vectors: ``[m, P]`` their eigenvectors (rows, in the preconditioned coordinates).
        denominator: ``[P]`` AdamW's update denominator ``D`` (> 0).
        edge: the optimiser's edge (> 0, finite).
        factor: near means ``>= factor * edge``, ``0 < factor <= 1``.
        fallback_k: the span's size where none is near (>= 1; at most m).

    Returns:
        See :class:`EdgeValley`.
    """
    lam = np.asarray(eigvals, dtype=np.float64).reshape(-1)
    w = np.asarray(vectors, dtype=np.float64)
    d = np.asarray(denominator, dtype=np.float64).reshape(-1)
    if w.ndim != 2 or w.shape != (lam.size, d.size) or lam.size < 1:
        raise LandscapeError(f"eigenvectors must be [m={lam.size}, P={d.size}] rows, got "
                             f"{w.shape}")
    if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(w)) and np.all(d > 0)
            and np.all(np.isfinite(d))):
        raise LandscapeError("eigenpairs must be finite and the denominator finite and > 0")
    if not (math.isfinite(edge) and edge > 0):
        raise LandscapeError(f"the optimiser's edge must be finite and > 0, got {edge}")
    if not 0 < factor <= 1 or fallback_k < 1:
        raise LandscapeError(f"need 0 < factor <= 1 and fallback_k >= 1 (got {factor}, "
                             f"{fallback_k})")
    order = np.argsort(-lam)
    lam, w = lam[order], w[order]
    near = lam >= factor * edge
    keep = np.flatnonzero(near) if near.any() else np.arange(min(fallback_k, lam.size))
    basis = orthonormal_rows(w[keep] / np.sqrt(d)[None, :])
    return EdgeValley(eigvals=lam, edge=float(edge), factor=float(factor),
                      near_edge=bool(near.any()), all_near=bool(near.all()), k=int(keep.size),
                      basis=basis)


@dataclass(frozen=True)
class AlternatingSpan:
    """The span carrying the step-to-step alternating part of a window's updates.

    Attributes:
        basis: ``[k, P]`` orthonormal rows: the top-k right singular vectors of ``E``.
        singular_values: ``[min(n-2, P)]`` all singular values of ``E``, descending.
        captured: share of ``||E||_F^2`` the k directions carry.
        alternating_share: ``||E||_F^2 / sum_t ||d_t||^2`` over ``t = 1..n-2``: how much of
            the motion alternates (0 for a steady drift, 4 for a pure flip ``d_t = (-1)^t c``).
    """

    basis: np.ndarray
    singular_values: np.ndarray
    captured: float
    alternating_share: float


def alternating_part(updates: object) -> np.ndarray:
    """``[n-2, P]`` second differences ``e_t = d_t - (d_{t-1} + d_{t+1}) / 2``, t = 1..n-2.

    >>> alternating_part([[1.0, 1.0], [-1.0, 1.0], [1.0, 1.0]]).tolist()
    [[-2.0, 0.0]]
    """
    d = np.asarray(updates, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] < 3 or not np.all(np.isfinite(d)):
        raise LandscapeError(f"updates must be a finite [n >= 3, P] array, got {d.shape}")
    return d[1:-1] - 0.5 * (d[:-2] + d[2:])


def alternating_span(updates: object, k: int) -> AlternatingSpan:
    """The top-``k`` directions of the alternating component of ``updates`` (module docs).

    Args:
        updates: ``[n, P]`` consecutive per-step updates, ``n >= 3``.
        k: the span's dimension, ``1 <= k <= min(n-2, P)``.
    """
    e = alternating_part(updates)
    if not 1 <= k <= min(e.shape):
        raise LandscapeError(f"k must be in 1..{min(e.shape)} for {e.shape[0] + 2} updates of "
                             f"{e.shape[1]} parameters, got {k}")
    _, s, vt = np.linalg.svd(e, full_matrices=False)
    total = float(np.sum(s**2))
    if total <= 0:
        raise LandscapeError("the updates have no alternating part (a steady drift)")
    moved = float(np.sum(np.asarray(updates, np.float64)[1:-1] ** 2))
    return AlternatingSpan(basis=vt[:k], singular_values=s,
                           captured=float(np.sum(s[:k] ** 2) / total),
                           alternating_share=total / moved if moved > 0 else math.nan)


def principal_angles(a: object, b: object) -> np.ndarray:
    """``[min(ka, kb)]`` principal angles (radians, ascending) between two row spans.

    >>> t = 0.3
    >>> principal_angles([[1, 0, 0], [0, 1, 0]], [[1, 0, 0], [0, np.cos(t), np.sin(t)]]).round(6)
    array([0. , 0.3])
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x, y = (m[None, :] if m.ndim == 1 else m for m in (x, y))
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(x.shape[0], y.shape[0]) < 1:
        raise LandscapeError(f"spans must be [k, P] rows of the same P, got {x.shape}, {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise LandscapeError("spans must be finite")
    return np.sort(scipy.linalg.subspace_angles(x.T, y.T))


def restricted_hessian(hvp: Callable[[np.ndarray], np.ndarray], basis: object) -> np.ndarray:
    """``Q H Q'`` (``[k, k]``, symmetrised) from Hessian-vector products along the rows of Q.

    Args:
        hvp: ``v [P] -> H v [P]``.
        basis: ``[k, P]`` orthonormal rows Q.
    """
    q = np.asarray(basis, dtype=np.float64)
    if q.ndim != 2 or not np.all(np.isfinite(q)):
        raise LandscapeError(f"basis must be a finite [k, P] array, got {q.shape}")
    off = float(np.max(np.abs(q @ q.T - np.eye(q.shape[0]))))
    if off > 1e-4:
        raise LandscapeError(f"basis rows must be orthonormal (Q Q' - I is {off:.2g} off)")
    hq = np.stack([np.asarray(hvp(row), dtype=np.float64).reshape(-1) for row in q])
    m = q @ hq.T
    return 0.5 * (m + m.T)


@dataclass(frozen=True)
class RestrictedMeasures:
    """U/V measures of the Hessian restricted to a span (see the module).

    Attributes:
        eigvals: ``[k]`` eigenvalues of ``Q H Q'``, descending.
        kappa: ``max / min`` (NaN unless every eigenvalue is > 0).
        force: ``sum 1 / mu`` over the eigenvalues > 0.
        steepness_cv: ``sqrt(2 / (k + 2)) std / mean`` (NaN unless the mean is > 0).
        negative: eigenvalues <= 0.
    """

    eigvals: np.ndarray
    kappa: float
    force: float
    steepness_cv: float
    negative: int


def restricted_measures(restricted: object) -> RestrictedMeasures:
    """kappa, force and steepness CV of a restricted Hessian ``[k, k]`` (symmetric)."""
    m = np.asarray(restricted, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1 or not np.all(np.isfinite(m)):
        raise LandscapeError(f"a restricted Hessian must be a finite [k, k] array, got {m.shape}")
    mu = np.linalg.eigvalsh(0.5 * (m + m.T))[::-1]
    pos = mu[mu > 0]
    return RestrictedMeasures(
        eigvals=mu, kappa=float(mu[0] / mu[-1]) if mu[-1] > 0 else math.nan,
        force=float(np.sum(1.0 / pos)), negative=int(np.sum(mu <= 0)),
        steepness_cv=expected_cv(mu) if mu.mean() > 0 else math.nan)
