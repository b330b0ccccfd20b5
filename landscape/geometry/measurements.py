"""Composite River-Valley measurements on a ``(loss_fn, params)`` pair.

Each function combines the primitives (:mod:`landscape.curvature.spectral`,
:mod:`landscape.geometry.slices`, :mod:`landscape.geometry.valley`) into one measurement a notebook
can call on any model, and the
probe driver stores per checkpoint:

* :func:`valley_widths` -- 1-D slices along unit Hessian eigenvectors and the width at a
  loss rise ``delta`` on each, beside the quadratic prediction ``2 sqrt(2 delta / lambda)``;
* :func:`loop_curve` -- loss and lambda_max as a function of the number of loops at
  fixed weights;
* :func:`unit_direction` -- a flat vector as a unit-norm direction dict;
* :func:`direction_rises` -- the symmetric loss rise along many directions at one
  distance (the direction-spread measurement of :mod:`landscape.geometry.uv_measures`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from landscape.curvature.hessian import HessianOperator
from landscape.curvature.objective import LossFn, ParamLayout
from landscape.curvature.spectral import lanczos
from landscape.errors import LandscapeError
from landscape.geometry.slices import loss_grid, make_axis
from landscape.geometry.valley import quadratic_width, valley_width


def unit_direction(layout: ParamLayout, vec) -> dict[str, torch.Tensor]:
    """The flat ``[P]`` vector ``vec`` scaled to unit norm, as a direction dict (float64)."""
    v = torch.as_tensor(np.asarray(vec, dtype=np.float64))
    norm = float(v.norm())
    if not math.isfinite(norm) or norm == 0.0:
        raise LandscapeError("a direction is zero or not finite")
    return {k: t.clone() for k, t in layout.unflatten(v / norm).items()}


def valley_widths(loss_fn: LossFn, params: Mapping[str, torch.Tensor], vectors, values,
                  delta: float, n_points: int = 31, span: float = 3.0) -> dict[str, np.ndarray]:
    """Widths of the loss along Hessian eigenvectors at a loss rise ``delta``.

    Along each unit eigenvector ``u_i`` with eigenvalue ``lambda_i > 0`` the loss is sliced
    on ``[-s_i, s_i]`` with ``s_i = span * sqrt(2 delta / lambda_i)`` (``span`` times the
    quadratic half-width, so a parabola crosses ``delta`` at a third of the grid by
    default), and the width is read with :func:`landscape.geometry.valley.valley_width`.

    Args:
        loss_fn: the objective.
        params: where to slice.
        vectors: ``[P, k]`` eigenvectors (columns; ParamLayout order of ``params``).
        values: ``[k]`` their eigenvalues (all > 0).
        delta: the loss rise (nats).
        n_points: grid points per slice (odd).
        span: grid half-length in quadratic half-widths.

    Returns:
        Arrays: ``alphas`` ``[k, n]``, ``losses`` ``[k, n]``, ``lam``, ``left``, ``right``,
        ``width``, ``quadratic``, ``ratio`` (each ``[k]``).
    """
    layout = ParamLayout.of(params)
    vecs = np.asarray(vectors, dtype=np.float64)
    lams = np.asarray(values, dtype=np.float64)
    if vecs.ndim != 2 or vecs.shape != (layout.size, lams.size):
        raise LandscapeError(f"vectors must be [P={layout.size}, k={lams.size}], got {vecs.shape}")
    if np.any(lams <= 0) or delta <= 0:
        raise LandscapeError("valley widths need positive eigenvalues and delta > 0")
    out: dict[str, list] = {k: [] for k in ("alphas", "losses", "left", "right", "width",
                                            "quadratic", "ratio")}
    for i, lam in enumerate(lams):
        half = span * quadratic_width(lam, delta) / 2
        alphas = make_axis(-half, half, n_points)
        losses = loss_grid(loss_fn, params, unit_direction(layout, vecs[:, i]), alphas)
        w = valley_width(alphas, losses, delta, lam=float(lam))
        for key, value in (("alphas", alphas), ("losses", losses), ("left", w.left),
                           ("right", w.right), ("width", w.width), ("quadratic", w.quadratic),
                           ("ratio", w.ratio)):
            out[key].append(value)
    return {"lam": lams, **{k: np.asarray(v) for k, v in out.items()}}


def loop_curve(loss_fn_at: Callable[[int], LossFn], params: Mapping[str, torch.Tensor],
               loops: Sequence[int], tol: float = 1e-3,
               max_steps: int = 80) -> dict[str, np.ndarray]:
    """Loss and top Hessian eigenvalue at fixed weights as the number of loops varies.

    Args:
        loss_fn_at: ``loss_fn_at(n)`` is the objective with ``n`` loops.
        params: the fixed weights.
        loops: loop counts to evaluate.
        tol: Lanczos tolerance for lambda_max (relative residual).
        max_steps: Lanczos step cap per loop count.

    Returns:
        ``loops``, ``loss``, ``lambda_max``, ``converged`` and ``hvps`` arrays.
    """
    res: dict[str, list] = {"loss": [], "lambda_max": [], "converged": [], "hvps": []}
    for n in loops:
        op = HessianOperator(loss_fn_at(int(n)), params)
        top = lanczos(op, k_top=1, tol=tol, max_steps=min(max_steps, op.dim))
        res["loss"].append(op.loss)
        res["lambda_max"].append(float(top.top_values[0]))
        res["converged"].append(bool(top.top_converged[0]))
        res["hvps"].append(top.n_matvec)
        del op
    return {"loops": np.asarray(loops, dtype=np.int64), **{k: np.asarray(v) for k, v in
                                                            res.items()}}


def direction_rises(loss_fn: LossFn, params: Mapping[str, torch.Tensor], directions,
                    radius: float, scale=None) -> np.ndarray:
    """Symmetric loss rise along each direction at a distance ``radius``.

    The rise along ``u`` is ``(L(theta + r s*u) + L(theta - r s*u)) / 2 - L(theta)`` (``s``
    the optional per-coordinate ``scale``): the average of both sides cancels every odd
    term of the Taylor series (the gradient's above all), so on a quadratic it is exactly
    ``r^2/2 (s*u)' H (s*u)``. With ``scale = D^-1/2`` (AdamW's denominator, see
    :func:`landscape.geometry.uv_measures.precondition_denominator`) the rises are those of the
    Adam-preconditioned Hessian ``D^-1/2 H D^-1/2`` along ``u``.

    Args:
        loss_fn: the objective.
        params: the point.
        directions: ``[n, P]`` directions (unit norm for a rise per unit distance).
        radius: the distance r (> 0).
        scale: ``[P]`` per-coordinate scale applied to each direction, or None.

    Returns:
        ``[n]`` float64 rises.
    """
    layout = ParamLayout.of(params)
    dirs = np.asarray(directions, dtype=np.float64)
    if dirs.ndim != 2 or dirs.shape[1] != layout.size or not np.all(np.isfinite(dirs)):
        raise LandscapeError(f"directions must be a finite [n, P={layout.size}] array, got "
                             f"{dirs.shape}")
    if not (radius > 0 and math.isfinite(radius)):
        raise LandscapeError(f"radius must be finite and > 0, got {radius}")
    if scale is not None:
        s = np.asarray(scale, dtype=np.float64)
        if s.shape != (layout.size,) or not np.all(np.isfinite(s)):
            raise LandscapeError(f"scale must be a finite [P={layout.size}] vector")
        dirs = dirs * s[None, :]
    theta = layout.flatten(params).detach()
    step = torch.as_tensor(dirs * radius, dtype=theta.dtype, device=theta.device)
    with torch.no_grad():
        base = float(loss_fn(params))
        out = np.empty(dirs.shape[0])
        for i in range(dirs.shape[0]):
            up = float(loss_fn(layout.unflatten(theta + step[i])))
            down = float(loss_fn(layout.unflatten(theta - step[i])))
            out[i] = 0.5 * (up + down) - base
    return out


def valley_spread(loss_fn: LossFn, params: Mapping[str, torch.Tensor], vectors, top: float,
                  n_dirs: int = 32, delta: float = 0.02, seed: int = 0,
                  scale=None) -> dict:
    """How varied the steepness of the valley's cliffs is: the direction-spread measurement.

    ``n_dirs`` random unit directions uniform on the sphere of the span of ``vectors``
    (:func:`landscape.geometry.uv_measures.valley_directions`); along each, the symmetric loss rise
    at the distance ``r = sqrt(2 delta / top)`` (where a quadratic with the top curvature rises
    by ``delta``), see :func:`direction_rises`; their spread by
    :func:`landscape.geometry.uv_measures.spread`. A River-U valley gives rises that hardly vary
    (CV near 0), a River-V valley rises
    that vary by orders of magnitude. With ``scale = D^-1/2`` and the top eigenvectors of
    ``D^-1/2 H D^-1/2`` it measures the Adam-preconditioned valley.

    Args:
        loss_fn: the objective.
        params: the checkpoint.
        vectors: ``[k, P]`` the top valley eigenvectors (rows).
        top: the largest eigenvalue (> 0), for the distance.
        n_dirs: number of random directions (>= 2).
        delta: the loss rise setting the distance.
        seed: the directions' seed.
        scale: ``[P]`` per-coordinate scale of the directions, or None.

    Returns:
        ``{"rises": [n], "radius", "k", "n", "mean", "cv", "p90_p10"}``.
    """
    from landscape.geometry.uv_measures import spread, valley_directions

    v = np.asarray(vectors, dtype=np.float64)
    if not (top > 0 and math.isfinite(top)) or not (delta > 0 and math.isfinite(delta)):
        raise LandscapeError(f"valley_spread needs top > 0 and delta > 0 (got {top}, {delta})")
    radius = math.sqrt(2.0 * delta / top)
    dirs = valley_directions(v.T, n_dirs, seed=seed)
    rises = direction_rises(loss_fn, params, dirs, radius, scale=scale)
    s = spread(rises)
    return {"rises": rises, "radius": radius, "k": int(v.shape[0]), "n": s.n, "mean": s.mean,
            "cv": s.cv, "p90_p10": s.p90_p10}
