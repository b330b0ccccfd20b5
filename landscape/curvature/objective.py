"""The loss as a function of the parameters, and flat views of parameter dicts.

Every probe (Hessian, slices, valley) works on a pair ``(loss_fn, params)``:

* ``params`` is a ``dict[str, Tensor]`` keyed by parameter name (``model.named_parameters()``);
* ``loss_fn(params)`` is a scalar: the mean loss over a fixed probe set (for our models
  the mean cross-entropy over all scored tokens, :func:`landscape.train.split_loss.make_loss_fn`),
  evaluated with ``torch.func.functional_call`` so that it can be differentiated twice,
  vmapped over parameter batches and used with ``torch.func``.

Nothing here knows a model or a task: :mod:`landscape.train.split_loss` and
:mod:`landscape.runs.own_models` build loss functions of this form.

:class:`ParamLayout` maps such a dict to one flat vector and back, in a fixed order
(the order of ``named_parameters()``), which is also the order of the run file's
trajectory rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from landscape.errors import LandscapeError

LossFn = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and offsets of parameters packed into one flat vector.

    Attributes:
        names: parameter names, in packing order.
        shapes: the shape of each parameter.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, params: Mapping[str, torch.Tensor] | nn.Module) -> ParamLayout:
        """The layout of a parameter dict or of a module's ``named_parameters()``."""
        if isinstance(params, nn.Module):
            params = dict(params.named_parameters())
        return cls(tuple(params), tuple(tuple(p.shape) for p in params.values()))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of entries of each parameter."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each parameter in the flat vector."""
        out, acc = [], 0
        for n in self.sizes:
            out.append(acc)
            acc += n
        return tuple(out)

    @property
    def size(self) -> int:
        """Total number of parameters P."""
        return sum(self.sizes)

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate ``params`` (in layout order) into a ``[P]`` vector (a copy).

        Raises:
            LandscapeError: a parameter is missing or has another number of entries.
        """
        missing = [n for n in self.names if n not in params]
        if missing:
            raise LandscapeError(f"parameters missing from the dict: {missing}")
        wrong = [n for n, k in zip(self.names, self.sizes) if params[n].numel() != k]
        if wrong:
            raise LandscapeError(f"parameter {wrong[0]!r} has {params[wrong[0]].numel()} "
                                 f"entries, the layout {self.sizes[self.names.index(wrong[0])]}")
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a ``[P]`` (or ``[..., P]``) vector into a dict of views in the layout's shapes.

        Raises:
            LandscapeError: the vector's last dimension is not ``P``.
        """
        if vec.dim() == 0 or vec.shape[-1] != self.size:
            got = vec.shape[-1] if vec.dim() else 1
            raise LandscapeError(f"vector has {got} entries, layout has {self.size}")
        lead = vec.shape[:-1]
        parts = torch.split(vec, self.sizes, dim=-1)
        return {n: p.reshape(*lead, *s) for n, p, s in zip(self.names, parts, self.shapes)}

    def to_json(self) -> dict:
        """A JSON-serialisable description (names, shapes, offsets)."""
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes],
                "offsets": list(self.offsets)}

    @classmethod
    def from_json(cls, d: Mapping) -> ParamLayout:
        """Inverse of :meth:`to_json`.

        Raises:
            LandscapeError: ``d`` is not such a description.
        """
        try:
            names, shapes = tuple(d["names"]), tuple(tuple(int(n) for n in s) for s in d["shapes"])
        except (KeyError, TypeError, ValueError) as e:
            raise LandscapeError(f"not a parameter layout ({type(e).__name__}: {e})") from None
        if len(names) != len(shapes):
            raise LandscapeError(f"parameter layout: {len(names)} names, {len(shapes)} shapes")
        return cls(names, shapes)


CHUNK = 64
"""Sequences per forward inside a loss function. The attention tensors ``[B, H, T, T]`` of
a whole probe set do not fit a CPU core's cache, chunks of 64 sequences do (the gain:
BENCHMARKS.md, "Figures behind constants of the code")."""


def with_binding(loss_fn: LossFn, module: nn.Module,
                 buffers: Mapping[str, torch.Tensor] | Callable[[Mapping], Mapping],
                 tie: bool, module_loss: Callable[[], torch.Tensor],
                 prefix: str = "") -> LossFn:
    """Give ``loss_fn`` a ``bind(params)`` context for many calls at one set of tensors.

    ``loss_fn(params)`` calls ``functional_call``, which puts ``params`` into the module
    and takes them out again on every call (70 tensors swapped twice per call on a
    5-layer ``nn.TransformerEncoderLayer`` stack). ``with loss_fn.bind(params) as f:``
    swaps them in once (the same ``torch.func`` machinery, with the same ties and
    buffers); ``f()`` is then the loss at the current *values* of those tensors, so a
    caller that rewrites them in place (a grid, point after point) pays no swap per call.
    The module's own parameter objects are never written to, and are back in place when
    the context ends, also on an exception. Without the private
    ``torch.nn.utils.stateless._reparametrize_module`` (other torch versions), ``bind``
    is absent and callers keep to ``loss_fn``.

    Args:
        loss_fn: the loss as a function of a parameter dict.
        module: the module ``loss_fn`` calls through ``functional_call``.
        buffers: the buffers it passes beside the parameters (keys as in ``module``), or
            a function of the parameters returning them (e.g. cast to their dtype).
        tie: ``functional_call``'s ``tie_weights`` (:func:`has_tied_tensors`).
        module_loss: the same loss computed by calling ``module`` itself.
        prefix: prepended to parameter names to name them in ``module`` (a wrapper
            module holding the user's model as ``model`` uses ``"model."``).

    Returns:
        ``loss_fn`` itself, with the ``bind`` attribute set.
    """
    try:
        from torch.nn.utils.stateless import _reparametrize_module
    except ImportError:  # pragma: no cover - torch without the private helper
        return loss_fn

    @contextmanager
    def bind(params: Mapping[str, torch.Tensor]):
        bufs = buffers(params) if callable(buffers) else buffers
        tensors = {**{prefix + n: v for n, v in params.items()}, **bufs}
        with _reparametrize_module(module, tensors, tie_weights=tie):
            yield module_loss

    loss_fn.bind = bind
    return loss_fn


def has_tied_tensors(model: nn.Module) -> bool:
    """Whether a parameter or buffer of ``model`` is registered under two names (tied).

    ``functional_call`` must then tie the names (``tie_weights=True``, its default) so that
    a value given for one name reaches every use; that costs a walk over all submodules
    per call (BENCHMARKS.md, "Figures behind constants of the code"), which loss functions
    skip for models without ties.
    """
    every = sum(1 for _ in model.named_parameters(remove_duplicate=False))
    every += sum(1 for _ in model.named_buffers(remove_duplicate=False))
    return every != len(dict(model.named_parameters())) + len(dict(model.named_buffers()))


def detached_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's parameters, detached, keyed by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ----------------------------------------------------------------------------- split at the output


@dataclass(frozen=True)
class SplitObjective:
    """A mean loss split at the model's output, for the GGN and the empirical Fisher.

    The probe set is cut into ``n_chunks`` chunks of examples (sequences, for sequence
    models); chunk ``i`` has an output ``outputs(params, i)`` (e.g. logits ``[n_i, T, V]``)
    and per-example terms ``example_terms(output, i)`` ``[n_i]`` such that the mean loss is
    the sum of all terms over all chunks::

        loss(params) = sum_i example_terms(outputs(params, i), i).sum()

    Example ``n``'s own loss is ``l_n = n_examples * term_n``, so that the loss is the mean
    of the ``l_n`` (for sequences with equally many scored tokens, ``l_n`` is the sequence's
    mean token loss). The loss on the output of chunk ``i`` is ``example_terms(., i).sum()``;
    :class:`~landscape.curvature.ggn.GGNOperator` takes its Hessian by autograd on the
    output, :class:`~landscape.curvature.fisher.FisherOperator` the gradients of the terms.

    Built by :func:`landscape.train.split_loss.make_split_objective` (our models) and
    :func:`landscape.runs.own_models.make_split_objective` (own models, built-in losses).

    Attributes:
        outputs: ``outputs(params, i) -> Tensor``, the model's output on chunk ``i``,
            differentiable w.r.t. ``params`` (a dict keyed as ``named_parameters()``).
        example_terms: ``example_terms(output, i) -> Tensor [n_i]``, the terms of chunk
            ``i``'s examples, differentiable twice w.r.t. ``output``.
        n_chunks: number of chunks.
        n_examples: number of examples N over all chunks.
    """

    outputs: Callable[[Mapping[str, torch.Tensor], int], torch.Tensor]
    example_terms: Callable[[torch.Tensor, int], torch.Tensor]
    n_chunks: int
    n_examples: int

    def loss(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The mean loss at ``params`` (0-d), the same as the model's ``loss_fn``."""
        return sum(self.example_terms(self.outputs(params, i), i).sum()
                   for i in range(self.n_chunks))
