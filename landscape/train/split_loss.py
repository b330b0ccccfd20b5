"""The loss of one of our models on a fixed split, as a function of its parameters.

:func:`make_loss_fn` is the ``(loss_fn, params)`` pair every probe works on
(:mod:`landscape.curvature.objective`), for a :class:`~landscape.train.model.LoopedTransformer`
and a task :class:`~landscape.train.tasks.base.Split`: the mean token cross-entropy over all
scored tokens, chunked, in one differentiable graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature.objective import CHUNK, LossFn, has_tied_tensors, with_binding
from landscape.errors import LandscapeError
from landscape.train.model import token_loss
from landscape.train.tasks.base import Split


def make_loss_fn(model: nn.Module, split: Split, loops: int | None = None,
                 chunk: int = CHUNK) -> LossFn:
    """The mean token loss of ``model`` on ``split`` as a function of a parameter dict.

    The mean runs over all scored tokens of the split (not a mean of chunk means): the
    split is evaluated ``chunk`` sequences at a time, the token losses summed, and the sum
    divided by the number of scored tokens, in one differentiable graph.

    Args:
        model: supplies the architecture and buffers; its own parameters, mode and
            gradients are never read or changed.
        split: the fixed sequences; the mean runs over all their scored tokens.
        loops: number of block applications (default: ``model.loops`` at call time).
        chunk: sequences per forward pass (the result does not depend on it beyond
            floating-point summation order).

    Returns:
        ``loss_fn(params) -> Tensor`` (a 0-d tensor), differentiable w.r.t. ``params``.
    """
    if chunk < 1:
        raise LandscapeError(f"make_loss_fn: chunk={chunk} must be >= 1")
    buffers = dict(model.named_buffers())
    tie = has_tied_tensors(model)
    pieces = [(split.inputs[i : i + chunk], split.targets[i : i + chunk])
              for i in range(0, len(split), chunk)]
    n_scored = max(split.n_scored, 1)

    def mean_loss(forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for inputs, targets in pieces:
            total = total + token_loss(forward(inputs), targets, reduction="sum")
        return total / n_scored

    def loss_fn(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return mean_loss(lambda x: functional_call(model, (dict(params), buffers), (x,),
                                                   {"loops": loops}, tie_weights=tie))

    return with_binding(loss_fn, model, buffers, tie,
                        lambda: mean_loss(lambda x: model(x, loops=loops)))
