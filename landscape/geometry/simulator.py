"""Valley hopping on quadratics: the paper's Theorem 1 as reconstructed (claim 4, docs/paper.md).

The landscape. Parameters split into river coordinates ``r`` (``[d_r]``) and valley
coordinates ``v`` (``[d_v]``, written in the valley's eigenbasis, which loses nothing: an
orthogonal change of valley coordinates diagonalises any valley block and maps
``H_rv`` to ``H_rv Q``)::

    L(r, v) = 0.5 v' diag(lam) v + r' C v + 0.5 r' H_r r - g' r

with ``lam > 0`` the valley eigenvalues, ``C = H_rv`` (``[d_r, d_v]``) the coupling,
``H_r`` the river block (zero or small: "H_river ~ 0") and ``g`` the river slope (the
river runs downhill along ``+g``). With ``H_r`` below the Schur bound ``C diag(1/lam) C'``
this quadratic is not convex: eliminating ``v`` leaves the river curvature
``H_r - C diag(1/lam) C'``, negative along the coupled direction; that negative part is
what the river's feedback on the valley (below) turns into acceleration.

Gradient descent with step eta::

    r[k+1] = r[k] - eta (C v[k] + H_r r[k] - g)
    v[k+1] = v[k] - eta (lam * v[k] + C' r[k])        # feedback=True: plain GD on L
    v[k+1] = v[k] - eta (lam * v[k])                  # feedback=False: the theorem's model

The **push** is the force the valley exerts on the river, ``f[k] = -C v[k]`` (the river
moves by ``eta f[k]`` because of it), and the cumulative push is
``P[K] = sum_{k<K} f[k]``.

The closed form (checked to 1e-10 by the tests). Without feedback, each valley mode
evolves alone, ``v_i[k] = (1 - eta lam_i)^k v_i[0]``, so exactly::

    P[K] = - sum_i C[:, i] v_i[0] S_i(K),    S_i(K) = (1 - (1 - eta lam_i)^K) / (eta lam_i)

and ``S_i(K) -> 1 / (eta lam_i)`` as K grows (for ``0 < eta lam_i < 2``): the flattest
valley modes push the most, which is the paper's case for River-V ("valley hopping").

With feedback the river pulls the valley, ``v[k] = v_free[k] + dv[k]`` with
``dv[k] = -eta sum_{j<k} (I - eta diag(lam))^{k-1-j} C' r[j]`` (exact), so the measured
push differs from the closed form by ``-sum_{k<K} C dv[k]``, bounded by::

    ||P_measured[K] - P_closed[K]|| <= eta ||C||_2^2 sum_{k<K} sum_{j<k} q^{k-1-j} ||r[j]||

with ``q = max_i |1 - eta lam_i| < 1`` (:func:`feedback_bound`). It is second order in the
coupling while the push is first order, so the closed form is the leading term for weak
coupling (``eta K ||C||^2 / min(lam) << 1``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from landscape.errors import LandscapeError

# ----------------------------------------------------------------------- landscape


@dataclass(frozen=True)
class QuadraticValley:
    """``L(r, v) = 0.5 v' diag(lam) v + r' C v + 0.5 r' H_r r - g' r``.

    Attributes:
        valley_eigvals: ``[d_v]`` valley eigenvalues lam (> 0).
        coupling: ``[d_r, d_v]`` the river-valley block C = H_rv.
        river_hessian: ``[d_r, d_r]`` the river block H_r (symmetric; zero or small).
        river_slope: ``[d_r]`` g, the river's downhill gradient.
    """

    valley_eigvals: np.ndarray
    coupling: np.ndarray
    river_hessian: np.ndarray
    river_slope: np.ndarray

    def __post_init__(self) -> None:
        lam, c = self.valley_eigvals, self.coupling
        d_r = self.river_slope.shape[0]
        if lam.ndim != 1 or lam.size == 0 or not np.all(lam > 0):
            raise LandscapeError("valley eigenvalues must be a non-empty array of values > 0")
        if c.shape != (d_r, lam.size) or self.river_hessian.shape != (d_r, d_r):
            raise LandscapeError(
                f"shapes disagree: coupling {c.shape}, river_hessian "
                f"{self.river_hessian.shape}, river_slope {self.river_slope.shape}, "
                f"valley {lam.shape}; need [d_r, d_v], [d_r, d_r], [d_r], [d_v]"
            )
        if not np.allclose(self.river_hessian, self.river_hessian.T, rtol=0, atol=1e-12):
            raise LandscapeError("river_hessian must be symmetric")

    def loss(self, r: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The loss at ``r`` ``[..., d_r]`` and ``v`` ``[..., d_v]``; returns ``[...]``."""
        rv = np.einsum("...a,ab,...b->...", r, self.coupling, v)
        rr = np.einsum("...a,ab,...b->...", r, self.river_hessian, r)
        return (
            0.5 * np.sum(self.valley_eigvals * v**2, axis=-1) + rv + 0.5 * rr - r @ self.river_slope
        )

    def hessian(self) -> np.ndarray:
        """The full ``[d_r + d_v, d_r + d_v]`` Hessian, river coordinates first."""
        top = np.hstack([self.river_hessian, self.coupling])
        bottom = np.hstack([self.coupling.T, np.diag(self.valley_eigvals)])
        return np.vstack([top, bottom])


def make_quadratic(
    valley_eigvals: np.ndarray,
    coupling: np.ndarray,
    river_hessian: np.ndarray | None = None,
    river_slope: np.ndarray | None = None,
) -> QuadraticValley:
    """A :class:`QuadraticValley` from arrays, with ``H_r = 0`` and ``g = 0`` by default.

    Args:
        valley_eigvals: ``[d_v]`` valley eigenvalues (> 0).
        coupling: ``[d_r, d_v]`` (or ``[d_v]`` for one river coordinate).
        river_hessian: ``[d_r, d_r]``, default zero.
        river_slope: ``[d_r]``, default zero.

    Returns:
        The landscape (float64 copies of the inputs).
    """
    lam = np.array(valley_eigvals, dtype=np.float64)
    c = np.array(coupling, dtype=np.float64, ndmin=2)
    d_r = c.shape[0]
    h = np.zeros((d_r, d_r)) if river_hessian is None else np.array(river_hessian, np.float64)
    g = np.zeros(d_r) if river_slope is None else np.array(river_slope, np.float64, ndmin=1)
    arrays = (lam, c, h, g)
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise LandscapeError("the quadratic's arrays must be finite")
    return QuadraticValley(lam, c, h, g)


# ------------------------------------------------------------------------ spectra


def valley_spectrum(
    kind: str,
    n_valley: int = 16,
    lambda_max: float = 1.0,
    kappa_v: float = 100.0,
    delta_u: float = 0.1,
    match: str = "trace",
) -> np.ndarray:
    """Valley eigenvalues of a River-V or a matched River-U landscape (descending).

    V: ``n_valley`` values log-spaced from ``lambda_max`` down to ``lambda_max / kappa_v``
    (a spread with many small eigenvalues: half of them lie below
    ``lambda_max / sqrt(kappa_v)``). V is the reference; ``match`` does not change it.

    U: values evenly spaced in ``[1, 1 + delta_u]`` (so ``kappa = 1 + delta_u``), scaled
    to match V by

    * ``"trace"`` (default): the same sum of eigenvalues, i.e. the same mean curvature.
      The comparison then isolates the *spread* of the spectrum from its overall
      steepness, and a start displaced equally in every mode has the same initial
      valley loss in U and V. By convexity of ``1/lam`` (Jensen), V's ``sum 1/lam`` is
      then larger, which is the paper's mechanism, not an artefact of scale.
    * ``"lambda_max"``: the same largest eigenvalue (the same stability limit on eta).
      Every V eigenvalue is then <= every U one, so V's advantage is partly just "V is
      flatter"; offered as the other natural choice.

    Args:
        kind: "U" or "V".
        n_valley: d_v, number of valley modes (>= 2 for V).
        lambda_max: V's largest eigenvalue (> 0).
        kappa_v: V's condition number (> 1).
        delta_u: U's spread, ``kappa(U) = 1 + delta_u`` (>= 0).
        match: "trace" or "lambda_max".

    Returns:
        ``[n_valley]`` eigenvalues, descending.
    """
    if n_valley < 2 or lambda_max <= 0 or kappa_v <= 1 or delta_u < 0:
        raise LandscapeError(
            "need n_valley >= 2, lambda_max > 0, kappa_v > 1, delta_u >= 0; got "
            f"{n_valley}, {lambda_max}, {kappa_v}, {delta_u}"
        )
    v = np.geomspace(lambda_max, lambda_max / kappa_v, n_valley)
    if kind == "V":
        return v
    if kind != "U":
        raise LandscapeError(f"kind must be 'U' or 'V', got {kind!r}")
    u = np.linspace(1.0 + delta_u, 1.0, n_valley)
    if match == "trace":
        return u * (v.sum() / u.sum())
    if match == "lambda_max":
        return u * (lambda_max / u.max())
    raise LandscapeError(f"match must be 'trace' or 'lambda_max', got {match!r}")


# ------------------------------------------------------------------ gradient descent


@dataclass(frozen=True)
class Descent:
    """A gradient-descent trajectory on a :class:`QuadraticValley`.

    Attributes:
        r: ``[K+1, d_r]`` river coordinates, ``r[0]`` the start.
        v: ``[K+1, d_v]`` valley coordinates (valley eigenbasis).
        loss: ``[K+1]`` the loss L(r[k], v[k]).
        push: ``[K+1, d_r]`` cumulative valley push ``P[k] = -sum_{j<k} C v[j]``,
            ``P[0] = 0``.
        eta: the step size.
        feedback: whether the valley felt the river (plain GD on L) or not.
    """

    r: np.ndarray
    v: np.ndarray
    loss: np.ndarray
    push: np.ndarray
    eta: float
    feedback: bool


def _check_step(lam: np.ndarray, eta: float, steps: int) -> None:
    """Raise unless ``0 < eta * lam < 2`` for every valley mode and ``steps >= 1``."""
    if not eta > 0 or eta * lam.max() >= 2:
        raise LandscapeError(
            f"need 0 < eta < 2 / lambda_max = {2 / lam.max():.6g} for the valley to converge, "
            f"got eta = {eta}"
        )
    if int(steps) != steps or steps < 1:
        raise LandscapeError(f"steps must be a positive integer, got {steps}")


def gradient_descent(
    q: QuadraticValley,
    r0: np.ndarray,
    v0: np.ndarray,
    eta: float,
    steps: int,
    feedback: bool = True,
) -> Descent:
    """Run ``steps`` gradient-descent steps from ``(r0, v0)`` (see the module docstring).

    Args:
        q: the landscape.
        r0: ``[d_r]`` river start.
        v0: ``[d_v]`` valley start (valley eigenbasis).
        eta: step size, ``0 < eta < 2 / max(lam)``.
        steps: K, number of steps.
        feedback: True for plain GD on L; False to drop the river's pull ``C' r`` from
            the valley update (the closed form's assumption).

    Returns:
        The trajectory, see :class:`Descent`.

    Raises:
        LandscapeError: bad step or shapes, or a divergent run (the river's negative
            curvature grew beyond 1e100; weaken the coupling or shorten the run).
    """
    _check_step(q.valley_eigvals, eta, steps)
    r0, v0 = np.asarray(r0, dtype=np.float64), np.asarray(v0, dtype=np.float64)
    if r0.shape != q.river_slope.shape or v0.shape != q.valley_eigvals.shape:
        raise LandscapeError(
            f"start shapes {r0.shape}, {v0.shape} do not match the landscape's "
            f"{q.river_slope.shape}, {q.valley_eigvals.shape}"
        )
    r = np.zeros((steps + 1, q.river_slope.size))
    v = np.zeros((steps + 1, q.valley_eigvals.size))
    r[0], v[0] = r0, v0
    c, lam, h, g = q.coupling, q.valley_eigvals, q.river_hessian, q.river_slope
    for k in range(steps):
        pull = c.T @ r[k] if feedback else 0.0
        r[k + 1] = r[k] - eta * (c @ v[k] + h @ r[k] - g)
        v[k + 1] = v[k] - eta * (lam * v[k] + pull)
        if not np.max(np.abs(r[k + 1])) < 1e100:
            raise LandscapeError(f"gradient descent diverged at step {k + 1}")
    push = np.vstack([np.zeros((1, r.shape[1])), -np.cumsum(v[:-1] @ c.T, axis=0)])
    return Descent(r, v, q.loss(r, v), push, float(eta), bool(feedback))


def closed_form_push(
    valley_eigvals: np.ndarray, coupling: np.ndarray, v0: np.ndarray, eta: float, steps: int
) -> np.ndarray:
    """The no-feedback cumulative push ``P[k] = -sum_i C[:, i] v0_i S_i(k)``, k = 0..K.

    Args:
        valley_eigvals: ``[d_v]`` lam.
        coupling: ``[d_r, d_v]`` C.
        v0: ``[d_v]`` valley start.
        eta: step size.
        steps: K.

    Returns:
        ``[K+1, d_r]`` with ``S_i(k) = (1 - (1 - eta lam_i)^k) / (eta lam_i)``.
    """
    lam = np.asarray(valley_eigvals, dtype=np.float64)
    _check_step(lam, eta, steps)
    k = np.arange(steps + 1)[:, None]
    s = (1.0 - (1.0 - eta * lam) ** k) / (eta * lam)  # [K+1, d_v]
    return -(s * np.asarray(v0, dtype=np.float64)) @ np.atleast_2d(coupling).T


def feedback_bound(
    valley_eigvals: np.ndarray, coupling: np.ndarray, r: np.ndarray, eta: float
) -> np.ndarray:
    """Bound on ``||P_measured[k] - P_closed[k]||`` from the river's feedback, k = 0..K.

    ``eta ||C||_2^2 sum_{m<k} sum_{j<m} q^{m-1-j} ||r[j]||`` with
    ``q = max_i |1 - eta lam_i|`` (module docstring).

    Args:
        valley_eigvals: ``[d_v]`` lam.
        coupling: ``[d_r, d_v]`` C.
        r: ``[K+1, d_r]`` the river trajectory of the feedback run.
        eta: step size.

    Returns:
        ``[K+1]`` the bound (0 at k = 0 and 1).
    """
    lam = np.asarray(valley_eigvals, dtype=np.float64)
    qmax = float(np.max(np.abs(1.0 - eta * lam)))
    norms = np.linalg.norm(np.atleast_2d(r), axis=1)
    inner = np.zeros(norms.size)  # inner[m] = sum_{j<m} q^{m-1-j} ||r[j]||
    for m in range(1, norms.size):
        inner[m] = qmax * inner[m - 1] + norms[m - 1]
    c2 = np.linalg.norm(np.atleast_2d(coupling), 2) ** 2
    return eta * c2 * np.concatenate([[0.0], np.cumsum(inner[:-1])])


# ------------------------------------------------------------------------ simulate


@dataclass(frozen=True)
class Simulation:
    """One River-U or River-V run, with what the concept figure needs.

    Attributes:
        kind: "U" or "V".
        match: how U was matched to V ("trace" or "lambda_max").
        valley_eigvals: ``[d_v]`` the valley spectrum.
        eta: the step size (shared by U and V).
        descent: the trajectory (see :class:`Descent`); one river coordinate.
        closed_form: ``[K+1]`` the no-feedback closed-form push.
        feedback_bound: ``[K+1]`` bound on ``|push - closed_form|`` (zeros without
            feedback, where the two agree to rounding).
        progress: ``r[K] - r[0]``, the river progress (downhill is positive).
        final_loss: ``L`` at step K.
        plane_r: ``[na]`` river coordinates of the figure plane.
        plane_b: ``[nb]`` coordinates along the plane's valley direction.
        plane_loss: ``[na, nb]`` the loss on the plane ``(r, b * u)``.
        plane_dir: ``[d_v]`` the plane's unit valley direction u.
        path: ``[K+1, 2]`` the trajectory projected on the plane, ``(r, u . v)``.
        off_plane: ``[K+1]`` norm of the valley part off the plane.
    """

    kind: str
    match: str
    valley_eigvals: np.ndarray
    eta: float
    descent: Descent
    closed_form: np.ndarray
    feedback_bound: np.ndarray
    progress: float
    final_loss: float
    plane_r: np.ndarray
    plane_b: np.ndarray
    plane_loss: np.ndarray
    plane_dir: np.ndarray
    path: np.ndarray
    off_plane: np.ndarray


def _plane(q: QuadraticValley, d: Descent, u: np.ndarray, grid: int) -> tuple[np.ndarray, ...]:
    """The loss on the plane (river axis, valley direction u) covering the path."""
    b = d.v @ u
    r = d.r[:, 0]
    pad_r = 0.1 * (r.max() - r.min()) + 1e-12
    pad_b = 0.2 * np.abs(b).max() + 1e-12
    ra = np.linspace(r.min() - pad_r, r.max() + pad_r, grid)
    bb = np.linspace(-np.abs(b).max() - pad_b, np.abs(b).max() + pad_b, grid)
    rr, bg = np.meshgrid(ra, bb, indexing="ij")
    surface = q.loss(rr[..., None], bg[..., None] * u)
    off = np.linalg.norm(d.v - b[:, None] * u, axis=1)
    return ra, bb, surface, np.stack([r, b], axis=1), off


def simulate(
    kind: str,
    *,
    n_valley: int = 16,
    lambda_max: float = 1.0,
    kappa_v: float = 100.0,
    delta_u: float = 0.1,
    match: str = "trace",
    coupling: float = 1e-3,
    river_slope: float = 1e-3,
    river_curvature: float = 0.0,
    eta_frac: float = 1.5,
    steps: int = 200,
    start: float = 1.0,
    feedback: bool = True,
    plane_mode: int | None = None,
    grid: int = 41,
) -> Simulation:
    """Gradient descent on a River-U or River-V quadratic with one river coordinate.

    The setup, identical for U and V except for the valley spectrum
    (:func:`valley_spectrum`): every valley mode is coupled to the river with the same
    strength (``C[0, i] = coupling``); ``H_r = river_curvature``; ``g = river_slope``;
    ``eta = eta_frac / max(lambda_max(U), lambda_max(V))`` (one step size for both, so
    the steepest V modes oscillate across the valley when ``eta_frac > 1``); the start
    is ``r = 0`` and ``v_i = -start * sign(coupling)`` in every mode: displaced off the
    floor to the side from which the coupling pushes the river downhill (``start < 0``
    takes the other side, which reverses the no-feedback push for U and V alike).

    Args:
        kind: "U" or "V".
        n_valley: number of valley modes.
        lambda_max: V's largest eigenvalue.
        kappa_v: V's condition number.
        delta_u: U's spread (``kappa(U) = 1 + delta_u``).
        match: how U matches V, "trace" or "lambda_max" (see :func:`valley_spectrum`).
        coupling: per-mode coupling C (keep ``eta K coupling^2 sum 1/lam`` small for the
            closed form to describe the feedback run).
        river_slope: g.
        river_curvature: H_r.
        eta_frac: eta times the largest eigenvalue of U and V, in (0, 2).
        steps: K.
        start: valley displacement per mode at the start.
        feedback: plain GD on L (True) or the theorem's no-feedback model (False).
        plane_mode: valley mode spanning the figure plane with the river axis; ``None``
            for the start direction ``v[0] / ||v[0]||``.
        grid: points per axis of the plane's loss grid.

    Returns:
        The run, see :class:`Simulation`.
    """
    lam = valley_spectrum(kind, n_valley, lambda_max, kappa_v, delta_u, match)
    other = valley_spectrum("U" if kind == "V" else "V", n_valley, lambda_max, kappa_v,
                            delta_u, match)  # fmt: skip
    eta = eta_frac / max(lam.max(), other.max())
    q = make_quadratic(lam, np.full((1, n_valley), coupling), [[river_curvature]], [river_slope])
    sign = 1.0 if coupling >= 0 else -1.0
    v0 = np.full(n_valley, -start * sign)
    d = gradient_descent(q, np.zeros(1), v0, eta, steps, feedback)
    closed = closed_form_push(lam, q.coupling, v0, eta, steps)[:, 0]
    bound = feedback_bound(lam, q.coupling, d.r, eta) if feedback else np.zeros(steps + 1)
    u = _plane_dir(v0, plane_mode)
    ra, bb, surface, path, off = _plane(q, d, u, grid)
    return Simulation(
        kind=kind, match=match, valley_eigvals=lam, eta=eta, descent=d,
        closed_form=closed, feedback_bound=bound,
        progress=float(d.r[-1, 0] - d.r[0, 0]), final_loss=float(d.loss[-1]),
        plane_r=ra, plane_b=bb, plane_loss=surface, plane_dir=u, path=path, off_plane=off,
    )  # fmt: skip


def _plane_dir(v0: np.ndarray, plane_mode: int | None) -> np.ndarray:
    """Unit valley direction of the figure plane: the start direction or one mode's axis."""
    if plane_mode is None:
        norm = np.linalg.norm(v0)
        if norm == 0:
            raise LandscapeError("start = 0 gives no start direction; pass plane_mode")
        return v0 / norm
    if not 0 <= plane_mode < v0.size:
        raise LandscapeError(f"plane_mode must be in [0, {v0.size}), got {plane_mode}")
    return np.eye(v0.size)[plane_mode]


@dataclass(frozen=True)
class Comparison:
    """River-U against River-V under the same settings.

    Attributes:
        u: the U run.
        v: the V run.
        v_further: V's river progress exceeds U's.
        v_lower: V's final loss is below U's.
    """

    u: Simulation
    v: Simulation
    v_further: bool
    v_lower: bool


def compare(**kwargs: object) -> Comparison:
    """Run :func:`simulate` for U and V with the same keyword arguments and compare them.

    Args:
        **kwargs: passed to :func:`simulate` (everything but ``kind``).

    Returns:
        Both runs and whether V went further and lower (claim 4), as measured.
    """
    u = simulate("U", **kwargs)  # type: ignore[arg-type]
    v = simulate("V", **kwargs)  # type: ignore[arg-type]
    return Comparison(u, v, v.progress > u.progress, v.final_loss < u.final_loss)
