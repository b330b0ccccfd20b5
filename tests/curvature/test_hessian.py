"""The Hessian operator against dense float64 references, and the PyHessian peer."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_token_split
from torch import nn
from torch.func import functional_call

from landscape.curvature.hessian import (
    HessianOperator,
    dense_hessian_reference,
    preconditioned_operator,
)
from landscape.curvature.objective import ParamLayout, detached_params
from landscape.curvature.spectral import dense_matrix, lanczos
from landscape.errors import LandscapeError
from landscape.probe.pyhessian_backend import pyhessian_backend
from landscape.train.model import LoopedTransformer, ModelConfig, param_groups
from landscape.train.split_loss import make_loss_fn

F64 = torch.float64



def tiny_model(seed=0, dtype=F64, **cfg):
    torch.manual_seed(seed)
    model = LoopedTransformer(ModelConfig(d_model=4, n_heads=2, **cfg), vocab_size=5, max_len=6)
    with torch.no_grad():  # weights of order one: a Hessian with structure, LayerNorm at work
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("ln1.weight") else 0.0, 0.5)
    return model.to(dtype)


def jacfwd_reference(loss_fn, params):
    """Forward-over-reverse dense Hessian: a code path independent of double backward."""
    layout = ParamLayout.of(params)

    def flat_loss(x):
        return loss_fn(layout.unflatten(x))

    return torch.func.jacfwd(torch.func.grad(flat_loss))(layout.flatten(params))


def close(a, b, rtol):
    err = float((a - b).abs().max() / b.abs().max())
    assert err <= rtol, f"max |a - b| / max |b| = {err:.3g} > {rtol:g}"


CONFIGS = {
    "single-softmax-pre": dict(loops=1),
    "looped-softmax-pre": dict(loops=3),
    "single-linear-none": dict(loops=1, attention="linear", norm="none"),
    "looped-linear-none": dict(loops=3, attention="linear", norm="none"),
    "looped-softmax-none-mlp": dict(loops=3, norm="none", mlp=True, d_mlp=4),
    "looped-linear-pre-mlp-inject": dict(loops=3, attention="linear", mlp=True, d_mlp=4,
                                         input_injection=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hvp_matches_dense_hessian(name):
    model = tiny_model(**CONFIGS[name])
    loss_fn, params = make_loss_fn(model, tiny_token_split(3)), detached_params(model)
    ref = jacfwd_reference(loss_fn, params)
    op = HessianOperator(loss_fn, params)
    close(dense_matrix(op, chunk=50), ref, 1e-12)
    v = torch.randn(op.dim, dtype=F64)
    close(op.matvec(v), ref @ v, 1e-12)
    assert op.n_matvec == op.dim + 1 and op.n_grad == 1
    assert abs(op.loss - float(loss_fn(params))) < 1e-14
    layout = ParamLayout.of(params)
    x0 = layout.flatten(params).requires_grad_()
    grad = torch.autograd.grad(loss_fn(layout.unflatten(x0)), x0)[0]
    close(op.gradient, grad, 1e-14)


def fd_hessian_columns(loss_fn, params, directions, h=1e-5):
    """Central finite differences of the gradient along each direction, ``[P, k]``."""
    layout = ParamLayout.of(params)
    x0 = layout.flatten(params)

    def grad(x):
        x = x.clone().requires_grad_()
        return torch.autograd.grad(loss_fn(layout.unflatten(x)), x)[0]

    cols = [(grad(x0 + h * d) - grad(x0 - h * d)) / (2 * h) for d in directions.T]
    return torch.stack(cols, dim=1)


def test_dense_reference_is_checked_by_finite_differences_and_jacfwd():
    model = tiny_model(loops=3, mlp=True, d_mlp=4)
    loss_fn, params = make_loss_fn(model, tiny_token_split(n=2)), detached_params(model)
    ref = dense_hessian_reference(loss_fn, params)
    assert ref.dtype == F64 and torch.allclose(ref, ref.T, atol=1e-13)
    close(ref, jacfwd_reference(loss_fn, params), 1e-12)
    dirs = torch.randn(ref.shape[0], 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    close(fd_hessian_columns(loss_fn, params, dirs), ref @ dirs, 1e-6)


def linear_layernorm_linear():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[1].weight.normal_(1.0, 0.5)
        net[1].bias.normal_(0.0, 0.5)
    x = torch.randn(5, 3, dtype=F64)
    params = detached_params(net)

    def loss_fn(p):
        return functional_call(net, p, (x,)).pow(2).mean().sin()

    return loss_fn, params


def test_reference_agrees_with_finite_differences_on_layernorm():
    loss_fn, params = linear_layernorm_linear()
    ref = dense_hessian_reference(loss_fn, params)
    eye = torch.eye(ref.shape[0], dtype=F64)
    close(fd_hessian_columns(loss_fn, params, eye), ref, 1e-7)
    close(jacfwd_reference(loss_fn, params), ref, 1e-13)
    close(dense_matrix(HessianOperator(loss_fn, params)), ref, 1e-13)


@pytest.mark.skipif(not torch.__version__.startswith("2.13"), reason="records torch 2.13")
def test_torch_func_hessian_is_wrong_through_layernorm_on_torch_2_13():
    """Why dense_hessian_reference avoids torch.func.hessian (see
    landscape/curvature/hessian.py)."""
    loss_fn, params = linear_layernorm_linear()
    layout = ParamLayout.of(params)
    ref = dense_hessian_reference(loss_fn, params)
    bad = torch.func.hessian(lambda x: loss_fn(layout.unflatten(x)))(layout.flatten(params))
    err = float((bad - ref).abs().max() / ref.abs().max())
    assert err > 0.05, f"torch.func.hessian now agrees ({err:.2g}): update the docstring note"


def test_lanczos_on_hessian_matches_eigh():
    model = tiny_model(loops=3)
    loss_fn, params = make_loss_fn(model, tiny_token_split(3)), detached_params(model)
    truth = np.linalg.eigvalsh(jacfwd_reference(loss_fn, params).numpy())
    op = HessianOperator(loss_fn, params)
    res = lanczos(op, k_top=4, k_bottom=3, tol=1e-10, seed=0)
    assert res.converged
    np.testing.assert_allclose(res.top_values, truth[::-1][:4], rtol=1e-8)
    np.testing.assert_allclose(res.bottom_values, truth[:3], rtol=1e-8)
    assert truth[0] < 0 < truth[-1]  # both ends are meaningful here


def test_float32_params_cast_to_float64():
    model = tiny_model(loops=1, dtype=torch.float32)
    loss_fn, params = make_loss_fn(model, tiny_token_split(3)), detached_params(model)
    op = HessianOperator(loss_fn, params, dtype=F64)
    assert op.dtype == F64 and op.matvec(torch.ones(op.dim)).dtype == F64
    p64 = {n: p.double() for n, p in params.items()}
    ref = jacfwd_reference(make_loss_fn(model.double(), tiny_token_split(3)), p64)
    close(dense_matrix(op), ref, 1e-12)
    op32 = HessianOperator(loss_fn, params)
    assert op32.dtype == torch.float32
    close(dense_matrix(op32).double(), ref, 1e-5)


def test_operator_leaves_module_untouched():
    model = tiny_model(loops=3, dtype=torch.float32)
    model.train()
    model.block.attn.eval()  # a mixed state, to be kept as is
    live = dict(model.named_parameters())
    for p in live.values():
        p.grad = torch.full_like(p, 0.25)
    before = {n: (p.detach().clone(), p.grad, p.grad.clone()) for n, p in live.items()}
    modes = [m.training for m in model.modules()]
    loss_fn = make_loss_fn(model, tiny_token_split(3))
    op = HessianOperator(loss_fn, live)  # the live parameters themselves
    lanczos(op, k_top=2, k_bottom=1, seed=0)
    op.check_determinism()
    op.restrict(["head.weight"]).matvec(torch.ones(20))
    for n, p in model.named_parameters():
        value, grad_obj, grad_val = before[n]
        assert torch.equal(p.detach(), value) and p.grad is grad_obj
        assert torch.equal(p.grad, grad_val) and p.requires_grad
    assert [m.training for m in model.modules()] == modes


def test_operator_shares_the_parameters_memory_and_fails_loudly_if_they_change():
    """No copy of the parameters (P floats) where no cast is asked, and no silent mix of two
    points if the caller changes one in place while the operator lives."""
    model = tiny_model(loops=2, dtype=F64)
    params = detached_params(model)
    loss_fn = make_loss_fn(model, tiny_token_split(3))
    op = HessianOperator(loss_fn, params)
    ref = op.matvec(torch.ones(op.dim)).clone()
    assert all(op._values[n].data_ptr() == p.data_ptr() for n, p in params.items())
    assert op._g.untyped_storage().nbytes() == 0  # the graph's output keeps no values
    assert op.n_grad == 1
    grads = torch.autograd.grad(loss_fn(params_grad := {n: p.clone().requires_grad_()
                                                        for n, p in params.items()}),
                                list(params_grad.values()))
    close(op.gradient, torch.cat([g.reshape(-1) for g in grads]), 1e-14)
    assert op.n_grad == 2 and op.gradient is op.gradient and op.n_grad == 2  # read once
    assert HessianOperator(loss_fn, params, dtype=torch.float32)._values[
        "head.weight"].data_ptr() != params["head.weight"].data_ptr()  # a cast copies
    with torch.no_grad():
        params["head.weight"].mul_(2.0)
    with pytest.raises(RuntimeError, match="inplace"):
        op.matvec(torch.ones(op.dim))
    with torch.no_grad():
        params["head.weight"].div_(2.0)
    close(HessianOperator(loss_fn, params).matvec(torch.ones(op.dim)), ref, 1e-14)


def test_large_cpu_operators_return_freed_heap_memory_after_each_product(monkeypatch):
    """Above TRIM_BYTES a product ends with a heap trim (same product); below, none."""
    import landscape.curvature.hessian as hm

    calls = []
    monkeypatch.setattr(hm, "_heap_trim", lambda: (lambda: calls.append(1)))
    model = tiny_model(loops=2, dtype=F64)
    loss_fn, params = make_loss_fn(model, tiny_token_split(3)), detached_params(model)
    v = torch.randn(sum(p.numel() for p in params.values()), dtype=F64)
    small = HessianOperator(loss_fn, params).matvec(v)
    assert calls == []
    monkeypatch.setattr(hm, "TRIM_BYTES", 8)
    op = HessianOperator(loss_fn, params)
    close(op.matvec(v), small, 1e-15)
    op.matmat(torch.stack([v, v], dim=1))
    assert len(calls) == 3


def test_determinism_check_catches_dropout():
    torch.manual_seed(0)
    x = torch.randn(16, 3, dtype=F64)
    w = {"a": torch.randn(3, 8, dtype=F64), "b": torch.randn(8, dtype=F64)}

    def noisy(p):
        return F.dropout(torch.tanh(x @ p["a"]), 0.5, training=True).mul(p["b"]).sum().pow(2)

    def clean(p):
        return torch.tanh(x @ p["a"]).mul(p["b"]).sum().pow(2)

    with pytest.raises(LandscapeError, match="not deterministic"):
        HessianOperator(noisy, w).check_determinism()
    op = HessianOperator(clean, w)
    assert op.check_determinism() <= 1e-13
    assert op.n_grad == 3 and op.n_matvec == 2  # the rebuilt graph and the first gradient read


def test_restrict_is_the_hessian_block():
    model = tiny_model(loops=3, mlp=True, d_mlp=4)
    loss_fn, params = make_loss_fn(model, tiny_token_split(3)), detached_params(model)
    ref = jacfwd_reference(loss_fn, params)
    layout = ParamLayout.of(params)
    full = HessianOperator(loss_fn, params)
    groups = param_groups(full.names)
    for group in ("q", "mlp", "norm"):
        names = groups[group]
        idx = torch.cat([torch.arange(o, o + s) for n, o, s in
                         zip(layout.names, layout.offsets, layout.sizes) if n in names])
        sub = full.restrict(names)
        assert sub.names == tuple(n for n in layout.names if n in names)
        close(dense_matrix(sub), ref[idx][:, idx], 1e-12)
    with pytest.raises(LandscapeError, match="unknown"):
        full.restrict(["nope"])
    with pytest.raises(LandscapeError, match="no parameters"):
        full.restrict([])


def test_param_groups_of_model_names():
    model = LoopedTransformer(ModelConfig(d_model=4, n_heads=2, mlp=True), 5, 6)
    groups = param_groups(n for n, _ in model.named_parameters())
    assert groups == {
        "embedding": ["embed.weight", "pos.weight"],
        "q": ["block.attn.q.weight"], "k": ["block.attn.k.weight"],
        "v": ["block.attn.v.weight"], "o": ["block.attn.o.weight"],
        "mlp": ["block.mlp.0.weight", "block.mlp.0.bias", "block.mlp.2.weight",
                "block.mlp.2.bias"],
        "norm": ["block.ln1.weight", "block.ln1.bias", "block.ln2.weight", "block.ln2.bias",
                 "ln_f.weight", "ln_f.bias"],
        "head": ["head.weight"],
    }
    tied = LoopedTransformer(ModelConfig(d_model=4, n_heads=2, tie_embeddings=True,
                                         positions="none", norm="none"), 5, 6)
    groups = param_groups(n for n, _ in tied.named_parameters())
    assert "head" not in groups and groups["embedding"] == ["embed.weight"]
    assert param_groups(["foo.bar"]) == {"other": ["foo.bar"]}


def test_zero_and_unused_parameters():
    w = {"a": torch.tensor([1.0, 2.0], dtype=F64), "unused": torch.ones(3, dtype=F64)}
    op = HessianOperator(lambda p: (p["a"] ** 3).sum(), w)
    np.testing.assert_allclose(dense_matrix(op).numpy(), np.diag([6.0, 12.0, 0, 0, 0]))
    affine = HessianOperator(lambda p: (3.0 * p["a"]).sum(), w)
    assert torch.equal(affine.matvec(torch.ones(5, dtype=F64)), torch.zeros(5, dtype=F64))


def test_bad_loss_raises():
    w = {"a": torch.ones(2, dtype=F64)}
    with pytest.raises(LandscapeError, match="scalar"):
        HessianOperator(lambda p: p["a"] * 2, w)
    with pytest.raises(LandscapeError, match="does not depend"):
        HessianOperator(lambda p: torch.tensor(1.0), w)
    with pytest.raises(LandscapeError, match="shape"):
        HessianOperator(lambda p: p["a"].pow(2).sum(), w).matvec(torch.ones(3))


def test_batched_matmat_agrees_with_single_products():
    model = tiny_model(loops=3)
    loss_fn, params = make_loss_fn(model, tiny_token_split(3)), detached_params(model)
    loop_op = HessianOperator(loss_fn, params, batched=False)
    vs = torch.randn(loop_op.dim, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    loop = loop_op.matmat(vs)
    batched = HessianOperator(loss_fn, params, batched=True)
    close(batched.matmat(vs), loop, 1e-13)
    assert batched.n_matvec == 5
    close(HessianOperator(loss_fn, params).matmat(vs), loop, 1e-13)


# ----------------------------------------------------------------------------- sharpness


def test_preconditioned_operator_after_adam_steps():
    model = tiny_model(loops=1)
    split = tiny_token_split(3)
    loss_fn = make_loss_fn(model, split)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), eps=1e-6)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(dict(model.named_parameters())).backward()
        opt.step()
    params = detached_params(model)
    op = HessianOperator(loss_fn, params)
    state = {n: opt.state[p]["exp_avg_sq"] for n, p in model.named_parameters()}
    step = int(next(iter(opt.state.values()))["step"])
    pre = preconditioned_operator(op, state, eps=1e-6, step=step, beta2=0.99)
    v = torch.cat([s.reshape(-1) for s in state.values()])
    d = 1.0 / ((v / (1 - 0.99**3)).sqrt() + 1e-6)  # Adam's update is grad * d
    h = jacfwd_reference(loss_fn, params)
    close(dense_matrix(pre), d.sqrt()[:, None] * h * d.sqrt()[None, :], 1e-12)
    flat = preconditioned_operator(op, v, eps=1e-6, step=3, beta2=0.99)
    close(flat.matvec(torch.ones(op.dim, dtype=F64)), pre.matvec(torch.ones(op.dim, dtype=F64)),
          1e-15)
    with pytest.raises(LandscapeError):
        preconditioned_operator(op, v[:-1], eps=1e-6, step=3, beta2=0.99)
    with pytest.raises(LandscapeError):
        preconditioned_operator(op, -v, eps=1e-6, step=3, beta2=0.99)
    with pytest.raises(LandscapeError):
        preconditioned_operator(op, v, eps=1e-6, step=0, beta2=0.99)
    with pytest.raises(LandscapeError):
        preconditioned_operator(op, torch.zeros_like(v), eps=0.0, step=3, beta2=0.99)


# ----------------------------------------------------------------------------- PyHessian


def test_pyhessian_backend_agrees_and_restores_the_model():
    model = tiny_model(loops=3)
    split = tiny_token_split(3)
    model.train()
    params = dict(model.named_parameters())
    params["head.weight"].grad = torch.ones_like(params["head.weight"])
    grads = {n: p.grad for n, p in params.items()}
    default, rng = torch.get_default_dtype(), torch.get_rng_state()
    out = pyhessian_backend(model, split, top_n=2, tol=1e-7, max_iter=300, trace_max_iter=50,
                            density=True, seed=0)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is grads[n] for n, p in model.named_parameters())
    assert torch.equal(params["head.weight"].grad, torch.ones(5, 4, dtype=F64))
    assert torch.get_default_dtype() == default and torch.equal(torch.get_rng_state(), rng)
    op = HessianOperator(make_loss_fn(model, split), detached_params(model))
    ours = lanczos(op, k_top=2, k_bottom=1, tol=1e-10, seed=0)
    magnitude = max(abs(ours.top_values[0]), abs(ours.bottom_values[0]))
    assert abs(abs(out.eigenvalues[0]) - magnitude) <= 1e-3 * magnitude
    assert 2 <= out.n_hvp_eigen <= 600 and out.eigenvectors.shape == (op.dim, 2)
    assert out.n_hvp_trace == len(out.trace_samples) >= 2
    exact_trace = float(torch.trace(dense_matrix(op)))
    assert abs(out.trace - exact_trace) <= 6 * out.trace_stderr
    assert "torch.eig" in out.unsupported["density"] and out.density_nodes is None


def test_pyhessian_default_tolerance_is_loose():
    """At its default tol=1e-3 PyHessian stops early: near the truth, further than at 1e-9."""
    model, split = tiny_model(seed=3, loops=3), tiny_token_split(3)
    h = jacfwd_reference(make_loss_fn(model, split), detached_params(model))
    truth = float(torch.linalg.eigvalsh(h).abs().max())
    loose = pyhessian_backend(model, split, top_n=1, trace=False, seed=3)
    tight = pyhessian_backend(model, split, top_n=1, trace=False, tol=1e-9, max_iter=500,
                              seed=3)

    def error(out):
        return abs(abs(out.eigenvalues[0]) - truth) / truth

    assert 1e-4 < error(loose) < 1e-2 and error(tight) < 1e-5, (error(loose), error(tight))
    assert loose.n_hvp_eigen < tight.n_hvp_eigen
    assert math.isnan(loose.trace) and loose.n_hvp_trace == 0
