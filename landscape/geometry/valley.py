"""River-Valley diagnostics as pure numerical functions (paper claims 3 and 4).

Arrays in, small frozen dataclasses out; no file I/O, no models. The probe driver feeds
these functions Hessian eigenvalues (an exact spectrum, or SLQ nodes and weights),
1-D loss slices and the training trajectory.

Vocabulary (claim 3; docs/paper.md, "River, valley and the U/V label"). The Hessian
eigenvalues are split at a threshold eps:

* **river**: the flat directions, ``|lambda| <= eps``;
* **valley**: the steep directions, ``lambda > eps``;
* **negative curvature**: ``lambda < -eps``. These are neither river nor valley (the
  paper's split only thresholds the magnitude of a flat direction and the steepness of a
  wall); they are counted separately so that a saddle is never mistaken for a river.

A River-U-Valley has a well-conditioned valley block, ``kappa(H_valley) <= 1 + delta``;
a River-V-Valley has ``kappa(H_valley) >> 1``. ``kappa(H_valley)`` is the largest valley
eigenvalue over the smallest one. Assumption 1 of the paper concerns the valley
eigenvalues below a second threshold tau: their count, and the sum of their inverses
(the cumulative force of claim 4, see :mod:`landscape.geometry.simulator`).

Caveat that every reader of ``kappa`` should know: with the default relative threshold,
every valley eigenvalue exceeds ``eps = eps_rel * lambda_max``, so
``kappa <= 1 / eps_rel`` by construction (1000 at the default). A spectrum with a bulk
near zero (any over-parameterized network) puts its smallest valley eigenvalue just above
eps, and kappa then mostly measures the threshold. Report kappa beside the count and the
force in (eps, tau], which are less sensitive to where the bulk edge falls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from landscape.errors import LandscapeError

EPS_REL = 1e-3  # default river threshold, relative to lambda_max
TAU_REL = 0.1  # default "small valley eigenvalue" threshold, relative to lambda_max
KAPPA_U = 2.0  # kappa(H_valley) <= KAPPA_U: River-U (the paper's 1 + delta with delta = 1)
KAPPA_V = 10.0  # kappa(H_valley) >= KAPPA_V: River-V (one decade: "kappa >> 1")


# --------------------------------------------------------------------------- split


@dataclass(frozen=True)
class SpectrumSplit:
    """The river/valley split of an exact spectrum.

    Attributes:
        eps: the absolute river threshold used (``|lambda| <= eps`` is river).
        tau: the absolute upper bound of the "small valley eigenvalue" band (eps, tau].
        lambda_max: the largest eigenvalue.
        dim: the number of eigenvalues given (P for a full spectrum).
        river_dim: count of ``|lambda| <= eps``.
        valley_dim: count of ``lambda > eps``.
        negative_dim: count of ``lambda < -eps`` (negative curvature; neither river nor
            valley).
        valley_min: the smallest valley eigenvalue (NaN if the valley is empty).
        kappa: ``lambda_max / valley_min``, the condition number of H_valley (NaN if the
            valley is empty).
        small_count: count of valley eigenvalues in (eps, tau].
        small_force: sum of ``1/lambda`` over those, the paper's cumulative force (the
            K -> infinity limit of claim 4's push, up to the factor ``1/eta``).
        valley_force: sum of ``1/lambda`` over the whole valley.
        label: "U", "V", "intermediate", or "none" (empty valley); see :func:`uv_label`.
    """

    eps: float
    tau: float
    lambda_max: float
    dim: int
    river_dim: int
    valley_dim: int
    negative_dim: int
    valley_min: float
    kappa: float
    small_count: int
    small_force: float
    valley_force: float
    label: str


def uv_label(kappa: float, kappa_u: float = KAPPA_U, kappa_v: float = KAPPA_V) -> str:
    """The U/V label of a valley from its condition number.

    Rule: ``"U"`` if ``kappa <= kappa_u``; ``"V"`` if ``kappa >= kappa_v``;
    ``"intermediate"`` in between; ``"none"`` if kappa is NaN (no valley). The paper
    defines U by ``kappa <= 1 + delta`` and V by ``kappa >> 1`` without numbers; the
    defaults (delta = 1, i.e. ``kappa_u = 2``; one decade, ``kappa_v = 10``) are ours,
    chosen before seeing any data, and are parameters, not tuned constants.

    Args:
        kappa: condition number of the valley block (>= 1, or NaN).
        kappa_u: upper bound of U (>= 1).
        kappa_v: lower bound of V (> kappa_u).

    Returns:
        The label.
    """
    if not 1.0 <= kappa_u < kappa_v:
        raise LandscapeError(f"need 1 <= kappa_u < kappa_v, got {kappa_u}, {kappa_v}")
    if math.isnan(kappa):
        return "none"
    if kappa <= kappa_u:
        return "U"
    if kappa >= kappa_v:
        return "V"
    return "intermediate"


def _thresholds(
    lambda_max: float, eps: float | None, eps_rel: float, tau: float | None, tau_rel: float
) -> tuple[float, float]:
    """Absolute (eps, tau) from absolute or lambda_max-relative values."""
    if eps is None or tau is None:
        if not (lambda_max > 0 and math.isfinite(lambda_max)):
            raise LandscapeError(
                f"lambda_max = {lambda_max} is not positive, so relative thresholds are "
                "undefined; pass absolute eps and tau"
            )
    if eps is None:
        if not 0 < eps_rel < 1:
            raise LandscapeError(f"eps_rel must be in (0, 1), got {eps_rel}")
        eps = eps_rel * lambda_max
    if tau is None:
        if not 0 < tau_rel <= 1:
            raise LandscapeError(f"tau_rel must be in (0, 1], got {tau_rel}")
        tau = tau_rel * lambda_max
    if not (eps >= 0 and math.isfinite(eps)):
        raise LandscapeError(f"eps must be finite and >= 0, got {eps}")
    if not tau >= eps:
        raise LandscapeError(f"tau ({tau}) must be >= eps ({eps})")
    return float(eps), float(tau)


def _vector(x: object, name: str) -> np.ndarray:
    """A finite, non-empty 1-D float64 array, or a LandscapeError."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise LandscapeError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise LandscapeError(f"{name} contains NaN or inf; probe it again")
    return a


def split_spectrum(
    eigvals: np.ndarray,
    eps: float | None = None,
    *,
    eps_rel: float = EPS_REL,
    tau: float | None = None,
    tau_rel: float = TAU_REL,
    kappa_u: float = KAPPA_U,
    kappa_v: float = KAPPA_V,
) -> SpectrumSplit:
    """Split an exact spectrum into river, valley and negative curvature.

    The threshold is relative to lambda_max by default (``eps = eps_rel * lambda_max``):
    the loss scale, and with it the whole spectrum, changes by orders of magnitude over
    training, and a relative threshold makes the split scale-free, so checkpoints (and
    two models) are compared at the same *conditioning* cut rather than at a number that
    means "flat" early and "steep" late. An absolute ``eps`` is used as given.

    Args:
        eigvals: ``[n]`` Hessian eigenvalues (any order; the full spectrum for exact
            dimensions, or a subset, in which case the counts are of that subset).
        eps: absolute river threshold; ``None`` for ``eps_rel * lambda_max``.
        eps_rel: relative river threshold, in (0, 1).
        tau: absolute upper bound of the small-eigenvalue band; ``None`` for
            ``tau_rel * lambda_max``. Must be >= eps.
        tau_rel: relative band bound, in (0, 1].
        kappa_u: U/V rule, see :func:`uv_label`.
        kappa_v: U/V rule, see :func:`uv_label`.

    Returns:
        The split, see :class:`SpectrumSplit`.

    Raises:
        LandscapeError: empty or non-finite eigenvalues, lambda_max <= 0 with a relative
            threshold, tau < eps, bad kappa bounds.
    """
    lam = _vector(eigvals, "eigvals")
    lmax = float(lam.max())
    eps, tau = _thresholds(lmax, eps, eps_rel, tau, tau_rel)
    valley = lam[lam > eps]
    small = valley[valley <= tau]
    vmin = float(valley.min()) if valley.size else math.nan
    kappa = lmax / vmin if valley.size else math.nan
    return SpectrumSplit(
        eps=eps,
        tau=tau,
        lambda_max=lmax,
        dim=lam.size,
        river_dim=int(np.count_nonzero(np.abs(lam) <= eps)),
        valley_dim=int(valley.size),
        negative_dim=int(np.count_nonzero(lam < -eps)),
        valley_min=vmin,
        kappa=kappa,
        small_count=int(small.size),
        small_force=float(np.sum(1.0 / small)),
        valley_force=float(np.sum(1.0 / valley)),
        label=uv_label(kappa, kappa_u, kappa_v),
    )


# ----------------------------------------------------------------------- SLQ split


@dataclass(frozen=True)
class SlqSplit:
    """The river/valley split estimated from a stochastic Lanczos quadrature density.

    Counts are estimated as ``dim * (quadrature weight in the band)``, averaged over the
    SLQ runs (independent start vectors); each ``*_se`` is the standard error of that
    mean over the runs (NaN with a single run). The standard error measures the start-
    vector noise only: the quadrature's own bias (an m-node Gauss rule cannot resolve a
    sharp threshold finer than about the spectral width over m) is not in it.

    Attributes:
        eps: absolute river threshold used.
        tau: absolute upper bound of the small-eigenvalue band.
        lambda_max: the largest eigenvalue used for relative thresholds and kappa (given,
            or the largest Ritz value over all runs, which approaches it from below).
        dim: the operator dimension P.
        runs: number of SLQ runs.
        river_dim: estimated count of ``|lambda| <= eps``.
        river_dim_se: its standard error.
        valley_dim: estimated count of ``lambda > eps``.
        valley_dim_se: its standard error.
        negative_dim: estimated count of ``lambda < -eps``.
        negative_dim_se: its standard error.
        small_count: estimated count of eigenvalues in (eps, tau].
        small_count_se: its standard error.
        small_force: estimated sum of ``1/lambda`` over (eps, tau] (``dim * sum w/node``).
        small_force_se: its standard error.
        valley_min: the smallest valley eigenvalue used for kappa (given, or the smallest
            Ritz value above eps over all runs; see ``kappa_source``).
        kappa: ``lambda_max / valley_min``; NaN if no node lies above eps.
        kappa_source: "given" (both ends supplied, e.g. from converged Lanczos), "ritz"
            (both from the SLQ nodes) or "mixed".
        label: U/V label of ``kappa``, see :func:`uv_label`.
    """

    eps: float
    tau: float
    lambda_max: float
    dim: int
    runs: int
    river_dim: float
    river_dim_se: float
    valley_dim: float
    valley_dim_se: float
    negative_dim: float
    negative_dim_se: float
    small_count: float
    small_count_se: float
    small_force: float
    small_force_se: float
    valley_min: float
    kappa: float
    kappa_source: str
    label: str


def _slq_inputs(nodes: object, weights: object) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``[runs, m]`` nodes and per-run normalised weights."""
    x = np.asarray(nodes, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if x.ndim != 2 or x.shape != w.shape or x.size == 0:
        raise LandscapeError(
            f"SLQ nodes and weights must both be [runs, m], got {x.shape} and {w.shape}"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(w))):
        raise LandscapeError("SLQ nodes or weights contain NaN or inf; probe it again")
    if np.any(w < 0):
        raise LandscapeError("SLQ weights must be >= 0 (squared first eigenvector components)")
    total = w.sum(axis=1)
    if np.any(np.abs(total - 1.0) > 1e-3):
        raise LandscapeError(
            f"SLQ weights must sum to 1 per run, got sums in [{total.min():.4g}, "
            f"{total.max():.4g}]; pass squared first components of a unit start vector"
        )
    return x, w / total[:, None]


def _mean_se(per_run: np.ndarray) -> tuple[float, float]:
    """Mean over runs and its standard error (NaN for one run)."""
    if per_run.size < 2:
        return float(per_run.mean()), math.nan
    return float(per_run.mean()), float(per_run.std(ddof=1) / math.sqrt(per_run.size))


def split_from_slq(
    nodes: np.ndarray,
    weights: np.ndarray,
    dim: int,
    eps: float | None = None,
    *,
    eps_rel: float = EPS_REL,
    tau: float | None = None,
    tau_rel: float = TAU_REL,
    lambda_max: float | None = None,
    valley_min: float | None = None,
    kappa_u: float = KAPPA_U,
    kappa_v: float = KAPPA_V,
) -> SlqSplit:
    """Estimate the river/valley split from SLQ nodes and weights.

    Each run r gives a quadrature rule (nodes ``x[r]``, weights ``w[r]``, summing to 1)
    for the spectral density ``(1/P) sum_i delta(lambda - lambda_i)``; any count
    ``#{i: lambda_i in B}`` is estimated as ``P * sum_j w[r, j] [x[r, j] in B]`` and any
    sum ``sum_{i in B} f(lambda_i)`` as ``P * sum_j w[r, j] f(x[r, j])``.

    What SLQ cannot estimate: kappa(H_valley) needs the *smallest valley eigenvalue*, an
    individual interior eigenvalue, which a density does not carry. Only the extreme Ritz
    values converge to eigenvalues; an interior Ritz value just above eps can sit in a
    gap of the spectrum. So pass ``lambda_max`` (top-k Lanczos) and ``valley_min`` (the
    bottom of the valley from a Lanczos run, e.g. on the operator restricted above eps)
    when you have them; otherwise they are read off the Ritz values and ``kappa_source``
    says "ritz": treat that kappa as indicative only.

    Args:
        nodes: ``[runs, m]`` Ritz values (eigenvalues of each Lanczos tridiagonal).
        weights: ``[runs, m]`` squared first components of the tridiagonal eigenvectors.
        dim: P, the dimension of the Hessian.
        eps: absolute river threshold; ``None`` for ``eps_rel * lambda_max``.
        eps_rel: relative river threshold, in (0, 1).
        tau: absolute small-band bound; ``None`` for ``tau_rel * lambda_max``.
        tau_rel: relative band bound, in (0, 1].
        lambda_max: a converged largest eigenvalue, or ``None`` for the largest node.
        valley_min: a converged smallest valley eigenvalue, or ``None`` for the smallest
            node above eps.
        kappa_u: U/V rule, see :func:`uv_label`.
        kappa_v: U/V rule, see :func:`uv_label`.

    Returns:
        The estimated split, see :class:`SlqSplit`.

    Raises:
        LandscapeError: malformed nodes/weights, weights not summing to 1 per run,
            dim < 1, or the threshold errors of :func:`split_spectrum`.
    """
    x, w = _slq_inputs(nodes, weights)
    if int(dim) != dim or dim < 1:
        raise LandscapeError(f"dim must be a positive integer (P), got {dim}")
    lmax = float(x.max()) if lambda_max is None else float(lambda_max)
    eps, tau = _thresholds(lmax, eps, eps_rel, tau, tau_rel)
    in_small = (x > eps) & (x <= tau)
    safe = np.where(in_small, x, 1.0)
    est = {
        "river": (np.abs(x) <= eps),
        "valley": (x > eps),
        "negative": (x < -eps),
        "small": in_small,
    }
    stats = {k: _mean_se(dim * np.sum(w * m, axis=1)) for k, m in est.items()}
    force = _mean_se(dim * np.sum(np.where(in_small, w / safe, 0.0), axis=1))
    if valley_min is not None and not (valley_min > eps and math.isfinite(valley_min)):
        raise LandscapeError(f"valley_min ({valley_min}) must be finite and > eps ({eps})")
    above = x[x > eps]
    vmin = (float(above.min()) if above.size else math.nan) if valley_min is None else valley_min
    kappa = lmax / vmin if above.size or valley_min is not None else math.nan
    given = (lambda_max is not None) + (valley_min is not None)
    return SlqSplit(
        eps=eps, tau=tau, lambda_max=lmax, dim=int(dim), runs=x.shape[0],
        river_dim=stats["river"][0], river_dim_se=stats["river"][1],
        valley_dim=stats["valley"][0], valley_dim_se=stats["valley"][1],
        negative_dim=stats["negative"][0], negative_dim_se=stats["negative"][1],
        small_count=stats["small"][0], small_count_se=stats["small"][1],
        small_force=force[0], small_force_se=force[1],
        valley_min=float(vmin), kappa=kappa,
        kappa_source=("ritz", "mixed", "given")[given],
        label=uv_label(kappa, kappa_u, kappa_v),
    )  # fmt: skip


# --------------------------------------------------------------------------- width


@dataclass(frozen=True)
class ValleyWidth:
    """Width of a 1-D loss slice at a rise delta above the loss at the origin.

    Attributes:
        delta: the loss rise.
        loss0: the loss at alpha = 0.
        left: distance from 0 to the first point on the negative side where the loss
            has risen by delta (inf if it never does within the grid).
        right: the same on the positive side.
        width: ``left + right`` (inf if either side never rises).
        left_reached: whether the left side rose by delta within the grid.
        right_reached: whether the right side rose by delta within the grid.
        quadratic: ``quadratic_width(lam, delta)`` if a curvature was given, else NaN.
        ratio: ``width / quadratic`` (NaN without a curvature; inf if a side never rose).
    """

    delta: float
    loss0: float
    left: float
    right: float
    width: float
    left_reached: bool
    right_reached: bool
    quadratic: float
    ratio: float


def quadratic_width(lam: float, delta: float) -> float:
    """Full width at a rise delta of the parabola ``0.5 * lam * x**2``: ``2 sqrt(2 delta/lam)``.

    Args:
        lam: curvature along the (unit-norm) direction, > 0.
        delta: loss rise, > 0.

    Returns:
        The full width.
    """
    if not (lam > 0 and math.isfinite(lam)):
        raise LandscapeError(f"the curvature lam must be finite and > 0, got {lam}")
    if not (delta > 0 and math.isfinite(delta)):
        raise LandscapeError(f"delta must be finite and > 0, got {delta}")
    return 2.0 * math.sqrt(2.0 * delta / lam)


def vee_width_ratio(lam: float, slope: float, delta: float) -> float:
    """The measured/quadratic width ratio of a V-shaped wall with a parabolic tip.

    How to read ``ValleyWidth.ratio``: the quadratic prediction uses the curvature at the
    bottom (the Hessian eigenvalue lam). A wall that *is* that parabola out to height
    delta gives ratio 1. A V-shaped wall, rising linearly with slope s once past a
    rounded tip of curvature lam (the Huber wall: ``0.5 lam x^2`` for ``|x| <= a``,
    ``s |x| - s a / 2`` beyond, with ``a = s / lam`` for a smooth joint), has half-width
    ``sqrt(2 delta / lam)`` while ``delta <= delta_c = s^2 / (2 lam)`` and
    ``delta / s + a / 2`` beyond. With ``u = delta / delta_c = 2 delta lam / s^2``:

        ratio = 1                         for u <= 1,
        ratio = (1 + u) / (2 sqrt(u))     for u >  1   (>= 1, growing like sqrt(u) / 2).

    A sharp V (tip much narrower than the grid) is the limit u >> 1:
    ``ratio -> sqrt(lam * delta / 2) / s``. So a ratio above 1 that grows with delta
    reads "walls rise linearly, V-like"; a ratio below 1 reads "walls steeper than the
    bottom curvature predicts" (super-quadratic, e.g. a quartic cliff).

    Args:
        lam: curvature of the tip (> 0).
        slope: slope of the linear walls (> 0).
        delta: loss rise (> 0).

    Returns:
        The ratio measured width / ``quadratic_width(lam, delta)``.
    """
    quadratic_width(lam, delta)  # validates lam and delta
    if not (slope > 0 and math.isfinite(slope)):
        raise LandscapeError(f"slope must be finite and > 0, got {slope}")
    u = 2.0 * delta * lam / slope**2
    return 1.0 if u <= 1.0 else (1.0 + u) / (2.0 * math.sqrt(u))


def _first_rise(alphas: np.ndarray, rise: np.ndarray, delta: float) -> float:
    """Distance from ``alphas[0]`` to the first crossing of ``rise >= delta``.

    ``alphas`` are distances from the origin (increasing), ``rise = loss - loss0``;
    linear interpolation between the bracketing grid points; inf if never reached.
    """
    hit = np.flatnonzero(rise >= delta)
    if hit.size == 0:
        return math.inf
    j = int(hit[0])  # j >= 1 since rise[0] = 0 < delta
    t = (delta - rise[j - 1]) / (rise[j] - rise[j - 1])
    return float(alphas[j - 1] + t * (alphas[j] - alphas[j - 1]))


def valley_width(
    alphas: np.ndarray, losses: np.ndarray, delta: float, lam: float | None = None
) -> ValleyWidth:
    """Half-widths of a 1-D slice at a loss rise delta, beside the quadratic prediction.

    Walking outward from alpha = 0 on each side, the half-width is where the loss first
    reaches ``loss(0) + delta``, linearly interpolated between grid points (the first
    crossing, so a later, deeper dip does not count). Along a unit-norm direction the
    widths are in parameter-norm units.

    Args:
        alphas: ``[n]`` strictly increasing grid coordinates including 0 (an odd,
            symmetric grid has it as its middle point).
        losses: ``[n]`` finite losses at those coordinates.
        delta: the loss rise, > 0.
        lam: the curvature along the direction (e.g. its Hessian eigenvalue), for the
            quadratic prediction; ``None`` to skip it.

    Returns:
        The widths, see :class:`ValleyWidth`; read ``ratio`` with
        :func:`vee_width_ratio`.

    Raises:
        LandscapeError: shapes differ, non-finite values, alphas not increasing or
            without 0, delta <= 0.
    """
    a, f = _vector(alphas, "alphas"), _vector(losses, "losses")
    if a.shape != f.shape:
        raise LandscapeError(f"alphas {a.shape} and losses {f.shape} differ in shape")
    if not (delta > 0 and math.isfinite(delta)):
        raise LandscapeError(f"delta must be finite and > 0, got {delta}")
    if np.any(np.diff(a) <= 0):
        raise LandscapeError("alphas must be strictly increasing")
    i0 = int(np.argmin(np.abs(a)))
    if abs(a[i0]) > 1e-9 * (a[-1] - a[0] + 1e-300):
        raise LandscapeError("alphas must contain 0 (use an odd grid symmetric about 0)")
    rise = f - f[i0]
    right = _first_rise(a[i0:] - a[i0], rise[i0:], delta)
    left = _first_rise(a[i0] - a[: i0 + 1][::-1], rise[: i0 + 1][::-1], delta)
    width = left + right
    quad = math.nan if lam is None else quadratic_width(lam, delta)
    return ValleyWidth(
        delta=float(delta), loss0=float(f[i0]), left=left, right=right, width=width,
        left_reached=math.isfinite(left), right_reached=math.isfinite(right),
        quadratic=quad, ratio=width / quad if lam is not None else math.nan,
    )  # fmt: skip


# --------------------------------------------------------------------------- river


@dataclass(frozen=True)
class RiverDirection:
    """The river direction around a checkpoint.

    Attributes:
        direction: ``[P]`` unit vector: the displacement with the valley subspace
            projected out. All NaN when ``degenerate`` (loud rather than a silent zero).
        step_norm: norm of the displacement.
        river_norm: norm of its river (valley-free) component.
        valley_fraction: ``||valley component||^2 / ||displacement||^2`` (NaN for a zero
            displacement).
        degenerate: True when the river component vanishes, i.e. ``river_norm <=
            rtol * step_norm``: the checkpoint did not move, or moved only within the
            valley subspace (pure valley oscillation). No river direction is defined.
    """

    direction: np.ndarray
    step_norm: float
    river_norm: float
    valley_fraction: float
    degenerate: bool


def _orthonormal(basis: object, dim: int, rank_rtol: float = 1e-10) -> np.ndarray:
    """An orthonormal ``[P, k']`` basis of the span of ``basis`` ``[P, k]`` (or ``[P]``)."""
    b = np.asarray(basis, dtype=np.float64)
    if b.ndim == 1:
        b = b[:, None]
    if b.ndim != 2 or b.shape[0] != dim:
        raise LandscapeError(f"valley basis must be [P={dim}, k], got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise LandscapeError("valley basis contains NaN or inf")
    if b.shape[1] == 0:
        return b
    u, s, _ = np.linalg.svd(b, full_matrices=False)
    return u[:, s > rank_rtol * s.max()] if s.max() > 0 else u[:, :0]


def river_direction(
    theta_prev: np.ndarray, theta_next: np.ndarray, valley_basis: np.ndarray, rtol: float = 1e-8
) -> RiverDirection:
    """The displacement ``theta_next - theta_prev`` with the valley projected out, normalised.

    The valley basis need not be orthonormal: its span is used (orthonormalised by SVD,
    dropping directions below ``1e-10`` of the largest singular value).

    Args:
        theta_prev: ``[P]`` parameters before the checkpoint.
        theta_next: ``[P]`` parameters after it.
        valley_basis: ``[P, k]`` valley directions (e.g. top Hessian eigenvectors above eps).
        rtol: degeneracy tolerance, see :class:`RiverDirection`.

    Returns:
        The direction and how much of the step it carries.
    """
    a, b = _vector(theta_prev, "theta_prev"), _vector(theta_next, "theta_next")
    if a.shape != b.shape:
        raise LandscapeError(f"theta_prev {a.shape} and theta_next {b.shape} differ in shape")
    q = _orthonormal(valley_basis, a.size)
    d = b - a
    r = d - q @ (q.T @ d)
    step, river = float(np.linalg.norm(d)), float(np.linalg.norm(r))
    frac = math.nan if step == 0 else float(np.linalg.norm(q.T @ d) ** 2 / step**2)
    degenerate = step == 0 or river <= rtol * step
    direction = np.full(a.size, np.nan) if degenerate else r / river
    return RiverDirection(direction, step, river, frac, degenerate)


@dataclass(frozen=True)
class RiverProgress:
    """Cumulative progress of a trajectory along the river.

    Attributes:
        progress: ``[n]`` cumulative river progress, ``progress[0] = 0``.
        river_steps: ``[n-1]`` each step's river component: the signed projection on the
            river direction (``signed``), or the norm of the valley-free part.
        off_river_steps: ``[n-1]`` norm of the rest of each step.
        signed: True for a river direction (signed progress), False for a valley basis
            (unsigned river path length).
    """

    progress: np.ndarray
    river_steps: np.ndarray
    off_river_steps: np.ndarray
    signed: bool


def _river_dirs(river_dir: object, n_steps: int, dim: int) -> np.ndarray:
    """``[n-1, P]`` unit river directions from one ``[P]`` or per-step ``[n-1, P]``."""
    u = np.asarray(river_dir, dtype=np.float64)
    if u.ndim == 1:
        u = np.broadcast_to(u, (n_steps, u.size))
    if u.shape != (n_steps, dim):
        raise LandscapeError(f"river_dir must be [P={dim}] or [n-1={n_steps}, P], got {u.shape}")
    norm = np.linalg.norm(u, axis=1) if np.all(np.isfinite(u)) else np.zeros(n_steps)
    if np.any(norm == 0):
        raise LandscapeError("a river direction is zero or not finite (degenerate step?)")
    return u / norm[:, None]


def _step_bases(valley_basis: object, n_steps: int, dim: int) -> list[np.ndarray]:
    """One orthonormal valley basis per step, from a fixed ``[P, k]`` or a per-step sequence."""
    if isinstance(valley_basis, np.ndarray) and valley_basis.ndim <= 2:
        return [_orthonormal(valley_basis, dim)] * n_steps
    bases = list(valley_basis)  # type: ignore[call-overload]
    if len(bases) != n_steps:
        raise LandscapeError(f"need one valley basis per step ({n_steps}), got {len(bases)}")
    return [_orthonormal(b, dim) for b in bases]


def river_progress(
    trajectory: np.ndarray,
    *,
    river_dir: np.ndarray | None = None,
    valley_basis: np.ndarray | Sequence[np.ndarray] | None = None,
) -> RiverProgress:
    """Cumulative projection of the trajectory's displacements on the river.

    With ``river_dir`` (one ``[P]`` direction, or one per step ``[n-1, P]``, normalised
    here), step s contributes ``(theta[s+1] - theta[s]) . u_s`` (signed); for a fixed
    direction the progress is ``(theta[t] - theta[0]) . u``. With ``valley_basis`` (one
    ``[P, k]`` basis, or a sequence of n-1 bases, one per step, k may vary), step s
    contributes the norm of its valley-free part (an unsigned river path length).

    Args:
        trajectory: ``[n, P]`` parameters at the checkpoints, n >= 2.
        river_dir: river direction(s); exclusive with ``valley_basis``.
        valley_basis: valley basis (bases); exclusive with ``river_dir``.

    Returns:
        The progress, see :class:`RiverProgress`.
    """
    th = np.asarray(trajectory, dtype=np.float64)
    if th.ndim != 2 or th.shape[0] < 2 or not np.all(np.isfinite(th)):
        raise LandscapeError(f"trajectory must be a finite [n >= 2, P] array, got {th.shape}")
    if (river_dir is None) == (valley_basis is None):
        raise LandscapeError("pass exactly one of river_dir and valley_basis")
    steps = np.diff(th, axis=0)
    n, dim = steps.shape
    if river_dir is not None:
        u = _river_dirs(river_dir, n, dim)
        along = np.einsum("sp,sp->s", steps, u)
        off = np.linalg.norm(steps - along[:, None] * u, axis=1)
    else:
        qs = _step_bases(valley_basis, n, dim)
        valley = np.stack([q @ (q.T @ d) for q, d in zip(qs, steps)])
        along = np.linalg.norm(steps - valley, axis=1)
        off = np.linalg.norm(valley, axis=1)
    progress = np.concatenate([[0.0], np.cumsum(along)])
    return RiverProgress(progress, along, off, signed=river_dir is not None)
