"""The exact valley of a checkpoint: dense Hessian, its spectrum and top eigenvectors.

For the small models of the spectral runs the whole Hessian fits in memory, and its
exact spectrum is what the landscape claims should rest on (no stochastic estimator, no
threshold that the estimator's resolution decides). This module reads from it in one go
what the valley measurements need:

* :func:`dense_hessian`: columns ``H e_i`` by forward-over-reverse differentiation
  (``jvp`` of ``grad``), ``chunk`` columns at a time under ``torch.func.vmap``: exactly
  ``jacfwd(grad)``, the reference the tests use (not ``torch.func.hessian``, which is
  wrong through LayerNorm on torch 2.13), symmetrised. A path independent of the
  double-backward products of :class:`~landscape.curvature.hessian.HessianOperator`; on one CPU
  thread it was measured no faster than them (0.92x the product for Single-Attn, 1.16x
  for Looped-Attn at d_model 24), so the probe builds the matrix from products
  (:func:`landscape.curvature.spectral.dense_matrix`), which also works sharded under torchrun.
* :func:`exact_valley`: all eigenvalues (float64 ``eigvalsh``) and the top-k
  eigenvectors (Lanczos on the dense matrix, far cheaper than a second decomposition),
  for the Hessian and, given AdamW's second moment, for the preconditioned Hessian
  ``D^-1/2 H D^-1/2`` the optimiser sees
  (:func:`landscape.geometry.uv_measures.precondition_denominator`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import grad, jvp, vmap

from landscape.curvature.objective import LossFn, ParamLayout
from landscape.curvature.spectral import DenseOperator, lanczos
from landscape.errors import LandscapeError

CHUNK = 16  # columns per vmap batch (16 was faster than 32 on one CPU thread)


def dense_hessian(loss_fn: LossFn, params: Mapping[str, torch.Tensor],
                  chunk: int = CHUNK) -> torch.Tensor:
    """The ``[P, P]`` Hessian by batched forward-over-reverse products, symmetrised.

    Args:
        loss_fn: ``loss_fn(params) -> 0-d tensor``.
        params: the point, by name (their dtype is the products' dtype).
        chunk: columns per batch.

    Returns:
        ``[P, P]`` float64 (built in the parameters' dtype), ``(H + H') / 2``.
    """
    if int(chunk) != chunk or chunk < 1:
        raise LandscapeError(f"dense_hessian: chunk must be a positive integer, got {chunk}")
    layout = ParamLayout.of(params)
    x0 = layout.flatten({k: v.detach() for k, v in params.items()})

    def flat_loss(x: torch.Tensor) -> torch.Tensor:
        return loss_fn(layout.unflatten(x))

    g = grad(flat_loss)

    def column(u: torch.Tensor) -> torch.Tensor:
        return jvp(g, (x0,), (u,))[1]

    p = x0.numel()
    out = torch.empty(p, p, dtype=torch.float64)
    for i in range(0, p, chunk):
        n = min(chunk, p - i)
        eye = torch.zeros(n, p, dtype=x0.dtype, device=x0.device)
        eye[torch.arange(n), torch.arange(i, i + n)] = 1.0
        out[i:i + n] = vmap(column)(eye).to(torch.float64).cpu()
    if not bool(torch.isfinite(out).all()):
        raise LandscapeError("the dense Hessian has NaN or inf entries")
    return 0.5 * (out + out.T)


@dataclass(frozen=True)
class ExactValley:
    """Spectrum and top eigenvectors of a dense Hessian (and its preconditioned form).

    Attributes:
        eigvals: ``[P]`` ascending eigenvalues of H.
        vectors: ``[k, P]`` its top-k eigenvectors (rows, descending eigenvalue).
        adam_eigvals: ``[P]`` ascending eigenvalues of ``D^-1/2 H D^-1/2`` (None without
            a denominator).
        adam_vectors: ``[k, P]`` its top-k eigenvectors (None without a denominator).
    """

    eigvals: np.ndarray
    vectors: np.ndarray
    adam_eigvals: np.ndarray | None
    adam_vectors: np.ndarray | None


def _top_vectors(h: torch.Tensor, k: int) -> np.ndarray:
    res = lanczos(DenseOperator(h), k_top=k, tol=1e-9, max_steps=h.shape[0], seed=0)
    return res.top_vectors.T.cpu().numpy()  # [k, P], descending


def exact_valley(hessian: torch.Tensor, k: int, denominator: object = None) -> ExactValley:
    """All eigenvalues and the top-k eigenvectors of H, and of ``D^-1/2 H D^-1/2``.

    Args:
        hessian: ``[P, P]`` symmetric (e.g. :func:`dense_hessian`).
        k: number of top eigenvectors (1 <= k <= P).
        denominator: ``[P]`` AdamW's update denominator (> 0), or None.

    Returns:
        See :class:`ExactValley`.
    """
    h = torch.as_tensor(hessian, dtype=torch.float64)
    p = h.shape[0]
    if h.dim() != 2 or h.shape != (p, p):
        raise LandscapeError(f"hessian must be square, got {tuple(h.shape)}")
    if int(k) != k or not 1 <= k <= p:
        raise LandscapeError(f"k must be in [1, {p}], got {k}")
    vals = torch.linalg.eigvalsh(h).numpy()
    vecs = _top_vectors(h, k)
    if denominator is None:
        return ExactValley(vals, vecs, None, None)
    d = torch.as_tensor(np.asarray(denominator, dtype=np.float64))
    if d.shape != (p,) or not bool(torch.isfinite(d).all()) or bool((d <= 0).any()):
        raise LandscapeError(f"denominator must be a finite positive [P={p}] vector")
    s = d.rsqrt()
    hp = s[:, None] * h * s[None, :]
    return ExactValley(vals, vecs, torch.linalg.eigvalsh(hp).numpy(), _top_vectors(hp, k))
