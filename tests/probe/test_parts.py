"""Each public measurement of landscape.probe.parts on a quadratic whose answers are known.

The loss is ``n/2 (x - c)^T H (x - c)`` over five parameters named like attention's, with
``H = Q diag(LAM) Q^T`` built by hand (float64), so eigenvalues, traces, widths, spreads
and grids have closed forms; the dense reference is ``torch.autograd.functional.hessian``.
"""

import math

import numpy as np
import pytest
import torch

from landscape.curvature.hessian import HessianOperator
from landscape.curvature.stability import OptimizerRecord
from landscape.geometry.directions import Plane
from landscape.probe import parts
from landscape.probe.parts import GeometrySettings, HessianSettings

LAM = np.array([5.0, 3.0, 1.0, 0.5, 1e-7])  # one river direction, a valley of four
NAMES, SHAPES = ("attn.q.weight", "attn.k.weight", "mlp.w"), ((1, 2), (1, 2), (1, 1))
Q = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))[0]
H = Q @ np.diag(LAM) @ Q.T
C = np.random.default_rng(1).normal(size=5)
X0 = C + 0.3 * Q[:, 4]  # at the bottom of the valley, along the river
HS = HessianSettings(k_top=2, k_bottom=1, slq_runs=2, slq_steps=5, trace_hvps=20,
                     dtype="float64")
GS = GeometrySettings(grid=5, width_points=41, width_dirs=2, spread_k=1, spread_dirs=4)


def flat(p):
    return torch.cat([p[n].reshape(-1) for n in NAMES])


def unflat(x):
    x = torch.as_tensor(x, dtype=torch.float64)
    out, i = {}, 0
    for n, s in zip(NAMES, SHAPES):
        out[n] = x[i:i + math.prod(s)].reshape(s).clone()
        i += math.prod(s)
    return out


def loss_at(n=1, centre=C):
    h, c = torch.tensor(H), torch.tensor(centre)

    def loss(p):
        d = flat(p) - c
        return 0.5 * n * d @ h @ d

    return loss


@pytest.fixture
def op():
    return HessianOperator(loss_at(), unflat(X0))


@pytest.fixture
def top(op):
    return parts.top(op, HS)


def test_the_dense_reference_is_h():
    dense = torch.autograd.functional.hessian(lambda x: loss_at()(unflat(x)),
                                              torch.tensor(X0))
    np.testing.assert_allclose(dense.numpy(), H, atol=1e-12)


def test_top_trace_slq_and_exact_against_the_spectrum(op, top):
    np.testing.assert_allclose(top.values, LAM[:2], rtol=1e-8)
    np.testing.assert_allclose(top.bottom_values, LAM[-1:], atol=1e-8)
    assert top.converged_all and top.hvps > 0 and top.dtype == "float64"
    np.testing.assert_allclose(np.abs(top.vectors @ Q[:, :2]), np.eye(2), atol=1e-6)
    tr = parts.trace(op, HS, top)  # the deflated top exact, the bulk by its samples
    assert tr.top_sum == pytest.approx(LAM[:2].sum(), rel=1e-8)
    assert tr.estimate == pytest.approx(tr.top_sum + tr.bulk)
    assert abs(tr.estimate - LAM.sum()) < 4 * tr.stderr
    density = parts.slq(op, HS)
    assert density.nodes.shape == (2, 5) and density.dim == 5
    for nodes, weights in zip(density.nodes, density.weights):  # a full Krylov space
        np.testing.assert_allclose(np.sort(nodes), np.sort(LAM), atol=1e-8)
        assert weights.sum() == pytest.approx(1.0)
    ex = parts.exact(op, k=2)
    np.testing.assert_allclose(ex.eigvals, np.sort(LAM), atol=1e-10)
    assert ex.adam_eigvals is None and ex.adam_step == 0 and ex.hvps == 5


def test_the_adam_preconditioned_spectrum_is_d_half_h_d_half(op, top):
    v, step, beta2 = np.linspace(0.5, 2.0, 5), 10, 0.999
    d = np.sqrt(v / (1 - beta2**step)) + 1e-8  # AdamW's denominator, written out
    pre = np.diag(d**-0.5) @ H @ np.diag(d**-0.5)
    want = np.linalg.eigvalsh(pre)
    ex = parts.exact(op, k=2, adam_v=v, adam_step=step, beta2=beta2)
    np.testing.assert_allclose(ex.adam_eigvals, want, rtol=1e-8)
    adamw = OptimizerRecord("AdamW", beta1=0.9, beta2=beta2, eps=1e-8)
    s = parts.sharpness(op, top, lr=0.1, optimizer=adamw, adam_v=v, adam_step=step)
    assert s.lambda_max == pytest.approx(LAM[0]) and s.edge_on == "preconditioned"
    assert s.adam_lambda_max == pytest.approx(want[-1], rel=1e-3)
    assert s.adam_threshold == pytest.approx(380.0)  # (2 + 2 beta1) / ((1 - beta1) lr)
    before = parts.sharpness(op, top, lr=float("nan"), optimizer=adamw)
    assert math.isnan(before.adam_lambda_max) and math.isnan(before.threshold)


def test_sharpness_compares_with_the_edge_of_gd_and_of_heavy_ball(op, top):
    gd = parts.sharpness(op, top, lr=0.01, optimizer=OptimizerRecord("SGD"))
    assert gd.threshold == pytest.approx(200.0) and gd.edge_on == "hessian"
    heavy = parts.sharpness(op, top, lr=0.01, optimizer=OptimizerRecord("SGD", momentum=0.9))
    assert heavy.threshold == pytest.approx(380.0)  # (2 + 2 beta) / lr
    unknown = parts.sharpness(op, top, lr=0.01, optimizer=None)
    assert math.isnan(unknown.threshold) and unknown.edge_unknown


def test_overlap_of_a_space_with_itself_and_with_its_complement(top):
    assert parts.overlap(top, top, 3).cosines == pytest.approx([1.0, 1.0])
    other = parts.sc.Top(**{**top.__dict__, "vectors": Q[:, 2:4].T.astype(np.float32)})
    assert np.abs(parts.overlap(top, other, 3).cosines).max() < 1e-6


def test_blocks_are_the_diagonal_blocks_of_h(op):
    b = parts.blocks(op, HessianSettings(k_top=2, blocks=("attn.*", "mlp.*"),
                                         dtype="float64"))
    attn, mlp = b.groups["attn.*"], b.groups["mlp.*"]
    np.testing.assert_allclose(attn.values, np.linalg.eigvalsh(H[:4, :4])[::-1][:2],
                               rtol=1e-6)
    assert attn.trace == pytest.approx(np.trace(H[:4, :4]), rel=1e-8) and attn.dim == 4
    assert mlp.values[0] == pytest.approx(H[4, 4]) and mlp.dim == 1


def test_valley_split_and_basis(op, top):
    for v, tol in ((parts.valley(GS, 5, top, exact_part=parts.exact(op)), 1e-9),
                   (parts.valley(GS, 5, top, slq_part=parts.slq(op, HS)), 0.2)):  # estimated
        assert v.valley_dim == pytest.approx(4, abs=tol)
        assert v.river_dim == pytest.approx(1, abs=tol)
        assert v.lambda_max == pytest.approx(5.0) and v.kappa == pytest.approx(10.0)
    with pytest.raises(parts.LandscapeError, match="exact spectrum or an SLQ"):
        parts.valley(GS, 5, top)
    assert parts.valley_basis(top, 0.5).shape == (5, 2)  # 3 > 0.5 * 5
    assert parts.valley_basis(top, 0.7).shape == (5, 1)


def test_widths_are_the_parabolas_and_the_spread_is_flat_on_one_direction(top):
    w = parts.widths(loss_at(), unflat(X0), top, GS)
    np.testing.assert_allclose(w.quadratic, 2 * np.sqrt(2 * GS.delta / LAM[:2]), rtol=1e-6)
    np.testing.assert_allclose(w.width, w.quadratic, rtol=0.02)  # read on a grid of 41
    s = parts.spread(loss_at(), unflat(X0), GS, top)
    assert s.k == 1 and s.source == "lanczos"
    assert s.radius == pytest.approx(math.sqrt(2 * GS.delta / LAM[0]), rel=1e-6)
    np.testing.assert_allclose(s.rises, GS.delta, rtol=1e-5)  # +-v1 only: every rise delta
    assert s.cv == pytest.approx(0.0, abs=1e-5)


def test_river_removes_the_valley_part_of_a_step():
    e = np.eye(5)
    r = parts.river(np.zeros(5), 3 * e[0] + 4 * e[1], e[:, :1])
    np.testing.assert_allclose(r.direction, e[1], atol=1e-7)
    assert (r.step_norm, r.river_norm) == pytest.approx((5.0, 4.0))
    assert r.valley_fraction == pytest.approx(9 / 25) and not r.degenerate
    assert parts.river(np.zeros(5), e[0], e[:, :1]).degenerate


def test_grids_are_the_loss_on_their_plane():
    params = unflat(X0 + Q[:, 0])
    g = parts.slice_random(loss_at(), params, GS)
    x, y = (np.concatenate([d[n].reshape(-1) for n in NAMES]).astype(np.float64)
            for d in (g.directions["x"], g.directions["y"]))
    for i, j in ((0, 0), (2, 2), (4, 1)):
        p = X0 + Q[:, 0] + g.alphas[i] * x + g.betas[j] * y
        assert g.loss[i, j] == pytest.approx(0.5 * (p - C) @ H @ (p - C), rel=1e-5)
    assert g.loss[2, 2] == pytest.approx(LAM[0] / 2)  # the centre: params themselves
    plane = Plane(unflat(x), unflat(y), {"kind": "given"})
    shared = parts.slice_shared(loss_at(), params, plane, GS)
    np.testing.assert_allclose(shared.loss, g.loss, rtol=1e-6)
    assert shared.plane_hash == g.plane_hash
    assert parts.plane_hash(Plane(unflat(y), unflat(x), {})) != g.plane_hash


def test_the_river_valley_plane_and_a_skipped_one(top):
    e = np.eye(5)
    river = parts.river(X0, X0 + 0.1 * Q[:, 4], Q[:, :4])
    g = parts.slice_river_valley(loss_at(), unflat(X0), river, top, GS)
    assert g.skipped == "" and g.loss.shape == (5, 5)
    np.testing.assert_allclose(g.loss[:, 2], 0.0, atol=1e-7)  # along the river: flat
    half = 3 * math.sqrt(2 * GS.delta / LAM[0])
    assert g.loss[2, -1] == pytest.approx(0.5 * LAM[0] * half**2, rel=1e-4)
    flat_river = parts.river(np.zeros(5), e[0], e[:, :1])
    assert parts.slice_river_valley(loss_at(), unflat(X0), flat_river, top, GS).skipped


def test_river_progress_and_pca_of_a_straight_trajectory(top):
    steps = [0, 10, 20, 30]
    traj = np.stack([X0 + t * Q[:, 4] for t in (0.0, 1.0, 3.0, 6.0)])  # along the river
    rp = parts.river_progress(traj, steps, {10: top}, GS)
    np.testing.assert_allclose(rp.river_steps, [1.0, 2.0, 3.0], atol=1e-6)
    np.testing.assert_allclose(rp.off_river_steps, 0.0, atol=1e-6)
    assert rp.probed_steps.tolist() == [10]
    zig = traj + np.outer([0, 1, 0, 1], 0.2 * Q[:, 0])  # a plane: river and top valley
    layout = parts.ParamLayout(NAMES, SHAPES)
    pca = parts.pca(loss_at(), layout, zig.astype(np.float32), steps, GS)
    np.testing.assert_allclose(pca.residuals, 0.0, atol=1e-5)
    assert pca.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(pca.true_loss, pca.plane_loss, rtol=1e-4, atol=1e-7)


def test_loop_curve_and_switch_scale_with_the_loops():
    gs = GeometrySettings(grid=3, loops_max=3)
    curve = parts.loop_curve(loss_at, unflat(X0), trained_loops=1, gs=gs, step=5)
    assert curve.loops.tolist() == [1, 2, 3] and curve.step == 5
    np.testing.assert_allclose(curve.lambda_max, LAM[0] * np.arange(1, 4), rtol=1e-4)
    ck = [unflat(X0), unflat(X0 + Q[:, 0]), unflat(X0 - Q[:, 1])]
    sw = parts.switch(lambda n: HessianOperator(loss_at(n), ck[0]), loss_at(3), ck, 3,
                      HS, gs, step=7)
    np.testing.assert_allclose(sw.before.values, LAM[:2], rtol=1e-6)
    np.testing.assert_allclose(sw.after.values, 3 * LAM[:2], rtol=1e-6)
    assert abs(sw.after.trace - 3 * LAM.sum()) < 4 * sw.after.trace_stderr
    assert sw.overlap == pytest.approx([1.0, 1.0])
    assert sw.loss_jump == pytest.approx(0.0, abs=1e-7)  # on the river: no loss to jump
    assert sw.slice.loss[1, 1] == pytest.approx(0.0, abs=1e-7)  # the switch: the minimum
    assert sw.slice.loss[2, 1] == pytest.approx(3 * 0.5 * LAM[0] * 1.5**2, rel=1e-6)


def test_qk_cosine_compares_the_attention_gradients_only():
    centre = C + np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    grads = [H @ (X0 - c) for c in (C, centre)]  # the gradients under 1 and 3 loops
    q1, q3 = grads[0][:4], 3 * grads[1][:4]
    want = q1 @ q3 / np.linalg.norm(q1) / np.linalg.norm(q3)

    def at(n):
        return loss_at(n, C if n == 1 else centre)

    assert parts.qk_cosine(at, unflat(X0)) == pytest.approx(want, abs=1e-8)
    qk = parts.qk_alignment([(4, at, unflat(X0)), (8, at, unflat(X0))])
    assert qk.steps.tolist() == [4, 8] and qk.loops.tolist() == [1, 3]
    np.testing.assert_allclose(qk.cosine, want, atol=1e-8)
    with pytest.raises(parts.LandscapeError, match="no attention Q/K"):
        parts.qk_cosine(lambda n: (lambda p: (p["w"] ** 2).sum()),
                        {"w": torch.ones(2, dtype=torch.float64)})
