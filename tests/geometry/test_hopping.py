"""Tests for landscape.geometry.hopping on the simulator's quadratic river-valley (closed forms)."""

import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.geometry.hopping import hopping, split_step, summarise
from landscape.geometry.simulator import closed_form_push, gradient_descent, make_quadratic

LAM = np.array([1.8, 1.5, 1.2, 0.5, 0.2, 0.05])
ETA, K = 1.0, 15  # (1 - eta lam)^K stays far above round-off for every mode


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    d_r, d_v = 2, LAM.size
    c = 0.05 * rng.standard_normal((d_r, d_v))
    g = np.array([0.01, -0.02])
    q = make_quadratic(LAM, c, river_slope=g)
    v0 = rng.choice([-1.0, 1.0], d_v) * rng.uniform(0.5, 1.5, d_v)
    d = gradient_descent(q, np.zeros(d_r), v0, ETA, K, feedback=False)
    o, _ = np.linalg.qr(rng.standard_normal((d_r + d_v, d_r + d_v)))  # hide the axes
    x = np.hstack([d.r, d.v]) @ o.T
    basis = o[:, d_r:]
    return q, d, x, basis, o, v0, c, g


def test_hops_are_the_modes_beyond_one_over_eta():
    q, d, x, basis, *_ = _setup()
    h = hopping(x, range(1, K), [basis] * (K - 1))
    expected = np.mean(ETA * LAM > 1)  # (1 - eta lam) < 0 flips the sign every step
    np.testing.assert_allclose(h.hop_fraction, expected)
    s = split_step(x[4], x[5], x[6], basis)
    np.testing.assert_array_equal(s.hops, ETA * LAM > 1)
    # the valley coordinates of the step out are -eta lam v[k]
    np.testing.assert_allclose(s.valley_out, -ETA * LAM * d.v[5], atol=1e-12)


def test_river_parts_sum_to_the_closed_form_push():
    q, d, x, basis, o, v0, c, g = _setup(1)
    h_idx = list(range(1, K))
    rivers = [split_step(x[i - 1], x[i], x[i + 1], basis).river for i in h_idx]
    total = np.sum(rivers, axis=0)
    p = closed_form_push(LAM, c, v0, ETA, K)  # [K+1, d_r]
    want_r = ETA * (K - 1) * g + ETA * (p[K] - p[1])
    want = o @ np.concatenate([want_r, np.zeros(LAM.size)])
    np.testing.assert_allclose(total, want, atol=1e-12)


def test_river_gain_speed_and_summary():
    q, d, x, basis, o, v0, c, g = _setup(2)

    def loss(theta):
        y = o.T @ theta
        return float(q.loss(y[:2], y[2:]))

    idx = list(range(1, K))
    force = [float(np.sum(1 / LAM))] * len(idx)
    h = hopping(x, idx, [basis] * len(idx), loss=loss, lr_steps=[ETA] * len(idx),
                predicted_force=force)
    grad_r = np.array([g - c @ d.v[i] for i in idx])  # -dL/dr at each checkpoint
    np.testing.assert_allclose(h.river_gain, ETA * np.sum(grad_r**2, axis=1), rtol=1e-9)
    np.testing.assert_allclose(h.river_speed, np.linalg.norm(grad_r, axis=1), rtol=1e-9)
    np.testing.assert_allclose(h.valley_norm, ETA * np.linalg.norm(LAM * d.v[idx], axis=1),
                               rtol=1e-9)
    s = summarise(h)
    assert s["hop_fraction"] == pytest.approx(0.5)
    assert s["gain_per_oscillation"] == pytest.approx(h.river_gain.sum() / h.valley_norm.sum())
    assert np.isnan(s["force_correlation"])  # constant prediction: no correlation defined


def test_no_hops_below_one_over_eta():
    rng = np.random.default_rng(3)
    lam = np.array([0.9, 0.5, 0.1])
    q = make_quadratic(lam, 0.01 * rng.standard_normal((1, 3)), river_slope=[0.01])
    d = gradient_descent(q, np.zeros(1), np.ones(3), 1.0, 10, feedback=False)
    x = np.hstack([d.r, d.v])
    h = hopping(x, [3, 5], [np.eye(4)[:, 1:]] * 2)
    np.testing.assert_array_equal(h.hop_fraction, 0.0)


def test_bad_input():
    x = np.zeros((5, 3))
    with pytest.raises(LandscapeError):
        hopping(x, [0], [np.eye(3)[:, :1]])
    with pytest.raises(LandscapeError):
        hopping(x, [1, 2], [np.eye(3)[:, :1]])
    with pytest.raises(LandscapeError):
        split_step(x[0], x[1], x[2], np.zeros((3, 1)))
