"""Tests for landscape.geometry.simulator: the quadratic, GD, the closed-form push, U vs V runs."""

import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.geometry.simulator import (
    closed_form_push,
    compare,
    feedback_bound,
    gradient_descent,
    make_quadratic,
    simulate,
    valley_spectrum,
)
from landscape.geometry.valley import split_spectrum


def random_quadratic(seed=0, d_r=2, d_v=6, scale=0.05):
    rng = np.random.default_rng(seed)
    lam = np.geomspace(1.0, 0.02, d_v)
    c = scale * rng.standard_normal((d_r, d_v))
    h = 1e-3 * np.eye(d_r)
    g = rng.standard_normal(d_r) * 0.01
    return make_quadratic(lam, c, h, g), rng


# -------------------------------------------------------------------- the quadratic


def test_loss_and_gd_step_match_dense_hessian():
    q, rng = random_quadratic()
    hess = q.hessian()
    b = np.concatenate([q.river_slope, np.zeros(6)])
    theta = rng.standard_normal((5, 8))
    dense = 0.5 * np.einsum("np,pq,nq->n", theta, hess, theta) - theta @ b
    np.testing.assert_allclose(q.loss(theta[:, :2], theta[:, 2:]), dense, rtol=1e-13)
    eta = 1.5
    d = gradient_descent(q, theta[0, :2], theta[0, 2:], eta, steps=3, feedback=True)
    ref = theta[0]
    for k in range(1, 4):  # plain GD on L is theta - eta (H theta - b)
        ref = ref - eta * (hess @ ref - b)
        np.testing.assert_allclose(np.concatenate([d.r[k], d.v[k]]), ref, rtol=1e-13)
    np.testing.assert_allclose(d.loss, q.loss(d.r, d.v))


# ------------------------------------------------------------------ the closed form


def test_no_feedback_push_matches_closed_form():
    q, rng = random_quadratic(d_v=6)
    v0 = rng.standard_normal(6)
    eta = 1.6  # eta * lam_max = 1.6: the steepest modes oscillate across the valley
    d = gradient_descent(q, rng.standard_normal(2), v0, eta, steps=300, feedback=False)
    closed = closed_form_push(q.valley_eigvals, q.coupling, v0, eta, 300)
    scale = np.abs(closed).max()
    np.testing.assert_allclose(d.push, closed, rtol=0, atol=1e-10 * scale)
    # and the valley really evolved freely: v_i[k] = (1 - eta lam_i)^k v_i[0]
    k = np.arange(301)[:, None]
    np.testing.assert_allclose(d.v, (1 - eta * q.valley_eigvals) ** k * v0, atol=1e-14)


def test_closed_form_limit_is_sum_of_inverse_eigenvalues():
    lam = np.array([1.0, 0.3, 0.05])
    eta, steps = 1.2, 4000
    push = closed_form_push(lam, -np.ones((1, 3)), np.ones(3), eta, steps)
    assert push[-1, 0] == pytest.approx(np.sum(1 / (eta * lam)), rel=1e-12)
    assert push[1, 0] == pytest.approx(3.0, rel=1e-15)  # S_i(1) = 1 for every mode


def duhamel_correction(q, r, eta):
    """Exact feedback part of the push: -sum_{k<K} C dv[k], with
    dv[k] = -eta sum_{j<k} (1 - eta lam)^(k-1-j) C' r[j]."""
    steps = r.shape[0] - 1
    a = 1 - eta * q.valley_eigvals
    dv = np.zeros((steps + 1, a.size))
    for k in range(1, steps + 1):
        dv[k] = sum(-eta * a ** (k - 1 - j) * (q.coupling.T @ r[j]) for j in range(k))
    return np.vstack([np.zeros((1, r.shape[1])), -np.cumsum(dv[:-1] @ q.coupling.T, axis=0)])


def test_feedback_push_is_closed_form_plus_exact_correction_within_bound():
    q, rng = random_quadratic(scale=0.05)
    v0, r0, eta, steps = rng.standard_normal(6), rng.standard_normal(2), 1.5, 120
    d = gradient_descent(q, r0, v0, eta, steps, feedback=True)
    closed = closed_form_push(q.valley_eigvals, q.coupling, v0, eta, steps)
    corr = duhamel_correction(q, d.r, eta)
    np.testing.assert_allclose(d.push, closed + corr, rtol=0, atol=1e-10 * np.abs(d.push).max())
    gap = np.linalg.norm(d.push - closed, axis=1)
    bound = feedback_bound(q.valley_eigvals, q.coupling, d.r, eta)
    assert np.all(gap <= bound + 1e-14) and gap[-1] > 0.01 * bound[-1]  # holds, not vacuous
    assert gap[-1] > 1e-3 * np.abs(closed[-1]).max()  # feedback is really there


def test_feedback_error_is_second_order_in_coupling():
    gaps = []
    for scale in (2e-3, 2e-4):  # weak coupling: eta K ||C||^2 sum 1/lam << 1
        q, rng = random_quadratic(seed=1, scale=scale)
        v0, r0 = rng.standard_normal(6), rng.standard_normal(2)
        d = gradient_descent(q, r0, v0, 1.5, 150, feedback=True)
        closed = closed_form_push(q.valley_eigvals, q.coupling, v0, 1.5, 150)
        gaps.append(np.linalg.norm(d.push[-1] - closed[-1]))
    assert gaps[1] / gaps[0] == pytest.approx(1e-2, rel=0.05)


# ----------------------------------------------------------------------- spectra


def test_valley_spectra_and_matching():
    v = valley_spectrum("V", 16, lambda_max=2.0, kappa_v=100.0)
    assert v.max() == pytest.approx(2.0) and v.max() / v.min() == pytest.approx(100.0)
    u = valley_spectrum("U", 16, lambda_max=2.0, kappa_v=100.0, delta_u=0.1, match="trace")
    assert u.sum() == pytest.approx(v.sum(), rel=1e-14)
    assert u.max() / u.min() == pytest.approx(1.1, rel=1e-14)
    assert np.sum(1 / v) > np.sum(1 / u)  # Jensen at equal trace
    um = valley_spectrum("U", 16, lambda_max=2.0, delta_u=0.0, match="lambda_max")
    np.testing.assert_allclose(um, 2.0)
    # the split labels them as the paper defines (eps below the whole valley)
    assert split_spectrum(u, eps=1e-6, tau=1.0).label == "U"
    assert split_spectrum(v, eps=1e-6, tau=1.0).label == "V"


# ---------------------------------------------------------------------- simulate


def test_simulate_no_feedback_matches_closed_form_and_progress_identity():
    sim = simulate("V", feedback=False, steps=150)
    np.testing.assert_allclose(sim.descent.push[:, 0], sim.closed_form, atol=1e-12)
    # with H_r = 0: r[K] = r[0] + eta K g + eta P[K]
    assert sim.progress == pytest.approx(sim.eta * (150 * 1e-3 + sim.closed_form[-1]), rel=1e-12)
    assert np.all(sim.feedback_bound == 0)


def test_simulate_feedback_within_bound_and_figure_arrays():
    sim = simulate("U", steps=100, grid=21)
    gap = np.abs(sim.descent.push[:, 0] - sim.closed_form)
    assert np.all(gap <= sim.feedback_bound + 1e-15)
    assert sim.plane_loss.shape == (21, 21) and sim.path.shape == (101, 2)
    # the plane surface is L(r, b u) at its grid points
    q = make_quadratic(sim.valley_eigvals, np.full((1, 16), 1e-3), [[0.0]], [1e-3])
    i, j = 3, 17
    r, b = sim.plane_r[i], sim.plane_b[j]
    assert sim.plane_loss[i, j] == pytest.approx(q.loss(np.array([r]), b * sim.plane_dir))
    # U's modes share one spectrum up to 1.1: the path stays near the start direction
    np.testing.assert_allclose(sim.path[:, 0], sim.descent.r[:, 0])
    assert sim.off_plane.max() < 0.1 * np.abs(sim.path[:, 1]).max()


def test_u_vs_v_follows_the_closed_form_sign():
    # no feedback: V - U progress is eta (P_V - P_U), which the closed form fixes;
    # the start side sets its sign (documented; not a tuned outcome)
    for start in (1.0, -1.0):
        c = compare(feedback=False, start=start, match="trace")
        diff = c.v.progress - c.u.progress
        expected = c.u.eta * (c.v.closed_form[-1] - c.u.closed_form[-1])
        assert diff == pytest.approx(expected, rel=1e-10)
        assert c.v_further == (start > 0)
    assert c.u.eta == c.v.eta  # one step size for both


@pytest.mark.parametrize(
    ("call", "kwargs"),
    [
        (valley_spectrum, {"kind": "W"}),
        (valley_spectrum, {"kind": "U", "match": "volume"}),
        (valley_spectrum, {"kind": "V", "kappa_v": 1.0}),
        (simulate, {"kind": "V", "eta_frac": 2.5}),
        (simulate, {"kind": "V", "steps": 0}),
        (simulate, {"kind": "V", "start": 0.0}),  # no start direction for the plane
        (simulate, {"kind": "V", "plane_mode": 16}),
        (simulate, {"kind": "V", "coupling": 0.5, "steps": 3000}),  # diverges
        (make_quadratic, {"valley_eigvals": [1.0, -0.1], "coupling": [1.0, 1.0]}),
        (make_quadratic, {"valley_eigvals": [1.0], "coupling": [1.0, 1.0]}),
        (
            make_quadratic,
            {
                "valley_eigvals": [1.0],
                "coupling": [[1.0], [1.0]],
                "river_hessian": [[0, 1], [0, 0]],
            },
        ),  # fmt: skip
    ],
)
def test_bad_input_raises(call, kwargs):
    with pytest.raises(LandscapeError):
        call(**kwargs)


def test_gradient_descent_bad_start_shape_raises():
    q, _ = random_quadratic()
    with pytest.raises(LandscapeError):
        gradient_descent(q, np.zeros(3), np.zeros(6), 1.0, 5)
