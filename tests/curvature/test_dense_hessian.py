"""Tests for landscape.curvature.dense_hessian: the batched dense Hessian against
autograd.functional.hessian,
and the exact valley's eigenpairs against eigh."""

import numpy as np
import pytest
import torch

from landscape.curvature.dense_hessian import dense_hessian, exact_valley
from landscape.curvature.hessian import dense_hessian_reference
from landscape.curvature.objective import detached_params
from landscape.errors import LandscapeError
from landscape.geometry.uv_measures import preconditioned
from landscape.train.model import LoopedTransformer, ModelConfig
from landscape.train.split_loss import make_loss_fn
from landscape.train.tasks.base import IGNORE, Split


def tiny_split(n=3, t=6, vocab=5):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (n, t), generator=g)
    y = torch.roll(x, -1, dims=1)
    y[:, -1] = IGNORE
    return Split(x, y)


def tiny_model(**cfg):
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(d_model=4, n_heads=2, **cfg), vocab_size=5, max_len=6)
    with torch.no_grad():  # weights of order one: LayerNorm's curvature at work
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("ln1.weight") else 0.0, 0.5)
    return model.double()


@pytest.mark.parametrize("cfg", [{"loops": 3}, {"loops": 2, "attention": "linear"}])
def test_dense_hessian_matches_the_autograd_reference(cfg):
    model = tiny_model(**cfg)  # LayerNorm with weights of order one
    loss = make_loss_fn(model, tiny_split())
    params = detached_params(model)
    ref = dense_hessian_reference(loss, params)
    for chunk in (50, 1000):  # a partial last chunk, and one chunk for all
        h = dense_hessian(loss, params, chunk=chunk)
        assert h.dtype == torch.float64 and torch.equal(h, h.T)
        err = float((h - ref).abs().max() / ref.abs().max())
        assert err < 1e-12, err


def test_exact_valley_eigenpairs_and_preconditioning():
    rng = np.random.default_rng(0)
    p, k = 40, 4
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    lam = np.concatenate([[9.0, 5.0, 3.0, 2.0], rng.uniform(-0.1, 0.5, p - 4)])
    h = q @ np.diag(lam) @ q.T
    h = 0.5 * (h + h.T)
    d = rng.uniform(0.5, 2.0, p)
    ev = exact_valley(torch.as_tensor(h), k, denominator=d)
    np.testing.assert_allclose(ev.eigvals, np.sort(lam), atol=1e-10)
    for vals, vecs, mat in ((ev.eigvals, ev.vectors, h),
                            (ev.adam_eigvals, ev.adam_vectors, preconditioned(h, d))):
        w, v = np.linalg.eigh(mat)
        np.testing.assert_allclose(vals, w, atol=1e-10)
        overlap = np.abs(vecs @ v[:, ::-1][:, :k])  # rows against the top-k of eigh
        np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-8)
    assert exact_valley(torch.as_tensor(h), 2).adam_eigvals is None
    with pytest.raises(LandscapeError):
        exact_valley(torch.as_tensor(h), 2, denominator=-d)
    with pytest.raises(LandscapeError):
        exact_valley(torch.as_tensor(h), p + 1)
