"""The Hessian of a loss as a linear operator, and its float64 reference.

:class:`HessianOperator` turns a pair ``(loss_fn, params)`` (see
:mod:`landscape.curvature.objective`) into a
:class:`~landscape.curvature.spectral.SymmetricOperator` on flat vectors in
:class:`~landscape.curvature.objective.ParamLayout` order, ready for
:func:`~landscape.curvature.spectral.lanczos`, :func:`~landscape.curvature.spectral.hutchpp`,
:func:`~landscape.curvature.spectral.slq` and
:func:`~landscape.curvature.spectral.exact_spectrum`. The gradient graph is built once; every
product is one double-backward through it.

Also here: :func:`dense_hessian_reference` (the float64 truth for tests) and
:func:`preconditioned_operator` (the Adam-preconditioned Hessian, whose top eigenvalue is
the preconditioned sharpness). The PyHessian peer lives in :mod:`landscape.probe.pyhessian_backend`,
the parameter groups of per-block spectra in :func:`landscape.train.model.param_groups`, the
edge-of-stability thresholds in :mod:`landscape.curvature.stability`, the sharpness part in
:mod:`landscape.probe.parts`.

Why not ``torch.func.hessian`` as the truth: on torch 2.13 it (``jacrev`` of ``jacrev``) is
wrong through ``layer_norm`` (off by 11-40 % on a Linear-LayerNorm-Linear model) while
``torch.autograd.functional.hessian``, ``jacfwd(grad)`` and finite differences agree to
rounding; ``tests/curvature/test_hessian.py`` keeps that check.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable, Iterable, Mapping

import torch

from landscape.curvature.objective import ParamLayout
from landscape.curvature.spectral import ScaledOperator, SymmetricOperator
from landscape.errors import LandscapeError

LossFn = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]

TRIM_BYTES = 16 << 20
"""A CPU operator whose vectors are at least this large (4M parameters in float32) hands
the heap memory freed by each product back to the system (glibc's ``malloc_trim``).

A double backward frees hundreds of per-parameter temporaries below glibc's mmap
threshold; their memory stays in the process's heap, fragmented, and the resident set
creeps up over a Lanczos run (what a trim saves and costs: BENCHMARKS.md, "Peak memory")."""


@functools.cache
def _heap_trim() -> Callable[[], None] | None:
    """The heap trim of glibc, ``malloc_trim(0)``; None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: trim(0)


# ----------------------------------------------------------------------------- the operator


def double_backward_attention():
    """A context in which ``scaled_dot_product_attention`` uses its math kernel.

    The fused kernels (flash, memory-efficient, and the CPU flash kernel that
    ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` pick by default) have no
    double backward, so a Hessian-vector product through them raises "derivative for
    ..._backward is not implemented". The math kernel is made of ordinary differentiable
    operations; the choice is made in the forward pass, so only the forward that builds a
    gradient graph needs this context.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])



class HessianOperator(SymmetricOperator):
    """Hessian-vector products of ``loss_fn`` at ``params``, on one retained gradient graph.

    The parameters become fresh leaves (detached; cast to ``dtype`` where asked, else
    sharing the caller's memory, never written); the loss and its gradient are computed
    once with ``create_graph=True``, and each product is
    ``autograd.grad(g, leaves, grad_outputs=v, retain_graph=True)``, i.e. the gradient of
    ``g . v``. Nothing of the caller's is touched: no module weight, mode or ``.grad``
    (``loss_fn`` is expected to use ``functional_call``, as :func:`make_loss_fn` does).

    Args:
        loss_fn: ``loss_fn(params) -> 0-d Tensor``.
        params: parameter values by name (a module's ``named_parameters()`` order).
        dtype: dtype of the products (default: that of the parameters); float64 casts.
        wrt: names to differentiate (default all); the others are frozen constants, which
            gives the Hessian block of that group (see :meth:`restrict`).
        batched: how :meth:`matmat` computes: ``True`` with ``is_grads_batched`` (vmap over
            the double backward), ``False`` one product per column, ``None`` (default)
            batched on CUDA after checking once that it agrees with single products
            (falling back to the loop if it fails or disagrees), the loop on CPU (measured
            on the default model: a batched column costs about 2x a single product there).
        reduce: for a Hessian sharded over processes (see :mod:`landscape.train.distributed`):
            sums a tensor over them. Each process's ``loss_fn`` is its share of the
            objective (e.g. its shard's token-mean loss times its share of the tokens); the
            loss, the gradient and every product are summed with ``reduce``, so every
            process sees the operator of the whole objective. None (default): one process.

    Attributes:
        layout: the :class:`ParamLayout` of the differentiated parameters (flat order).
        loss: the loss value at ``params`` (float).
        gradient: ``[P]`` the gradient at ``params`` (detached; computed on first read).
        n_grad: gradient evaluations so far (1, plus 1 per :meth:`check_determinism`, plus
            1 for the first read of :attr:`gradient`).
    """

    def __init__(
        self,
        loss_fn: LossFn,
        params: Mapping[str, torch.Tensor],
        dtype: torch.dtype | None = None,
        wrt: Iterable[str] | None = None,
        batched: bool | None = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        names = list(params) if wrt is None else list(wrt)
        _check_names(names, params)
        self._loss_fn = loss_fn
        self._values = _leaves(params, names, dtype)
        self._wrt = [self._values[n] for n in names]
        self.layout = ParamLayout.of({n: self._values[n] for n in names})
        first = self._wrt[0]
        super().__init__(self.layout.size, first.dtype, first.device)
        self._batched = batched if batched is not None or self.device.type == "cuda" else False
        self._reduce = reduce
        big = self.dim * first.element_size() >= TRIM_BYTES
        self._trim = _heap_trim() if big and self.device.type == "cpu" else None
        self.loss, self._g = self._gradient_graph()
        self._gradient = None if reduce is None else self._sum(self._g.detach()).clone()
        # Products need the graph of g, never its values: free those P floats (43 MiB at
        # P = 1.1e7), as FSDP frees parameters, keeping g's shape and graph.
        self._g.untyped_storage().resize_(0)
        self.n_grad = 1

    @property
    def gradient(self) -> torch.Tensor:
        """``[P]`` the gradient at ``params`` (detached).

        Computed on first read (one more gradient evaluation, counted in :attr:`n_grad`)
        for one process, since the retained graph does not keep it; a sharded operator
        keeps the sum over its processes from the start.
        """
        if self._gradient is None:
            self._gradient = self._gradient_graph(create_graph=False)[1]
            self.n_grad += 1
        return self._gradient

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the differentiated parameters, in flat order."""
        return self.layout.names

    def _gradient_graph(self, create_graph: bool = True) -> tuple[float, torch.Tensor]:
        """The loss and the flat gradient, with its graph (``create_graph``) or detached."""
        with torch.enable_grad(), double_backward_attention():
            loss = self._loss_fn(self._values)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise LandscapeError("HessianOperator: loss_fn must return a scalar tensor")
            if not loss.requires_grad:
                raise LandscapeError("HessianOperator: the loss does not depend on the parameters")
            grads = torch.autograd.grad(loss.reshape(()), self._wrt,
                                        create_graph=create_graph, allow_unused=True)
        flat = torch.cat([_or_zeros(g, p).reshape(-1) for g, p in zip(grads, self._wrt)])
        return float(self._sum(loss.detach())), flat

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes sharing this operator (``t`` itself for one)."""
        return t if self._reduce is None else self._reduce(t)

    def _hvp(self, g: torch.Tensor, v: torch.Tensor, batched: bool = False) -> torch.Tensor:
        """``[P]`` (or ``[b, P]`` with ``batched``) products through the graph of ``g``."""
        if not g.requires_grad:  # the loss is affine in the parameters: H = 0
            return self._sum(torch.zeros_like(v))
        hv = torch.autograd.grad(g, self._wrt, grad_outputs=v, retain_graph=True,
                                 allow_unused=True, is_grads_batched=batched)
        lead = v.shape[:-1]
        out = self._sum(torch.cat([_or_zeros(h, p, lead).reshape(*lead, -1)
                                   for h, p in zip(hv, self._wrt)], dim=-1))
        if self._trim is not None:
            del hv
            self._trim()  # see TRIM_BYTES
        return out

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._hvp(self._g, v)

    def _matmat(self, vs: torch.Tensor) -> torch.Tensor:
        if self._batched is False or vs.shape[1] == 1:
            return super()._matmat(vs)
        try:
            out = self._hvp(self._g, vs.T.contiguous(), batched=True).T
        except RuntimeError:
            if self._batched:
                raise
            self._batched = False
            return super()._matmat(vs)
        if self._batched is None:  # first use: check one column against a single product
            self.n_matvec += 1
            ref = self._matvec(vs[:, 0])
            err = float(torch.linalg.vector_norm(out[:, 0] - ref))
            ok = err <= 1e3 * torch.finfo(self.dtype).eps * float(torch.linalg.vector_norm(ref))
            self._batched = ok
            if not ok:
                return super()._matmat(vs)
        return out

    def check_determinism(self, seed: int = 0, rtol: float | None = None) -> float:
        """Rebuild the gradient graph and check that loss, gradient and one product agree.

        One graph applied twice always agrees with itself; a loss with dropout in train
        mode, or data shuffled between calls, gives a different graph each time, and
        this check catches it (cost: one gradient and two products, and one more gradient
        where :attr:`gradient` was not read before).

        Args:
            seed: seed of the random test vector.
            rtol: tolerance on relative differences (default ``1e3 * eps`` of the dtype).

        Returns:
            The largest relative difference seen.

        Raises:
            LandscapeError: the two evaluations differ by more than ``rtol``.
        """
        rtol = 1e3 * torch.finfo(self.dtype).eps if rtol is None else rtol
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(self.dim, generator=gen, dtype=torch.float64).to(self.device, self.dtype)
        loss2, g2 = self._gradient_graph()
        self.n_grad += 1
        self.n_matvec += 2
        diffs = {
            "loss": abs(loss2 - self.loss) / max(abs(self.loss), 1e-30),
            "gradient": _rel(self._sum(g2.detach()), self.gradient),
            "Hessian-vector product": _rel(self._hvp(g2, v), self._hvp(self._g, v)),
        }
        worst = max(diffs, key=diffs.get)
        if not diffs[worst] <= rtol:
            raise LandscapeError(
                f"the loss is not deterministic: two evaluations differ by {diffs[worst]:.3g} "
                f"(relative) in the {worst}; put the model in eval mode (dropout) and use a "
                "fixed batch"
            )
        return max(diffs.values())

    def restrict(self, names: Iterable[str]) -> HessianOperator:
        """The Hessian block of the parameters ``names``, the others frozen at their values.

        Builds a new gradient graph (one gradient), whose products are cheaper than the
        full operator's. Flat vectors follow the order of ``names`` as given.
        """
        names = list(names)
        _check_names(names, self._values)
        return HessianOperator(self._loss_fn, {n: v.detach() for n, v in self._values.items()},
                               self.dtype, wrt=names, batched=self._batched,
                               reduce=self._reduce)


def _check_names(names: list[str], params: Mapping[str, torch.Tensor],
                 who: str = "HessianOperator") -> None:
    if not names:
        raise LandscapeError(f"{who}: no parameters to differentiate")
    unknown = [n for n in names if n not in params]
    if unknown:
        raise LandscapeError(f"{who}: unknown parameter names {unknown}; "
                             f"known: {list(params)}")
    if len(set(names)) != len(names):
        raise LandscapeError(f"{who}: repeated parameter names in {names}")
    bad = [n for n in names if not params[n].is_floating_point()]
    if bad:
        raise LandscapeError(f"{who}: parameters {bad} are not floating point")


def _leaves(params: Mapping[str, torch.Tensor], wrt: list[str], dtype) -> dict[str, torch.Tensor]:
    """Fresh leaves for ``params`` (floating ones cast to ``dtype``); those in ``wrt`` need grad.

    A leaf shares its tensor's memory where no cast is needed (a copy of a 10M-parameter
    model is 43 MiB): nothing here writes to it, and if the caller changes the tensor in
    place later, the shared version counter makes the next product fail loudly ("modified
    by an inplace operation") instead of mixing two points.
    """
    out = {}
    for name, p in params.items():
        cast = dtype if dtype is not None and p.is_floating_point() else p.dtype
        out[name] = p.detach().to(dtype=cast).requires_grad_(name in wrt)
    return out


def _or_zeros(g: torch.Tensor | None, p: torch.Tensor, lead: tuple = ()) -> torch.Tensor:
    return torch.zeros(*lead, *p.shape, dtype=p.dtype, device=p.device) if g is None else g


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(torch.linalg.vector_norm(b))
    return float(torch.linalg.vector_norm(a - b)) / max(den, 1e-30)


# ----------------------------------------------------------------------------- references


def dense_hessian_reference(
    loss_fn: LossFn, params: Mapping[str, torch.Tensor], wrt: Iterable[str] | None = None,
) -> torch.Tensor:
    """The dense Hessian in float64 by ``torch.autograd.functional.hessian`` (for tests).

    Independent of :class:`HessianOperator`'s code path: the loss is written as a
    function of one flat float64 vector. (Not ``torch.func.hessian``: wrong through
    LayerNorm on torch 2.13, see the module docstring.) Cost: ``P`` backward passes.

    Args:
        loss_fn: ``loss_fn(params) -> 0-d Tensor``.
        params: parameter values by name.
        wrt: names to differentiate (default all), in flat order; the others frozen.

    Returns:
        ``[P, P]`` float64.
    """
    names = list(params) if wrt is None else list(wrt)
    _check_names(names, params)
    base = {n: p.detach().to(torch.float64) for n, p in params.items()}
    layout = ParamLayout.of({n: base[n] for n in names})
    x0 = layout.flatten(base)

    def flat_loss(x: torch.Tensor) -> torch.Tensor:
        return loss_fn({**base, **layout.unflatten(x)})

    with double_backward_attention():
        return torch.autograd.functional.hessian(flat_loss, x0)


# ----------------------------------------------------------------------------- sharpness


def preconditioned_operator(
    op, adam_exp_avg_sq, eps: float, step: int, beta2: float,
) -> ScaledOperator:
    """The Adam-preconditioned Hessian ``P^{-1/2} H P^{-1/2}``.

    ``P = diag(sqrt(v_hat) + eps)`` with ``v_hat = exp_avg_sq / (1 - beta2^step)``: the
    denominator of ``torch.optim.Adam``'s update at ``step`` (its ``state[p]["step"]``).
    The largest eigenvalue of this operator is the *preconditioned sharpness* that Cohen et
    al. (2022) compare with :func:`landscape.curvature.stability.adam_edge` (``38 / lr``
    for ``beta1 = 0.9``).

    Args:
        op: the Hessian operator (a :class:`HessianOperator`, or any operator when
            ``adam_exp_avg_sq`` is already flat).
        adam_exp_avg_sq: Adam's second-moment state, as a flat ``[P]`` tensor in the
            operator's order or a dict ``{name: tensor}`` flattened with ``op.layout``.
        eps: Adam's ``eps``.
        step: Adam's step count (>= 1) for the bias correction.
        beta2: Adam's ``beta2`` in ``[0, 1)``.

    Returns:
        A :class:`~landscape.curvature.spectral.ScaledOperator` (counts its own matvecs).
    """
    if isinstance(adam_exp_avg_sq, Mapping):
        if not hasattr(op, "layout"):
            raise LandscapeError("preconditioned_operator: pass exp_avg_sq as a flat tensor "
                                 "for an operator without a parameter layout")
        adam_exp_avg_sq = op.layout.flatten(adam_exp_avg_sq)
    v = torch.as_tensor(adam_exp_avg_sq).detach().to(torch.float64)
    if step < 1 or not 0.0 <= beta2 < 1.0 or eps < 0:
        raise LandscapeError(f"preconditioned_operator: need step >= 1, 0 <= beta2 < 1, eps >= 0 "
                             f"(got step={step}, beta2={beta2}, eps={eps})")
    if v.shape != (op.dim,):
        raise LandscapeError(f"preconditioned_operator: exp_avg_sq has {tuple(v.shape)} entries, "
                             f"the operator {op.dim}")
    if bool((v < 0).any()) or not bool(torch.isfinite(v).all()):
        raise LandscapeError("preconditioned_operator: exp_avg_sq must be finite and >= 0")
    denom = (v / (1.0 - beta2**step)).sqrt() + eps
    if bool((denom <= 0).any()):
        raise LandscapeError("preconditioned_operator: zero preconditioner entries "
                             "(exp_avg_sq = 0 with eps = 0)")
    return ScaledOperator(op, denom.rsqrt())
