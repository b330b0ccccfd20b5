"""Directions in parameter space: random, PCA of a trajectory, Hessian eigenvectors, interpolation.

A *direction* is a ``dict[str, Tensor]`` with the same names and shapes as the parameter
dict ``params`` it perturbs (:class:`~landscape.curvature.objective.ParamLayout` gives its flat
view). Every function here returns new tensors and leaves its inputs untouched.

Random directions are Gaussian (never uniform) and seeded per parameter name: the entries
of parameter ``name`` for seed ``s`` come from a ``torch.Generator`` seeded with a hash of
``(s, k, name)`` (``k`` = 0 for the first direction of a plane, 1 for the second), drawn in
float64 on the CPU and then cast to the parameter's dtype and device. So a seed gives the
same direction whatever the global RNG state, device or dtype, and a parameter's entries do
not depend on which other parameters the model has.

Filter normalisation (Li et al. 2018, "Visualizing the loss landscape of neural nets"):
each *filter* of the direction is rescaled to the norm of the same filter of the weights,
so that a step of 1 moves every filter by its own size. For a transformer we define the
filter per parameter as follows (``norm="filter"``):

=================================  =========  ==========================================
parameter                          shape      a filter is
=================================  =========  ==========================================
``embed.weight``                   [V, D]     a row: one token's embedding
``pos.weight``                     [T, D]     a row: one position's embedding
``block.attn.{q,k,v,o}.weight``    [D, D]     a row: one output unit of the projection
``block.mlp.0.weight``             [F, D]     a row: one hidden unit
``block.mlp.2.weight``             [D, F]     a row: one output unit
``head.weight``                    [V, D]     a row: one vocabulary entry (absent if tied)
any other tensor of >= 2 dims      [R, ...]   a slice along dim 0 (PyTorch's output axis)
1-D / 0-D tensors (LayerNorm       [D], [F]   no filters: the ``one_d`` rule below
weight and bias, biases)
=================================  =========  ==========================================

``norm="layer"`` rescales every tensor of >= 2 dims as one unit (to the whole tensor's
norm); ``norm="none"`` leaves them as drawn (i.i.d. N(0, 1)).

1-D tensors follow ``one_d`` whatever ``norm`` is: ``"zero"`` (default, as Li et al.) sets
them to zero, so LayerNorm gains and biases stay fixed along the direction; ``"layer"``
rescales the tensor to the weight tensor's norm (a tensor of zeros, e.g. a LayerNorm bias
at initialisation, then gets a zero direction); ``"keep"`` leaves them as drawn.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from landscape.curvature.objective import LossFn, ParamLayout
from landscape.errors import LandscapeError

Direction = dict[str, torch.Tensor]
NORMS = ("filter", "layer", "none")
ONE_D = ("zero", "layer", "keep")


# ---------------------------------------------------------------------------------------
# checks and flat views
# ---------------------------------------------------------------------------------------


def check_direction(
    direction: Mapping[str, torch.Tensor],
    params: Mapping[str, torch.Tensor],
    what: str = "direction",
) -> None:
    """Raise :class:`LandscapeError` unless ``direction`` has the names and shapes of ``params``.

    Args:
        direction: the dict to check.
        params: the reference parameter dict.
        what: how the message names ``direction``.
    """
    if not isinstance(direction, Mapping):
        raise LandscapeError(f"{what} must be a dict of tensors by parameter name, "
                             f"got {type(direction).__name__}")
    for name, ref in params.items():
        if name not in direction:
            raise LandscapeError(f"{what} lacks parameter {name!r} (shape {tuple(ref.shape)}); "
                                 "it needs every parameter of the model")
        d = direction[name]
        if not isinstance(d, torch.Tensor):
            raise LandscapeError(f"{what} parameter {name!r} is a {type(d).__name__}, not a tensor")
        if tuple(d.shape) != tuple(ref.shape):
            raise LandscapeError(f"{what} parameter {name!r} has shape {tuple(d.shape)}, "
                                 f"the model's has {tuple(ref.shape)}")
        # a finite sum means finite entries (one pass, no mask); else look entry by entry
        if not math.isfinite(float(d.sum())) and not bool(torch.isfinite(d).all()):
            raise LandscapeError(f"{what} parameter {name!r} has non-finite entries")
    extra = [n for n in direction if n not in params]
    if extra:
        raise LandscapeError(f"{what} has parameter {extra[0]!r} that the model does not have "
                             "(a different architecture, or tied embeddings?)")


def _flat64(direction: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    """``direction`` as one float64 CPU vector in the order of ``names``."""
    return torch.cat([direction[n].detach().reshape(-1).to("cpu", torch.float64) for n in names])


def _unflat_like(vec: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Direction:
    """Split a flat vector into new tensors with the names, shapes, dtypes, devices of ``like``."""
    out, start = {}, 0
    for name, ref in like.items():
        n = ref.numel()
        out[name] = vec[start:start + n].reshape(ref.shape).to(ref.device, ref.dtype).clone()
        start += n
    return out


def _check_option(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise LandscapeError(f"{what}={value!r} is not one of {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------
# random directions and normalisation
# ---------------------------------------------------------------------------------------


def _generator(seed: int, index: int, name: str) -> torch.Generator:
    """A CPU generator seeded from ``(seed, index, name)``, independent of global RNG state."""
    key = hashlib.sha256(f"landscape-direction:{int(seed)}:{index}:{name}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(key[:8], "little") >> 1)


def gaussian_like(params: Mapping[str, torch.Tensor], seed: int, index: int = 0) -> Direction:
    """Raw i.i.d. N(0, 1) entries shaped like ``params`` (float64, CPU), seeded per name.

    Args:
        params: names and shapes to copy.
        seed: the seed; ``index`` picks an independent stream (0, 1 for a plane's x, y).
        index: stream index.

    Returns:
        A new direction of float64 CPU tensors.
    """
    return {n: torch.randn(tuple(p.shape), generator=_generator(seed, index, n),
                           dtype=torch.float64) for n, p in params.items()}


def _unit_norms(t: torch.Tensor, norm: str) -> torch.Tensor:
    """Norms of the units of ``t``: rows (``filter``, >= 2 dims) or the whole tensor."""
    if t.dim() >= 2 and norm == "filter":
        return t.reshape(t.shape[0], -1).norm(dim=1)  # [rows]
    return t.reshape(1, -1).norm(dim=1)  # [1]


def filter_norms(t: torch.Tensor) -> torch.Tensor:
    """Per-filter norms of a parameter or direction tensor (rows; a 1-D tensor is one unit).

    Args:
        t: a tensor ``[R, ...]`` (or 1-D / 0-D).

    Returns:
        ``[R]`` norms of the rows, or a ``[1]`` norm for a 1-D / 0-D tensor.
    """
    return _unit_norms(t.detach(), "filter")


def _rescale(d: torch.Tensor, w: torch.Tensor, norm: str) -> torch.Tensor:
    """``d`` with each unit (row or whole tensor) rescaled to the norm of the same unit of ``w``."""
    dn, wn = _unit_norms(d, norm), _unit_norms(w, norm)
    scale = torch.where(dn > 0, wn / dn.clamp_min(torch.finfo(dn.dtype).tiny), 0.0)  # 0 stays 0
    if norm == "filter" and d.dim() >= 2:
        return d * scale.reshape(-1, *([1] * (d.dim() - 1)))
    return d * scale[0]


def normalize_direction(
    direction: Mapping[str, torch.Tensor],
    params: Mapping[str, torch.Tensor],
    norm: str = "filter",
    one_d: str = "zero",
) -> Direction:
    """Rescale ``direction`` to the weights by the rules in the module docstring.

    Args:
        direction: any direction with the names and shapes of ``params``.
        params: the weights whose filter (or tensor) norms the result takes.
        norm: ``"filter"``, ``"layer"`` or ``"none"``, for tensors of >= 2 dims.
        one_d: ``"zero"``, ``"layer"`` or ``"keep"``, for 1-D and 0-D tensors.

    Returns:
        A new direction, in the dtype and on the device of ``direction``; computed in float64.
    """
    _check_option(norm, NORMS, "norm")
    _check_option(one_d, ONE_D, "one_d")
    check_direction(direction, params)
    out = {}
    for name, d in direction.items():
        d64 = d.detach().to(torch.float64)
        w64 = params[name].detach().to(d.device, torch.float64)
        if d.dim() >= 2:
            new = d64 if norm == "none" else _rescale(d64, w64, norm)
        elif one_d == "zero":
            new = torch.zeros_like(d64)
        else:
            new = d64 if one_d == "keep" else _rescale(d64, w64, "layer")
        out[name] = new.to(d.dtype)
    return out


def random_direction(
    params: Mapping[str, torch.Tensor], seed: int, norm: str = "filter", one_d: str = "zero",
) -> Direction:
    """A Gaussian direction, normalised to ``params`` (filter-wise by default).

    Args:
        params: the weights, ``{name: [shape]}``; only read.
        seed: any int; the same seed always gives the same direction.
        norm: ``"filter"`` (Li et al.), ``"layer"`` or ``"none"``; see the module docstring.
        one_d: ``"zero"`` (Li et al.), ``"layer"`` or ``"keep"``, for 1-D tensors.

    Returns:
        A direction in the dtype and on the device of each parameter.
    """
    return _random(params, seed, 0, norm, one_d)


def _random(params, seed, index, norm, one_d) -> Direction:
    """The ``index``-th random normalised direction of ``seed``, cast like ``params``."""
    cpu64 = {n: p.detach().to("cpu", torch.float64) for n, p in params.items()}
    d = normalize_direction(gaussian_like(params, seed, index), cpu64, norm, one_d)
    return {n: d[n].to(p.device, p.dtype) for n, p in params.items()}


def orthogonalize(
    direction: Mapping[str, torch.Tensor],
    against: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]],
    restore_norm: bool = True,
) -> Direction:
    """Gram-Schmidt: ``direction`` minus its projection on the span of ``against`` (flat space).

    Args:
        direction: the direction to orthogonalise.
        against: one direction or several (need not be orthogonal to each other).
        restore_norm: rescale the result to the flat norm ``direction`` had.

    Returns:
        A new direction like ``direction``, orthogonal (in float64) to every one of ``against``.
    """
    against = [against] if isinstance(against, Mapping) else list(against)
    names = list(direction)
    basis = []
    for i, a in enumerate(against):
        check_direction(a, direction, f"against[{i}]")
        basis.append(_flat64(a, names))
    y = _flat64(direction, names)
    q, r = torch.linalg.qr(torch.stack(basis, dim=1))  # [P, k]
    if bool((r.diagonal().abs() <= 1e-12 * r.abs().max().clamp_min(1e-300)).any()):
        raise LandscapeError("orthogonalize: the directions to orthogonalise against are zero "
                             "or linearly dependent")
    perp = y - q @ (q.T @ y)
    if float(perp.norm()) <= 1e-12 * float(y.norm()):
        raise LandscapeError("orthogonalize: the direction lies in the span of the others")
    if restore_norm:
        perp = perp * (y.norm() / perp.norm())
    return _unflat_like(perp, direction)


# ---------------------------------------------------------------------------------------
# planes
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plane:
    """Two directions spanning a slice plane, and how they were made.

    Attributes:
        x: first direction (the ``alpha`` axis of a grid).
        y: second direction (the ``beta`` axis).
        info: JSON-serialisable record: ``kind`` and the settings that rebuild the plane
            (seed, norm, one_d, reference), plus what orthogonalisation did (see
            :func:`random_plane`).
    """

    x: Direction
    y: Direction
    info: dict


def _max_unit_change(before: Direction, after: Direction, norm: str) -> float:
    """Largest ``|after/before - 1|`` of the normalisation units' norms (units with norm > 0)."""
    worst = 0.0
    for name, b in before.items():
        unit = norm if b.dim() >= 2 else "layer"
        nb = _unit_norms(b.to(torch.float64), unit)
        na = _unit_norms(after[name].to(b.device, torch.float64), unit)
        keep = nb > 0
        if bool(keep.any()):
            worst = max(worst, float((na[keep] / nb[keep] - 1).abs().max()))
    return worst


def _cosine(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    names = list(a)
    fa, fb = _flat64(a, names), _flat64(b, names)
    return float(fa @ fb / (fa.norm() * fb.norm()))


def random_plane(
    params: Mapping[str, torch.Tensor], seed: int, norm: str = "filter", one_d: str = "zero",
) -> Plane:
    """Two random normalised directions, the second orthogonalised against the first.

    ``x`` is exactly :func:`random_direction` ``(params, seed, ...)``. ``y`` is drawn from an
    independent stream of the same seed, normalised by the same rules, *then* orthogonalised
    against ``x`` by Gram-Schmidt in the flat space, and rescaled so that its total norm is
    the one it had before (the norm is restored, not merely reported).

    Orthogonalising breaks the exact filter norms of ``y``: with ``c`` the cosine between
    ``x`` and ``y`` before orthogonalisation (reported as ``info["cosine"]``), each filter
    of ``y`` keeps its weight's norm only up to a factor in
    ``[sqrt((1-|c|)/(1+|c|)), sqrt((1+|c|)/(1-|c|))]``, i.e. off by at most about ``|c|``
    (for filter- or layer-normalised directions, whose units have equal norms in x and y).
    ``|c|`` is of order ``1/sqrt(P)``: on the default model (P = 6528) seeds 0-3 gave
    ``|c|`` from 0.003 to 0.027 and filter norms off by 0.2 % to 1.6 %. The largest relative
    change actually made is reported as ``info["y_filter_change"]``.

    Args:
        params: the weights; only read.
        seed: any int.
        norm: see :func:`random_direction`.
        one_d: see :func:`random_direction`.

    Returns:
        A :class:`Plane` with ``info`` keys ``kind="random"``, ``seed``, ``norm``, ``one_d``,
        ``cosine``, ``y_filter_change``.
    """
    x = _random(params, seed, 0, norm, one_d)
    y_raw = _random(params, seed, 1, norm, one_d)
    y = orthogonalize(y_raw, x, restore_norm=True)
    info = {"kind": "random", "seed": int(seed), "norm": norm, "one_d": one_d,
            "cosine": _cosine(x, y_raw), "y_filter_change": _max_unit_change(y_raw, y, norm)}
    return Plane(x, y, info)


def shared_plane(
    reference: Mapping[str, torch.Tensor],
    seed: int,
    *,
    reference_name: str,
    others: Sequence[Mapping[str, torch.Tensor]] = (),
    norm: str = "filter",
    one_d: str = "zero",
) -> Plane:
    """One random plane to slice several runs on, normalised against a stated reference.

    Two runs (e.g. Single- and Looped-Attn, which share a layout) are compared on the same
    plane by slicing each around its own weights along these same directions; the filter
    norms are those of ``reference`` alone, named in ``info["reference"]``.

    Args:
        reference: the weights the directions are normalised against.
        seed: any int.
        reference_name: what ``reference`` is, e.g. ``"looped.h5 step 3000"``; stored in info.
        others: parameter dicts of the runs to be compared; each must have the reference's
            names and shapes (checked here, so a mismatch fails before any slicing).
        norm: see :func:`random_direction`.
        one_d: see :func:`random_direction`.

    Returns:
        :func:`random_plane` of ``reference`` with ``info["kind"] = "shared"`` and
        ``info["reference"] = reference_name``.
    """
    for i, other in enumerate(others):
        check_direction(other, reference, f"others[{i}]")
    plane = random_plane(reference, seed, norm, one_d)
    return Plane(plane.x, plane.y, {**plane.info, "kind": "shared", "reference": reference_name})


def interpolation(
    theta_a: Mapping[str, torch.Tensor], theta_b: Mapping[str, torch.Tensor],
) -> Direction:
    """The direction ``theta_b - theta_a``: alpha = 0 is ``theta_a``, alpha = 1 is ``theta_b``.

    Works across a SHIFT switch: the number of loops is not a parameter, so checkpoints
    before and after it share one layout.

    Args:
        theta_a: parameters of the first checkpoint.
        theta_b: parameters of the second, same names and shapes.

    Returns:
        A new direction, in the dtype and on the device of ``theta_a``.
    """
    check_direction(theta_b, theta_a, "theta_b")
    return {n: (theta_b[n].detach().to(a.device, a.dtype) - a.detach()) for n, a in theta_a.items()}


def plane_through(
    theta_a: Mapping[str, torch.Tensor],
    theta_b: Mapping[str, torch.Tensor],
    theta_c: Mapping[str, torch.Tensor] | None = None,
    *,
    seed: int = 0,
) -> Plane:
    """A plane through two or three checkpoints, to be sliced around ``theta_a``.

    ``x = theta_b - theta_a`` (so ``theta_b`` sits at (1, 0)). With ``theta_c``, ``y`` is
    ``theta_c - theta_a`` with its ``x`` component removed (not rescaled), so ``theta_c`` sits at
    ``(info["c"][0], 1)``. Without it, ``y`` is a random filter-normalised direction (against
    ``theta_a``, ``seed``), orthogonalised against ``x`` and scaled to ``x``'s norm.

    Args:
        theta_a: the origin's parameters.
        theta_b: second checkpoint.
        theta_c: optional third checkpoint.
        seed: seed of the random ``y`` when ``theta_c`` is None.

    Returns:
        A :class:`Plane` with ``info`` keys ``kind="through"``, ``b`` and ``c`` (coordinates)
        or ``seed``.
    """
    x = interpolation(theta_a, theta_b)
    names, fx = list(x), _flat64(x, list(x))
    if float(fx.norm()) == 0.0:
        raise LandscapeError("plane_through: theta_a and theta_b are the same point")
    if theta_c is not None:
        raw = interpolation(theta_a, theta_c)
        along = float(_flat64(raw, names) @ fx / (fx @ fx))
        y = orthogonalize(raw, x, restore_norm=False)
        return Plane(x, y, {"kind": "through", "b": [1.0, 0.0], "c": [along, 1.0]})
    y = orthogonalize(random_direction(theta_a, seed), x, restore_norm=False)
    scale = float(fx.norm() / _flat64(y, names).norm())
    y = {n: t * scale for n, t in y.items()}
    return Plane(x, y, {"kind": "through", "b": [1.0, 0.0], "seed": int(seed)})


# ---------------------------------------------------------------------------------------
# Hessian eigenvectors
# ---------------------------------------------------------------------------------------


def eigen_directions(layout: ParamLayout, eigvecs) -> list[Direction]:
    """Direction dicts from the columns of a ``[P, k]`` eigenvector matrix (``[P]``: one).

    Args:
        layout: the parameter layout the vectors are flat in.
        eigvecs: tensor or array ``[P, k]``; column ``i`` becomes direction ``i``.

    Returns:
        ``k`` new directions (copies), in the dtype of ``eigvecs``.
    """
    v = torch.as_tensor(np.asarray(eigvecs) if not isinstance(eigvecs, torch.Tensor) else eigvecs)
    if v.dim() == 1:
        v = v[:, None]
    if v.dim() != 2 or v.shape[0] != layout.size:
        raise LandscapeError(f"eigvecs has shape {tuple(v.shape)}; expected [P, k] with "
                             f"P = {layout.size} parameters of the layout")
    return [{n: t.clone() for n, t in layout.unflatten(v[:, i].clone()).items()}
            for i in range(v.shape[1])]


# ---------------------------------------------------------------------------------------
# PCA of a trajectory
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PCAPlane:
    """The top-2 principal directions of a trajectory and where each checkpoint lies.

    Attributes:
        components: ``[2, P]`` float64 orthonormal rows; signs chosen so that the last
            checkpoint's coordinate is >= the first's (training moves toward +).
        explained_variance_ratio: ``[2]`` share of the total squared spread (around
            ``centre``) along each component.
        coords: ``[n, 2]`` coordinates of each checkpoint in the plane through ``centre``.
        residuals: ``[n]`` norm of each checkpoint's off-plane part.
        centre: ``[P]`` float64 origin of the plane: the mean checkpoint (centred) or the
            final one (uncentred).
        centred: True: PCA around the mean; False: of the displacements from the final
            checkpoint, uncentred (Li et al. 2018).
    """

    components: torch.Tensor
    explained_variance_ratio: torch.Tensor
    coords: torch.Tensor
    residuals: torch.Tensor
    centre: torch.Tensor
    centred: bool

    def directions(self, layout: ParamLayout) -> tuple[Direction, Direction]:
        """The two components as direction dicts (float64)."""
        return tuple(eigen_directions(layout, self.components.T))  # type: ignore[return-value]

    @property
    def info(self) -> dict:
        """JSON-serialisable record: kind, centring, explained variance ratios."""
        return {"kind": "pca", "centred": self.centred,
                "explained_variance_ratio": [float(r) for r in self.explained_variance_ratio]}


def _as_trajectory(trajectory) -> torch.Tensor:
    """A ``[n, P]`` float64 CPU copy of ``trajectory`` (tensor or array), checked."""
    if isinstance(trajectory, torch.Tensor):
        t = trajectory.detach().to("cpu", torch.float64)
    else:
        t = torch.as_tensor(np.asarray(trajectory, dtype=np.float64))
    if t.dim() != 2 or t.shape[0] < 2 or t.shape[1] < 2:
        raise LandscapeError(f"trajectory has shape {tuple(t.shape)}; expected [n, P] with "
                             "at least 2 checkpoints and 2 parameters")
    if not bool(torch.isfinite(t).all()):
        raise LandscapeError("trajectory has non-finite entries")
    return t


def pca_directions(trajectory, centred: bool = True) -> PCAPlane:
    """Top-2 principal directions of a trajectory of flat parameter vectors.

    Args:
        trajectory: ``[n, P]`` tensor or array, one checkpoint per row (n >= 2).
        centred: True: around the mean checkpoint; False: displacements from the final
            checkpoint, not mean-centred, as in Li et al. 2018.

    Returns:
        A :class:`PCAPlane`.
    """
    t = _as_trajectory(trajectory)
    centre = t.mean(dim=0) if centred else t[-1].clone()
    m = t - centre  # [n, P]
    _, s, vh = torch.linalg.svd(m, full_matrices=False)
    total = float((s**2).sum())
    if total == 0.0:
        raise LandscapeError("trajectory does not move: every checkpoint is the same point")
    comps = vh[:2].clone()  # [2, P]
    coords = m @ comps.T  # [n, 2]
    for k in range(2):
        rise = coords[-1, k] - coords[0, k]
        flip = rise < 0 if rise != 0 else comps[k, comps[k].abs().argmax()] < 0
        if flip:
            comps[k], coords[:, k] = -comps[k], -coords[:, k]
    residuals = (m - coords @ comps).norm(dim=1)
    return PCAPlane(comps, s[:2] ** 2 / total, coords, residuals, centre, centred)


# ---------------------------------------------------------------------------------------
# true loss beside the loss at the projection onto a plane
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectionLosses:
    """Each checkpoint's loss beside the loss at its projection onto a plane.

    Attributes:
        coords: ``[n, 2]`` float64 plane coordinates (least squares in the flat space).
        true_loss: ``[n]`` float64 loss at each checkpoint.
        plane_loss: ``[n]`` float64 loss at its projection ``origin + coords @ [x; y]``.
        residuals: ``[n]`` float64 norm of each checkpoint's off-plane part.
    """

    coords: np.ndarray
    true_loss: np.ndarray
    plane_loss: np.ndarray
    residuals: np.ndarray


def _plane_row(d, layout: ParamLayout) -> torch.Tensor:
    """One plane direction (a dict or a flat ``[P]`` tensor/array) as a float64 CPU vector."""
    if isinstance(d, Mapping):
        check_direction(d, dict(zip(layout.names, map(torch.empty, layout.shapes))),
                        "plane direction")
        return _flat64(d, layout.names)
    v = d.detach() if isinstance(d, torch.Tensor) else torch.as_tensor(np.asarray(d))
    v = v.to("cpu", torch.float64).reshape(-1)
    if v.numel() != layout.size or not bool(torch.isfinite(v).all()):
        raise LandscapeError(f"a flat plane direction must have {layout.size} finite entries, "
                             f"got {v.numel()}")
    return v


def _plane_matrix(plane, layout: ParamLayout) -> torch.Tensor:
    """A ``[2, P]`` float64 matrix of the plane's directions (linearly independent)."""
    if isinstance(plane, PCAPlane):
        return plane.components
    pair = (plane.x, plane.y) if isinstance(plane, Plane) else tuple(plane)
    if len(pair) != 2:
        raise LandscapeError(f"a plane needs 2 directions, got {len(pair)}")
    mat = torch.stack([_plane_row(d, layout) for d in pair])  # [2, P]
    if float(torch.linalg.matrix_rank(mat)) < 2:
        raise LandscapeError("the plane's two directions are zero or parallel")
    return mat


def projection_losses(loss_fn: LossFn, layout: ParamLayout, trajectory, origin, plane,
                      ) -> ProjectionLosses:
    """Each checkpoint's true loss beside the loss at its projection onto a plane.

    Args:
        loss_fn: ``loss_fn(params) -> scalar``.
        layout: the layout of the trajectory's rows.
        trajectory: ``[n, P]`` tensor or array.
        origin: the plane's origin: a params dict or a ``[P]`` tensor/array (for a
            :class:`PCAPlane`, its ``centre``). Losses are evaluated in its dtype and device.
        plane: a :class:`PCAPlane`, a :class:`Plane`, or two directions (dicts or ``[P]``).

    Returns:
        A :class:`ProjectionLosses`.
    """
    t = _as_trajectory(trajectory)
    if t.shape[1] != layout.size:
        raise LandscapeError(f"trajectory rows have {t.shape[1]} entries, layout {layout.size}")
    o = layout.flatten(origin) if isinstance(origin, Mapping) else torch.as_tensor(origin)
    dtype, device = (o.dtype if o.is_floating_point() else torch.float64), o.device
    d = _plane_matrix(plane, layout)  # [2, P]
    m = t - o.detach().to("cpu", torch.float64)
    coords = torch.linalg.solve(d @ d.T, d @ m.T).T  # [n, 2], least squares
    proj = coords @ d
    residuals = (m - proj).norm(dim=1)
    with torch.no_grad():
        def loss_at(vec):
            return float(loss_fn(layout.unflatten(vec.to(device, dtype))))
        true = [loss_at(row) for row in t]
        flat = [loss_at(o.detach().to("cpu", torch.float64) + p) for p in proj]
    return ProjectionLosses(coords.numpy(), np.array(true), np.array(flat), residuals.numpy())
