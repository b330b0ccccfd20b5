"""The loss of one of our models on a fixed split, as a function of its parameters.

:func:`make_loss_fn` is the ``(loss_fn, params)`` pair every probe works on
(:mod:`landscape.curvature.objective`), for a :class:`~landscape.train.model.LoopedTransformer`
and a task :class:`~landscape.train.tasks.base.Split`: the mean token cross-entropy over all
scored tokens, chunked, in one differentiable graph. :func:`make_split_objective` is the
same loss split at the logits (:class:`~landscape.curvature.objective.SplitObjective`), for
the GGN and the empirical Fisher.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature.objective import (
    CHUNK,
    LossFn,
    SplitObjective,
    has_tied_tensors,
    with_binding,
)
from landscape.errors import LandscapeError
from landscape.train.model import token_loss
from landscape.train.tasks.base import IGNORE, Split


def _prepared(model: nn.Module, split: Split, chunk: int, who: str):
    """``(buffers, tie, pieces, n_scored)``: what both builders hold of the model and split."""
    if chunk < 1:
        raise LandscapeError(f"{who}: chunk={chunk} must be >= 1")
    pieces = [(split.inputs[i : i + chunk], split.targets[i : i + chunk])
              for i in range(0, len(split), chunk)]
    return (dict(model.named_buffers()), has_tied_tensors(model), pieces,
            max(split.n_scored, 1))


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
    buffers, tie, pieces, n_scored = _prepared(model, split, chunk, "make_loss_fn")

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


def make_split_objective(model: nn.Module, split: Split, loops: int | None = None,
                         chunk: int = CHUNK) -> SplitObjective:
    """The loss of :func:`make_loss_fn`, split at the logits: one example per sequence.

    Chunk ``i`` is sequences ``[i * chunk, (i + 1) * chunk)``; its output the logits
    ``[n_i, T, V]``, and the term of sequence ``n`` its summed token cross-entropy (tokens
    with target ``IGNORE`` left out) divided by the split's number of scored tokens, so the
    terms add up to the mean token loss.

    Args:
        model: supplies the architecture and buffers (never changed).
        split: the fixed sequences.
        loops: number of block applications (default: ``model.loops`` at call time).
        chunk: sequences per forward pass.

    Returns:
        A :class:`~landscape.curvature.objective.SplitObjective` over ``len(split)`` examples.
    """
    buffers, tie, pieces, n_scored = _prepared(model, split, chunk, "make_split_objective")

    def outputs(params: Mapping[str, torch.Tensor], i: int) -> torch.Tensor:
        return functional_call(model, (dict(params), buffers), (pieces[i][0],),
                               {"loops": loops}, tie_weights=tie)

    def example_terms(logits: torch.Tensor, i: int) -> torch.Tensor:
        targets = pieces[i][1]  # [n_i, T]
        tokens = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1), ignore_index=IGNORE,
                                             reduction="none")
        return tokens.reshape(targets.shape).sum(dim=1) / n_scored

    return SplitObjective(outputs, example_terms, len(pieces), len(split))
