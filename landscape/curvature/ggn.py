"""The generalised Gauss-Newton matrix of a loss as a linear operator.

The GGN of a loss ``L(w) = sum_i l_i(f_i(w))`` split at the model's output ``f_i`` (chunk
``i`` of the probe set, see :class:`~landscape.curvature.objective.SplitObjective`) is::

    G = sum_i J_i^T H_i J_i,    J_i = d f_i / d w,    H_i = d^2 l_i / d f_i^2,

the Hessian without the term that the model's second derivative contributes. For
cross-entropy and mean squared error ``H_i`` is positive semi-definite, so ``G`` is; for a
model linear in its parameters ``G`` is the Hessian.

:class:`GGNOperator` never forms ``J``: each product is a Jacobian-vector product
``J_i v`` (the derivative of the retained vector-Jacobian graph ``J_i^T u`` with respect to
``u``, the double-backward trick), a product with ``H_i`` (double backward through the
loss on the detached output, a tensor the size of the output), and a vector-Jacobian
product ``J_i^T (H_i J_i v)`` through the retained forward graph: about the cost of one
Hessian-vector product. Everything runs through operations the Hessian already needs
twice differentiable, so no forward-mode rule is required of the model.

:class:`JacobianSandwich` is the common base ``sum_i J_i^T M_i J_i`` that the empirical
Fisher (:mod:`landscape.curvature.fisher`) shares.

Use it like the Hessian::

    from landscape.curvature.ggn import GGNOperator
    from landscape.curvature.spectral import lanczos
    from landscape.train.split_loss import make_split_objective

    op = GGNOperator(make_split_objective(model, split), dict(model.named_parameters()))
    top = lanczos(op, k_top=5).top_values
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from landscape.curvature.hessian import (
    _check_names,
    _leaves,
    _or_zeros,
    _rel,
    double_backward_attention,
)
from landscape.curvature.objective import ParamLayout, SplitObjective
from landscape.curvature.spectral import SymmetricOperator
from landscape.errors import LandscapeError


@dataclass(frozen=True)
class _Piece:
    """One chunk's retained graphs: ``out = f_i(w)``, ``jt = J_i^T dummy``, ``M_i``."""

    out: torch.Tensor  # [*out_shape] with the graph back to the parameters
    dummy: torch.Tensor  # zeros of out's shape; jt is linear in it
    jt: tuple[torch.Tensor, ...]  # J_i^T dummy for the parameters out depends on
    used: tuple[int, ...]  # which parameters (positions in wrt) jt holds
    middle: Callable[[torch.Tensor], torch.Tensor]  # u -> M_i u, u of out's shape
    loss: float  # the chunk's share of the loss


class JacobianSandwich(SymmetricOperator):
    """``sum_i J_i^T M_i J_i`` for chunk outputs ``f_i(w)`` and symmetric ``M_i``.

    Subclasses say what the output of a chunk is (:meth:`_output`) and what its middle
    matrix does (:meth:`_middle`). The parameters become fresh leaves as in
    :class:`~landscape.curvature.hessian.HessianOperator` (cast to ``dtype`` where asked,
    never written); each chunk's forward graph and its vector-Jacobian graph are built once
    and retained, so a product costs no forward pass.

    Args:
        objective: the loss split at the output.
        params: parameter values by name (``named_parameters()`` order).
        dtype: dtype of the products (default: that of the parameters); float64 casts.
        wrt: names to differentiate (default all); the others are frozen, which gives the
            block of that group (see :meth:`restrict`).

    Attributes:
        layout: the :class:`ParamLayout` of the differentiated parameters (flat order).
        loss: the loss value at ``params`` (float).
        objective: the :class:`SplitObjective`.
    """

    what = "JacobianSandwich"

    def __init__(self, objective: SplitObjective, params: Mapping[str, torch.Tensor],
                 dtype: torch.dtype | None = None, wrt: Iterable[str] | None = None):
        names = list(params) if wrt is None else list(wrt)
        _check_names(names, params, self.what)
        self.objective = objective
        self._values = _leaves(params, names, dtype)
        self._wrt = [self._values[n] for n in names]
        self.layout = ParamLayout.of({n: self._values[n] for n in names})
        super().__init__(self.layout.size, self._wrt[0].dtype, self._wrt[0].device)
        self._pieces = self._build()
        self.loss = float(sum(p.loss for p in self._pieces))

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the differentiated parameters, in flat order."""
        return self.layout.names

    def _output(self, i: int) -> torch.Tensor:
        """Chunk ``i``'s output ``f_i`` at the current leaves (with its graph)."""
        raise NotImplementedError

    def _middle(self, out: torch.Tensor, i: int):
        """``(loss share, u -> M_i u)`` of chunk ``i`` given its output ``out`` (detached)."""
        raise NotImplementedError

    def _build(self) -> list[_Piece]:
        return [self._piece(i) for i in range(self.objective.n_chunks)]

    def _piece(self, i: int) -> _Piece:
        with torch.enable_grad(), double_backward_attention():
            out = self._output(i)
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                raise LandscapeError(f"{self.what}: chunk {i}'s output is not a floating tensor")
            loss, middle = self._middle(out.detach(), i)
            if not out.requires_grad:  # constant in the parameters: J = 0
                return _Piece(out, out, (), (), middle, loss)
            dummy = torch.zeros_like(out, requires_grad=True)
            jt = torch.autograd.grad(out, self._wrt, dummy, create_graph=True, allow_unused=True)
        used = tuple(k for k, g in enumerate(jt) if g is not None and g.requires_grad)
        return _Piece(out, dummy, tuple(jt[k] for k in used), used, middle, loss)

    def _jvp(self, piece: _Piece, parts: list[torch.Tensor]) -> torch.Tensor:
        """``J_i v`` (output-shaped) for ``v`` split by parameter."""
        if not piece.used:
            return torch.zeros_like(piece.out)
        (jv,) = torch.autograd.grad(piece.jt, piece.dummy, [parts[k] for k in piece.used],
                                    retain_graph=True, allow_unused=True)
        return torch.zeros_like(piece.out) if jv is None else jv

    def _vjp(self, piece: _Piece, u: torch.Tensor) -> list[torch.Tensor]:
        """``J_i^T u`` by parameter."""
        if not piece.out.requires_grad:
            return [torch.zeros_like(p) for p in self._wrt]
        grads = torch.autograd.grad(piece.out, self._wrt, u, retain_graph=True,
                                    allow_unused=True)
        return [_or_zeros(g, p) for g, p in zip(grads, self._wrt)]

    def _product(self, pieces: list[_Piece], v: torch.Tensor) -> torch.Tensor:
        parts = [t.reshape(p.shape) for t, p in zip(torch.split(v, self.layout.sizes), self._wrt)]
        total = torch.zeros_like(v)
        for piece in pieces:
            back = self._vjp(piece, piece.middle(self._jvp(piece, parts)))
            total += torch.cat([g.reshape(-1) for g in back])
        return total

    def _matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._product(self._pieces, v)

    def check_determinism(self, seed: int = 0, rtol: float | None = None) -> float:
        """Rebuild every chunk's graphs and check that the loss and one product agree.

        Catches dropout in train mode or data that changes between calls, as
        :meth:`HessianOperator.check_determinism` does (cost: one forward and two products).

        Returns:
            The largest relative difference seen.

        Raises:
            LandscapeError: the two evaluations differ by more than ``rtol``
                (default ``1e3 * eps`` of the dtype).
        """
        rtol = 1e3 * torch.finfo(self.dtype).eps if rtol is None else rtol
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(self.dim, generator=gen, dtype=torch.float64).to(self.device, self.dtype)
        again = self._build()
        self.n_matvec += 2
        loss2 = float(sum(p.loss for p in again))
        diffs = {"loss": abs(loss2 - self.loss) / max(abs(self.loss), 1e-30),
                 "product": _rel(self._product(again, v), self._product(self._pieces, v))}
        worst = max(diffs, key=diffs.get)
        if not diffs[worst] <= rtol:
            raise LandscapeError(
                f"the loss is not deterministic: two evaluations differ by {diffs[worst]:.3g} "
                f"(relative) in the {worst}; put the model in eval mode (dropout) and use a "
                "fixed batch")
        return max(diffs.values())

    def restrict(self, names: Iterable[str]):
        """The block of the parameters ``names``, the others frozen at their values.

        For the GGN and the Fisher the block of the full matrix is exactly the operator
        of the restricted parameters (``J_B^T M J_B``). Flat vectors follow ``names``.
        """
        names = list(names)
        _check_names(names, self._values, self.what)
        return type(self)(self.objective, {n: v.detach() for n, v in self._values.items()},
                          self.dtype, wrt=names)


class GGNOperator(JacobianSandwich):
    """The generalised Gauss-Newton matrix ``sum_i J_i^T H_i J_i`` (see the module docstring).

    ``H_i`` is the Hessian of ``objective.example_terms(., i).sum()`` with respect to chunk
    ``i``'s output, applied by double backward through that loss alone (a graph the size
    of the output, retained). Arguments and attributes as :class:`JacobianSandwich`.
    """

    what = "GGNOperator"

    def _output(self, i: int) -> torch.Tensor:
        return self.objective.outputs(self._values, i)

    def _middle(self, out: torch.Tensor, i: int):
        o = out.requires_grad_()
        value = self.objective.example_terms(o, i).sum()
        if not value.requires_grad:
            raise LandscapeError(f"GGNOperator: the loss of chunk {i} does not depend on "
                                 "the model's output")
        (grad,) = torch.autograd.grad(value, o, create_graph=True)

        def hessian_product(u: torch.Tensor) -> torch.Tensor:
            if not grad.requires_grad:  # the loss is linear in the output: H = 0
                return torch.zeros_like(u)
            (hu,) = torch.autograd.grad(grad, o, u, retain_graph=True, allow_unused=True)
            return torch.zeros_like(u) if hu is None else hu

        return float(value.detach()), hessian_product
