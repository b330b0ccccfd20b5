"""The empirical Fisher operator against (1/N) sum g_n g_n^T of explicit per-example gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import classification, close, norm_mlp, pair, tiny_looped, tiny_token_split
from torch.func import functional_call

from landscape.curvature.fisher import FisherOperator
from landscape.curvature.objective import ParamLayout, detached_params
from landscape.curvature.spectral import dense_matrix, hutchpp, lanczos
from landscape.runs import own_models
from landscape.train.split_loss import make_split_objective

F64 = torch.float64


def dense_fisher(model, inputs, example_loss):
    """``(1/N) sum_n g_n g_n^T``: one forward and one ``autograd.grad`` per example ``n``
    on that example alone, ``example_loss(output, n)`` its loss ``l_n``."""
    params, buffers = detached_params(model), dict(model.named_buffers())
    layout = ParamLayout.of(params)
    x0 = layout.flatten(params).requires_grad_()
    grads = []
    for n in range(len(inputs)):
        out = functional_call(model, (layout.unflatten(x0), buffers), (inputs[n : n + 1],))
        grads.append(torch.autograd.grad(example_loss(out, n), x0)[0])
    g = torch.stack(grads)  # [N, P]
    return g.T @ g / len(inputs)


def fisher_matrix(objective, model):
    return dense_matrix(FisherOperator(objective, detached_params(model)))


def test_cross_entropy_through_layernorm_and_batchnorm_in_chunks():
    model, (x, y) = norm_mlp(), classification()
    truth = dense_fisher(model, x, lambda o, n: F.cross_entropy(o, y[n : n + 1]))
    objective = own_models.make_split_objective(model, "cross_entropy", "pair", pair(x, y),
                                                trust_code=False, chunk=3)
    close(fisher_matrix(objective, model), truth)


def test_mse_example_losses_weigh_by_their_entries():
    model = norm_mlp(n_out=2)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 2, generator=g, dtype=F64)
    # mean over all 10 entries = (1/N) sum_n l_n with l_n = N * (sum of n's squares) / 10
    truth = dense_fisher(model, x, lambda o, n: 5 * ((o - y[n : n + 1]) ** 2).sum() / 10)
    objective = own_models.make_split_objective(model, "mse", "pair", pair(x, y),
                                                trust_code=False, chunk=2)
    close(fisher_matrix(objective, model), truth)


def test_sequences_are_the_examples_with_ignored_tokens_left_out():
    model, split = tiny_looped(), tiny_token_split()
    n, n_scored = len(split), int((split.targets != -100).sum())

    def sequence_loss(out, i):  # l_n = N * (sequence n's summed token loss) / scored tokens
        ce = F.cross_entropy(out[0], split.targets[i], ignore_index=-100, reduction="sum")
        return n * ce / n_scored

    truth = dense_fisher(model, split.inputs, sequence_loss)
    close(fisher_matrix(make_split_objective(model, split, chunk=2), model), truth)
    tokens = dense_fisher(model, split.inputs[:, :3], lambda o, i: F.cross_entropy(
        o[0], split.targets[i, :3], ignore_index=-100))  # another grouping is another matrix
    assert float((tokens - truth).abs().max()) > 1e-3 * float(truth.abs().max())


def test_rank_at_most_n_positive_semidefinite_and_lanczos_and_trace_agree():
    model, (x, y) = norm_mlp(), classification(n=4)
    objective = own_models.make_split_objective(model, "cross_entropy", "pair", pair(x, y),
                                                trust_code=False, chunk=3)
    op = FisherOperator(objective, detached_params(model))
    eig = np.linalg.eigvalsh(dense_matrix(op).numpy())[::-1]
    assert eig[-1] >= -1e-12 * eig[0]
    assert eig[3] > 1e-6 * eig[0] and np.all(np.abs(eig[4:]) < 1e-12 * eig[0])  # rank N = 4
    found = lanczos(op, k_top=3, tol=1e-10)
    np.testing.assert_allclose(found.top_values, eig[:3], rtol=1e-8)
    trace = hutchpp(op, 60, seed=0)
    assert trace.estimate == pytest.approx(eig.sum(), rel=1e-8)  # rank 4 < probes: exact
