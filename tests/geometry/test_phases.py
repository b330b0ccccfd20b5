"""Matrix entropy against closed forms and the phase rule on series built to pass or fail."""

from __future__ import annotations

import math

import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.geometry.phases import (
    COLLAPSE,
    DIVERSIFICATION,
    STABILIZATION,
    density_entropy,
    effective_rank,
    matrix_entropy,
)

# ---------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("n", [1, 2, 7, 100])
def test_uniform_spectrum_has_entropy_log_n_whatever_the_signs(n):
    signs = np.where(np.arange(n) % 3 == 0, -1.0, 1.0)
    assert matrix_entropy(2.5 * signs) == pytest.approx(math.log(n), abs=1e-12)
    assert effective_rank(2.5 * signs) == pytest.approx(n, rel=1e-12)


def test_one_hot_spectrum_has_entropy_zero():
    assert matrix_entropy([0.0, 0.0, -4.0, 0.0]) == 0.0
    assert effective_rank([0.0, 3.0]) == 1.0


def test_entropy_of_a_two_point_spectrum_matches_the_closed_form():
    # |l| = (1, 3): p = (1/4, 3/4)
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert matrix_entropy([1.0, -3.0]) == pytest.approx(expected, abs=1e-15)
    assert matrix_entropy([1e-7, -3e-7]) == pytest.approx(expected, abs=1e-12)  # scale-free


@pytest.mark.parametrize("bad", [[], [0.0, 0.0], [1.0, np.nan], [np.inf]])
def test_entropy_rejects_undefined_spectra(bad):
    with pytest.raises(LandscapeError):
        matrix_entropy(bad)


def test_density_entropy_is_exact_for_an_exact_quadrature():
    rng = np.random.default_rng(0)
    lam = rng.standard_normal(40) * np.logspace(-3, 1, 40)
    nodes, weights = lam[None, :], np.full((1, 40), 1 / 40)  # e.g. Rademacher on a diagonal
    assert density_entropy(nodes, weights, 40) == pytest.approx(matrix_entropy(lam), abs=1e-12)


def test_density_entropy_counts_repeated_eigenvalues_through_dim():
    # one node standing for 50 equal eigenvalues and one for 50 others, three times larger
    nodes, weights = np.array([[1.0, -3.0]]), np.array([[0.5, 0.5]])
    lam = np.concatenate([np.full(50, 1.0), np.full(50, -3.0)])
    assert density_entropy(nodes, weights, 100) == pytest.approx(matrix_entropy(lam), abs=1e-12)


def test_density_entropy_converges_with_random_complete_runs():
    """Complete Lanczos runs from random starts: nodes = eigenvalues, weights (Q'v)^2."""
    rng = np.random.default_rng(1)
    p = 30
    lam = rng.standard_normal(p) * np.logspace(-2, 1, p)
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    truth = matrix_entropy(lam)
    errors = []
    for runs in (10, 1000):
        v = rng.standard_normal((runs, p))
        w = (v @ q) ** 2
        w /= w.sum(axis=1, keepdims=True)
        nodes = np.broadcast_to(lam, (runs, p))
        errors.append(abs(density_entropy(nodes, w, p) - truth))
    assert errors[1] < 0.01  # measured 2.5e-3 at 1000 runs, 2.9e-2 at 10
    assert errors[1] < errors[0]


def test_density_entropy_rejects_bad_input():
    with pytest.raises(LandscapeError, match="shape"):
        density_entropy(np.ones((2, 3)), np.ones((2, 4)) / 4, 10)
    with pytest.raises(LandscapeError, match="sum to 1"):
        density_entropy(np.ones((1, 3)), np.ones((1, 3)), 10)
    with pytest.raises(LandscapeError, match="dim"):
        density_entropy(np.ones((1, 2)), np.full((1, 2), 0.5), 0)


# --------------------------------------------------- phases by segmented fits (BIC)

from landscape.geometry.phases import phase_rule, segment_fit, spectral_stats  # noqa: E402

SIGMA = 0.03  # nats of noise per checkpoint (seed spread of an exact-spectrum entropy)


def _three(t):
    """A dip (-0.3 nats), a rise (+0.5) and a plateau, at the level of 7 nats."""
    a, b = 0.25 * t[-1], 0.6 * t[-1]
    return np.where(t < a, 7.0 - 0.3 * t / a, np.where(t < b, 6.7 + 0.5 * (t - a) / (b - a),
                                                        7.2))


SHAPES = {
    "rise": lambda t: 7.0 + 0.5 * t / t[-1],
    "flat": lambda t: 7.0 + 0 * t,
    "fall_then_flat": lambda t: np.where(t < 0.5 * t[-1], 7.0 - 0.6 * t / t[-1], 6.7),
    "rise_then_flat": lambda t: np.where(t < 0.5 * t[-1], 7.0 + t / t[-1], 7.5),
    "fall": lambda t: 7.0 - 0.5 * t / t[-1],
}


def test_segment_fit_recovers_exact_breaks_and_slopes():
    t = np.arange(0.0, 13.0)
    y = _three(t)  # breaks at 3 and 7.2: 7.2 is not a candidate, 3 is
    f = segment_fit(t, np.where(t < 3, 7 - 0.1 * t, np.where(t < 7, 6.7 + 0.1 * (t - 3), 7.1)),
                    3, sigma=0.01)
    np.testing.assert_allclose(f.breaks, [3.0, 7.0])
    np.testing.assert_allclose(f.slopes, [-0.1, 0.1, 0.0], atol=1e-12)
    assert f.rss < 1e-20
    one = segment_fit(t, y, 1)
    assert one.segments == 1 and one.breaks.size == 0


@pytest.mark.parametrize("n", [8, 12, 16, 30, 60])
def test_phase_rule_finds_three_phases_at_any_density(n):
    t = np.linspace(0, 50, n)
    found = sum(phase_rule(t, _three(t) + np.random.default_rng(s).normal(0, SIGMA, n),
                           sigma=SIGMA).three_phases for s in range(10))
    assert found >= 9  # noise of 0.03 nats against a dip of 0.3


@pytest.mark.parametrize("n", [8, 16, 60])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_phase_rule_rejects_monotone_flat_and_two_phase_series(n, shape):
    t = np.linspace(0, 50, n)
    found = sum(phase_rule(t, SHAPES[shape](t) + np.random.default_rng(s).normal(0, SIGMA, n),
                           sigma=SIGMA).three_phases for s in range(10))
    assert found <= 1


def test_phase_rule_without_a_known_sigma_and_the_old_failure_case():
    # the level-scaled rule missed this clean curve at 6, 8 and 12 checkpoints
    for n in (8, 12, 30):
        t = np.linspace(0, 50, n)
        assert phase_rule(t, _three(t) + np.random.default_rng(n).normal(0, 1e-3, n)
                          ).three_phases
        assert not phase_rule(t, SHAPES["rise"](t) + np.random.default_rng(n).normal(
            0, 1e-3, n)).three_phases
    d = phase_rule(np.linspace(0, 50, 12), _three(np.linspace(0, 50, 12)) + 0.0,
                   sigma=0.01).as_dict()
    assert d["chosen_segments"] == 3 and len(d["slopes"]) == 3


def test_spectral_stats_hand_values():
    s = spectral_stats([2.0, 2.0, -4.0, 1e-12], eps=1e-9)
    assert s["entropy_abs"] == pytest.approx(-(0.25 * np.log(0.25) * 2 + 0.5 * np.log(0.5)))
    assert s["erank_pos"] == pytest.approx(2.0) and s["entropy_pos"] == pytest.approx(np.log(2))
    assert s["negative_fraction"] == 0.25 and s["negative_mass"] == pytest.approx(0.5)
    # round-off below eps is neither positive nor negative
    s2 = spectral_stats([1.0, -1e-12, -1e-12], eps=1e-9)
    assert s2["negative_fraction"] == 0.0 and s2["erank_pos"] == pytest.approx(1.0)
    assert np.isnan(spectral_stats([-1.0, -2.0], eps=0.0)["entropy_pos"])


def test_the_figures_phases_are_the_rules_verdict():
    # what fig3_spectra shades (series.phases_of) is phase_rule's fit, both ways
    t = np.linspace(0, 50, 12)
    y = _three(t) + np.random.default_rng(3).normal(0, 1e-3, t.size)
    ph = phase_rule(t, y).as_phases(t, y)
    assert ph.three_phases and ph.labels[0] == "collapse" and ph.labels[-1] == "stabilization"
    assert "diversification" in ph.labels and ph.drop < 0 < ph.rise
    assert ph.collapse_end < ph.stabilization_start
    np.testing.assert_allclose(ph.smoothed, y, atol=0.05)  # the chosen fit's curve
    r = SHAPES["rise"](t) + np.random.default_rng(3).normal(0, 1e-3, t.size)
    flat = phase_rule(t, r).as_phases(t, r)
    assert not flat.three_phases and set(flat.labels) == {"unassigned"}


def test_label_at_and_boundaries_of_the_drawn_phases():
    t = np.linspace(0, 50, 12)
    y = _three(t) + np.random.default_rng(3).normal(0, 1e-3, t.size)
    ph = phase_rule(t, y).as_phases(t, y)
    assert ph.label_at(0.4) == COLLAPSE and ph.label_at(49.0) == STABILIZATION
    b = ph.boundaries()
    assert b[COLLAPSE] == 0.0 < b[DIVERSIFICATION] < b[STABILIZATION]
    assert b[STABILIZATION] >= ph.stabilization_start


@pytest.mark.parametrize(
    "epochs, series, match",
    [
        ([0, 1], [1, 2], ">= 3"),
        ([0, 1, 2], [1, 2], ">= 3"),
        ([0, 2, 1], [1, 2, 3], "increasing"),
        ([0, 1, 2], [1, np.nan, 3], "finite"),
    ],
)
def test_phase_rule_rejects_bad_series(epochs, series, match):
    with pytest.raises(LandscapeError, match=match):
        phase_rule(epochs, series)


def test_three_phase_curve_is_the_piecewise_line_it_states():
    from landscape.geometry.phases import three_phase_curve

    t = np.array([0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    y = three_phase_curve(t, 0.4, 1.0, 4.0, 8.0)
    np.testing.assert_allclose(y, [0.0, -0.2, -0.4, 0.1, 0.6, 0.6])
    with pytest.raises(LandscapeError):
        three_phase_curve(t, 0.4, 1.0, 8.0, 4.0)  # stabilization before the collapse ends
    with pytest.raises(LandscapeError):
        three_phase_curve(t, -0.4, 1.0, 4.0, 8.0)


def test_phase_power_by_simulation_falls_with_noise_and_with_fewer_checkpoints():
    from landscape.geometry.phases import phase_power

    t = np.array([1.0, 3, 6, 10, 15, 22, 30, 42, 48, 54, 60])
    quiet = phase_power(t, 0.5, 0.8, 15.0, 36.0, sigma=0.02, trials=100)
    loud = phase_power(t, 0.5, 0.8, 15.0, 36.0, sigma=0.5, trials=100)
    assert quiet.power >= 0.95 and loud.power <= 0.1 and quiet.trials == 100
    # sparser schedule of the same window, same noise: less power
    mid = phase_power(t, 0.5, 0.8, 15.0, 36.0, sigma=0.1, trials=100)
    sparse = phase_power(t[::2], 0.5, 0.8, 15.0, 36.0, sigma=0.1, trials=100)
    assert sparse.power < mid.power
    # the estimate is deterministic for a seed and its errors are one line
    assert phase_power(t, 0.5, 0.8, 15.0, 36.0, 0.1, trials=20, seed=3) == \
        phase_power(t, 0.5, 0.8, 15.0, 36.0, 0.1, trials=20, seed=3)
    with pytest.raises(LandscapeError):
        phase_power(t, 0.5, 0.8, 15.0, 36.0, sigma=0.0)
