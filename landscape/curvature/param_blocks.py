"""Blocks of parameters for per-block Hessian spectra, on any architecture.

A *block* is a named set of parameters; its Hessian block ``H[B, B]`` (the other
parameters frozen) is what :meth:`~landscape.curvature.hessian.HessianOperator.restrict` gives.
Blocks come from one of two sources:

* **patterns**: shell-style patterns (:mod:`fnmatch`, case-sensitive) matched against the
  parameter names of ``named_parameters()``, one block per pattern, e.g.
  ``transformer.h.0.attn.*`` for the attention of GPT-2's first layer. A parameter may
  belong to several patterns' blocks (each block is its own restricted Hessian); a pattern
  that matches nothing is an error naming a few of the names it could have matched.
* **the architecture's layers** (no patterns): a name whose dotted path has an integer
  component (a layer of an ``nn.ModuleList`` or ``nn.Sequential``, as in ``layers.3.``,
  ``transformer.h.11.`` or ``mlp.0.``) belongs to the block named by its path up to and
  including the first such component; any other name belongs to the module that owns it
  (its path without the last component, or the name itself at the top level). On our own
  :class:`~landscape.train.model.LoopedTransformer` this gives the roles ``embed``, ``pos``,
  ``block.attn.q`` ... ``block.ln2``, ``block.mlp.0``, ``ln_f``, ``head``; on a GPT-2 it
  gives ``transformer.wte``, ``transformer.wpe``, ``transformer.h.0`` ...
  ``transformer.h.11`` and ``transformer.ln_f``; on a stack of
  ``nn.TransformerEncoderLayer`` it gives ``layers.0``, ``layers.1``, ...

Blocks keep the order in which their first parameter appears in the model, and each
block's names keep the model's order.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

import torch

from landscape.errors import LandscapeError


def layer_of(name: str) -> str:
    """The block a parameter belongs to by default (see the module docstring)."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or name


def layer_blocks(names: Iterable[str]) -> dict[str, list[str]]:
    """``{block: [names]}`` by the architecture's layers (see the module docstring)."""
    out: dict[str, list[str]] = {}
    for name in names:
        out.setdefault(layer_of(name), []).append(name)
    return out


def pattern_blocks(names: Iterable[str], patterns: Sequence[str]) -> dict[str, list[str]]:
    """``{pattern: [names matching it]}``, one block per pattern, in the given order.

    Args:
        names: parameter names.
        patterns: :mod:`fnmatch` patterns (``*``, ``?``, ``[seq]``), case-sensitive.

    Raises:
        LandscapeError: no pattern, an empty or repeated pattern, a ``/`` in a pattern (it
            names the stored block), or a pattern that matches no name.
    """
    names = list(names)
    if not patterns:
        raise LandscapeError("blocks: no pattern given")
    if len(set(patterns)) != len(patterns):
        raise LandscapeError(f"blocks: repeated patterns in {list(patterns)}")
    out: dict[str, list[str]] = {}
    for pat in patterns:
        if not pat or "/" in pat:
            raise LandscapeError(f"blocks: pattern {pat!r} must be non-empty and without '/'")
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            sample = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise LandscapeError(f"blocks: pattern {pat!r} matches no parameter; the names "
                                 f"look like: {sample}")
        out[pat] = hits
    return out


def blocks(names: Iterable[str], patterns: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The blocks of ``names``: by ``patterns`` when given, else by the architecture's layers.

    Args:
        names: parameter names in the model's order (e.g. ``HessianOperator.names``).
        patterns: fnmatch patterns, one block each; None or empty: :func:`layer_blocks`.

    Returns:
        ``{block name: [parameter names]}``.
    """
    names = list(names)
    return pattern_blocks(names, patterns) if patterns else layer_blocks(names)


def block_spectra(op, groups: dict[str, list[str]], k_top: int = 5, *, tol: float | None = None,
                  max_steps: int = 300, trace_hvps: int = 60, seed: int = 0) -> dict[str, dict]:
    """Top eigenvalues and trace of each block's Hessian ``H[B, B]``.

    Each block gets its own operator (:meth:`~landscape.curvature.hessian.HessianOperator.restrict`:
    one gradient graph with the other parameters frozen), Lanczos for its top
    ``min(k_top, dim)`` eigenvalues and Hutch++ for its trace; a block with
    ``3 * dim <= trace_hvps`` gets its exact trace instead (``dim`` products on the unit
    vectors). Only one block's operator is alive at a time.

    Args:
        op: a :class:`~landscape.curvature.hessian.HessianOperator`.
        groups: ``{block: [parameter names]}`` (e.g. from :func:`blocks`).
        k_top: eigenvalues per block.
        tol: Lanczos tolerance (default that of the operator's dtype).
        max_steps: Lanczos step cap per block.
        trace_hvps: Hutch++ budget per block (at least 4; at most ``3 * dim`` is used).
        seed: seed of the start and probe vectors.

    Returns:
        ``{block: {"values", "converged", "trace", "trace_stderr", "dim", "names", "hvps"}}``.
    """
    from landscape.curvature.spectral import hutchpp, lanczos

    out = {}
    for group, names in groups.items():
        sub = op.restrict(names)
        k = min(k_top, sub.dim)
        res = lanczos(sub, k_top=k, tol=tol, max_steps=min(max(max_steps, k), sub.dim),
                      seed=seed)
        if 3 * sub.dim <= max(4, trace_hvps):  # small block: the exact trace, dim products
            eye = torch.eye(sub.dim, dtype=sub.dtype, device=sub.device)
            tr = hutchpp(sub, sub.dim + 2, seed=seed, basis=eye)
        else:
            tr = hutchpp(sub, max(4, trace_hvps), seed=seed)
        out[group] = {"values": res.top_values, "converged": res.top_converged,
                      "trace": tr.estimate, "trace_stderr": tr.stderr, "dim": sub.dim,
                      "names": list(names), "hvps": sub.n_matvec}
        del sub
    return out
