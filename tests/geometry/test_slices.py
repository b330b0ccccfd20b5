"""Loss grids: closed forms, curvature against an HVP, batching, resume, and bad input."""

import math

import numpy as np
import pytest
import torch

from landscape.curvature.objective import ParamLayout, detached_params
from landscape.errors import LandscapeError
from landscape.geometry import directions as D
from landscape.geometry.slices import estimate_point_bytes, loss_grid, make_axis
from landscape.train.model import LoopedTransformer, ModelConfig
from landscape.train.split_loss import make_loss_fn
from landscape.train.tasks.base import IGNORE, Split


def tiny(dtype=torch.float64, mlp=True, d_model=8, seed=0):
    """A tiny model, its loss on a few random sequences, and its (detached) parameters."""
    torch.manual_seed(seed)
    model = LoopedTransformer(ModelConfig(d_model=d_model, n_heads=2, loops=3, mlp=mlp), 5, 6)
    model = model.to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randint(0, 5, (4, 6), generator=g)
    targets = torch.randint(0, 5, (4, 6), generator=g)
    targets[1, :3] = IGNORE
    return model, make_loss_fn(model, Split(inputs, targets)), detached_params(model)


def naive_grid(loss_fn, params, dirs, alphas, betas=None):
    """Reference: build each point's dict by hand and call the loss once per point."""
    out = np.zeros((len(alphas),) if betas is None else (len(alphas), len(betas)))
    with torch.no_grad():
        for i, a in enumerate(alphas):
            for j, b in enumerate([0.0] if betas is None else betas):
                point = {n: p + a * dirs[0][n] + (b * dirs[1][n] if betas is not None else 0)
                         for n, p in params.items()}
                out[(i,) if betas is None else (i, j)] = float(loss_fn(point))
    return out


class Counter:
    """Wraps a loss_fn and counts its calls (one call per point on the lean path)."""

    def __init__(self, loss_fn):
        self.loss_fn, self.calls = loss_fn, 0

    def __call__(self, params):
        self.calls += 1
        return self.loss_fn(params)


# --------------------------------------------------------------------------- axes


def test_make_axis_is_odd_and_has_an_exact_zero():
    a = make_axis(-1, 1, 21)
    assert a.size == 21 and a[10] == 0.0 and a[0] == -1 and a[-1] == 1
    b = make_axis(-0.5, 1.5, 21)
    assert b[5] == 0.0 and np.allclose(np.diff(b), 0.1)
    assert make_axis(0, 1, 3).tolist() == [0.0, 0.5, 1.0]
    for args, msg in (((-1, 1, 20), "odd"), ((-1, 1, 1), "odd"),
                      ((0.1, 1, 5), "does not contain 0"), ((-1, 2, 21), "does not have 0"),
                      ((1, -1, 5), "lo < hi")):
        with pytest.raises(LandscapeError, match=msg):
            make_axis(*args)


# --------------------------------------------------------------------------- truth


def test_origin_equals_the_base_loss_exactly():
    _, loss_fn, params = tiny()
    plane = D.random_plane(params, 0)
    axis = make_axis(-1, 1, 3)
    base = float(loss_fn(params))
    assert loss_grid(loss_fn, params, plane, axis, axis, batch_points=1)[1, 1] == base
    assert loss_grid(loss_fn, params, plane.x, axis, batch_points=1)[1] == base
    batched = loss_grid(loss_fn, params, plane, axis, axis, batch_points=4)[1, 1]
    assert abs(batched - base) <= 1e-14  # vmapped kernels may round differently


def quadratic(layout, seed=0):
    """0.5 t'Ht + g't + L0 as a loss over a params dict, with H, g, L0 returned."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(layout.size, layout.size, generator=gen, dtype=torch.float64)
    h = (a + a.T) / 2  # symmetric, indefinite
    g = torch.randn(layout.size, generator=gen, dtype=torch.float64)
    l0 = 0.75

    def loss_fn(params):
        t = torch.cat([params[n].reshape(-1) for n in layout.names])
        return 0.5 * t @ (h @ t) + g @ t + l0

    return loss_fn, h, g, l0


@pytest.mark.parametrize("batch_points", [1, 4])
def test_quadratic_slices_match_the_closed_form(batch_points):
    layout = ParamLayout(("w", "b"), ((3, 4), (5,)))
    loss_fn, h, g, l0 = quadratic(layout)
    gen = torch.Generator().manual_seed(1)
    x, y = (layout.unflatten(torch.randn(layout.size, generator=gen, dtype=torch.float64))
            for _ in range(2))
    fx, fy = layout.flatten(x), layout.flatten(y)
    alphas, betas = make_axis(-2, 2, 9), make_axis(-1, 3, 5)
    zero = layout.unflatten(torch.zeros(layout.size, dtype=torch.float64))
    got = loss_grid(loss_fn, zero, x, alphas, batch_points=batch_points)
    want = 0.5 * alphas**2 * float(fx @ h @ fx) + alphas * float(g @ fx) + l0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    t0 = torch.randn(layout.size, generator=gen, dtype=torch.float64)
    got2 = loss_grid(loss_fn, layout.unflatten(t0), (x, y), alphas, betas,
                     batch_points=batch_points)
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    grad0 = h @ t0 + g
    want2 = (float(loss_fn(layout.unflatten(t0))) + a * float(grad0 @ fx) + b * float(grad0 @ fy)
             + 0.5 * a**2 * float(fx @ h @ fx) + a * b * float(fx @ h @ fy)
             + 0.5 * b**2 * float(fy @ h @ fy))
    np.testing.assert_allclose(got2, want2, rtol=0, atol=1e-10)


def hvp_curvature(loss_fn, params, d):
    """d'Hd by double backward (independent of the slicer)."""
    leaf = {n: p.clone().requires_grad_(True) for n, p in params.items()}
    grads = torch.autograd.grad(loss_fn(leaf), list(leaf.values()), create_graph=True)
    gd = sum((gr * d[n]).sum() for gr, n in zip(grads, leaf))
    hd = torch.autograd.grad(gd, list(leaf.values()))
    return float(sum((x * d[n]).sum() for x, n in zip(hd, leaf)))


def test_second_difference_of_a_slice_matches_d_h_d_from_an_hvp():
    _, loss_fn, params = tiny()
    d = D.random_direction(params, seed=3, one_d="layer")
    dhd = hvp_curvature(loss_fn, params, d)
    errors = []
    for h in (1e-2, 1e-3):
        lo, mid, hi = loss_grid(loss_fn, params, d, make_axis(-h, h, 3))
        errors.append(abs((hi - 2 * mid + lo) / h**2 - dhd))
    # central difference: error ~ h^2 L''''/12, plus rounding ~ 4 eps L / h^2 (1e-9 at h=1e-3)
    assert errors[1] < 1e-5 * max(1.0, abs(dhd))
    assert errors[1] < errors[0] / 20  # converges like h^2
    assert abs(dhd) > 1e-3  # a real curvature, not a trivial zero


def test_slice_along_a_hessian_eigenvector_has_the_eigenvalue_as_curvature():
    _, loss_fn, params = tiny(mlp=False, d_model=4)
    layout = ParamLayout.of(params)
    theta0 = layout.flatten(params)
    dense = torch.autograd.functional.hessian(lambda t: loss_fn(layout.unflatten(t)), theta0)
    evals, evecs = torch.linalg.eigh((dense + dense.T) / 2)
    dirs = D.eigen_directions(layout, evecs[:, [0, -1]])
    for lam, d in zip(evals[[0, -1]].tolist(), dirs):  # the most negative and the largest
        errors = []
        for h in (1e-3, 1e-4):
            lo, mid, hi = loss_grid(loss_fn, params, d, make_axis(-h, h, 3), batch_points=3)
            errors.append(abs((hi - 2 * mid + lo) / h**2 - lam))
        # a unit eigenvector is large next to weights of size 0.02: the h^2 term is large
        assert errors[1] < 1e-3 * abs(lam) and errors[1] < errors[0] / 20


def test_interpolation_slice_hits_both_checkpoints():
    model, loss_fn, pa = tiny()
    _, _, pb = tiny(seed=5)
    d = D.interpolation(pa, pb)
    losses = loss_grid(loss_fn, pa, d, [0.0, 0.5, 1.0])
    assert losses[0] == float(loss_fn(pa))
    assert math.isclose(losses[2], float(loss_fn(pb)), rel_tol=1e-13)


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("batch_points", [1, 5, 4, 7, 100])
def test_batched_grids_equal_a_naive_loop(dtype, tol, batch_points):
    _, loss_fn, params = tiny(dtype=dtype)
    plane = D.random_plane(params, 2)
    axis = make_axis(-0.5, 0.5, 5)  # 25 points: 5 divides, 4 and 7 do not
    dirs = (plane.x, plane.y)
    want = naive_grid(loss_fn, params, dirs, axis, axis)
    got = loss_grid(loss_fn, params, plane, axis, axis, batch_points=batch_points)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    assert got.dtype == np.float64 and got.shape == (5, 5)
    want1 = naive_grid(loss_fn, params, dirs, axis)
    got1 = loss_grid(loss_fn, params, plane.x, axis, batch_points=batch_points)
    np.testing.assert_allclose(got1, want1, rtol=0, atol=tol)


def test_chunks_respect_the_memory_bound():
    _, loss_fn, params = tiny()
    per_point = estimate_point_bytes(loss_fn, params)
    size = sum(p.numel() * p.element_size() for p in params.values())
    assert per_point > size  # parameters plus activations
    sizes = []
    axis = make_axis(-1, 1, 5)
    loss_grid(loss_fn, params, D.random_plane(params, 0), axis, axis, batch_points=10,
              max_memory_bytes=3 * per_point + 1, on_chunk=lambda i, v: sizes.append(len(i)))
    assert sizes == [3] * 8 + [1]
    sizes.clear()
    loss_grid(loss_fn, params, D.random_direction(params, 0), axis, batch_points=4,
              max_memory_bytes=10, on_chunk=lambda i, v: sizes.append(len(i)))
    assert sizes == [1] * 5  # nothing fits: one point at a time, the lean path


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("batch_points", [1, 3])
def test_done_mask_skips_cells_and_a_resumed_grid_equals_an_uninterrupted_one(batch_points):
    _, loss_fn, params = tiny()
    plane = D.random_plane(params, 1)
    axis = make_axis(-1, 1, 5)
    full = loss_grid(loss_fn, params, plane, axis, axis, batch_points=batch_points)
    done, values = np.zeros((5, 5), bool), np.full((5, 5), np.nan)

    class Killed(Exception):
        pass

    def persist(idx, losses):
        assert idx.dtype == np.int64 and losses.dtype == np.float64
        done.reshape(-1)[idx] = True
        values.reshape(-1)[idx] = losses
        if done.sum() >= 10:
            raise Killed

    with pytest.raises(Killed):
        loss_grid(loss_fn, params, plane, axis, axis, batch_points=batch_points, on_chunk=persist)
    n_done = int(done.sum())
    assert 10 <= n_done < 25
    done_before, values_before = done.copy(), values.copy()
    counted = Counter(loss_fn)
    resumed = loss_grid(counted, params, plane, axis, axis, batch_points=batch_points,
                        done=done, values=values)
    assert np.array_equal(done, done_before)  # the caller's arrays are not written
    assert np.array_equal(values, values_before, equal_nan=True)
    np.testing.assert_array_equal(resumed, full)
    chunks = -(-(25 - n_done) // batch_points)
    assert counted.calls == (25 - n_done if batch_points == 1 else chunks)


def test_done_cells_are_not_evaluated():
    _, loss_fn, params = tiny()
    d = D.random_direction(params, 0)
    axis = make_axis(-1, 1, 7)
    done = np.array([True, False, True, True, False, False, True])
    values = np.where(done, 42.0, np.nan)
    counted = Counter(loss_fn)
    seen = []
    out = loss_grid(counted, params, d, axis, batch_points=1, done=done, values=values,
                    on_chunk=lambda i, v: seen.extend(i.tolist()))
    assert counted.calls == 3 and seen == [1, 4, 5]
    assert (out[done] == 42.0).all() and np.isfinite(out).all()
    counted.calls = 0
    loss_grid(counted, params, d, axis, done=np.ones(7, bool), values=np.zeros(7))
    assert counted.calls == 0
    loss_grid(counted, params, d, axis)  # "auto" on the CPU: the lean loop, one call a point
    assert counted.calls == 7


# --------------------------------------------------------------------------- no side effects


def test_params_and_module_are_bit_identical_after_slicing():
    model, loss_fn, params = tiny(dtype=torch.float32)
    model.train()
    state = {n: t.clone() for n, t in model.state_dict().items()}
    given = {n: p for n, p in model.named_parameters()}  # the module's own tensors
    copies = {n: p.detach().clone() for n, p in given.items()}
    plane = D.random_plane(params, 0)
    axis = make_axis(-1, 1, 3)
    for bp in (1, 4):
        loss_grid(loss_fn, given, plane, axis, axis, batch_points=bp)
    for n, t in model.state_dict().items():
        assert torch.equal(t, state[n]), n
    for n, p in given.items():
        assert torch.equal(p.detach(), copies[n]) and p.grad is None, n
    assert model.training


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_landscape_errors():
    _, loss_fn, params = tiny()
    d = D.random_direction(params, 0)
    axis = make_axis(-1, 1, 3)
    wrong = {**d, "block.mlp.0.weight": torch.zeros(32, 7, dtype=torch.float64)}
    cases = [
        ((wrong, axis), {}, r"direction 0 parameter 'block.mlp.0.weight' has shape \(32, 7\)"),
        (({k: v for k, v in d.items() if k != "ln_f.bias"}, axis), {},
         "lacks parameter 'ln_f.bias'"),
        ((d, [-1.0, 0.0, 0.5, 1.0]), {}, "odd"),
        ((d, [-1.0, -0.2, 1.0]), {}, "symmetric about 0 but 0 is not a point"),
        ((d, [0.0, 1.0, 0.5]), {}, "strictly increasing"),
        ((d, [0.0, np.nan, 1.0]), {}, "finite"),
        (([d, d], axis), {}, "pass betas"),
        ((d, axis, axis), {}, "pass betas"),
        (([d, d, d], axis, axis), {}, "1 or 2"),
        ((d, axis), {"done": np.zeros(3, bool)}, "both done and values"),
        ((d, axis), {"done": np.zeros(4, bool), "values": np.zeros(4)}, "grid is"),
        ((d, axis), {"done": np.zeros(3), "values": np.zeros(3)}, "boolean"),
        ((d, axis), {"batch_points": 0}, "batch_points"),
        ((d, axis), {"batch_points": "fast", "done": np.ones(3, bool), "values": np.ones(3)},
         "batch_points"),
        ((d, axis), {"batch_points": 2, "max_memory_bytes": 0}, "max_memory_bytes"),
    ]
    for args, kwargs, msg in cases:
        with pytest.raises(LandscapeError, match=msg):
            loss_grid(loss_fn, params, *args, **kwargs)
    with pytest.raises(LandscapeError, match="scalar"):
        loss_grid(lambda p: torch.zeros(2), params, d, axis, batch_points=1)
    mixed = {**params, "ln_f.bias": params["ln_f.bias"].float()}
    with pytest.raises(LandscapeError, match="mix dtypes"):
        loss_grid(loss_fn, mixed, d, axis)


def test_basin_share_counts_the_cells_within_the_rise_of_the_centre():
    from landscape.geometry.slices import basin_share

    a = np.linspace(-1, 1, 5)
    wide, narrow = 1 + 0.04 * np.add.outer(a**2, a**2), 1 + np.add.outer(a**2, a**2)
    assert basin_share(a, a, wide, 0.1) == 1.0  # the largest rise is 0.08
    assert basin_share(a, a, narrow, 0.1) == pytest.approx(1 / 25)  # neighbours rise 0.25
    assert basin_share(a, a, narrow, 0.3) == pytest.approx(5 / 25)  # the four at distance 0.5
    off = np.linspace(-0.5, 1.5, 5)  # the centre is the cell nearest 0, not the middle one
    assert basin_share(off, a, 1 + np.add.outer(off**2, a**2), 0.3) == pytest.approx(5 / 25)
    hole = narrow.copy()
    hole[2, 2] = np.nan
    assert np.isnan(basin_share(a, a, hole, 0.1))
    with pytest.raises(LandscapeError, match="shape"):
        basin_share(a, a[:3], narrow, 0.1)


# --------------------------------------------------------------------------- bound lean loop


class _Gpt(torch.nn.Module):
    """A small causal transformer from torch.nn layers (not this project's model)."""

    def __init__(self, d=16, vocab=7, seq=5, tied=False):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, d)
        self.wpe = torch.nn.Embedding(seq, d)
        self.h = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(d, 2, 2 * d, dropout=0.0, batch_first=True,
                                             norm_first=True) for _ in range(2))
        self.ln = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, vocab, bias=False)
        if tied:
            self.head.weight = self.wte.weight
        self.register_buffer("mask", torch.nn.Transformer.generate_square_subsequent_mask(seq))
        self.calls, self.fail_at = 0, None

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("boom")
        h = self.wte(x) + self.wpe(torch.arange(x.shape[1]))
        for layer in self.h:
            h = layer(h, src_mask=self.mask[: x.shape[1], : x.shape[1]], is_causal=True)
        return self.head(self.ln(h))


def _own(tied=False):
    from landscape.runs.own_models import make_custom_loss_fn

    torch.manual_seed(0)
    model = _Gpt(tied=tied).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 7, (3, 6), generator=g)
    probe = {"inputs": ids[:, :-1].numpy(), "targets": ids[:, 1:].numpy()}
    loss_fn = make_custom_loss_fn(model, "next_token", "pair", probe, trust_code=False)
    return model, ids, loss_fn, {n: p.detach().clone() for n, p in model.named_parameters()}


def _peer_grid(model, ids, params, plane, alphas, betas):
    """tomgoldstein/loss-landscape's way: p.data = w + a x + b y in the module, then a forward."""
    out = np.zeros((len(alphas), len(betas)))
    with torch.no_grad():
        for i, a in enumerate(alphas):
            for j, b in enumerate(betas):
                for n, p in model.named_parameters():
                    p.data = params[n] + a * plane.x[n] + b * plane.y[n]
                logits = model(ids[:, :-1])
                out[i, j] = float(torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)))
        for n, p in model.named_parameters():
            p.data = params[n].clone()
    return out


def _snapshot(model):
    return [(n, p, p.detach().clone()) for n, p in model.named_parameters()]


def _unchanged(model, snap):
    now = list(model.named_parameters())
    assert [n for n, _ in now] == [n for n, _, _ in snap]
    for (_, p), (_, q, v) in zip(now, snap):
        assert p is q and isinstance(p, torch.nn.Parameter)  # the same objects, in place
        assert torch.equal(p.detach(), v)  # bit for bit


@pytest.mark.parametrize("tied", [False, True])
def test_bound_grid_equals_the_peers_loop_and_leaves_the_model_alone(tied):
    model, ids, loss_fn, params = _own(tied)
    assert hasattr(loss_fn, "bind")  # the lean loop runs through it
    plane = D.random_plane(params, 0)
    axis = make_axis(-1, 1, 5)
    snap = _snapshot(model)
    got = loss_grid(loss_fn, params, plane, axis, axis, batch_points=1)
    _unchanged(model, snap)
    assert model.calls == 25  # one forward per point, nothing else
    np.testing.assert_allclose(got, _peer_grid(model, ids, params, plane, axis, axis),
                               rtol=1e-5, atol=1e-6)
    # and the functional path (a loss without bind) gives the same grid
    plain = loss_grid(lambda p: loss_fn(p), params, plane, axis, axis, batch_points=1)
    np.testing.assert_allclose(got, plain, rtol=1e-6, atol=0)
    _unchanged(model, snap)


def test_bound_grid_on_our_model_matches_the_naive_grid():
    model, loss_fn, params = tiny()
    plane = D.random_plane(params, 3)
    axis = make_axis(-0.5, 0.5, 5)
    snap = _snapshot(model)
    got = loss_grid(loss_fn, params, plane, axis, axis)  # "auto": the lean loop on the CPU
    _unchanged(model, snap)
    np.testing.assert_allclose(got, naive_grid(loss_fn, params, [plane.x, plane.y], axis, axis),
                               rtol=1e-12, atol=0)


def test_bound_grid_restores_the_model_after_an_exception_mid_grid():
    model, ids, loss_fn, params = _own()
    plane = D.random_plane(params, 0)
    axis = make_axis(-1, 1, 5)
    snap = _snapshot(model)
    before = model(ids[:, :-1]).detach().clone()
    model.calls, model.fail_at = 0, 8  # the model raises in the middle of the grid
    with pytest.raises(RuntimeError, match="boom"):
        loss_grid(loss_fn, params, plane, axis, axis, batch_points=1)
    model.fail_at = None
    _unchanged(model, snap)
    seen = []

    def stop(idx, values):  # and a caller's callback raising mid-grid
        seen.append(int(idx[0]))
        if len(seen) == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        loss_grid(loss_fn, params, plane, axis, axis, batch_points=1, on_chunk=stop)
    _unchanged(model, snap)
    assert torch.equal(model(ids[:, :-1]), before)  # the module computes as before
