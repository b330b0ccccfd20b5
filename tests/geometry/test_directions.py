"""Directions: filter normalisation, seeding, planes, PCA of a trajectory, projections."""

import math

import numpy as np
import pytest
import torch

from landscape.curvature.objective import ParamLayout, detached_params
from landscape.errors import LandscapeError
from landscape.geometry import directions as D
from landscape.train.model import LoopedTransformer, ModelConfig
from landscape.train.split_loss import make_loss_fn
from landscape.train.tasks.base import IGNORE, Split


def tiny_params(mlp=True, dtype=torch.float64, seed=0, perturb=True):
    """Parameters of a tiny model; perturbed so that biases and LayerNorm are not trivial."""
    torch.manual_seed(seed)
    model = LoopedTransformer(ModelConfig(d_model=8, n_heads=2, loops=3, mlp=mlp), 5, 6)
    params = detached_params(model.to(dtype))
    if perturb:
        g = torch.Generator().manual_seed(seed + 100)
        params = {n: p + 0.1 * torch.randn(p.shape, generator=g, dtype=dtype)
                  for n, p in params.items()}
    return model, params


def clone(params):
    return {n: p.clone() for n, p in params.items()}


def assert_same(a, b):
    assert list(a) == list(b)
    for n in a:
        assert torch.equal(a[n], b[n]), n


def flat(d):
    return torch.cat([t.reshape(-1).double() for t in d.values()])


# --------------------------------------------------------------------------- normalisation


def test_filter_normalised_rows_have_the_weights_row_norms_and_1d_are_zero():
    _, params = tiny_params()
    before = clone(params)
    d = D.random_direction(params, seed=7)
    assert_same(params, before)  # input untouched
    two_d = 0
    for name, w in params.items():
        assert d[name].shape == w.shape and d[name].dtype == w.dtype
        if w.dim() == 2:
            two_d += 1
            want = torch.linalg.vector_norm(w, dim=1)  # one norm per row
            got = torch.linalg.vector_norm(d[name], dim=1)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
            assert not torch.allclose(d[name], w)  # a direction, not the weights
        else:
            assert torch.count_nonzero(d[name]) == 0, name
    assert two_d == 9  # embed, pos, q, k, v, o, mlp.0, mlp.2, head


def test_one_d_layer_and_norm_layer_and_none():
    _, params = tiny_params()
    d = D.random_direction(params, seed=1, norm="layer", one_d="layer")
    for name, w in params.items():
        assert math.isclose(float(d[name].norm()), float(w.norm()), rel_tol=1e-12), name
    row = torch.linalg.vector_norm(d["block.attn.q.weight"], dim=1)
    assert float(row.std()) > 1e-3  # layer-wise: rows are not individually rescaled
    raw = D.random_direction(params, seed=1, norm="none", one_d="keep")
    torch.testing.assert_close(flat(raw), flat(D.gaussian_like(params, 1)), rtol=0, atol=0)


def test_one_d_layer_leaves_a_zero_tensor_zero():
    _, params = tiny_params(perturb=False)  # LayerNorm biases are 0 at initialisation
    d = D.random_direction(params, seed=1, one_d="layer")
    assert torch.count_nonzero(d["block.ln1.bias"]) == 0
    assert math.isclose(float(d["block.ln1.weight"].norm()), math.sqrt(8), rel_tol=1e-12)


def test_directions_are_gaussian_not_uniform():
    _, params = tiny_params()
    z = flat(D.random_direction(params, seed=3, norm="none", one_d="keep")).numpy()
    n = z.size
    assert abs(z.mean()) < 4 / math.sqrt(n)
    assert abs(z.std() - 1) < 4 / math.sqrt(2 * n)
    kurtosis = ((z - z.mean()) ** 4).mean() / z.var() ** 2
    assert abs(kurtosis - 3) < 5 * math.sqrt(24 / n)  # uniform would give 1.8


def test_seed_reproduces_independent_of_global_rng_and_dtype():
    _, params = tiny_params()
    torch.manual_seed(123)
    a = D.random_direction(params, seed=5)
    torch.manual_seed(999)
    torch.rand(10)
    s0 = torch.get_rng_state()
    b = D.random_direction(params, seed=5)
    assert_same(a, b)
    assert torch.equal(torch.get_rng_state(), s0)  # the global RNG is not consumed
    c = D.random_direction(params, seed=6)
    assert not torch.allclose(flat(a), flat(c))
    p32 = {n: p.float() for n, p in params.items()}
    torch.testing.assert_close(flat(D.random_direction(p32, seed=5)), flat(a), rtol=1e-6, atol=1e-7)


def test_a_parameters_entries_do_not_depend_on_the_other_parameters():
    _, with_mlp = tiny_params(mlp=True)
    _, without = tiny_params(mlp=False)
    a = D.random_direction(with_mlp, seed=2, norm="none", one_d="keep")
    b = D.random_direction(without, seed=2, norm="none", one_d="keep")
    for name in without:
        assert torch.equal(a[name], b[name]), name


def test_normalize_direction_rescales_any_direction():
    _, params = tiny_params()
    g = torch.Generator().manual_seed(0)
    raw = {n: 3.0 * torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}
    before = clone(raw)
    d = D.normalize_direction(raw, params)
    assert_same(raw, before)
    w = params["embed.weight"]
    want = torch.linalg.vector_norm(w, dim=1)
    torch.testing.assert_close(D.filter_norms(d["embed.weight"]), want)
    with pytest.raises(LandscapeError, match="norm='rows'"):
        D.normalize_direction(raw, params, norm="rows")
    with pytest.raises(LandscapeError, match="one_d"):
        D.random_direction(params, 0, one_d="filter")


# --------------------------------------------------------------------------- planes


def test_random_plane_is_orthogonal_with_restored_norm_and_reported_filter_change():
    _, params = tiny_params()
    before = clone(params)
    plane = D.random_plane(params, seed=11)
    assert_same(params, before)
    assert_same(plane.x, D.random_direction(params, seed=11))
    x, y = flat(plane.x), flat(plane.y)
    assert abs(float(x @ y)) < 1e-12 * float(x.norm() * y.norm())
    y_raw = D.normalize_direction(D.gaussian_like(params, 11, index=1), params)
    yr = flat(y_raw)
    assert math.isclose(float(y.norm()), float(yr.norm()), rel_tol=1e-12)  # norm restored
    c = float(x @ yr / (x.norm() * yr.norm()))
    assert math.isclose(plane.info["cosine"], c, rel_tol=1e-10)
    change = 0.0  # independent: per-row ratio of y's norms to the weights'
    for name, w in params.items():
        if w.dim() == 2:
            rows = torch.linalg.vector_norm(plane.y[name], dim=1)
            ratio = rows / torch.linalg.vector_norm(w, dim=1)
            change = max(change, float((ratio - 1).abs().max()))
        else:
            assert torch.count_nonzero(plane.y[name]) == 0
    assert math.isclose(plane.info["y_filter_change"], change, rel_tol=1e-9)
    assert 0 < change <= math.sqrt((1 + abs(c)) / (1 - abs(c))) - 1 + 1e-12
    assert plane.info["kind"] == "random" and plane.info["seed"] == 11


def test_orthogonalize_against_several_and_errors():
    _, params = tiny_params()
    a, b, c = (D.random_direction(params, s, norm="none", one_d="keep") for s in (1, 2, 3))
    before = clone(c)
    out = D.orthogonalize(c, [a, b], restore_norm=False)
    assert_same(c, before)
    fa, fb, fo, fc = flat(a), flat(b), flat(out), flat(c)
    assert abs(float(fo @ fa)) < 1e-12 * float(fo.norm() * fa.norm())
    assert abs(float(fo @ fb)) < 1e-12 * float(fo.norm() * fb.norm())
    basis = torch.linalg.qr(torch.stack([fa, fb], 1))[0]  # independent reference
    torch.testing.assert_close(fo, fc - basis @ (basis.T @ fc), rtol=1e-10, atol=1e-12)
    with pytest.raises(LandscapeError, match="span"):
        D.orthogonalize({n: 2 * t for n, t in a.items()}, a)
    with pytest.raises(LandscapeError, match="dependent"):
        D.orthogonalize(c, [a, a])


def test_interpolation_and_plane_through_checkpoints():
    _, pa = tiny_params(seed=0)
    _, pb = tiny_params(seed=1)
    _, pc = tiny_params(seed=2)
    ca, cb = clone(pa), clone(pb)
    d = D.interpolation(pa, pb)
    assert_same(pa, ca)
    assert_same(pb, cb)
    for n in pa:
        torch.testing.assert_close(pa[n] + d[n], pb[n], rtol=0, atol=1e-15)
    plane = D.plane_through(pa, pb, pc)
    cx, cy = plane.info["c"]
    assert cy == 1.0
    for n in pa:
        torch.testing.assert_close(pa[n] + cx * plane.x[n] + plane.y[n], pc[n], rtol=0, atol=1e-14)
    rand = D.plane_through(pa, pb, seed=4)
    fx, fy = flat(rand.x), flat(rand.y)
    assert abs(float(fx @ fy)) < 1e-12 * float(fx.norm() * fy.norm())
    assert math.isclose(float(fy.norm()), float(fx.norm()), rel_tol=1e-12)
    with pytest.raises(LandscapeError, match="same point"):
        D.plane_through(pa, pa)


def test_shared_plane_records_its_reference_and_checks_layouts():
    _, ref = tiny_params(seed=0)
    _, other = tiny_params(seed=1)
    _, no_mlp = tiny_params(mlp=False)
    plane = D.shared_plane(ref, 3, reference_name="looped step 100", others=[other])
    assert plane.info["reference"] == "looped step 100" and plane.info["kind"] == "shared"
    assert_same(plane.y, D.random_plane(ref, 3).y)
    with pytest.raises(LandscapeError, match="lacks parameter 'block.ln2.weight'"):
        D.shared_plane(ref, 3, reference_name="r", others=[no_mlp])


def test_eigen_directions_round_trip_and_do_not_alias():
    _, params = tiny_params()
    layout = ParamLayout.of(params)
    v = torch.randn(layout.size, 3, dtype=torch.float64)
    dirs = D.eigen_directions(layout, v)
    assert len(dirs) == 3
    for i, d in enumerate(dirs):
        assert torch.equal(layout.flatten(d), v[:, i])
    v1 = v[:, :1].clone()
    (one,) = D.eigen_directions(layout, v1)
    v1.zero_()
    assert torch.count_nonzero(layout.flatten(one)) == layout.size
    (from_np,) = D.eigen_directions(layout, v[:, 0].numpy())
    assert torch.equal(layout.flatten(from_np), v[:, 0])
    with pytest.raises(LandscapeError, match=f"P = {layout.size}"):
        D.eigen_directions(layout, torch.zeros(layout.size + 1, 2))


def test_bad_direction_names_the_parameter():
    _, params = tiny_params()
    d = D.random_direction(params, 0)
    bad = {**d, "block.attn.q.weight": torch.zeros(8, 7, dtype=torch.float64)}
    with pytest.raises(LandscapeError, match=r"'block.attn.q.weight' has shape \(8, 7\)"):
        D.check_direction(bad, params)
    missing = {n: t for n, t in d.items() if n != "pos.weight"}
    with pytest.raises(LandscapeError, match="lacks parameter 'pos.weight'"):
        D.check_direction(missing, params)
    with pytest.raises(LandscapeError, match="'extra'"):
        D.check_direction({**d, "extra": torch.zeros(1)}, params)
    nan = {**d, "head.weight": torch.full((5, 8), float("nan"), dtype=torch.float64)}
    with pytest.raises(LandscapeError, match="'head.weight' has non-finite"):
        D.check_direction(nan, params)
    one_inf = d["head.weight"].clone()
    one_inf[2, 3] = -float("inf")
    with pytest.raises(LandscapeError, match="'head.weight' has non-finite"):
        D.check_direction({**d, "head.weight": one_inf}, params)
    # finite entries whose sum overflows are finite: the entry-by-entry check decides
    huge = {**d, "head.weight": torch.full((5, 8), 1e308, dtype=torch.float64)}
    assert not np.isfinite(float(huge["head.weight"].sum()))
    D.check_direction(huge, params)


# --------------------------------------------------------------------------- PCA


def planted(n=10, p=40, noise=0.0, seed=0):
    """A trajectory in a known plane: centre + u e1 + v e2 (+ optional off-plane noise)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(p, 3, generator=g, dtype=torch.float64))[0]
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    uv = torch.stack([3 * t + 0.2 * torch.sin(7 * t), 0.5 * t**2 - 0.3 * t], 1)  # [n, 2]
    centre = torch.randn(p, generator=g, dtype=torch.float64)
    off = noise * torch.randn(n, generator=g, dtype=torch.float64)[:, None] * basis[:, 2]
    return centre + uv @ basis[:, :2].T + off, basis[:, :2]


@pytest.mark.parametrize("centred", [True, False])
def test_pca_recovers_a_planted_planar_trajectory(centred):
    traj, basis = planted()
    before = traj.clone()
    pca = D.pca_directions(traj, centred=centred)
    assert torch.equal(traj, before)
    assert pca.centred is centred and pca.info["centred"] is centred
    assert float(pca.explained_variance_ratio.sum()) > 1 - 1e-12
    assert float(pca.residuals.max()) < 1e-10
    proj_true, proj_pca = basis @ basis.T, pca.components.T @ pca.components
    assert float((proj_true - proj_pca).abs().max()) < 1e-10
    torch.testing.assert_close(pca.components @ pca.components.T, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(pca.centre + pca.coords @ pca.components, traj, rtol=0, atol=1e-10)
    assert (pca.coords[-1] >= pca.coords[0]).all()  # sign convention
    if centred:
        torch.testing.assert_close(pca.centre, traj.mean(0), rtol=0, atol=1e-14)
    else:
        assert torch.equal(pca.centre, traj[-1])
        assert float(pca.coords[-1].abs().max()) == 0.0


@pytest.mark.parametrize("centred", [True, False])
def test_pca_matches_a_dense_covariance_eigendecomposition(centred):
    traj, _ = planted(noise=0.3, seed=1)
    pca = D.pca_directions(traj.numpy().astype(np.float32), centred=centred)
    x = traj.numpy().astype(np.float32).astype(np.float64)
    m = x - (x.mean(0) if centred else x[-1])
    evals, evecs = np.linalg.eigh(m.T @ m)  # [P, P], ascending
    ratio = evals[::-1][:2] / evals.sum()
    np.testing.assert_allclose(pca.explained_variance_ratio.numpy(), ratio, rtol=1e-9)
    assert 0.9 < ratio.sum() < 1 - 1e-4  # the noise is off-plane and visible
    top = evecs[:, ::-1][:, :2]
    np.testing.assert_allclose(np.abs(np.sum(top * pca.components.numpy().T, 0)), 1, rtol=1e-8)
    resid = np.linalg.norm(m - m @ top @ top.T, axis=1)
    np.testing.assert_allclose(pca.residuals.numpy(), resid, rtol=1e-7, atol=1e-10)


def test_pca_bad_input():
    with pytest.raises(LandscapeError, match="at least 2 checkpoints"):
        D.pca_directions(torch.zeros(1, 5))
    with pytest.raises(LandscapeError, match="does not move"):
        D.pca_directions(torch.ones(4, 5))
    bad = torch.zeros(3, 5)
    bad[1, 2] = float("nan")
    with pytest.raises(LandscapeError, match="non-finite"):
        D.pca_directions(bad)


# --------------------------------------------------------------------------- projections


def quadratic(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(layout.size, layout.size, generator=g, dtype=torch.float64)
    h, gv = a @ a.T / layout.size, torch.randn(layout.size, generator=g, dtype=torch.float64)

    def loss_fn(params):
        t = torch.cat([params[n].reshape(-1) for n in layout.names])
        return 0.5 * t @ h @ t + gv @ t + 1.5

    return loss_fn


def test_projection_losses_on_a_quadratic():
    layout = ParamLayout(("a", "b"), ((4, 5), (20,)))
    loss_fn = quadratic(layout)
    traj, _ = planted(n=6, p=40, noise=0.0, seed=2)
    traj[3] += 0.5 * torch.linalg.qr(torch.randn(40, 3, dtype=torch.float64))[0][:, 0]
    pca = D.pca_directions(traj)
    res = D.projection_losses(loss_fn, layout, traj, pca.centre, pca)
    true = np.array([float(loss_fn(layout.unflatten(r))) for r in traj])
    np.testing.assert_allclose(res.true_loss, true, rtol=1e-14)
    comps = pca.components.numpy()
    m = traj.numpy() - pca.centre.numpy()
    coords = np.linalg.lstsq(comps.T, m.T, rcond=None)[0].T  # independent least squares
    np.testing.assert_allclose(res.coords, coords, atol=1e-12)
    proj = pca.centre.numpy() + coords @ comps
    want = [float(loss_fn(layout.unflatten(torch.from_numpy(r)))) for r in proj]
    np.testing.assert_allclose(res.plane_loss, want, rtol=1e-12)
    resid = np.linalg.norm(m - coords @ comps, axis=1)
    np.testing.assert_allclose(res.residuals, resid, atol=1e-12)
    # a planar trajectory: a plane given as two direction dicts, origin as a dict
    flat_traj, basis = planted(n=5, p=40, seed=3)
    x, y = D.eigen_directions(layout, basis)
    res2 = D.projection_losses(loss_fn, layout, flat_traj, layout.unflatten(flat_traj[0]), (x, y))
    np.testing.assert_allclose(res2.plane_loss, res2.true_loss, rtol=1e-12)
    assert res2.residuals.max() < 1e-12
    with pytest.raises(LandscapeError, match="parallel"):
        D.projection_losses(loss_fn, layout, flat_traj, flat_traj[0], (x, x))


def test_projection_losses_on_the_tiny_model_float32():
    model, params = tiny_params(dtype=torch.float32, perturb=False)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 5, (3, 6), generator=g)
    targets = torch.randint(0, 5, (3, 6), generator=g)
    targets[0, :2] = IGNORE
    loss_fn = make_loss_fn(model, Split(inputs, targets))
    layout = ParamLayout.of(params)
    plane = D.random_plane(params, 0)
    theta0 = layout.flatten(params)
    coords = torch.tensor([[0.0, 0.0], [0.1, -0.2], [0.3, 0.1]])
    dirs = torch.stack([layout.flatten(plane.x), layout.flatten(plane.y)])
    traj = theta0 + coords @ dirs
    res = D.projection_losses(loss_fn, layout, traj, theta0, plane)
    np.testing.assert_allclose(res.coords, coords.numpy(), atol=1e-5)
    np.testing.assert_allclose(res.plane_loss, res.true_loss, rtol=1e-5)
    assert math.isclose(res.true_loss[0], float(loss_fn(params)), rel_tol=1e-6)
