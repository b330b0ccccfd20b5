"""Valley hopping step by step: a window's per-step updates in a valley basis.

Pure numpy. :mod:`landscape.geometry.hopping` measures hopping between stored checkpoints,
an epoch (e.g. 32 optimiser steps) apart. A valley coordinate that flips sign at every
step, ``a, -a, a, -a, ...``, has the same sign again after any even number of steps, so
at that spacing a pure step-to-step hop is invisible (hop fraction 0). A per-step window
(:class:`landscape.runfile.windows.Window`) stores every step's update; this module reads
the hopping off those.

Definitions. The input is ``n`` consecutive updates ``d_t = theta_{t+1} - theta_t``
(``[n, P]``, rows ``t = 0..n-1``), an orthonormal valley basis ``V`` (``[k, P]``, rows:
the valley directions, e.g. top Hessian eigenvectors at the window's start) and a unit
river direction ``u`` (``[P]``, orthogonal to the rows of ``V``). Per step ``t``:

* valley coordinates ``a_t = V d_t`` (``[k]``): how far the step moved along each
  valley direction;
* hops ``h_{t,i} = a_{t,i} * a_{t-1,i} < 0`` for ``t >= 1``: coordinate ``i`` reversed
  its direction from step ``t-1`` to step ``t`` (the iterate crossed the valley floor
  along that direction and is heading back); a zero coordinate never hops;
* hop fraction ``f_t = mean_i h_{t,i}`` (``t >= 1``): the fraction of the ``k`` valley
  coordinates that changed sign from the previous step;
* oscillation amplitude ``A_t = sqrt(mean_i a_{t,i}^2)``: the RMS over the valley
  coordinates of the step's valley displacement (``||a_t|| / sqrt(k)``);
* river progress ``p_t = u . d_t``: the step's displacement along the river (positive
  in the direction ``u`` points).

On gradient descent over a quadratic valley with curvature ``lam_i`` along valley
direction ``i`` and step ``eta`` (the simulator's no-feedback model), ``a_{t,i} = -eta
lam_i (1 - eta lam_i)^t v_i[0]``: mode ``i`` hops at every step iff ``eta lam_i > 1``, so
``f_t`` is exactly the fraction of such modes, while updates summed over any even number
of steps never change sign (tested in ``tests/geometry/test_per_step.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from landscape.errors import LandscapeError

TOL = 1e-4
"""Tolerance of the orthonormality checks (float32 eigenvectors are orthonormal to ~1e-6)."""


@dataclass(frozen=True)
class PerStepHopping:
    """Per-step hopping over one window of ``n`` updates (see the module's definitions).

    Attributes:
        valley: ``[n, k]`` valley coordinates ``a_t`` of each update.
        hops: ``[n-1, k]`` bool, coordinate ``i`` changed sign from step ``t-1`` to ``t``
            (row ``t-1`` holds step ``t``).
        hop_fraction: ``[n-1]`` fraction of valley coordinates that hopped at steps
            ``1..n-1``.
        amplitude: ``[n]`` RMS valley displacement of each update.
        river: ``[n]`` progress along the river direction of each update.
    """

    valley: np.ndarray
    hops: np.ndarray
    hop_fraction: np.ndarray
    amplitude: np.ndarray
    river: np.ndarray

    @property
    def mean_hop_fraction(self) -> float:
        """The hop fraction averaged over the window's steps (NaN for one update)."""
        return float(self.hop_fraction.mean()) if self.hop_fraction.size else float("nan")


def updates_of(params: object) -> np.ndarray:
    """``[n, P]`` updates ``theta_{t+1} - theta_t`` of ``[n+1, P]`` consecutive parameters.

    >>> updates_of([[0.0, 1.0], [1.0, 1.0], [0.0, 3.0]]).tolist()
    [[1.0, 0.0], [-1.0, 2.0]]
    """
    th = np.asarray(params, dtype=np.float64)
    if th.ndim != 2 or th.shape[0] < 2 or not np.all(np.isfinite(th)):
        raise LandscapeError(f"parameters must be a finite [n+1 >= 2, P] array, got {th.shape}")
    return np.diff(th, axis=0)


def _valley_basis(valley: object, dim: int) -> np.ndarray:
    v = np.asarray(valley, dtype=np.float64)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != dim or v.shape[0] < 1 or not np.all(np.isfinite(v)):
        raise LandscapeError(f"valley basis must be a finite [k >= 1, P={dim}] array, got "
                             f"{v.shape}")
    off = np.max(np.abs(v @ v.T - np.eye(v.shape[0])))
    if off > TOL:
        raise LandscapeError(f"valley basis rows must be orthonormal (V V' - I is {off:.2g} "
                             f"off, more than {TOL:g}); orthonormalise them first")
    return v


def river_direction(displacement: object, valley: object) -> np.ndarray:
    """The unit river direction of a displacement: its part off the valley, normalised.

    Args:
        displacement: ``[P]`` e.g. ``theta_end - theta_start`` of a window (the sum of its
            updates).
        valley: ``[k, P]`` orthonormal valley basis.

    Returns:
        ``[P]`` ``(d - V' V d) / ||d - V' V d||``.

    >>> river_direction([3.0, 4.0, 0.0], [[1.0, 0.0, 0.0]]).tolist()
    [0.0, 1.0, 0.0]
    """
    d = np.asarray(displacement, dtype=np.float64).reshape(-1)
    v = _valley_basis(valley, d.size)
    rest = d - v.T @ (v @ d)
    norm = float(np.linalg.norm(rest))
    if not np.isfinite(norm) or norm <= 1e-12 * max(float(np.linalg.norm(d)), 1e-300):
        raise LandscapeError("the displacement lies in the valley: it has no river part")
    return rest / norm


def per_step_hopping(updates: object, valley: object, river: object) -> PerStepHopping:
    """Valley coordinates, hops, oscillation amplitude and river progress of each update.

    Args:
        updates: ``[n, P]`` consecutive per-step updates (a window's ``updates``, or
            :func:`updates_of` of consecutive parameters); ``n >= 1``.
        valley: ``[k, P]`` valley basis, orthonormal rows (``[P]`` for one direction).
        river: ``[P]`` unit river direction, orthogonal to the valley rows (see
            :func:`river_direction`).

    Returns:
        See :class:`PerStepHopping` and the module's definitions.

    Raises:
        LandscapeError: shapes disagree, non-finite values, a basis that is not
            orthonormal, or a river direction that is not a unit vector off the valley.
    """
    d = np.asarray(updates, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] < 1 or not np.all(np.isfinite(d)):
        raise LandscapeError(f"updates must be a finite [n >= 1, P] array, got {d.shape}")
    v = _valley_basis(valley, d.shape[1])
    u = np.asarray(river, dtype=np.float64).reshape(-1)
    if u.size != d.shape[1] or not np.all(np.isfinite(u)):
        raise LandscapeError(f"river direction must be a finite [P={d.shape[1]}] vector, "
                             f"got {u.size} entries")
    if abs(float(np.linalg.norm(u)) - 1.0) > TOL:
        raise LandscapeError(f"river direction must be a unit vector, its norm is "
                             f"{np.linalg.norm(u):.6g}")
    if float(np.max(np.abs(v @ u))) > TOL:
        raise LandscapeError("river direction must be orthogonal to the valley basis "
                             "(project the valley out: river_direction)")
    a = d @ v.T  # [n, k]
    sign = np.sign(a)  # signs, not products: a product of two tiny steps can underflow
    hops = (sign[1:] * sign[:-1]) < 0
    return PerStepHopping(valley=a, hops=hops, hop_fraction=hops.mean(axis=1),
                          amplitude=np.sqrt(np.mean(a**2, axis=1)), river=d @ u)
