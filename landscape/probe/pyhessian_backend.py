"""PyHessian 0.1 as a peer: the same objective and data, its HVPs counted, its patching undone.

``--backend pyhessian`` stores PyHessian's numbers beside ours (the probe part
``pyhessian``), and ``bench/hessian.py`` measures it against
:class:`~landscape.curvature.hessian.HessianOperator`. PyHessian's own algorithms are kept as they
are (it is the peer being measured); what this adapter adds around them: the loss over the
scored tokens only, a count of its Hessian-vector products (by wrapping its module-level
``hessian_vector_product`` for the duration of a call), and the caller's model, RNG and
default dtype restored afterwards.
"""

from __future__ import annotations

import math
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape.errors import LandscapeError
from landscape.train.tasks.base import IGNORE, Split

PYHESSIAN_DENSITY_UNSUPPORTED = (
    "PyHessian 0.1's density() calls torch.eig, which torch removed in 2.0 (it raises "
    "RuntimeError on torch {version}); use landscape.curvature.spectral.slq for the spectral "
    "density"
)


@dataclass(frozen=True)
class PyHessianResult:
    """What PyHessian 0.1 computed, with its cost.

    Attributes:
        eigenvalues: ``[top_n]`` in the order PyHessian found them (power iteration with
            deflation: the largest in *magnitude* first, not necessarily sorted).
        eigenvectors: ``[P, top_n]`` float in flat :class:`ParamLayout` order.
        n_hvp_eigen: Hessian-vector products spent on the eigenvalues.
        trace: Hutchinson estimate (mean of the samples), NaN if not asked for.
        trace_stderr: sample std / sqrt(n), NaN with fewer than 2 samples.
        trace_samples: ``[n]`` the ``v^T H v`` PyHessian drew.
        n_hvp_trace: products spent on the trace.
        density_nodes: ``[n_v, iter]`` SLQ nodes where PyHessian's density could run.
        density_weights: same shape, their weights.
        unsupported: ``{what: why}`` for requested computations PyHessian cannot do here
            (``"density"`` on torch >= 2).
    """

    eigenvalues: np.ndarray
    eigenvectors: torch.Tensor
    n_hvp_eigen: int
    trace: float
    trace_stderr: float
    trace_samples: np.ndarray
    n_hvp_trace: int
    density_nodes: np.ndarray | None = None
    density_weights: np.ndarray | None = None
    unsupported: dict[str, str] = field(default_factory=dict)


class _FlatLogits(nn.Module):
    """``model(x, loops)`` with logits flattened to ``[B*T, V]``, as PyHessian expects."""

    def __init__(self, model: nn.Module, loops: int | None):
        super().__init__()
        self.model, self.loops = model, loops

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``[B*T, V]`` of ``tokens`` ``[B, T]``."""
        logits = self.model(tokens, loops=self.loops)
        return logits.reshape(-1, logits.shape[-1])


def _token_criterion(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over scored tokens, as :func:`landscape.train.model.token_loss`."""
    return F.cross_entropy(logits, targets.reshape(-1), ignore_index=IGNORE)


@contextmanager
def _preserved(model: nn.Module, dtype: torch.dtype):
    """Restore the model's modes, ``.grad`` tensors, the RNG and the default dtype on exit."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad, None if p.grad is None else p.grad.detach().clone())
             for p in model.parameters()]
    default = torch.get_default_dtype()
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"][:1]
    try:
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            # PyHessian's loss.backward(create_graph=True) warns of a parameter <-> .grad
            # cycle; restoring the caller's .grad below breaks it.
            warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph")
            torch.set_default_dtype(dtype)  # PyHessian draws its vectors in the default dtype
            yield
    finally:
        torch.set_default_dtype(default)
        for m, mode in modes:
            m.training = mode
        for p, g, saved in grads:
            p.grad = g
            if g is not None and not torch.equal(g, saved):
                with torch.no_grad():
                    g.copy_(saved)


@contextmanager
def _count_pyhessian_hvps(counter: list[int]):
    """Count PyHessian's calls to its ``hessian_vector_product`` while inside."""
    import pyhessian  # noqa: F401  (the package's `hessian` attribute is the class, not the module)

    ph = sys.modules["pyhessian.hessian"]
    original = ph.hessian_vector_product

    def counted(grads, params, v):
        counter[0] += 1
        return original(grads, params, v)

    ph.hessian_vector_product = counted
    try:
        yield
    finally:
        ph.hessian_vector_product = original


def pyhessian_backend(
    model: nn.Module,
    split: Split,
    loops: int | None = None,
    top_n: int = 5,
    tol: float = 1e-3,
    max_iter: int = 100,
    trace: bool = True,
    trace_max_iter: int = 100,
    trace_tol: float = 1e-3,
    density: bool = False,
    seed: int = 0,
) -> PyHessianResult:
    """Run PyHessian 0.1 (``hessian(...).eigenvalues`` and ``.trace``) on ``model`` and ``split``.

    The same objective as :func:`landscape.train.split_loss.make_loss_fn`: mean cross-entropy
    over all scored tokens of the split (one batch), ``loops`` passes of the block.
    PyHessian's own behaviour, kept as is (it is the peer being measured):

    * ``eigenvalues``: power iteration with deflation, each eigenvalue stopped when two
      successive estimates differ by less than ``tol`` (relative) or after ``max_iter``
      products; it converges to the largest *magnitude*, so a dominant negative
      eigenvalue comes out as "top".
    * ``trace``: Hutchinson, stopped when the running mean changes by less than
      ``trace_tol`` relative to ``mean + 1e-6``. When the running mean is negative that
      ratio is negative, so it stops after two samples whatever their spread.
    * ``density``: calls ``torch.eig``, removed in torch 2; where it is gone the density is
      not attempted and the reason is put in ``unsupported["density"]``.

    The caller's model is left as it was: PyHessian calls ``model.eval()`` and fills
    ``.grad`` with a create-graph gradient; modes and gradients are restored here, the
    global RNG is forked (``seed`` seeds PyHessian's draws) and the default dtype is set
    to the model's for the call (PyHessian draws vectors in the default dtype). Only
    parameters with ``requires_grad`` are seen by PyHessian.

    Args:
        model: a :class:`~landscape.train.model.LoopedTransformer` (or any module mapping
            tokens ``[B, T]`` and ``loops=`` to logits ``[B, T, V]``).
        split: the data (one batch).
        loops: block passes (default ``model.loops``).
        top_n: eigenvalues to compute.
        tol: PyHessian's ``tol`` for ``eigenvalues``.
        max_iter: PyHessian's ``maxIter`` per eigenvalue.
        trace: also run ``trace``.
        trace_max_iter: its ``maxIter``.
        trace_tol: its ``tol``.
        density: ask for the density (reported as unsupported on torch >= 2).
        seed: seed for PyHessian's random vectors.

    Returns:
        A :class:`PyHessianResult`.
    """
    from pyhessian import hessian as pyhessian_hessian

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LandscapeError("pyhessian_backend: the model has no trainable parameters")
    if top_n < 1:
        raise LandscapeError(f"pyhessian_backend: top_n={top_n} must be >= 1")
    cuda = params[0].device.type == "cuda"
    data = (split.inputs.to(params[0].device), split.targets.to(params[0].device))
    counter = [0]
    with _preserved(model, params[0].dtype), _count_pyhessian_hvps(counter):
        torch.manual_seed(seed)
        comp = pyhessian_hessian(_FlatLogits(model, loops), _token_criterion, data=data, cuda=cuda)
        values, vectors = comp.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_n)
        n_eigen = counter[0]
        samples = np.asarray(comp.trace(maxIter=trace_max_iter, tol=trace_tol) if trace else [])
        nodes = weights = None
        if density and _torch_eig_works():
            nodes, weights = (np.asarray(a, dtype=np.float64) for a in comp.density())
        del comp
    flat = torch.stack([torch.cat([t.detach().reshape(-1) for t in v]) for v in vectors], dim=1)
    mean = float(samples.mean()) if samples.size else math.nan
    stderr = float(samples.std(ddof=1) / math.sqrt(samples.size)) if samples.size > 1 else math.nan
    unsupported = {}
    if density and nodes is None:
        unsupported["density"] = PYHESSIAN_DENSITY_UNSUPPORTED.format(version=torch.__version__)
    return PyHessianResult(np.asarray(values, dtype=np.float64), flat, n_eigen, mean, stderr,
                           samples, counter[0] - n_eigen, nodes, weights, unsupported)


def _torch_eig_works() -> bool:
    """Whether the legacy ``torch.eig`` that PyHessian's density needs still exists."""
    try:
        torch.eig(torch.eye(1), eigenvectors=True)  # removed in torch 2: raises
    except (AttributeError, RuntimeError):
        return False
    return True
