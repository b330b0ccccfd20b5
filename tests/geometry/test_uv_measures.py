"""Tests for landscape.geometry.uv_measures (shared thresholds, outlier kappa, Assumption 1,
direction spread): each rule shown able to say both ways (the intervals: test_stats.py)."""

import math

import numpy as np
import pytest
import torch
from helpers import u_like, v_like

from landscape.analysis.stats import compare, interval
from landscape.errors import LandscapeError
from landscape.geometry import uv_measures as uv
from landscape.geometry.measurements import direction_rises

# ------------------------------------------------------------------------------ sweep


def test_sweep_grid_and_hand_values():
    assert uv.EPS_SWEEP.size >= 13
    assert uv.EPS_SWEEP[0] == pytest.approx(1e-4) and uv.EPS_SWEEP[-1] == pytest.approx(0.1)
    assert np.all(np.diff(np.log(uv.EPS_SWEEP)) > 0)
    pts = uv.sweep([4.0, 2.0, 0.3, 1e-9, -1.0], reference=2.0, eps_rels=[0.1, 0.5])
    # eps = 0.2: valley {4, 2, 0.3}; eps = 1.0: valley {4, 2}
    assert [p.count for p in pts] == [3, 2]
    assert pts[0].kappa == pytest.approx(4 / 0.3) and pts[1].kappa == pytest.approx(2.0)
    assert pts[0].force == pytest.approx(1 / 4 + 1 / 2 + 1 / 0.3)
    assert pts[0].saturated and pts[1].saturated  # 0.3 <= 2 * 0.2 and 2 <= 2 * 1


def test_sweep_saturation_rule_literal():
    p = uv.sweep([1.0, 0.35], reference=1.0, eps_rels=[0.2])[0]
    assert p.saturated == (0.35 <= uv.SATURATION * 0.2)
    p = uv.sweep([1.0, 0.5], reference=1.0, eps_rels=[0.2])[0]
    assert not p.saturated


def test_sweep_uses_the_shared_reference_not_the_own_lambda_max():
    small = np.array([0.1, 0.05, 1e-9])  # lambda_max 0.1
    p = uv.sweep(small, reference=1.0, eps_rels=[0.07])[0]
    assert p.eps == pytest.approx(0.07) and p.count == 1  # 0.05 is river at eps = 0.07


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_u_and_v_told_apart_at_every_eps(seed):
    ref = 1.0  # both spectra normalised to lambda_max = 1 (U: close to it)
    u = uv.sweep(u_like(seed), ref)
    v = uv.sweep(v_like(seed), ref)
    for pu, pv in zip(u, v):
        assert not pu.saturated  # the U cluster sits far above every eps
        assert pv.kappa > 2 * pu.kappa


def test_identical_spectra_give_no_separation():
    s = [uv.sweep(u_like(0), 1.0)[5].kappa] * 3
    assert compare(interval(s), interval(s)) == 0


def test_sweep_rejects_bad_input():
    with pytest.raises(LandscapeError):
        uv.sweep([1.0, np.nan], 1.0)
    with pytest.raises(LandscapeError):
        uv.sweep([1.0], 0.0)
    with pytest.raises(LandscapeError):
        uv.sweep([1.0], 1.0, eps_rels=[1.5])


# --------------------------------------------------------------------- outlier kappa


def test_bulk_edge_finds_the_outliers():
    spec = np.concatenate([[10.0, 8.0, 5.0, 4.0], np.linspace(0.001, 0.01, 100), -np.ones(3)])
    assert uv.bulk_edge(spec) == 4
    assert uv.outlier_kappa(spec, 4) == pytest.approx(10.0 / 4.0)
    assert uv.common_k([spec, np.concatenate([[3.0, 2.5], np.full(50, 1e-3)])]) == 2


def test_outlier_kappa_tells_u_from_v_with_a_common_k():
    k = 10
    ku = [uv.outlier_kappa(u_like(s), k) for s in range(3)]
    kv = [uv.outlier_kappa(v_like(s), k) for s in range(3)]
    assert compare(interval(kv), interval(ku)) == 1
    assert compare(interval(ku), interval(kv)) == -1
    assert compare(interval(ku), interval(ku)) == 0
    assert math.isnan(uv.outlier_kappa([1.0, -1.0], 2))


# ----------------------------------------------------------------------- Assumption 1


def test_assumption_1_both_ways_componentwise():
    single = [1.0, 0.5, 0.3, 0.001]
    looped = [1.0, 0.4, 0.2, 0.1, 0.001]
    a = uv.assumption_1(single, looped, eps=0.01, tau=0.6)
    assert (a.count_single, a.count_looped) == (2, 3)
    assert a.more and a.componentwise and a.holds  # 0.1 <= 0.3, 0.2 <= 0.5
    b = uv.assumption_1(single, [1.0, 0.45, 0.4, 0.35], eps=0.01, tau=0.6)
    assert b.more and not b.componentwise and b.violations == 1  # 0.35 > 0.3
    c = uv.assumption_1(looped, single, eps=0.01, tau=0.6)
    assert not c.more and not c.holds
    d = uv.assumption_1(single, single, eps=0.01, tau=0.6)
    assert d.componentwise and not d.more and not d.holds


# ------------------------------------------------------------------- direction spread


@pytest.mark.parametrize("lams", [[1.0, 1.0, 1.0], [3.0, 1.0], [5.0, 2.0, 1.0, 0.1, 0.01]])
def test_expected_cv_matches_monte_carlo(lams):
    c = uv.sphere_coefficients(len(lams), 200_000, seed=1)
    rises = uv.quadratic_rises(lams, c)
    cv = rises.std() / rises.mean()
    assert cv == pytest.approx(uv.expected_cv(lams), abs=3e-3)


def test_spread_on_a_quadratic_against_its_closed_form():
    rng = np.random.default_rng(0)
    p, k = 30, 5
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    for lams in ([1.0, 0.95, 0.9, 0.92, 0.97], [1.0, 0.3, 0.1, 0.03, 0.01]):
        eig = np.concatenate([lams, rng.uniform(-1e-3, 1e-3, p - k)])
        h = torch.as_tensor(q @ np.diag(eig) @ q.T)
        x0 = torch.as_tensor(rng.standard_normal(p))
        loss = lambda prm, h=h, x0=x0: 0.5 * (prm["w"] - x0) @ h @ (prm["w"] - x0) + 3.0  # noqa: E731
        params = {"w": x0 + 0.0}
        dirs = uv.valley_directions(q[:, :k], 4000, seed=2)
        r = direction_rises(loss, params, dirs, radius=0.5)
        c = dirs @ q[:, :k]  # coefficients in the eigenbasis
        np.testing.assert_allclose(r, uv.quadratic_rises(lams, c, radius=0.5), rtol=1e-9)
        s = uv.spread(r)
        assert s.cv == pytest.approx(uv.expected_cv(lams), rel=0.05)
    # U-like: small spread; V-like: large
    u = uv.spread(uv.quadratic_rises([1.0, 0.95, 0.9], uv.sphere_coefficients(3, 64, 0)))
    v = uv.spread(uv.quadratic_rises([1.0, 0.1, 0.01], uv.sphere_coefficients(3, 64, 0)))
    assert u.cv < 0.05 < 0.4 < v.cv and u.p90_p10 < 1.2 < 5 < v.p90_p10


def test_direction_rises_cancel_the_gradient_and_follow_the_scale():
    x0 = torch.tensor([0.3, -0.2])
    h = torch.tensor([[2.0, 0.0], [0.0, 8.0]], dtype=torch.float64)
    g = torch.tensor([5.0, -7.0], dtype=torch.float64)

    def loss(prm):
        w = prm["w"].double()
        return 0.5 * w @ h @ w + g @ w

    params = {"w": x0.double()}
    e = np.eye(2)
    r = direction_rises(loss, params, e, radius=0.1)
    np.testing.assert_allclose(r, [0.5 * 0.01 * 2.0, 0.5 * 0.01 * 8.0], rtol=1e-10)
    r2 = direction_rises(loss, params, e, radius=0.1, scale=[2.0, 0.5])
    np.testing.assert_allclose(r2, [0.5 * 0.01 * 2.0 * 4, 0.5 * 0.01 * 8.0 / 4], rtol=1e-10)
    with pytest.raises(LandscapeError):
        direction_rises(loss, params, np.eye(3), radius=0.1)


def test_preconditioned_matches_adamw_denominator():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
    opt = torch.optim.AdamW([w], lr=1e-2, eps=1e-3, betas=(0.9, 0.99), weight_decay=0.0)
    for _ in range(3):
        opt.zero_grad()
        (w**4).sum().backward()
        before = w.detach().clone()
        opt.step()
    st = opt.state[w]
    d = uv.precondition_denominator(st["exp_avg_sq"].numpy(), int(st["step"]), 0.99, eps=1e-3)
    # AdamW's update: lr * m_hat / denominator (weight decay off)
    m_hat = st["exp_avg"].numpy() / (1 - 0.9 ** int(st["step"]))
    np.testing.assert_allclose((before - w.detach()).numpy(), 1e-2 * m_hat / d, rtol=1e-10)
    h = np.diag([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    np.testing.assert_allclose(np.diag(uv.preconditioned(h, d)), np.diag(h) / d)


def test_spread_refuses_non_valleys():
    with pytest.raises(LandscapeError):
        uv.spread([-1.0, -2.0])
    with pytest.raises(LandscapeError):
        uv.valley_directions(np.ones((5, 2)), 3)


def test_valley_spread_on_a_quadratic_network_free_loss():
    from landscape.geometry.measurements import valley_spread

    rng = np.random.default_rng(5)
    p = 12
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    lam = np.array([4.0, 1.0, 0.2, 0.05] + [0.0] * (p - 4))
    h = torch.as_tensor(q @ np.diag(lam) @ q.T)

    def loss(prm):
        w = prm["w"]
        return 0.5 * w @ h @ w

    params = {"w": torch.zeros(p, dtype=torch.float64)}
    out = valley_spread(loss, params, q[:, :4].T, top=4.0, n_dirs=3000, delta=0.02)
    assert out["radius"] == pytest.approx(0.1) and out["k"] == 4
    assert out["cv"] == pytest.approx(uv.expected_cv(lam[:4]), rel=0.08)
    same = valley_spread(loss, params, q[:, :1].T, top=4.0, n_dirs=8)
    assert same["cv"] == pytest.approx(0.0, abs=1e-9)  # one direction: no spread
