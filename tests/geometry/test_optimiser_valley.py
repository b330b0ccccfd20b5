"""The optimiser's valley: edge span, alternating span, principal angles, restricted U/V.

References: closed forms on diagonal quadratics, a hand-made pair of planes for the
angles, the simulator (whose hopping modes are known) for the alternating span, and a dense
float64 Hessian of a tiny torch model for the restricted measures.
"""

import math

import numpy as np
import pytest
import torch

from landscape.curvature.stability import adam_edge
from landscape.errors import LandscapeError
from landscape.geometry.optimiser_valley import (
    alternating_part,
    alternating_span,
    edge_valley,
    orthonormal_rows,
    principal_angles,
    restricted_hessian,
    restricted_measures,
)
from landscape.geometry.per_step import updates_of
from landscape.geometry.simulator import gradient_descent, make_quadratic
from landscape.geometry.uv_measures import expected_cv


def test_principal_angles_of_a_hand_made_pair():
    t = 0.7
    a = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    b = np.array([[0, math.cos(t), math.sin(t), 0], [3.0, 0, 0, 0]])  # not orthonormal
    np.testing.assert_allclose(principal_angles(a, b), [0.0, t], atol=1e-12)
    np.testing.assert_allclose(principal_angles(a, [[0, 0, 0, 1.0]]), [math.pi / 2])
    np.testing.assert_allclose(principal_angles(a, a), [0.0, 0.0], atol=1e-12)
    with pytest.raises(LandscapeError):
        principal_angles(a, np.ones((2, 3)))


def _diag_case(lam, d):
    """Preconditioned eigenpairs of diag(lam) under denominator d: sorted, in y coords."""
    pre = np.asarray(lam) / np.asarray(d)
    order = np.argsort(-pre)
    return pre[order], np.eye(len(lam))[order]


def test_edge_span_keeps_the_modes_near_the_edge_and_maps_them_to_parameters():
    lr, beta1 = 1e-2, 0.9
    edge = adam_edge(lr, beta1)  # 3800
    lam = np.array([3000.0, 2500.0, 100.0, 10.0, 1.0])
    d = np.array([1.0, 2.0, 0.5, 1.0, 1.0])  # preconditioned: 3000, 1250, 200, 10, 1
    vals, vecs = _diag_case(lam, d)
    ev = edge_valley(vals, vecs, d, edge)
    assert ev.near_edge and ev.k == 1 and not ev.all_near  # only 3000 >= 0.5 * 3800
    np.testing.assert_allclose(np.abs(ev.basis), [[1, 0, 0, 0, 0]], atol=1e-12)
    ev2 = edge_valley(vals, vecs, d, edge, factor=0.3)
    assert ev2.k == 2
    np.testing.assert_allclose(principal_angles(ev2.basis, np.eye(5)[:2]), [0, 0], atol=1e-12)
    # a non-diagonal preconditioned eigenvector w maps to D^-1/2 w in parameter space
    w = np.array([[1.0, 1.0, 0, 0, 0]]) / math.sqrt(2)
    ev3 = edge_valley([4000.0], w, d, edge)
    expected = (w / np.sqrt(d))[0]
    np.testing.assert_allclose(np.abs(ev3.basis[0]), np.abs(expected) / np.linalg.norm(expected))
    assert ev3.all_near and "may be more" in ev3.note


def test_edge_span_falls_back_to_the_top_k_and_says_so():
    vals, vecs = _diag_case([5.0, 4.0, 3.0, 2.0, 1.0], np.ones(5))
    ev = edge_valley(vals, vecs, np.ones(5), edge=3800.0, fallback_k=3)
    assert not ev.near_edge and ev.k == 3 and "top 3 used" in ev.note
    np.testing.assert_allclose(principal_angles(ev.basis, np.eye(5)[:3]), 0, atol=1e-12)
    with pytest.raises(LandscapeError):
        edge_valley(vals, vecs, np.ones(5), edge=math.nan)
    with pytest.raises(LandscapeError):
        edge_valley(vals, vecs[:, :4], np.ones(5), edge=1.0)


def test_alternating_span_finds_the_hopping_modes_of_the_simulator():
    # 4 valley modes: two past 1/eta (they flip sign every step), two below (they decay)
    q = make_quadratic([1.8, 1.6, 0.5, 0.3], np.full((1, 4), 1e-3), river_slope=[1e-2])
    d = gradient_descent(q, np.zeros(1), np.array([1.0, -1.0, 1.0, 1.0]), eta=1.0, steps=64,
                         feedback=False)
    theta = np.hstack([d.r, d.v])  # coordinates: river, then the 4 valley modes
    span = alternating_span(updates_of(theta), k=2)
    hopping = np.eye(5)[1:3]
    # the decaying modes have a (small) second difference too, correlated in time with
    # the hopping ones: they tilt the span by a few hundredths of a radian
    assert principal_angles(span.basis, hopping).max() < 0.05
    assert span.captured > 0.99 and span.alternating_share > 3
    assert np.abs(span.basis @ np.eye(5)[[0, 3, 4]].T).max() < 0.05
    # the third direction is mostly the decaying modes': a much smaller singular value
    assert span.singular_values[2] < 0.1 * span.singular_values[1]
    # a steady drift has no alternating part
    drift = np.outer(np.ones(10), [1.0, 2.0, 0.0])
    np.testing.assert_allclose(alternating_part(drift), 0.0)
    with pytest.raises(LandscapeError, match="no alternating part"):
        alternating_span(drift, 1)


def test_alternating_span_and_edge_span_agree_on_a_quadratic_run_of_gd():
    # GD, step 1, on six valley modes: eta lam in {1.95, 1.9, 1.85} sit near GD's edge
    # 2 / eta and alternate for the whole window (as at the edge of stability), {0.9, 0.5,
    # 0.1} decay; the modes within 0.5 of the edge are the first three
    lam = np.array([1.95, 1.9, 1.85, 0.9, 0.5, 0.1])
    q = make_quadratic(lam, np.full((1, 6), 1e-3), river_slope=[1e-2])
    d = gradient_descent(q, np.zeros(1), np.ones(6), eta=1.0, steps=64, feedback=False)
    theta = np.hstack([d.r, d.v])
    span = alternating_span(updates_of(theta), k=2)
    vals = np.concatenate([[0.0], lam])  # the river coordinate has no curvature here
    order = np.argsort(-vals)
    ev = edge_valley(vals[order], np.eye(7)[order], np.ones(7), edge=2.0)
    assert ev.near_edge and ev.k == 3
    # the alternating span lies inside the edge span (2 angles, both small). Its size k
    # must stay below the number of well-separated alternating profiles: three modes
    # alternating at nearly one rate have nearly one time profile, so a third direction
    # would be fixed by the decaying modes' transient instead
    assert principal_angles(span.basis, ev.basis).max() < 0.05
    # against the raw top-4 (one decaying mode more) the largest angle is a right angle
    raw = np.eye(7)[order][:4]
    assert principal_angles(raw, ev.basis).max() < 1e-12
    assert principal_angles(span.basis, np.eye(7)[[4, 5, 6]]).min() > 1.4


def test_restricted_measures_match_the_closed_forms_on_a_diagonal_quadratic():
    lam = np.array([9.0, 4.0, 1.0, 0.01, 0.0])
    h = np.diag(lam)
    m = restricted_measures(restricted_hessian(lambda v: h @ v, np.eye(5)[:3]))
    np.testing.assert_allclose(m.eigvals, [9, 4, 1])
    assert m.kappa == pytest.approx(9.0) and m.force == pytest.approx(1 + 1 / 4 + 1 / 9)
    assert m.steepness_cv == pytest.approx(expected_cv([9, 4, 1])) and m.negative == 0
    # a uniform valley is U: kappa 1, CV 0; one that reaches a flat direction has no kappa
    u = restricted_measures(np.eye(3) * 2.0)
    assert u.kappa == pytest.approx(1.0) and u.steepness_cv == pytest.approx(0.0)
    flat = restricted_measures(restricted_hessian(lambda v: h @ v, np.eye(5)[2:]))
    assert math.isnan(flat.kappa) and flat.negative == 1
    # a rotated basis gives the same eigenvalues (the span is what counts)
    rot = orthonormal_rows(np.array([[1.0, 1.0, 0, 0, 0], [1.0, -1.0, 1.0, 0, 0],
                                     [0, 0, 1.0, 0, 0]]))
    np.testing.assert_allclose(restricted_measures(rot @ h @ rot.T).eigvals, [9, 4, 1])
    with pytest.raises(LandscapeError):
        restricted_hessian(lambda v: h @ v, np.ones((2, 5)))


def test_restricted_hessian_from_products_matches_a_dense_float64_hessian():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    shapes = [p.shape for p in net.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double()

    def loss(flat):
        ps, i = [], 0
        for s in shapes:
            n = int(np.prod(s))
            ps.append(flat[i:i + n].reshape(s))
            i += n
        h1 = torch.tanh(x.double() @ ps[0].T + ps[1])
        return torch.nn.functional.cross_entropy(h1 @ ps[2].T + ps[3], y)

    dense = torch.autograd.functional.hessian(loss, flat0).numpy()

    def hvp(v):
        _, out = torch.autograd.functional.hvp(loss, flat0, torch.as_tensor(v))
        return out.numpy()

    q = orthonormal_rows(np.random.default_rng(1).normal(size=(4, flat0.numel())))
    np.testing.assert_allclose(restricted_hessian(hvp, q), q @ dense @ q.T, atol=1e-12)
