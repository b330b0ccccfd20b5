"""Probe a plain ``nn.Module`` on a batch, without a run file.

::

    import landscape
    found = landscape.analyze(model, (x, y), loss="cross_entropy")
    found["top"].values, found["trace"].estimate, found["slice"].loss

The parts are the probe's own (:mod:`landscape.runfile.schema`), measured by the public
functions of :mod:`landscape.probe.parts` on the loss of :mod:`landscape.runs.own_models`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from landscape.curvature.hessian import HessianOperator
from landscape.errors import LandscapeError
from landscape.probe import parts as p
from landscape.probe.parts import GeometrySettings, HessianSettings
from landscape.runfile import schema as sc
from landscape.runs import own_models

PARTS = ("top", "trace", "slq", "exact", "slice")
"""What :func:`analyze` measures: names of the parts it returns."""


def analyze(model: nn.Module, batch: Any, loss: str = "cross_entropy",
            parts: tuple[str, ...] = ("top", "trace", "slq", "slice"), *,
            hessian: HessianSettings | None = None, geometry: GeometrySettings | None = None,
            chunk: int = own_models.CHUNK, trust_code: bool = False) -> dict[str, sc.Part]:
    """The probe's parts of ``model``'s loss on ``batch``, computed in memory.

    The model is probed as a copy in eval mode (dropout off, BatchNorm on its running
    statistics) in the dtype of ``hessian.dtype``, so the caller's model is untouched: its
    parameters, buffers, mode and gradients.

    Args:
        model: any module.
        batch: ``(inputs, targets)`` or a dict of tensors (e.g. ``input_ids``, ``labels``);
            floating-point inputs are cast to the products' dtype.
        loss: ``"cross_entropy"``, ``"next_token"``, ``"mse"`` or ``"pkg.mod:function"``
            taking ``(model, batch)`` (with ``trust_code``; see
            :mod:`landscape.runs.own_models`).
        parts: names among :data:`PARTS` (``trace`` also computes ``top``, which it
            deflates; ``slice`` is the random plane, a :class:`~landscape.runfile.schema.Grid`).
        hessian: settings of the Hessian parts (default :class:`HessianSettings`).
        geometry: settings of the slice (default :class:`GeometrySettings`).
        chunk: examples per forward.
        trust_code: allow a loss ``"pkg.mod:function"`` (it is imported and run).

    Returns:
        ``{name: part}`` in the order of ``parts`` (plus ``top`` where ``trace`` needs it).

    Raises:
        LandscapeError: an unknown part, a batch that does not fit the loss, or a loss that
            is not a finite scalar.
    """
    unknown = [n for n in parts if n not in PARTS]
    if unknown:
        raise LandscapeError(f"analyze: unknown part(s) {', '.join(unknown)} "
                             f"(parts: {', '.join(PARTS)})")
    hs, gs = hessian or HessianSettings(), geometry or GeometrySettings()
    loss_fn, params = _objective(model, batch, loss, hs.torch_dtype, chunk, trust_code)
    out: dict[str, sc.Part] = {}
    if any(n in parts for n in ("top", "trace", "slq", "exact")):
        op = HessianOperator(loss_fn, params)
        if "top" in parts or "trace" in parts:
            out["top"] = p.top(op, hs)
        if "trace" in parts:
            out["trace"] = p.trace(op, hs, out["top"])
        if "slq" in parts:
            out["slq"] = p.slq(op, hs)
        if "exact" in parts:
            out["exact"] = p.exact(op)
    if "slice" in parts:
        out["slice"] = p.slice_random(loss_fn, params, gs)
    return {n: out[n] for n in (*parts, *out) if n in out}


def _objective(model: nn.Module, batch: Any, loss: str, dtype: torch.dtype, chunk: int,
               trust_code: bool) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(loss_fn, params)`` of an eval-mode copy of ``model`` in ``dtype`` on ``batch``."""
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    form, arrays = own_models.probe_arrays(batch)
    own_models.check_probe_for_loss(loss, form, arrays)
    wide = torch.empty(0, dtype=dtype).numpy().dtype
    arrays = {k: v.astype(wide) if v.dtype.kind == "f" else v for k, v in arrays.items()}
    work = copy.deepcopy(model).eval().to(dtype)
    for q in work.parameters():
        q.grad = None
    params = {n: q.detach() for n, q in work.named_parameters()}
    if not params:
        raise LandscapeError("analyze: the model has no parameters")
    device = next(iter(params.values())).device
    loss_fn = own_models.make_custom_loss_fn(work, loss, form, arrays, trust_code=trust_code,
                                             device=device, chunk=chunk, where="analyze()")
    own_models.check_loss(loss_fn, params, loss)
    return loss_fn, params
