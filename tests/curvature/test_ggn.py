"""The GGN operator against J^T H J built from an explicit Jacobian and output Hessian."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import classification, close, norm_mlp, pair, tiny_looped, tiny_token_split
from torch import nn
from torch.func import functional_call

from landscape.curvature.ggn import GGNOperator
from landscape.curvature.hessian import dense_hessian_reference
from landscape.curvature.objective import ParamLayout, detached_params
from landscape.curvature.spectral import dense_matrix, lanczos
from landscape.errors import LandscapeError
from landscape.runs import own_models
from landscape.train.split_loss import make_loss_fn, make_split_objective

F64 = torch.float64


def dense_ggn(model, inputs, loss_on_output):
    """``J^T H J`` in float64: ``J`` by ``autograd.functional.jacobian`` of the whole
    probe set's output in one forward, ``H`` by ``autograd.functional.hessian`` of the
    loss written on that output."""
    params, buffers = detached_params(model), dict(model.named_buffers())
    layout = ParamLayout.of(params)

    def output(x):
        return functional_call(model, (layout.unflatten(x), buffers), (inputs,))

    x0 = layout.flatten(params)
    out0 = output(x0).detach()
    jac = torch.autograd.functional.jacobian(output, x0).reshape(out0.numel(), -1)
    hess = torch.autograd.functional.hessian(
        lambda o: loss_on_output(o.reshape(out0.shape)), out0.reshape(-1))
    return jac.T @ hess @ jac


def regression(n=7, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)


def own_objective(model, loss, x, y, chunk=3):
    return own_models.make_split_objective(model, loss, "pair", pair(x, y),
                                           trust_code=False, chunk=chunk)


def ggn_matrix(objective, model):
    return dense_matrix(GGNOperator(objective, detached_params(model)))


# --- against the dense truth -------------------------------------------------------------


def test_cross_entropy_through_layernorm_and_batchnorm_in_chunks():
    model, (x, y) = norm_mlp(), classification()
    truth = dense_ggn(model, x, lambda o: F.cross_entropy(o, y))
    close(ggn_matrix(own_objective(model, "cross_entropy", x, y), model), truth)


def test_mse_through_layernorm_and_batchnorm():
    model, (x, y) = norm_mlp(n_out=2), regression()
    truth = dense_ggn(model, x, lambda o: ((o - y) ** 2).mean())
    close(ggn_matrix(own_objective(model, "mse", x, y, chunk=2), model), truth)


def test_next_token_with_ignored_targets_on_the_looped_transformer():
    model, split = tiny_looped(), tiny_token_split()
    truth = dense_ggn(model, split.inputs, lambda o: F.cross_entropy(
        o.reshape(-1, o.shape[-1]), split.targets.reshape(-1), ignore_index=-100))
    objective = make_split_objective(model, split, chunk=2)
    close(ggn_matrix(objective, model), truth)
    params = detached_params(model)  # the split loss is the model's loss
    assert float(objective.loss(params)) == pytest.approx(float(make_loss_fn(model, split)(params)),
                                                          rel=1e-12)


def test_next_token_on_an_own_model_with_ignored_targets():
    import own_model

    model = own_model.build_norm().double().eval()
    x, y = own_model.data(n=5)
    y[:, -1], y[1, 0] = -100, -100
    truth = dense_ggn(model, x, lambda o: F.cross_entropy(
        o.reshape(-1, o.shape[-1]), y.reshape(-1), ignore_index=-100))
    close(ggn_matrix(own_objective(model, "next_token", x, y, chunk=2), model), truth)


# --- its properties, each shown able to fail -----------------------------------------------


def test_ggn_is_positive_semidefinite_where_the_hessian_is_not():
    model, (x, y) = norm_mlp(), classification()
    objective = own_objective(model, "cross_entropy", x, y)
    params = detached_params(model)
    ggn = np.linalg.eigvalsh(ggn_matrix(objective, model).numpy())
    hess = np.linalg.eigvalsh(dense_hessian_reference(objective.loss, params).numpy())
    assert ggn.min() >= -1e-12 * ggn.max()
    assert hess.min() < -1e-3 * hess.max()  # the model's curvature term: indefinite


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_ggn_is_the_hessian_of_a_linear_model_only(loss):
    torch.manual_seed(0)
    x, y = classification() if loss == "cross_entropy" else regression()
    n_out = 3 if loss == "cross_entropy" else 2
    linear, deep = nn.Linear(3, n_out).double(), norm_mlp(n_out=n_out)
    for model, same in ((linear, True), (deep, False)):
        objective = own_objective(model, loss, x, y)
        hess = dense_hessian_reference(objective.loss, detached_params(model))
        err = float((ggn_matrix(objective, model) - hess).abs().max() / hess.abs().max())
        assert (err < 1e-12) is same, f"{type(model).__name__}: {err:.3g}"


def test_lanczos_finds_the_dense_top_eigenvalues():
    model, (x, y) = norm_mlp(), classification()
    truth = np.linalg.eigvalsh(dense_ggn(model, x, lambda o: F.cross_entropy(o, y)).numpy())
    op = GGNOperator(own_objective(model, "cross_entropy", x, y), detached_params(model))
    found = lanczos(op, k_top=3, tol=1e-10)
    np.testing.assert_allclose(found.top_values, truth[::-1][:3], rtol=1e-8)


def test_restrict_is_the_block_and_float32_params_cast_to_float64():
    model, (x, y) = norm_mlp(), classification()
    objective = own_objective(model, "cross_entropy", x, y)
    full_op = GGNOperator(objective, {k: v.float() for k, v in detached_params(model).items()},
                          dtype=F64)
    assert full_op.dtype == F64
    full = dense_matrix(GGNOperator(objective, detached_params(model)))
    block = full_op.restrict(["6.weight", "0.bias"])
    layout = ParamLayout.of(detached_params(model))
    idx = np.concatenate([np.arange(layout.offsets[i], layout.offsets[i] + layout.sizes[i])
                          for i in (layout.names.index("6.weight"), layout.names.index("0.bias"))])
    close(dense_matrix(block), full[np.ix_(idx, idx)], rtol=1e-6)  # float32 weights cast
    assert full_op.check_determinism() < 1e-12


def test_dropout_in_train_mode_fails_the_determinism_check():
    model, (x, y) = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Linear(8, 3)).double(), \
        classification()
    op = GGNOperator(own_objective(model, "cross_entropy", x, y), detached_params(model))
    with pytest.raises(LandscapeError, match="not deterministic"):
        op.check_determinism()
    model.eval()
    op = GGNOperator(own_objective(model, "cross_entropy", x, y), detached_params(model))
    assert op.check_determinism() < 1e-12


# --- custom losses -------------------------------------------------------------------------


def test_a_custom_loss_is_refused_unless_it_declares_its_output_and_output_loss():
    import own_model

    model = own_model.build().double()
    x, y = own_model.data(n=4)
    with pytest.raises(LandscapeError, match="output_loss"):
        own_models.make_split_objective(model, "own_model:per_token_loss", "pair", pair(x, y),
                                        trust_code=True)
    objective = own_models.make_split_objective(model, "own_model:declared_loss", "pair",
                                                pair(x, y), trust_code=True, chunk=3)
    builtin = own_objective(model, "next_token", x, y)
    close(ggn_matrix(objective, model), ggn_matrix(builtin, model))
