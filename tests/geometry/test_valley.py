"""Tests for landscape.geometry.valley: split, SLQ split, widths, river direction and progress."""

import math

import numpy as np
import pytest

from landscape.errors import LandscapeError
from landscape.geometry.valley import (
    quadratic_width,
    river_direction,
    river_progress,
    split_from_slq,
    split_spectrum,
    uv_label,
    valley_width,
    vee_width_ratio,
)

# ------------------------------------------------------------------ exact split

HAND = np.array([10.0, 5.0, 1.0, 0.5, 0.2, 0.005, 0.0, -0.003, -0.5])


def test_split_hand_written_spectrum():
    s = split_spectrum(HAND[::-1])  # order must not matter
    assert s.lambda_max == 10.0
    assert s.eps == pytest.approx(0.01, rel=1e-15)  # 1e-3 * lambda_max
    assert s.tau == pytest.approx(1.0, rel=1e-15)  # 0.1 * lambda_max
    assert (s.dim, s.river_dim, s.valley_dim, s.negative_dim) == (9, 3, 5, 1)
    assert s.valley_min == 0.2
    assert s.kappa == pytest.approx(50.0, rel=1e-15)
    assert s.small_count == 3  # 1.0, 0.5, 0.2 in (0.01, 1.0]
    assert s.small_force == pytest.approx(1 + 2 + 5, rel=1e-15)
    assert s.valley_force == pytest.approx(0.1 + 0.2 + 8, rel=1e-15)
    assert s.label == "V"


def test_split_boundaries_are_inclusive_as_documented():
    # eps itself is river, -eps is river, tau itself is in the small band
    s = split_spectrum([4.0, 2.0, 1.0, -1.0, 0.5], eps=1.0, tau=2.0)
    assert (s.river_dim, s.valley_dim, s.negative_dim) == (3, 2, 0)
    assert s.small_count == 1 and s.small_force == 0.5
    assert s.kappa == 2.0 and s.label == "U"  # kappa <= kappa_u = 2 is U


@pytest.mark.parametrize(
    ("eigs", "label"),
    [([1.0, 0.9, 0.8, 0.0], "U"), ([1.0, 0.2, 0.0], "intermediate"), ([1.0, 0.05], "V")],
)
def test_uv_labels(eigs, label):
    assert split_spectrum(eigs).label == label


def test_empty_valley_is_none():
    s = split_spectrum([1.0, 0.5, -0.2], eps=2.0, tau=2.0)
    assert (s.river_dim, s.valley_dim) == (3, 0)
    assert math.isnan(s.kappa) and math.isnan(s.valley_min) and s.label == "none"
    assert s.small_force == 0.0


def test_relative_split_is_scale_free():
    rng = np.random.default_rng(0)
    lam = np.concatenate([rng.normal(0, 1e-5, 50), 10 ** rng.uniform(-2.5, 0, 40), [-0.1]])
    a, b = split_spectrum(lam), split_spectrum(37.0 * lam)
    assert (a.river_dim, a.valley_dim, a.negative_dim, a.small_count, a.label) == (
        b.river_dim,
        b.valley_dim,
        b.negative_dim,
        b.small_count,
        b.label,
    )
    assert b.kappa == pytest.approx(a.kappa, rel=1e-12)
    assert b.small_force == pytest.approx(a.small_force / 37.0, rel=1e-12)


def test_split_matches_brute_force_loop():
    rng = np.random.default_rng(1)
    lam = rng.standard_normal(200) ** 3
    eps, tau = 0.05, 0.7
    s = split_spectrum(lam, eps=eps, tau=tau)
    river = sum(1 for x in lam if -eps <= x <= eps)
    valley = [x for x in lam if x > eps]
    small = [x for x in valley if x <= tau]
    assert s.river_dim == river and s.valley_dim == len(valley)
    assert s.negative_dim == 200 - river - len(valley)
    assert s.small_count == len(small)
    assert s.small_force == pytest.approx(sum(1 / x for x in small), rel=1e-12)
    assert s.kappa == pytest.approx(max(lam) / min(valley), rel=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eigvals": []},
        {"eigvals": [[1.0, 2.0]]},
        {"eigvals": [1.0, np.nan]},
        {"eigvals": [-1.0, 0.0]},  # lambda_max <= 0 with a relative eps
        {"eigvals": [1.0], "eps": 0.5, "tau": 0.1},  # tau < eps
        {"eigvals": [1.0], "eps_rel": 1.5},
        {"eigvals": [1.0], "eps": -1.0},
        {"eigvals": [1.0], "kappa_u": 5.0, "kappa_v": 3.0},
    ],
)
def test_split_bad_input_raises(kwargs):
    with pytest.raises(LandscapeError):
        split_spectrum(**kwargs)


def test_uv_label_rule():
    assert uv_label(1.5, 2.0, 10.0) == "U"
    assert uv_label(10.0, 2.0, 10.0) == "V"
    assert uv_label(3.0, 2.0, 10.0) == "intermediate"
    assert uv_label(math.nan) == "none"


# -------------------------------------------------------------------- SLQ split


def lanczos_quadrature(diag, z, m):
    """Float64 Lanczos with full re-orthogonalisation on diag(diag), one run per row of z.

    Runs all start vectors ``z`` ``[runs, P]`` at once; returns Gauss nodes and weights
    (squared first components), ``[runs, m]`` each. Needs m below the number of
    distinct eigenvalues (no breakdown), except where ``exact_rule`` is used.
    """
    runs, dim = z.shape
    q = np.zeros((runs, m, dim))
    q[:, 0] = z / np.linalg.norm(z, axis=1, keepdims=True)
    alpha, beta = np.zeros((runs, m)), np.zeros((runs, m - 1))
    for j in range(m):
        w = diag * q[:, j]
        alpha[:, j] = np.einsum("rp,rp->r", q[:, j], w)
        for _ in range(2):  # full re-orthogonalisation, twice
            w = w - np.einsum(
                "rk,rkp->rp", np.einsum("rkp,rp->rk", q[:, : j + 1], w), q[:, : j + 1]
            )
        if j < m - 1:
            beta[:, j] = np.linalg.norm(w, axis=1)
            q[:, j + 1] = w / beta[:, j, None]
    t = np.zeros((runs, m, m))
    idx = np.arange(m)
    t[:, idx, idx] = alpha
    t[:, idx[:-1], idx[1:]] = beta
    t[:, idx[1:], idx[:-1]] = beta
    nodes, vecs = np.linalg.eigh(t)
    return nodes, vecs[:, 0, :] ** 2


def slq(diag, runs, m, rng):
    """SLQ nodes and weights ``[runs, m]`` from Gaussian start vectors."""
    return lanczos_quadrature(diag, rng.standard_normal((runs, diag.size)), m)


def exact_rule(diag, z):
    """The exact Gauss rule of the spectral measure: distinct eigenvalues, summed weights.

    This is what Lanczos returns when m reaches the number of distinct eigenvalues.
    """
    nodes, inverse = np.unique(diag, return_inverse=True)
    weights = np.bincount(inverse, weights=z**2) / np.sum(z**2)
    return nodes[None], weights[None]


# gapped at eps = 1e-3 and at tau = 0.1 so every band is resolved by the quadrature
GAPPED = np.concatenate(
    [
        np.linspace(-1e-4, 1e-4, 60),  # river
        -np.geomspace(0.1, 0.5, 10),  # negative curvature
        np.geomspace(0.02, 0.06, 80),  # small valley band
        np.geomspace(0.3, 1.0, 150),  # steep valley
    ]
)


def test_slq_exact_when_quadrature_is_exact():
    # m >= number of distinct eigenvalues: the Gauss rule is the spectral measure itself;
    # Rademacher start on a diagonal matrix puts weight exactly 1/P on each eigenvalue.
    lam = np.array([3.0, 2.0, 1.0, 1.0, 0.5, 0.2, 0.0, 0.0, 0.0, -1.0])
    z = np.random.default_rng(2).choice([-1.0, 1.0], lam.size)
    nodes, weights = exact_rule(lam, z)
    # our Lanczos on the distinct eigenvalues reproduces that rule
    distinct = np.unique(lam)
    x, w = lanczos_quadrature(distinct, np.ones((1, distinct.size)), distinct.size)
    np.testing.assert_allclose(x, np.unique(lam)[None], atol=1e-12)
    np.testing.assert_allclose(w, 1.0 / distinct.size, atol=1e-12)
    s, e = split_from_slq(nodes, weights, lam.size), split_spectrum(lam)
    assert s.river_dim == pytest.approx(e.river_dim, abs=1e-9)
    assert s.valley_dim == pytest.approx(e.valley_dim, abs=1e-9)
    assert s.negative_dim == pytest.approx(e.negative_dim, abs=1e-9)
    assert s.small_count == pytest.approx(e.small_count, abs=1e-9)
    assert s.small_force == pytest.approx(e.small_force, rel=1e-9)
    assert s.kappa == pytest.approx(e.kappa, rel=1e-9) and s.kappa_source == "ritz"
    assert math.isnan(s.river_dim_se)  # one run: no standard error


def test_slq_river_estimate_converges_to_exact_count():
    exact = split_spectrum(GAPPED)
    assert (exact.river_dim, exact.negative_dim, exact.small_count) == (60, 10, 80)
    z = np.random.default_rng(3).standard_normal((160, GAPPED.size))
    nodes, weights = lanczos_quadrature(GAPPED, z, 80)
    few = split_from_slq(nodes[:16], weights[:16], GAPPED.size, lambda_max=1.0)
    many = split_from_slq(nodes[16:], weights[16:], GAPPED.size, lambda_max=1.0)
    for s in (few, many):
        assert abs(s.river_dim - 60) <= 4 * s.river_dim_se
        assert abs(s.negative_dim - 10) <= 4 * s.negative_dim_se
        assert abs(s.small_count - 80) <= 4 * s.small_count_se
        assert abs(s.small_force - exact.small_force) <= 4 * s.small_force_se
    # standard error shrinks like 1/sqrt(runs): 9x the runs, ~1/3 the error
    assert many.river_dim_se == pytest.approx(few.river_dim_se / 3, rel=0.35)
    # the 80-node rule resolves the gapped bands: per run, it equals the exact rule
    # for the same start vector (only start-vector noise is left, which se measures)
    for r in range(3):
        one = split_from_slq(nodes[r : r + 1], weights[r : r + 1], GAPPED.size, lambda_max=1.0)
        ref = split_from_slq(*exact_rule(GAPPED, z[r]), GAPPED.size, lambda_max=1.0)
        assert one.river_dim == pytest.approx(ref.river_dim, abs=1e-6)
        assert one.small_count == pytest.approx(ref.small_count, abs=1e-6)
        assert one.small_force == pytest.approx(ref.small_force, rel=1e-6)


def test_slq_given_extremes_are_used():
    rng = np.random.default_rng(4)
    nodes, weights = slq(GAPPED, 4, 40, rng)
    s = split_from_slq(nodes, weights, GAPPED.size, lambda_max=1.0, valley_min=0.02)
    assert s.kappa == pytest.approx(50.0) and s.kappa_source == "given" and s.label == "V"
    m = split_from_slq(nodes, weights, GAPPED.size, lambda_max=1.0)
    assert m.kappa_source == "mixed"
    assert m.eps == pytest.approx(1e-3) and m.tau == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("nodes", "weights", "dim", "kw"),
    [
        (np.ones((2, 3)), np.ones((2, 4)) / 4, 10, {}),  # shapes differ
        (np.ones(3), np.ones(3) / 3, 10, {}),  # not [runs, m]
        (np.ones((2, 3)), np.ones((2, 3)), 10, {}),  # weights sum to 3
        (np.ones((1, 2)), np.array([[1.5, -0.5]]), 10, {}),  # negative weight
        (np.ones((1, 2)), np.full((1, 2), 0.5), 0, {}),  # dim < 1
        (np.ones((1, 2)), np.full((1, 2), 0.5), 10, {"valley_min": 0.0}),
        (np.array([[1.0, np.nan]]), np.full((1, 2), 0.5), 10, {}),
    ],
)
def test_slq_bad_input_raises(nodes, weights, dim, kw):
    with pytest.raises(LandscapeError):
        split_from_slq(nodes, weights, dim, **kw)


# ------------------------------------------------------------------------ widths

GRID = np.linspace(-2.0, 2.0, 41)  # step 0.1, origin at index 20


def test_width_of_v_wall_is_exact():
    s, delta, lam = 1.5, 0.3, 10.0
    w = valley_width(GRID, 0.7 + s * np.abs(GRID), delta, lam=lam)
    assert w.left == pytest.approx(0.2, abs=1e-12) and w.right == pytest.approx(0.2, abs=1e-12)
    assert w.width == pytest.approx(2 * delta / s, abs=1e-12)
    assert w.loss0 == pytest.approx(0.7)
    assert w.quadratic == pytest.approx(2 * math.sqrt(2 * delta / lam), rel=1e-15)
    # sharp V: ratio = sqrt(lam * delta / 2) / s
    assert w.ratio == pytest.approx(math.sqrt(lam * delta / 2) / s, rel=1e-11)


def test_width_of_parabola_at_grid_point_is_exact_and_ratio_one():
    lam, delta = 6.0, 0.75  # half-width sqrt(2 delta / lam) = 0.5, a grid point
    w = valley_width(GRID, 0.5 * lam * GRID**2, delta, lam=lam)
    assert w.left == pytest.approx(0.5, abs=1e-12) and w.right == pytest.approx(0.5, abs=1e-12)
    assert w.ratio == pytest.approx(1.0, abs=1e-12)


def test_width_of_parabola_off_grid_within_chord_bound():
    lam, delta, h = 2.0, 0.3, 0.1
    true = math.sqrt(2 * delta / lam)  # 0.5477, between grid points 0.5 and 0.6
    w = valley_width(GRID, 0.5 * lam * GRID**2, delta)
    # the chord of a convex wall lies above it: the crossing is early by <= h^2 / (8 x0)
    for side in (w.left, w.right):
        assert 0 <= true - side <= h**2 / (8 * 0.5) + 1e-15
    assert math.isnan(w.quadratic) and math.isnan(w.ratio)


def test_width_of_huber_wall_matches_derived_ratio():
    lam, s = 4.0, 1.0  # tip 0.5 lam x^2 for |x| <= a = s / lam, then s|x| - s a / 2
    a = s / lam
    x = np.linspace(-2.0, 2.0, 401)
    f = np.where(np.abs(x) <= a, 0.5 * lam * x**2, s * np.abs(x) - s * a / 2)
    delta = 0.5  # u = 2 delta lam / s^2 = 4: crossing at 0.625, in the linear part
    w = valley_width(x, f, delta, lam=lam)
    assert w.right == pytest.approx(delta / s + a / 2, abs=1e-12)
    assert w.ratio == pytest.approx(vee_width_ratio(lam, s, delta), rel=1e-11)
    assert vee_width_ratio(lam, s, delta) == pytest.approx(5 / 4, rel=1e-15)  # (1+u)/(2 sqrt u)
    # inside the tip the wall is the parabola: ratio 1 (to interpolation accuracy)
    assert vee_width_ratio(lam, s, 0.08) == 1.0
    assert valley_width(x, f, 0.08, lam=lam).ratio == pytest.approx(1.0, abs=1e-3)
    # far out the Huber ratio approaches the sharp-V value sqrt(lam delta / 2) / s
    big = 1e6
    assert vee_width_ratio(lam, s, big) == pytest.approx(math.sqrt(lam * big / 2) / s, rel=1e-5)


def test_width_asymmetric_walls():
    s, lam, delta = 2.0, 3.2, 0.4
    f = np.where(GRID < 0, s * np.abs(GRID), 0.5 * lam * GRID**2)
    w = valley_width(GRID, f, delta)
    assert w.left == pytest.approx(delta / s, abs=1e-12)  # 0.2
    assert w.right == pytest.approx(math.sqrt(2 * delta / lam), abs=1e-12)  # 0.5
    assert w.width == pytest.approx(0.7, abs=1e-12)


def test_width_never_rises_is_flagged():
    f = -0.3 * GRID + 0.01 * GRID**2  # descends to the right, rises to the left
    w = valley_width(GRID, f, 0.5, lam=1.0)
    assert not w.right_reached and math.isinf(w.right) and math.isinf(w.width)
    assert w.left_reached and math.isfinite(w.left) and math.isinf(w.ratio)
    flat = valley_width(GRID, np.zeros_like(GRID), 0.1)
    assert not flat.left_reached and not flat.right_reached


def test_width_takes_first_crossing_and_asymmetric_grid():
    x = np.linspace(-1.0, 3.0, 41)  # origin at index 10, not the middle
    f = np.interp(x, [-1, 0, 0.5, 1.0, 2.0, 3.0], [5, 0, 1.0, 0.2, 3.0, 0.0])
    w = valley_width(x, f, 0.8)
    assert w.right == pytest.approx(0.4, abs=1e-12)  # the first bump, not the later wall
    assert w.left == pytest.approx(0.16, abs=1e-12)  # slope 5 on the left


@pytest.mark.parametrize(
    ("alphas", "losses", "delta"),
    [
        (np.linspace(-1, 1, 4), np.zeros(4), 0.1),  # no zero on an even grid
        (np.array([0.0, -1.0, 1.0]), np.zeros(3), 0.1),  # not increasing
        (GRID, np.zeros(40), 0.1),  # shapes differ
        (GRID, np.where(GRID > 1, np.nan, 0.0), 0.1),
        (GRID, np.zeros(41), 0.0),
    ],
)
def test_width_bad_input_raises(alphas, losses, delta):
    with pytest.raises(LandscapeError):
        valley_width(alphas, losses, delta)


def test_quadratic_width_and_bad_curvature():
    assert quadratic_width(2.0, 0.25) == pytest.approx(1.0, rel=1e-15)
    with pytest.raises(LandscapeError):
        quadratic_width(0.0, 0.1)
    with pytest.raises(LandscapeError):
        vee_width_ratio(1.0, 0.0, 0.1)


# ------------------------------------------------------------------------- river


def planted(seed=5, dim=30, k=4):
    """A non-orthonormal valley basis and a unit river direction orthogonal to it."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((dim, k))
    u = rng.standard_normal(dim)
    u -= basis @ np.linalg.lstsq(basis, u, rcond=None)[0]
    return rng, basis, u / np.linalg.norm(u)


def test_river_direction_removes_valley_component_exactly():
    rng, basis, u = planted()
    theta = rng.standard_normal(30)
    valley_part = basis @ rng.standard_normal(4)
    step = 0.3 * u + valley_part
    d = river_direction(theta, theta + step, basis)
    assert not d.degenerate
    np.testing.assert_allclose(d.direction, u, atol=1e-12)
    np.testing.assert_allclose(basis.T @ d.direction, 0.0, atol=1e-12)
    assert d.river_norm == pytest.approx(0.3, rel=1e-12)
    assert d.valley_fraction == pytest.approx(
        np.linalg.norm(valley_part) ** 2 / np.linalg.norm(step) ** 2, rel=1e-12
    )
    # a rank-deficient basis (a repeated column) spans the same subspace
    again = river_direction(theta, theta + step, np.hstack([basis, basis[:, :1]]))
    np.testing.assert_allclose(again.direction, u, atol=1e-12)


def test_river_direction_degenerate_cases():
    rng, basis, _ = planted()
    theta = rng.standard_normal(30)
    inside = river_direction(theta, theta + basis @ [1.0, -2.0, 0.5, 0.0], basis)
    assert inside.degenerate and np.all(np.isnan(inside.direction))
    assert inside.valley_fraction == pytest.approx(1.0, rel=1e-12)
    still = river_direction(theta, theta, basis)
    assert still.degenerate and still.step_norm == 0 and math.isnan(still.valley_fraction)
    with pytest.raises(LandscapeError):
        river_direction(theta, theta[:-1], basis)
    with pytest.raises(LandscapeError):
        river_direction(theta, theta, basis[:-1])


def test_river_progress_on_planted_trajectory():
    rng, basis, u = planted()
    n = 12
    s = np.cumsum(rng.uniform(0.1, 1.0, n)) - 0.5  # monotone river coordinate
    wiggle = (basis @ rng.standard_normal((4, n))).T  # valley oscillation
    traj = rng.standard_normal(30) + s[:, None] * u + wiggle
    fixed = river_progress(traj, river_dir=5.0 * u)  # normalised internally
    np.testing.assert_allclose(fixed.progress, s - s[0], atol=1e-12)
    np.testing.assert_allclose(
        fixed.off_river_steps, np.linalg.norm(np.diff(wiggle, axis=0), axis=1)
    )
    assert fixed.signed
    by_basis = river_progress(traj, valley_basis=basis)
    np.testing.assert_allclose(by_basis.progress, s - s[0], atol=1e-12)
    assert not by_basis.signed
    per_step = river_progress(traj, valley_basis=[basis] * (n - 1))
    np.testing.assert_allclose(per_step.progress, by_basis.progress, atol=1e-13)


def test_river_progress_signed_and_per_step_directions():
    # a path that goes 1 along e0, then back 0.5, then 2 along e1; directions per step
    traj = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.5, 2.0]])
    dirs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    p = river_progress(traj, river_dir=dirs)
    np.testing.assert_allclose(p.progress, [0.0, 1.0, 0.5, 2.5])
    unsigned = river_progress(traj, valley_basis=np.zeros((2, 0)))
    np.testing.assert_allclose(unsigned.progress, [0.0, 1.0, 1.5, 3.5])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"river_dir": np.ones(3), "valley_basis": np.ones((3, 1))},
        {"river_dir": np.ones(4)},
        {"river_dir": np.zeros(3)},
        {"river_dir": np.ones((2, 3))},
        {"valley_basis": [np.ones((3, 1))] * 2},
    ],
)
def test_river_progress_bad_input_raises(kwargs):
    with pytest.raises(LandscapeError):
        river_progress(np.arange(12.0).reshape(4, 3), **kwargs)
    with pytest.raises(LandscapeError):
        river_progress(np.ones((1, 3)), river_dir=np.ones(3))
