"""The empirical Fisher matrix of a loss as a linear operator.

For a mean loss ``L = (1/N) sum_n l_n`` over N examples (sequences, for sequence models;
see :class:`~landscape.curvature.objective.SplitObjective` for ``l_n``), the empirical
Fisher is::

    F = (1/N) sum_n g_n g_n^T,    g_n = grad l_n,

positive semi-definite of rank at most N. With the examples' terms ``t_n = l_n / N`` of a
chunk stacked into a vector ``t_i(w)`` ``[n_i]`` and its Jacobian ``T_i`` ``[n_i, P]``
(whose rows are the per-example gradients ``g_n / N``), ``F = sum_i T_i^T (N I) T_i``:
the same Jacobian sandwich as the GGN (:class:`~landscape.curvature.ggn.JacobianSandwich`)
with the per-example terms as the output. :class:`FisherOperator` therefore never
materialises the ``[N, P]`` per-example gradients: a product is one Jacobian-vector
product (the ``N`` numbers ``g_n . v``) and one vector-Jacobian product through the
retained graph of each chunk, i.e. about one Hessian-vector product, for any N.

Use it like the Hessian::

    from landscape.curvature.fisher import FisherOperator
    from landscape.curvature.spectral import lanczos

    op = FisherOperator(make_split_objective(model, split), dict(model.named_parameters()))
    top = lanczos(op, k_top=5).top_values
"""

from __future__ import annotations

import torch

from landscape.curvature.ggn import JacobianSandwich
from landscape.errors import LandscapeError


class FisherOperator(JacobianSandwich):
    """The empirical Fisher ``(1/N) sum_n g_n g_n^T`` (see the module docstring).

    Arguments and attributes as :class:`~landscape.curvature.ggn.JacobianSandwich`.
    """

    what = "FisherOperator"

    def _output(self, i: int) -> torch.Tensor:
        terms = self.objective.example_terms(self.objective.outputs(self._values, i), i)
        if terms.dim() != 1:
            raise LandscapeError(f"FisherOperator: chunk {i}'s example terms have shape "
                                 f"{tuple(terms.shape)}, need one per example [n]")
        return terms

    def _middle(self, out: torch.Tensor, i: int):
        n = self.objective.n_examples
        return float(out.sum()), lambda u: n * u
