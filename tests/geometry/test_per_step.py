"""Per-step hopping on the simulator's gradient descent, where the answer is known.

Without feedback (the theorem's model) the valley coordinates of step ``t`` are exactly
``-eta lam_i (1 - eta lam_i)^t v_i[0]``: mode i flips sign at every step iff
``eta lam_i > 1``. Sampled every 32 steps (an epoch of the paper's runs) the same
trajectory never hops, because ``(1 - eta lam)^32 > 0``.
"""

import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.geometry.hopping import split_step
from landscape.geometry.per_step import (
    per_step_hopping,
    river_direction,
    updates_of,
)
from landscape.geometry.simulator import gradient_descent, make_quadratic, simulate

EPOCH = 32


def _path(sim):
    """``[K+1, 1 + d_v]`` parameters (river coordinate first), the valley basis, the river."""
    d = sim.descent
    theta = np.hstack([d.r, d.v])
    eye = np.eye(theta.shape[1])
    return theta, eye[1:], eye[0]


def _closed_valley(sim, steps):
    """``[steps, d_v]`` the no-feedback valley coordinates of each update."""
    lam, eta = sim.valley_eigvals, sim.eta
    v0 = sim.descent.v[0]
    t = np.arange(steps)[:, None]
    return -eta * lam * (1 - eta * lam) ** t * v0


def test_pure_flip_is_found_at_every_step_and_matches_the_closed_form():
    # U matched on lambda_max at eta_frac 1.5: eta lam in [1.36, 1.5] for every mode
    sim = simulate("U", match="lambda_max", eta_frac=1.5, feedback=False, steps=64)
    assert (sim.eta * sim.valley_eigvals > 1).all()
    theta, valley, river = _path(sim)
    h = per_step_hopping(updates_of(theta), valley, river)
    a = _closed_valley(sim, 64)
    np.testing.assert_allclose(h.valley, a, rtol=1e-10, atol=0)
    np.testing.assert_array_equal(h.hop_fraction, np.ones(63))
    np.testing.assert_allclose(h.amplitude, np.sqrt(np.mean(a**2, axis=1)), rtol=1e-10)
    # river: r[t+1] - r[t] = eta (g - C v[t]), with H_r = 0 and v[t] = (1 - eta lam)^t v0
    v = (1 - sim.eta * sim.valley_eigvals) ** np.arange(64)[:, None] * sim.descent.v[0]
    np.testing.assert_allclose(h.river, sim.eta * (1e-3 - 1e-3 * v.sum(axis=1)), rtol=1e-10)
    assert h.mean_hop_fraction == 1.0


def test_mixed_case_hops_in_the_modes_steeper_than_one_over_eta():
    # River-V at eta_frac 1.5: 2 of its 16 log-spaced modes have eta lam > 1
    sim = simulate("V", eta_frac=1.5, feedback=False, steps=64)
    known = float(np.mean(sim.eta * sim.valley_eigvals > 1))
    assert known == 2 / 16
    theta, valley, river = _path(sim)
    h = per_step_hopping(updates_of(theta), valley, river)
    np.testing.assert_array_equal(h.hop_fraction, np.full(63, known))
    np.testing.assert_array_equal(h.hops.all(axis=0), sim.eta * sim.valley_eigvals > 1)
    # an explicit quadratic with half of its modes past 1 / eta
    q = make_quadratic([1.8, 1.5, 0.5, 0.2], np.full((1, 4), 1e-3), river_slope=[1e-3])
    d = gradient_descent(q, np.zeros(1), -np.ones(4), eta=1.0, steps=40, feedback=False)
    eye = np.eye(5)
    h2 = per_step_hopping(updates_of(np.hstack([d.r, d.v])), eye[1:], eye[0])
    np.testing.assert_array_equal(h2.hop_fraction, np.full(39, 0.5))


def test_with_feedback_the_early_steps_hop_as_known():
    # plain GD on L: the river pulls the valley, so the transient's flips end once they
    # fall below that pull; while they dominate, the fraction is the known one
    for kind, match in (("U", "lambda_max"), ("V", "trace")):
        sim = simulate(kind, match=match, eta_frac=1.5, feedback=True, steps=64)
        known = float(np.mean(sim.eta * sim.valley_eigvals > 1))
        theta, valley, river = _path(sim)
        h = per_step_hopping(updates_of(theta), valley, river)
        np.testing.assert_array_equal(h.hop_fraction[:5], np.full(5, known))
        assert abs(h.hop_fraction[:8].mean() - known) <= 1 / 16


def test_epoch_spaced_sampling_misses_the_hopping():
    # the same trajectories, one stored row per 32 steps as checkpoints are: no hop at all
    for kind, match in (("U", "lambda_max"), ("V", "trace")):
        sim = simulate(kind, match=match, eta_frac=1.5, feedback=False, steps=6 * EPOCH)
        known = float(np.mean(sim.eta * sim.valley_eigvals > 1))
        theta, valley, river = _path(sim)
        per_step = per_step_hopping(updates_of(theta), valley, river)
        epochs = per_step_hopping(updates_of(theta[::EPOCH]), valley, river)
        assert per_step.mean_hop_fraction == known > 0
        np.testing.assert_array_equal(epochs.hop_fraction, np.zeros(5))
        # the between-checkpoint measure of geometry.hopping sees none either
        for i in range(1, 6):
            s = split_step(*theta[[(i - 1) * EPOCH, i * EPOCH, (i + 1) * EPOCH]], valley.T)
            assert s.hop_fraction == 0.0
        # an odd spacing keeps the flips: the blindness is the even spacing's, not the measure's
        odd = per_step_hopping(updates_of(theta[::EPOCH + 1]), valley, river)
        np.testing.assert_array_equal(odd.hop_fraction, np.full(4, known))


def test_negative_control_no_oscillation_no_hops():
    # eta lam <= 0.5 < 1 in every mode: the valley decays without crossing its floor
    sim = simulate("V", eta_frac=0.5, feedback=False, steps=64)
    theta, valley, river = _path(sim)
    h = per_step_hopping(updates_of(theta), valley, river)
    np.testing.assert_array_equal(h.hop_fraction, np.zeros(63))
    assert (h.amplitude > 0).all()  # the valley moves, it just does not oscillate
    # with feedback the river's pull may turn a mode around once, never back and forth
    for kind, match in (("U", "lambda_max"), ("V", "trace"), ("U", "trace")):
        sim = simulate(kind, match=match, eta_frac=0.5, feedback=True, steps=64)
        theta, valley, river = _path(sim)
        h = per_step_hopping(updates_of(theta), valley, river)
        assert h.hops.sum(axis=0).max() <= 1 and h.mean_hop_fraction <= 1 / 63


def test_a_rotated_basis_measures_the_same():
    # parameters in a random orthonormal frame: valley and river rows rotate along
    sim = simulate("V", eta_frac=1.5, feedback=True, steps=20)
    theta, valley, river = _path(sim)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(theta.shape[1],) * 2))
    plain = per_step_hopping(updates_of(theta), valley, river)
    turned = per_step_hopping(updates_of(theta @ q.T), valley @ q.T, q @ river)
    np.testing.assert_allclose(turned.valley, plain.valley, rtol=0, atol=1e-12)
    np.testing.assert_allclose(turned.river, plain.river, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(turned.hops, plain.hops)


def test_river_direction_is_the_displacement_off_the_valley():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    valley, d = q[:, :2].T, rng.normal(size=6)
    u = river_direction(d, valley)
    want = q[:, 2:] @ (q[:, 2:].T @ d)
    np.testing.assert_allclose(u, want / np.linalg.norm(want), atol=1e-12)
    with pytest.raises(LandscapeError, match="lies in the valley"):
        river_direction(valley[0] * 3, valley)


@pytest.mark.parametrize("updates, valley, river, message", [
    (np.zeros((0, 3)), np.eye(3)[:1], np.eye(3)[1], "updates must be"),
    (np.full((2, 3), np.nan), np.eye(3)[:1], np.eye(3)[1], "updates must be"),
    (np.zeros((2, 3)), np.eye(4)[:1], np.eye(3)[1], r"valley basis must be a finite \[k >= 1, P=3"),
    (np.zeros((2, 3)), 2 * np.eye(3)[:1], np.eye(3)[1], "orthonormal"),
    (np.zeros((2, 3)), np.eye(3)[:1], 2 * np.eye(3)[1], "unit vector"),
    (np.zeros((2, 3)), np.eye(3)[:1], np.eye(3)[0], "orthogonal to the valley"),
    (np.zeros((2, 3)), np.eye(3)[:1], np.eye(4)[1], "river direction must be a finite"),
])
def test_bad_input_is_one_line(updates, valley, river, message):
    with pytest.raises(LandscapeError, match=message):
        per_step_hopping(updates, valley, river)
