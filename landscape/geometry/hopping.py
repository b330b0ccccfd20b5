"""Valley hopping as it happens in training: steps split into valley and river parts.

Pure numpy. At a checkpoint ``theta_i`` with valley basis ``Q_i`` (``[P, k]``, the top
valley eigenvectors there), the step that arrives, ``d_in = theta_i - theta_{i-1}``, and
the step that leaves, ``d_out = theta_{i+1} - theta_i``, are written in that basis:

* the *valley coordinates* ``a_in = Q' d_in`` and ``a_out = Q' d_out``; a coordinate
  whose sign changes between them is a hop (the iterate crossed the valley floor along
  that eigenvector and came back: the oscillation of gradient descent across a valley
  whose curvature exceeds ``1 / eta``);
* the *river part* ``d_out - Q a_out`` (the complement of the valley subspace) and the
  loss it gains, ``L(theta_i) - L(theta_i + river part)`` (river progress);
* the valley oscillation ``||a_out||``.

Per run, :func:`summarise` reports the fraction of hops, the loss gained along the river
per unit of valley oscillation, and the river speed (river step per unit learning rate)
beside the paper's prediction of the cumulative force, ``sum 1/lambda`` over the small
valley eigenvalues.

On the simulator's quadratic river-valley (:mod:`landscape.geometry.simulator`, no feedback) this
is exact: the valley coordinates of a step are ``-eta lam_i v_i[k]``, so mode i hops at
every step iff ``eta lam_i > 1``, and the river parts sum to
``eta (K g + P[K])`` with ``P[K]`` the closed-form push (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from landscape.errors import LandscapeError


@dataclass(frozen=True)
class StepSplit:
    """One checkpoint's incoming and outgoing steps in its valley basis.

    Attributes:
        valley_in: ``[k]`` valley coordinates of the incoming step.
        valley_out: ``[k]`` valley coordinates of the outgoing step.
        hops: ``[k]`` bool, the sign of the coordinate changed (zeros never hop).
        hop_fraction: ``hops.mean()``.
        valley_norm: ``||valley_out||`` (the valley oscillation of the outgoing step).
        river: ``[P]`` the outgoing step's river part.
        river_norm: its norm.
        step_norm: the outgoing step's norm.
    """

    valley_in: np.ndarray
    valley_out: np.ndarray
    hops: np.ndarray
    hop_fraction: float
    valley_norm: float
    river: np.ndarray
    river_norm: float
    step_norm: float


def _orthonormal(basis: object, dim: int) -> np.ndarray:
    b = np.asarray(basis, dtype=np.float64)
    if b.ndim != 2 or b.shape[0] != dim or b.shape[1] < 1 or not np.all(np.isfinite(b)):
        raise LandscapeError(f"valley basis must be a finite [P={dim}, k >= 1] array, got "
                             f"{b.shape}")
    q, r = np.linalg.qr(b)
    if np.min(np.abs(np.diag(r))) <= 1e-10 * np.max(np.abs(np.diag(r))):
        raise LandscapeError("the valley basis is rank deficient")
    return q * np.sign(np.diag(r))[None, :]  # keep each column's orientation


def split_step(theta_prev: object, theta: object, theta_next: object,
               basis: object) -> StepSplit:
    """Split the steps into and out of ``theta`` along its valley basis.

    Args:
        theta_prev: ``[P]`` the checkpoint before.
        theta: ``[P]`` the checkpoint.
        theta_next: ``[P]`` the checkpoint after.
        basis: ``[P, k]`` valley directions at ``theta`` (orthonormalised here, keeping
            each column's direction when it is already orthonormal).

    Returns:
        The split, see :class:`StepSplit`.
    """
    a, b, c = (np.asarray(x, dtype=np.float64).reshape(-1) for x in
               (theta_prev, theta, theta_next))
    if not (a.shape == b.shape == c.shape) or not all(np.all(np.isfinite(x)) for x in
                                                       (a, b, c)):
        raise LandscapeError("the three checkpoints must be finite vectors of one length")
    q = _orthonormal(basis, b.size)
    d_in, d_out = b - a, c - b
    v_in, v_out = q.T @ d_in, q.T @ d_out
    hops = (v_in * v_out) < 0
    river = d_out - q @ v_out
    return StepSplit(valley_in=v_in, valley_out=v_out, hops=hops,
                     hop_fraction=float(hops.mean()), valley_norm=float(np.linalg.norm(v_out)),
                     river=river, river_norm=float(np.linalg.norm(river)),
                     step_norm=float(np.linalg.norm(d_out)))


@dataclass(frozen=True)
class Hopping:
    """Valley hopping over the probed checkpoints of one run.

    Attributes:
        index: ``[m]`` trajectory indices of the checkpoints used.
        hop_fraction: ``[m]`` fraction of valley coordinates that changed sign.
        valley_norm: ``[m]`` valley oscillation of each outgoing step.
        river_norm: ``[m]`` river part of each outgoing step.
        river_gain: ``[m]`` loss gained along the river part (NaN without a loss).
        river_speed: ``[m]`` river part per unit of learning rate per optimiser step.
        predicted_force: ``[m]`` sum 1/lambda over each checkpoint's small valley
            eigenvalues (NaN where not given).
    """

    index: np.ndarray
    hop_fraction: np.ndarray
    valley_norm: np.ndarray
    river_norm: np.ndarray
    river_gain: np.ndarray
    river_speed: np.ndarray
    predicted_force: np.ndarray


def hopping(trajectory: object, at: Sequence[int], bases: Sequence[object],
            loss: Callable[[np.ndarray], float] | None = None,
            lr_steps: Sequence[float] | None = None,
            predicted_force: Sequence[float] | None = None) -> Hopping:
    """:func:`split_step` at each given checkpoint of a trajectory.

    Args:
        trajectory: ``[n, P]`` parameters at consecutive checkpoints.
        at: indices i (``1 <= i <= n-2``) of the checkpoints with a valley basis.
        bases: one ``[P, k]`` basis per index.
        loss: ``loss(theta)`` on flat parameters, for the river gain (None: NaN).
        lr_steps: per index, the learning rate times the optimiser steps between
            checkpoints i and i+1, for the river speed (None: NaN).
        predicted_force: per index, the paper's ``sum 1/lambda`` (None: NaN).

    Returns:
        The per-checkpoint numbers, see :class:`Hopping`.
    """
    th = np.asarray(trajectory, dtype=np.float64)
    if th.ndim != 2 or th.shape[0] < 3:
        raise LandscapeError(f"trajectory must be [n >= 3, P], got {th.shape}")
    idx = [int(i) for i in at]
    if len(idx) != len(bases) or not idx:
        raise LandscapeError("give one valley basis per checkpoint index (at least one)")
    if any(i < 1 or i > th.shape[0] - 2 for i in idx):
        raise LandscapeError(f"indices must lie in [1, {th.shape[0] - 2}] (a step in and out)")
    m = len(idx)
    for name, seq in (("lr_steps", lr_steps), ("predicted_force", predicted_force)):
        if seq is not None and len(seq) != m:
            raise LandscapeError(f"{name} needs one value per checkpoint ({m})")
    rows = []
    for j, (i, q) in enumerate(zip(idx, bases)):
        s = split_step(th[i - 1], th[i], th[i + 1], q)
        gain = (math.nan if loss is None else float(loss(th[i]) - loss(th[i] + s.river)))
        speed = math.nan if lr_steps is None else s.river_norm / float(lr_steps[j])
        force = math.nan if predicted_force is None else float(predicted_force[j])
        rows.append((i, s.hop_fraction, s.valley_norm, s.river_norm, gain, speed, force))
    cols = [np.asarray(c, dtype=np.float64) for c in zip(*rows)]
    return Hopping(index=cols[0].astype(np.int64), hop_fraction=cols[1], valley_norm=cols[2],
                   river_norm=cols[3], river_gain=cols[4], river_speed=cols[5],
                   predicted_force=cols[6])


def summarise(h: Hopping) -> dict[str, float]:
    """One run's hopping numbers.

    Returns:
        ``hop_fraction`` (mean over checkpoints), ``gain_per_oscillation`` (total river
        gain over total valley oscillation), ``river_speed`` (mean), ``predicted_force``
        (mean), and ``force_correlation``: Spearman's rank correlation over checkpoints
        between the river speed and ``sum 1/lambda`` (NaN with fewer than 3 checkpoints
        or a constant series).
    """
    osc = float(np.sum(h.valley_norm))
    gain = float(np.sum(h.river_gain))
    ok = np.isfinite(h.river_speed) & np.isfinite(h.predicted_force)
    corr = math.nan
    if ok.sum() >= 3 and np.ptp(h.river_speed[ok]) > 0 and np.ptp(h.predicted_force[ok]) > 0:
        corr = float(_st.spearmanr(h.river_speed[ok], h.predicted_force[ok]).statistic)
    return {"hop_fraction": float(np.mean(h.hop_fraction)),
            "gain_per_oscillation": gain / osc if osc > 0 else math.nan,
            "river_speed": float(np.nanmean(h.river_speed)) if np.any(
                np.isfinite(h.river_speed)) else math.nan,
            "predicted_force": float(np.nanmean(h.predicted_force)) if np.any(
                np.isfinite(h.predicted_force)) else math.nan,
            "force_correlation": corr, "checkpoints": int(h.index.size)}
