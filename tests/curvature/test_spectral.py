"""Spectral algorithms against dense float64 truth: eigh, exact traces, exact spectra."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from landscape.curvature.spectral import (
    DenseOperator,
    ScaledOperator,
    apply,
    dense_matrix,
    density_on_grid,
    exact_spectrum,
    hutchinson,
    hutchpp,
    lanczos,
    slq,
    subspace_overlap,
)
from landscape.errors import LandscapeError

F64 = torch.float64


def sym(eigenvalues, seed=0, dtype=F64):
    """A symmetric matrix with the given spectrum and random eigenvectors; also the vectors."""
    lam = torch.as_tensor(eigenvalues, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(lam), len(lam), generator=g, dtype=F64))
    a = q @ torch.diag(lam) @ q.T
    return ((a + a.T) / 2).to(dtype), q


def spread_spectrum(p=200, seed=1):
    """Distinct top and bottom ends beside a bulk, like a trained network's Hessian."""
    rng = np.random.default_rng(seed)
    top = [50.0, 31.0, 20.0, 14.0, 9.0]
    bottom = [-6.0, -4.0, -2.5]
    bulk = rng.uniform(-1.0, 3.0, p - len(top) - len(bottom))
    return np.sort(np.r_[top, bottom, bulk])


def rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))


# ----------------------------------------------------------------------------- operators


def test_dense_operator_counts_and_checks():
    a, _ = sym([1.0, 2.0, 3.0])
    op = DenseOperator(a)
    v = torch.ones(3, dtype=F64)
    assert torch.allclose(op.matvec(v), a @ v)
    assert torch.allclose(op.matmat(torch.eye(3, dtype=F64)[:, :2]), a[:, :2])
    assert op.n_matvec == 3
    with pytest.raises(LandscapeError, match="symmetric"):
        DenseOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=F64))
    with pytest.raises(LandscapeError, match="square"):
        DenseOperator(torch.ones(2, 3, dtype=F64))
    with pytest.raises(LandscapeError, match="shape"):
        op.matvec(torch.ones(4, dtype=F64))


def test_scaled_operator_is_dad():
    a, _ = sym([3.0, -1.0, 0.5, 2.0])
    d = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=F64)
    op = ScaledOperator(DenseOperator(a), d)
    assert torch.allclose(dense_matrix(op, chunk=3), torch.diag(d) @ a @ torch.diag(d),
                          atol=1e-14)
    assert op.n_matvec == 4 and op.op.n_matvec == 4


def test_dense_matrix_and_exact_spectrum():
    lam = spread_spectrum(p=37)
    a, q = sym(lam)
    for chunk in (1, 5, 64):
        op = DenseOperator(a)
        m = dense_matrix(op, chunk=chunk)
        assert op.n_matvec == 37
        assert torch.equal(m, m.T)
        assert torch.allclose(m, a, atol=1e-13)
    vals = exact_spectrum(DenseOperator(a))
    np.testing.assert_allclose(vals, lam, atol=1e-12)
    vals, vecs = exact_spectrum(DenseOperator(a), vectors=True)
    assert subspace_overlap(vecs[:, -3:], q[:, -3:]).min() > 1 - 1e-12


def test_dense_matrix_float32_columns_float64_eigh():
    lam = spread_spectrum(p=60)
    a, _ = sym(lam, dtype=torch.float32)
    vals = exact_spectrum(DenseOperator(a))
    assert vals.dtype == np.float64
    assert np.abs(vals - lam).max() < 50 * 1e-5  # float32 rounding of ||A|| = 50


# ----------------------------------------------------------------------------- Lanczos


def test_lanczos_top_and_bottom_match_eigh():
    lam = spread_spectrum()
    a, q = sym(lam)
    op = DenseOperator(a)
    res = lanczos(op, k_top=5, k_bottom=3, tol=1e-10, seed=3)
    assert res.converged and res.top_converged.all() and res.bottom_converged.all()
    assert rel(res.top_values, lam[::-1][:5]).max() <= 1e-8
    assert rel(res.bottom_values, lam[:3]).max() <= 1e-8
    assert res.n_matvec == res.steps == op.n_matvec < 120
    # Ritz vectors span the true eigenvectors (eigenvalues are simple here)
    assert subspace_overlap(res.top_vectors, q[:, -5:]).min() > 1 - 1e-8
    assert subspace_overlap(res.bottom_vectors, q[:, :3]).min() > 1 - 1e-8
    assert np.all(np.diff(res.top_values) < 0) and np.all(np.diff(res.bottom_values) > 0)


def test_lanczos_residuals_are_honest():
    lam = spread_spectrum()
    a, _ = sym(lam)
    for tol in (1e-3, 1e-10):
        res = lanczos(DenseOperator(a), k_top=5, k_bottom=3, tol=tol, seed=1)
        for vals, vecs, rs in ((res.top_values, res.top_vectors, res.top_residuals),
                               (res.bottom_values, res.bottom_vectors, res.bottom_residuals)):
            true = torch.linalg.vector_norm(a @ vecs - vecs * torch.as_tensor(vals), dim=0)
            assert np.abs(rs - true.numpy()).max() <= 1e3 * 2.2e-16 * 50
            # and the eigenvalue error is within the residual (Weyl / Kato bound)
        assert np.all(np.abs(res.top_values - lam[::-1][:5]) <= res.top_residuals + 1e-12)
        assert np.all(res.top_residuals[res.top_converged] <= tol * 50.0 * (1 + 1e-12))
    exact = lanczos(DenseOperator(a), k_top=5, k_bottom=3, tol=1e-3, seed=1,
                    exact_residuals=True)
    assert exact.n_matvec == exact.steps + 8


def test_lanczos_loose_tol_stops_early_and_says_so():
    lam = spread_spectrum()
    a, _ = sym(lam)
    loose = lanczos(DenseOperator(a), k_top=5, tol=1e-2, seed=0)
    tight = lanczos(DenseOperator(a), k_top=5, tol=1e-10, seed=0)
    assert loose.steps < tight.steps
    capped = lanczos(DenseOperator(a), k_top=5, tol=1e-10, max_steps=8, seed=0)
    assert capped.steps == 8 and not capped.converged


def test_lanczos_full_dimension_recovers_whole_spectrum():
    lam = spread_spectrum(p=80)
    a, _ = sym(lam)
    res = lanczos(DenseOperator(a), k_top=1, max_steps=80, tol=0, seed=2)
    assert res.steps == 80
    np.testing.assert_allclose(res.ritz_values, lam, atol=1e-11)


def test_lanczos_breakdown_low_rank_and_repeated_eigenvalues():
    lam = np.r_[[4.0] * 3, [2.0] * 4, [0.0] * 13]
    a, q = sym(lam, seed=5)
    full = lanczos(DenseOperator(a), k_top=1, max_steps=20, tol=0, seed=0)
    assert full.restarts > 0
    np.testing.assert_allclose(full.ritz_values, np.sort(lam), atol=1e-12)
    # top-5 = 4, 4, 4, 2, 2: every copy is found after restarts, then the search stops
    res = lanczos(DenseOperator(a), k_top=5, k_bottom=2, tol=1e-10, seed=0)
    np.testing.assert_allclose(res.top_values, [4, 4, 4, 2, 2], atol=1e-12)
    np.testing.assert_allclose(res.bottom_values, [0, 0], atol=1e-12)
    assert res.converged and res.steps < 20
    assert subspace_overlap(res.top_vectors[:, :3], q[:, :3]).min() > 1 - 1e-10


def test_lanczos_start_in_invariant_subspace_still_finds_the_top():
    lam = spread_spectrum(p=50)
    a = torch.diag(torch.as_tensor(lam))
    e = torch.eye(50, dtype=F64)
    # v0 in the span of two bulk eigenvectors: the first block breaks down after 2 steps
    res = lanczos(DenseOperator(a), k_top=3, v0=e[:, 10] + e[:, 20], tol=1e-10)
    assert res.restarts >= 1
    assert rel(res.top_values, lam[::-1][:3]).max() <= 1e-8
    # the same start on a rotated matrix: rounding, not an exact zero, ends the block
    a, q = sym(lam)
    res = lanczos(DenseOperator(a), k_top=3, v0=q[:, 10] + q[:, 20], tol=1e-10)
    assert rel(res.top_values, lam[::-1][:3]).max() <= 1e-8


def test_warm_start_reduces_matvecs_on_perturbed_matrix():
    rng = np.random.default_rng(0)  # a clustered top, as in trained networks
    lam = np.sort(np.r_[[10, 9.7, 9.5, 9.3, 9.1], rng.uniform(-1, 8.5, 292), [-2, -1.9, -1.8]])
    a, _ = sym(lam)
    g = torch.Generator().manual_seed(7)
    e = torch.randn(len(lam), len(lam), generator=g, dtype=F64) * 1e-3
    b = a + (e + e.T) / 2
    truth = np.linalg.eigvalsh(b.numpy())
    first = lanczos(DenseOperator(a), k_top=5, k_bottom=3, tol=1e-8, seed=0)
    warm = torch.cat([first.top_vectors, first.bottom_vectors], dim=1)
    cold, hot = [], []
    for seed in range(3):
        for runs, kw in ((cold, {}), (hot, {"warm": warm})):
            r = lanczos(DenseOperator(b), k_top=5, k_bottom=3, tol=1e-8, seed=seed, **kw)
            assert r.converged
            assert rel(r.top_values, truth[::-1][:5]).max() <= 1e-8
            assert rel(r.bottom_values, truth[:3]).max() <= 1e-8
            runs.append(r.n_matvec)
    assert np.mean(hot) < 0.85 * np.mean(cold)


def test_lanczos_float32_operator():
    lam = spread_spectrum()
    a, _ = sym(lam, dtype=torch.float32)
    res = lanczos(DenseOperator(a), k_top=5, k_bottom=3, seed=0)  # default tol 1e-4
    assert res.converged and res.top_vectors.dtype == torch.float32
    assert rel(res.top_values, lam[::-1][:5]).max() <= 1e-4
    assert rel(res.bottom_values, lam[:3]).max() <= 1e-4


def test_lanczos_bad_input():
    op = DenseOperator(sym([1.0, 2.0, 3.0, 4.0])[0])
    with pytest.raises(LandscapeError, match="exceeds the dimension"):
        lanczos(op, k_top=3, k_bottom=2)
    with pytest.raises(LandscapeError, match="at least one"):
        lanczos(op, k_top=0)
    with pytest.raises(LandscapeError, match="max_steps"):
        lanczos(op, k_top=2, max_steps=1)
    with pytest.raises(LandscapeError, match="max_steps"):
        lanczos(op, k_top=2, max_steps=5)
    with pytest.raises(LandscapeError, match="tol"):
        lanczos(op, k_top=1, tol=-1.0)
    with pytest.raises(LandscapeError, match="zero"):
        lanczos(op, k_top=1, v0=torch.zeros(4, dtype=F64))
    with pytest.raises(LandscapeError, match="not both"):
        lanczos(op, k_top=1, v0=torch.ones(4, dtype=F64), warm=torch.ones(4, 1, dtype=F64))
    with pytest.raises(LandscapeError, match="warm"):
        lanczos(op, k_top=1, warm=torch.ones(3, 1, dtype=F64))


def test_lanczos_beats_power_iteration_in_matvecs():
    """Power iteration (PyHessian's method) on the same matrix, to 1e-4 on the top value."""
    rng = np.random.default_rng(0)
    lam = np.sort(np.r_[[50.0, 47.0], rng.uniform(-5.0, 30.0, 198)])
    a, _ = sym(lam)
    ours = lanczos(DenseOperator(a), k_top=1, tol=1e-4, seed=0)
    assert rel(ours.top_values[0], lam[-1]) <= 1e-4
    v = torch.randn(len(lam), generator=torch.Generator().manual_seed(0), dtype=F64)
    power_steps = 0
    while rel(float(v @ a @ v), lam[-1]) > 1e-4 and power_steps < 1000:
        v = a @ v
        v = v / torch.linalg.vector_norm(v)
        power_steps += 1
    assert ours.n_matvec * 2 <= power_steps


# ----------------------------------------------------------------------------- trace


def psd_decaying(p=300, seed=2):
    lam = 100.0 / np.arange(1, p + 1) ** 1.5
    return lam, sym(lam, seed=seed)[0]


def test_hutchinson_converges_within_standard_errors():
    lam, a = psd_decaying()
    exact = lam.sum()
    errors = []
    for n in (10, 100, 1000):
        est = hutchinson(DenseOperator(a), n, seed=n)
        assert est.n_matvec == n and est.samples.shape == (n,)
        assert abs(est.estimate - exact) <= 4 * est.stderr
        errors.append(est.stderr)
    assert errors[0] > 2 * errors[1] > 4 * errors[2]


def test_hutchpp_converges_and_beats_hutchinson():
    lam, a = psd_decaying()
    exact = lam.sum()
    err_pp, err_h = [], []
    for n in (30, 90, 270):
        pp = [hutchpp(DenseOperator(a), n, seed=s) for s in range(5)]
        hh = [hutchinson(DenseOperator(a), n, seed=s) for s in range(5)]
        assert all(e.n_matvec == n for e in pp)
        assert all(abs(e.estimate - exact) <= 4 * e.stderr + 1e-9 for e in pp)
        err_pp.append(np.sqrt(np.mean([(e.estimate - exact) ** 2 for e in pp])))
        err_h.append(np.sqrt(np.mean([(e.estimate - exact) ** 2 for e in hh])))
    assert err_pp[0] > err_pp[1] > err_pp[2]
    assert all(p < h / 3 for p, h in zip(err_pp, err_h))


def test_hutchpp_exact_when_sketch_covers_the_space():
    lam = spread_spectrum(p=20)
    a, _ = sym(lam)
    est = hutchpp(DenseOperator(a), 66, seed=0)
    assert est.rank == 20 and est.n_probes == 0 and est.stderr == 0.0
    assert abs(est.estimate - lam.sum()) < 1e-10


def test_hutchpp_with_basis_gives_bulk_trace():
    lam = spread_spectrum()
    a, q = sym(lam)
    top = q[:, -5:]
    est = hutchpp(DenseOperator(a), 205, seed=0, basis=top)
    assert est.n_matvec == 205 and est.rank == 5 and est.n_probes == 200
    assert abs(est.low_rank - lam[-5:].sum()) < 1e-10
    assert abs(est.residual - lam[:-5].sum()) <= 4 * est.stderr
    assert abs(est.estimate - lam.sum()) <= 4 * est.stderr


def test_trace_bad_input():
    op = DenseOperator(sym([1.0, 2.0, 3.0])[0])
    with pytest.raises(LandscapeError):
        hutchinson(op, 1)
    with pytest.raises(LandscapeError):
        hutchpp(op, 3)
    with pytest.raises(LandscapeError):
        hutchpp(op, 3, basis=torch.eye(3, dtype=F64)[:, :2])


# ----------------------------------------------------------------------------- density


def test_slq_weights_and_moments_converge():
    lam = spread_spectrum(p=150)
    a, _ = sym(lam)
    p = len(lam)
    exact = [np.mean(lam**k) for k in (1, 2, 3)]
    errs = []
    for n_runs in (4, 64):
        out = slq(DenseOperator(a), n_runs=n_runs, n_steps=12, seed=0)
        assert out.nodes.shape == out.weights.shape == (n_runs, 12)
        assert out.n_matvec == n_runs * 12
        np.testing.assert_allclose(out.weights.sum(axis=1), 1.0, atol=1e-12)
        per_run = np.stack([(out.weights * out.nodes**k).sum(axis=1) for k in (1, 2, 3)])
        mean, se = per_run.mean(axis=1), per_run.std(axis=1, ddof=1) / math.sqrt(n_runs)
        assert np.all(np.abs(mean - exact) <= 4 * se)
        errs.append(np.abs(mean - exact) / np.abs(exact))
    assert np.mean(errs[1]) < np.mean(errs[0])
    # Gauss quadrature: a single run reproduces v^T A^k v exactly for k < 2 * n_steps
    out = slq(DenseOperator(a), n_runs=1, n_steps=6, seed=9)
    g = torch.Generator().manual_seed(9)
    v = (2 * torch.randint(0, 2, (p, 1), generator=g, dtype=torch.int8) - 1).to(F64)[:, 0]
    v = v / torch.linalg.vector_norm(v)
    for k in range(1, 12):
        quad = (out.weights[0] * out.nodes[0] ** k).sum()
        assert abs(quad - float(v @ torch.linalg.matrix_power(a, k) @ v)) <= 1e-9 * 50.0**k


def test_slq_distribution_approaches_exact_spectrum():
    lam = spread_spectrum(p=150)
    a, _ = sym(lam)
    dists = []
    for n_steps in (3, 10, 40):
        out = slq(DenseOperator(a), n_runs=10, n_steps=n_steps, seed=0)
        dists.append(wasserstein_distance(out.nodes.ravel(), lam, out.weights.ravel()))
    assert dists[0] > dists[1] > dists[2]
    assert dists[2] < 0.02 * (lam.max() - lam.min())


def test_slq_restarts_give_zero_weight_nodes():
    lam = np.r_[[3.0] * 5, [1.0] * 5]
    a, _ = sym(lam)
    out = slq(DenseOperator(a), n_runs=2, n_steps=6, seed=0)
    np.testing.assert_allclose(out.weights.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.isin(np.round(out.nodes, 10), [1.0, 3.0]))
    with pytest.raises(LandscapeError, match="exceeds the dimension"):
        slq(DenseOperator(a), n_steps=11)


def test_density_on_grid():
    grid = np.linspace(-10, 10, 4001)
    nodes = np.array([[0.0, 2.0], [1.0, 5.0]])
    weights = np.array([[0.25, 0.75], [0.5, 0.5]])
    dens = density_on_grid(nodes, weights, grid, sigma=0.5)
    assert abs(np.trapezoid(dens, grid) - 1.0) < 1e-6
    expected = (0.25 + 0.75 * math.exp(-8.0) + 0.5 * math.exp(-2.0) + 0.5 * math.exp(-50.0))
    expected /= 2 * 0.5 * math.sqrt(2 * math.pi)
    assert abs(density_on_grid(nodes, weights, [0.0], 0.5)[0] - expected) < 1e-12
    with pytest.raises(LandscapeError):
        density_on_grid(nodes, weights, grid, sigma=0.0)


# ----------------------------------------------------------------------------- subspaces


def test_subspace_overlap_known_angles():
    e = torch.eye(6, dtype=F64)
    t = 0.3
    u = e[:, :2]
    v = torch.stack([math.cos(t) * e[:, 0] + math.sin(t) * e[:, 2], 5.0 * e[:, 1]], dim=1)
    np.testing.assert_allclose(subspace_overlap(u, v), [1.0, math.cos(t)], atol=1e-14)
    np.testing.assert_allclose(subspace_overlap(u, e[:, 3:5]), [0.0, 0.0], atol=1e-15)
    assert subspace_overlap(u, e[:, :1]).shape == (1,)
    with pytest.raises(LandscapeError):
        subspace_overlap(u, torch.ones(5, 2, dtype=F64))


def test_apply_chunks_match_one_matmat():
    a, _ = sym(spread_spectrum(p=30))
    vs = torch.randn(30, 7, dtype=F64)
    op = DenseOperator(a)
    assert torch.allclose(apply(op, vs, chunk=3), a @ vs)
    assert op.n_matvec == 7


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lanczos_and_hutchpp_on_cuda():
    lam = spread_spectrum()
    a, _ = sym(lam)
    op = DenseOperator(a.cuda())
    res = lanczos(op, k_top=5, k_bottom=3, tol=1e-10, seed=3)
    assert res.top_vectors.is_cuda
    assert rel(res.top_values, lam[::-1][:5]).max() <= 1e-8
    cpu = hutchpp(DenseOperator(a), 60, seed=0)
    gpu = hutchpp(op, 60, seed=0)
    assert abs(cpu.estimate - gpu.estimate) < 1e-8


class _Watched(DenseOperator):
    """Records the dtype and device of every vector an algorithm hands the operator."""

    def __init__(self, matrix):
        super().__init__(matrix)
        self.seen = set()

    def matvec(self, v):
        self.seen.add((v.dtype, v.device))
        return super().matvec(v)

    def matmat(self, vs):
        self.seen.add((vs.dtype, vs.device))
        return super().matmat(vs)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_algorithms_keep_vectors_in_the_operators_dtype_and_device(dtype):
    a, _ = sym(spread_spectrum(p=60), dtype=dtype)
    op = _Watched(a)
    res = lanczos(op, k_top=3, k_bottom=2, max_steps=40)
    tr = hutchpp(op, 30, basis=res.top_vectors)
    slq(op, n_runs=2, n_steps=10)
    hutchinson(op, 4, chunk=3)
    assert op.seen == {(dtype, a.device)}  # nothing was converted on the way in
    assert res.top_vectors.dtype == dtype and res.top_vectors.device == a.device
    assert np.isfinite(tr.estimate)


def test_hutchinson_probes_do_not_depend_on_the_chunk():
    a, _ = sym(spread_spectrum(p=40))
    ref = hutchinson(DenseOperator(a), 10, seed=4, chunk=None)
    for chunk in (1, 3, 10):
        got = hutchinson(DenseOperator(a), 10, seed=4, chunk=chunk)
        np.testing.assert_allclose(got.samples, ref.samples, rtol=1e-12)


def _count_2d_allocations(monkeypatch, keep=lambda t: True) -> list[int]:
    """Sizes of the 2-D tensors ``torch.empty`` allocates from now on (those ``keep`` picks)."""
    sizes = []
    real_empty = torch.empty

    def counting_empty(*shape, **kw):
        t = real_empty(*shape, **kw)
        if t.dim() == 2 and keep(t):
            sizes.append(t.numel())
        return t

    monkeypatch.setattr(torch, "empty", counting_empty)
    return sizes


def test_lanczos_basis_holds_only_its_own_vectors(monkeypatch):
    """A Krylov basis of m vectors allocates m P floats (in blocks), never a grown copy."""
    sizes = _count_2d_allocations(monkeypatch)
    a, _ = sym(spread_spectrum(p=200))
    res = lanczos(DenseOperator(a), k_top=5, tol=0, max_steps=70)
    assert res.steps == 70
    from landscape.curvature.krylov_basis import BASIS_BLOCK

    assert sum(sizes) == 200 * 3 * BASIS_BLOCK  # 70 vectors in 3 blocks of 32


def test_binned_spectrum_counts_every_eigenvalue_and_slq_matches_the_histogram():
    from landscape.curvature.spectral import density_in_bins, signed_log, signed_log_inverse

    r = np.random.default_rng(0)
    lam = np.concatenate([1e-5 * r.standard_normal(190), np.geomspace(10, 0.01, 10), [-0.05]])
    lt = 1e-3 * np.abs(lam).max()
    t = signed_log(np.array([lam.min(), lam.max()]), lt)
    edges = signed_log_inverse(np.linspace(t[0] - 0.1, t[1] + 0.1, 41), lt)
    np.testing.assert_allclose(signed_log_inverse(signed_log(lam, lt), lt), lam)
    counts = np.histogram(lam, bins=edges)[0]
    assert counts.sum() == lam.size

    def axis(x):
        return signed_log(x, lt)

    # the exact quadrature of the same spectrum, barely smoothed, gives the same bins
    nodes, weights = lam[None, :], np.full((1, lam.size), 1 / lam.size)
    smoothed = density_in_bins(nodes, weights, edges, 1e-4, transform=axis, dim=lam.size)
    np.testing.assert_allclose(smoothed, counts, atol=1e-6)
    # wider smoothing moves mass between bins but keeps it (the edges have margin)
    wide = density_in_bins(nodes, weights, edges, 0.02, transform=axis, dim=lam.size)
    assert wide.sum() == pytest.approx(lam.size, 1e-6)
    assert not np.allclose(wide, counts, atol=1e-3)
    # without dim: shares; two runs are averaged
    shares = density_in_bins(np.vstack([nodes, nodes]), np.vstack([weights, weights]), edges,
                             1e-4, transform=axis)
    np.testing.assert_allclose(shares, counts / lam.size, atol=1e-8)
    with pytest.raises(LandscapeError, match="differ in shape"):
        density_in_bins(nodes, weights[:, :-1], edges, 0.01)


# ----------------------------------------------------------------------------- thick restart


def _true_residuals(a, vals, vecs):
    return torch.linalg.vector_norm(a @ vecs - vecs * torch.as_tensor(vals), dim=0).numpy()


@pytest.mark.parametrize("cap", [10, 14, 20])
def test_thick_restarted_lanczos_matches_eigh(cap):
    """A basis capped far below the steps taken: restarted many times, same answer to 1e-10."""
    lam = spread_spectrum(p=400)
    a, q = sym(lam)
    full = lanczos(DenseOperator(a), k_top=5, k_bottom=3, tol=1e-10, seed=0, max_basis=None)
    res = lanczos(DenseOperator(a), k_top=5, k_bottom=3, tol=1e-10, seed=0, max_basis=cap)
    assert full.thick_restarts == 0 and full.max_basis is None
    assert res.max_basis == cap and res.thick_restarts >= 2 and res.converged
    assert len(res.ritz_values) <= cap < res.steps == res.n_matvec
    assert rel(res.top_values, lam[::-1][:5]).max() <= 1e-10
    assert rel(res.bottom_values, lam[:3]).max() <= 1e-10
    assert subspace_overlap(res.top_vectors, q[:, -5:]).min() > 1 - 1e-10
    assert subspace_overlap(res.bottom_vectors, q[:, :3]).min() > 1 - 1e-10
    for vals, vecs, rs in ((res.top_values, res.top_vectors, res.top_residuals),
                           (res.bottom_values, res.bottom_vectors, res.bottom_residuals)):
        assert np.abs(rs - _true_residuals(a, vals, vecs)).max() <= 1e3 * 2.2e-16 * 50
    # the cost of the cap in products: at most 1.8x the unrestarted run, even at k + 2
    assert res.steps <= 1.8 * full.steps


def test_thick_restart_on_a_clustered_top():
    """Six top eigenvalues 1e-3 apart and a close bottom pair, against eigh in float64."""
    rng = np.random.default_rng(3)
    lam = np.sort(np.r_[10 - 1e-3 * np.arange(6), rng.uniform(-1, 9.9, 290),
                        [-3.0, -3.0 + 1e-3, -2.999 + 1e-3]])
    a, q = sym(lam, seed=2)
    full = lanczos(DenseOperator(a), k_top=5, k_bottom=2, tol=1e-10, seed=0, max_basis=None,
                   max_steps=299)
    res = lanczos(DenseOperator(a), k_top=5, k_bottom=2, tol=1e-10, seed=0, max_basis=20,
                  max_steps=299)
    assert res.converged and res.thick_restarts >= 10
    assert rel(res.top_values, lam[::-1][:5]).max() <= 1e-12
    assert rel(res.bottom_values, lam[:2]).max() <= 1e-12
    # each Ritz vector is its eigenvector, not a mix inside the cluster
    for i in range(5):
        assert abs(float(res.top_vectors[:, i] @ q[:, -1 - i])) > 1 - 1e-9
    assert res.steps <= 1.3 * full.steps


def test_thick_restart_with_repeated_eigenvalues_and_breakdowns():
    lam = np.r_[[4.0] * 3, [2.0] * 4, [0.0] * 53]
    a, q = sym(lam, seed=5)
    res = lanczos(DenseOperator(a), k_top=5, k_bottom=2, tol=1e-10, seed=0, max_basis=9)
    assert res.thick_restarts >= 1 and res.restarts >= 1 and res.converged
    np.testing.assert_allclose(res.top_values, [4, 4, 4, 2, 2], atol=1e-12)
    np.testing.assert_allclose(res.bottom_values, [0, 0], atol=1e-12)
    assert subspace_overlap(res.top_vectors[:, :3], q[:, :3]).min() > 1 - 1e-10


def test_thick_restart_in_float32():
    lam = spread_spectrum(p=300)
    a, _ = sym(lam, dtype=torch.float32)
    res = lanczos(DenseOperator(a), k_top=5, k_bottom=3, seed=0, max_basis=10)  # tol 1e-4
    assert res.converged and res.thick_restarts >= 3
    assert res.top_vectors.dtype == torch.float32
    assert rel(res.top_values, lam[::-1][:5]).max() <= 1e-4
    assert rel(res.bottom_values, lam[:3]).max() <= 1e-4


def test_capped_basis_allocates_only_the_cap(monkeypatch):
    sizes = _count_2d_allocations(monkeypatch, keep=lambda t: t.shape[-1] == 300)
    a, _ = sym(spread_spectrum(p=300))
    res = lanczos(DenseOperator(a), k_top=5, tol=0, max_steps=120, max_basis=20)
    assert res.steps == 120 and res.thick_restarts > 5
    assert sum(sizes) == 300 * 20  # one block of 20 vectors, rewritten in place


class _Shape:
    """Just a dimension, a dtype and a device, for the cap and chunk rules."""

    def __init__(self, dim, dtype=torch.float32):
        self.dim, self.dtype, self.device = dim, dtype, torch.device("cpu")


def test_default_cap_applies_only_to_large_problems():
    from landscape.curvature.spectral import basis_cap

    # this project's models (P = 6,528, top 10 and bottom 5, up to 300 steps): no cap
    assert basis_cap(_Shape(6528), 10, 5, 300) is None
    assert basis_cap(_Shape(6528, F64), 10, 5, 300) is None
    assert basis_cap(_Shape(55_000), 10, 5, 300) is None
    # a 1.1M-parameter model: 20 vectors for the top 5, 2k + 10 for more
    assert basis_cap(_Shape(1_086_048), 5, 0, 300) == 20
    assert basis_cap(_Shape(1_086_048, F64), 5, 0, 300) == 20
    assert basis_cap(_Shape(1_086_048), 10, 5, 300) == 40
    assert basis_cap(_Shape(140_000), 5, 0, 300) == 119  # what fits in 64 MiB
    assert basis_cap(_Shape(1_086_048), 5, 0, 20) is None  # a cap >= max_steps is none
    assert basis_cap(_Shape(1_086_048), 5, 0, 300, max_basis=None) is None
    assert basis_cap(_Shape(100), 5, 2, 100, max_basis=9) == 9
    with pytest.raises(LandscapeError, match="at least"):
        basis_cap(_Shape(100), 5, 2, 100, max_basis=8)
    with pytest.raises(LandscapeError, match="max_basis"):
        basis_cap(_Shape(100), 5, 2, 100, max_basis="big")


def test_default_cap_leaves_small_problems_step_for_step():
    """Below the budget the default is the unrestarted Lanczos, bit for bit."""
    lam = spread_spectrum(p=300)
    a, _ = sym(lam, dtype=torch.float32)
    auto = lanczos(DenseOperator(a), k_top=10, k_bottom=5, seed=0)
    none = lanczos(DenseOperator(a), k_top=10, k_bottom=5, seed=0, max_basis=None)
    assert auto.max_basis is None and auto.thick_restarts == 0
    assert auto.steps == none.steps
    assert np.array_equal(auto.top_values, none.top_values)
    assert torch.equal(auto.top_vectors, none.top_vectors)


# ----------------------------------------------------------------------------- basis in a file


@pytest.mark.parametrize("cap", [None, 12])
def test_basis_in_a_file_gives_the_eigenpairs_of_the_one_in_memory(cap, tmp_path):
    """Streaming the basis from a file (modified Gram-Schmidt) changes nothing but rounding."""
    lam = spread_spectrum(p=400)
    a, q = sym(lam)
    kw = dict(k_top=5, k_bottom=3, tol=1e-10, seed=0, max_basis=cap)
    mem = lanczos(DenseOperator(a), basis_storage="memory", **kw)
    disk = lanczos(DenseOperator(a), basis_storage="file", basis_dir=str(tmp_path), **kw)
    assert mem.basis_storage == "memory" and disk.basis_storage == "file"
    assert disk.converged and (cap is None or disk.thick_restarts >= 2)
    assert abs(disk.steps - mem.steps) <= 2
    assert rel(disk.top_values, lam[::-1][:5]).max() <= 1e-10
    assert rel(disk.bottom_values, lam[:3]).max() <= 1e-10
    assert subspace_overlap(disk.top_vectors, q[:, -5:]).min() > 1 - 1e-10
    assert np.abs(disk.top_residuals - _true_residuals(a, disk.top_values,
                                                       disk.top_vectors)).max() <= 1e-11
    assert list(tmp_path.iterdir()) == []  # an unnamed file, gone with the run


def test_basis_file_holds_no_block_of_rows_in_memory(monkeypatch):
    """With the basis in a file, no tensor of more than a slice of each row is allocated."""
    import landscape.curvature.krylov_basis as lb

    monkeypatch.setattr(lb, "ROWS_PER_SWEEP", 32)
    sizes = _count_2d_allocations(monkeypatch)
    lam = spread_spectrum(p=300)
    a, _ = sym(lam)
    res = lanczos(DenseOperator(a), k_top=5, tol=1e-10, max_basis=14, basis_storage="file")
    assert res.converged and res.thick_restarts >= 1
    assert sizes and max(sizes) <= 14 * 32  # slices of the rows, never [rows, 300]
    assert rel(res.top_values, lam[::-1][:5]).max() <= 1e-10


def test_slq_streams_a_large_basis_from_a_file(monkeypatch):
    import landscape.curvature.krylov_basis as lb

    lam = spread_spectrum(p=300)
    a, _ = sym(lam)
    mem = slq(DenseOperator(a), n_runs=2, n_steps=40, seed=3)
    monkeypatch.setattr(lb, "SPILL_BYTES", 1000)
    seen = []
    real = lb.FileBasis.__init__

    def spy(self, *args, **kw):
        seen.append(args)
        real(self, *args, **kw)

    monkeypatch.setattr(lb.FileBasis, "__init__", spy)
    disk = slq(DenseOperator(a), n_runs=2, n_steps=40, seed=3)
    assert len(seen) == 2  # one file per run
    np.testing.assert_allclose(disk.nodes, mem.nodes, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(disk.weights, mem.weights, rtol=1e-7, atol=1e-12)


def test_an_uncapped_lanczos_too_large_for_memory_streams_its_basis_from_a_file(monkeypatch):
    """A few steps of a huge model need no cap, yet their rows outgrow memory (GPT-2-small:
    21 rows of 0.5 GB): the basis goes to a file sized by the steps, with the same result."""
    import landscape.curvature.krylov_basis as lb

    lam = spread_spectrum(p=300)
    a, _ = sym(lam)
    mem = lanczos(DenseOperator(a), k_top=3, max_steps=30, tol=1e-10)
    assert mem.max_basis is None and mem.basis_storage == "memory"  # no cap applies
    monkeypatch.setattr(lb, "SPILL_BYTES", 1000)
    disk = lanczos(DenseOperator(a), k_top=3, max_steps=30, tol=1e-10)
    assert disk.max_basis is None and disk.basis_storage == "file"
    np.testing.assert_allclose(disk.top_values, mem.top_values, rtol=1e-10)


def test_lanczos_refuses_a_bad_basis_storage_and_closes_its_file(tmp_path):
    import os

    a, _ = sym(spread_spectrum(p=60))  # the stores alone: test_krylov_basis.py
    with pytest.raises(LandscapeError, match="basis_storage"):
        lanczos(DenseOperator(a), k_top=2, basis_storage="disk")
    with pytest.raises(LandscapeError, match="cannot create the Krylov basis file"):
        lanczos(DenseOperator(a), k_top=2, basis_storage="file",
                basis_dir=str(tmp_path / "missing"))

    class Failing(DenseOperator):
        def _matvec(self, v):
            if self.n_matvec > 5:
                raise RuntimeError("boom")
            return super()._matvec(v)

    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with pytest.raises(RuntimeError, match="boom"):
        lanczos(Failing(a), k_top=2, basis_storage="file")
    if fds is not None:  # the file was closed (and so deleted) on the way out
        assert len(os.listdir("/proc/self/fd")) == fds


def test_hutchpp_deflates_by_any_basis_of_the_subspace_without_copying_it(monkeypatch):
    """Lanczos's float32 Ritz vectors are orthonormal only to ~1e-5 and are P floats each:
    Hutch++ works with the basis as given (its Gram matrix in float64), and a skewed basis
    of the same span gives the same estimate; nearly dependent columns fall back to a QR."""
    import landscape.curvature.spectral as sp

    lam = spread_spectrum(p=200)
    a, q = sym(lam)
    op = DenseOperator(a)
    top = q[:, -5:].contiguous()
    skew = top @ torch.triu(torch.ones(5, 5, dtype=F64))  # same span, not orthonormal
    ref = hutchpp(op, 30, seed=2, basis=top)
    assert ref.low_rank == pytest.approx(lam[-5:].sum(), rel=1e-12)
    monkeypatch.setattr(sp, "_orthonormal", lambda vs: pytest.fail("copied the basis"))
    other = hutchpp(op, 30, seed=2, basis=skew)
    assert other.low_rank == pytest.approx(ref.low_rank, rel=1e-12)
    np.testing.assert_allclose(other.samples, ref.samples, rtol=1e-9)
    monkeypatch.undo()
    calls = []
    real = sp._orthonormal
    monkeypatch.setattr(sp, "_orthonormal", lambda vs: calls.append(1) or real(vs))
    dependent = torch.cat([top, top[:, :1] + 1e-12 * top[:, 1:2]], dim=1)  # 6 columns, rank 5
    dep = hutchpp(op, 30, seed=2, basis=dependent)
    assert calls == [1] and dep.rank == 6
    assert abs(dep.estimate - lam.sum()) <= 4 * dep.stderr
    x, y = torch.randn(1000, dtype=torch.float32), torch.randn(1000, dtype=torch.float32)
    exact = float(x.double() @ y.double())
    monkeypatch.setattr(sp, "DOT_BLOCK", 64)  # 16 blocks, the last one short
    assert float(sp._dot64(x, y)) == pytest.approx(exact, rel=1e-12)


def test_auto_chunk_shrinks_with_the_vectors_size():
    import landscape.curvature.spectral as sp

    assert sp._chunk(_Shape(6528), "auto") == 4
    assert sp._chunk(_Shape(1_086_048), "auto") == 4  # 4 MiB a vector
    assert sp._chunk(_Shape(11_361_600), "auto") == 1  # 43 MiB a vector: one at a time
    assert sp._chunk(_Shape(11_361_600, F64), "auto") == 1
    assert sp._chunk(_Shape(100), 7) == 7 and sp._chunk(_Shape(100), None) is None
