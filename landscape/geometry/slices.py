"""1D and 2D loss grids along directions, batched over grid points, resumable.

A grid point ``(a, b)`` is evaluated at ``theta = theta0 + a * x + b * y``, set absolutely
from ``theta0`` (never accumulated from the previous point), through ``loss_fn`` (which
calls ``torch.func.functional_call``): the caller's parameter dict and model's parameters
are never written to. Points are visited row-major (``alphas`` outer, ``betas`` inner).

Two evaluation strategies, picked by ``batch_points``:

* ``1``: a lean per-point loop. It reuses one flat parameter buffer and does nothing per
  point but two multiply-adds over P and the forward pass. Where the loss function
  offers ``bind`` (those of :func:`landscape.train.split_loss.make_loss_fn` and of recorded
  models do, :func:`landscape.curvature.objective.with_binding`), views of that buffer are put into
  the module once per grid instead of ``functional_call`` swapping every parameter in and
  out at every point; the module's own parameters are never written to, and are back in
  place after the grid, also after an exception.
* ``k > 1``: up to ``k`` points per call of ``torch.func.vmap(loss_fn)`` over a ``[k, P]``
  batch of flat parameter vectors, chunked so that the estimated memory of a chunk
  (:func:`estimate_point_bytes` per point) fits ``max_memory_bytes``.

The default, ``batch_points="auto"``, is the lean loop on the CPU (measured the fastest
there with one thread; BENCHMARKS.md, "Why the lean loop on the CPU") and chunks of up to
:data:`AUTO_GPU_POINTS` points on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch.func import vmap

from landscape.curvature.objective import LossFn, ParamLayout
from landscape.errors import LandscapeError
from landscape.geometry.directions import Plane, check_direction

AUTO_GPU_POINTS = 64
"""Most points per vmapped call under ``batch_points="auto"`` on a GPU (before the memory bound).

Not measured on a GPU yet; the slices benchmark should settle it."""

AUTO_GPU_MEMORY_FRACTION = 0.25
"""Share of the GPU's free memory a chunk may use when ``max_memory_bytes`` is None."""

ChunkCallback = Callable[[np.ndarray, np.ndarray], None]


# ---------------------------------------------------------------------------------------
# axes
# ---------------------------------------------------------------------------------------


def make_axis(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` evenly spaced coordinates from ``lo`` to ``hi``, odd ``n``, with 0 exactly on it.

    Args:
        lo: first coordinate, <= 0.
        hi: last coordinate, >= 0, > lo.
        n: number of points; odd, >= 3.

    Returns:
        ``[n]`` float64 array; the point nearest 0 is exactly 0.0.

    Raises:
        LandscapeError: ``n`` even or < 3, ``lo >= hi``, or 0 not on the grid.
    """
    if int(n) != n or n < 3 or n % 2 == 0:
        raise LandscapeError(f"grid size n={n} must be odd and >= 3 so that 0 is a grid point")
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise LandscapeError(f"axis [{lo}, {hi}] must be finite with lo < hi")
    if lo > 0 or hi < 0:
        raise LandscapeError(f"axis [{lo}, {hi}] does not contain 0; the origin must be a point")
    k = (n - 1) * (-lo) / (hi - lo)  # index of 0
    if abs(k - round(k)) > 1e-9 * n:
        raise LandscapeError(f"axis [{lo}, {hi}] with n={n} points does not have 0 on the grid; "
                             "choose n so that (n - 1) * lo / (lo - hi) is an integer")
    axis = np.linspace(lo, hi, int(n))
    axis[int(round(k))] = 0.0
    return axis


def _check_axis(values, what: str) -> np.ndarray:
    """A checked float64 copy of a grid axis: 1-D, finite, increasing, odd, 0 on it if symmetric."""
    a = np.array(values, dtype=np.float64).reshape(-1) if np.ndim(values) <= 1 else None
    if a is None or a.size == 0 or not np.isfinite(a).all():
        raise LandscapeError(f"{what} must be a non-empty 1-D sequence of finite numbers")
    if a.size % 2 == 0:
        raise LandscapeError(f"{what} has {a.size} points; grid counts must be odd "
                             "(use make_axis(lo, hi, n) with odd n)")
    if a.size > 1 and not (np.diff(a) > 0).all():
        raise LandscapeError(f"{what} must be strictly increasing")
    if a.size > 1 and a[0] == -a[-1] and not (a == 0).any():
        raise LandscapeError(f"{what} is symmetric about 0 but 0 is not a point; "
                             "use make_axis(lo, hi, n)")
    return a


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------


def _as_directions(directions) -> list[Mapping[str, torch.Tensor]]:
    """One direction (a dict), a :class:`Plane`, or a sequence of 1 or 2 dicts, as a list."""
    if isinstance(directions, Plane):
        return [directions.x, directions.y]
    if isinstance(directions, Mapping):
        return [directions]
    if not isinstance(directions, Sequence) or len(directions) not in (1, 2):
        raise LandscapeError("directions must be one direction dict, a Plane, "
                             "or a list of 1 or 2 direction dicts")
    return list(directions)


def _flat_params(params: Mapping[str, torch.Tensor]) -> tuple[ParamLayout, torch.Tensor]:
    """The layout of ``params`` and a detached flat copy ``[P]`` (one dtype, one device)."""
    if not params:
        raise LandscapeError("params is empty")
    kinds = {(p.dtype, p.device) for p in params.values()}
    if len(kinds) != 1:
        raise LandscapeError(f"params mix dtypes or devices {sorted(map(str, kinds))}; "
                             "cast the model to one dtype and device first")
    layout = ParamLayout.of(params)
    with torch.no_grad():  # flatten concatenates: a new tensor, never a view of params
        return layout, layout.flatten({n: p.detach() for n, p in params.items()})


def _direction_matrix(directions, params, theta0: torch.Tensor) -> torch.Tensor:
    """``[k, P]`` flat directions in ``theta0``'s dtype and device, each checked against params."""
    out = torch.empty(len(directions), theta0.numel(), dtype=theta0.dtype, device=theta0.device)
    for i, d in enumerate(directions):
        check_direction(d, params, f"direction {i}")
        torch.cat([d[n].detach().reshape(-1).to(theta0.device, theta0.dtype) for n in params],
                  out=out[i])
    return out


def _resume_state(shape, done, values) -> tuple[np.ndarray, np.ndarray]:
    """Flat copies of the done-mask and the values (NaN where not done)."""
    if (done is None) != (values is None):
        raise LandscapeError("pass both done and values to resume a grid, or neither")
    size = int(np.prod(shape))
    if done is None:
        return np.zeros(size, dtype=bool), np.full(size, np.nan)
    done_a, values_a = np.asarray(done), np.asarray(values, dtype=np.float64)
    for arr, what in ((done_a, "done"), (values_a, "values")):
        if arr.shape != tuple(shape):
            raise LandscapeError(f"{what} has shape {arr.shape}, the grid is {tuple(shape)}")
    if done_a.dtype != bool:
        raise LandscapeError(f"done must be a boolean mask, got dtype {done_a.dtype}")
    flat_done = done_a.reshape(-1).copy()
    return flat_done, np.where(flat_done, values_a.reshape(-1), np.nan)


# ---------------------------------------------------------------------------------------
# chunk size
# ---------------------------------------------------------------------------------------


def estimate_point_bytes(loss_fn: LossFn, params: Mapping[str, torch.Tensor]) -> int:
    """Estimated memory of one grid point in a vmapped chunk, in bytes.

    The bytes of every tensor autograd saves for backward in one evaluation at ``params``
    (a conservative stand-in for the live memory of a no-grad evaluation, which keeps only
    a few activations at a time), plus the point's flat parameter vector.

    Args:
        loss_fn: ``loss_fn(params) -> scalar``; called once, with gradients enabled on a copy.
        params: the parameters; only read.

    Returns:
        Bytes per point, >= 1.
    """
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    leaf = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(leaf)
    return max(1, total + sum(p.numel() * p.element_size() for p in leaf.values()))


def _check_strategy(batch_points, max_memory_bytes) -> None:
    """Raise unless ``batch_points`` is "auto" or an int >= 1 and the bound is positive."""
    if batch_points != "auto" and (isinstance(batch_points, bool)
                                   or not isinstance(batch_points, int) or batch_points < 1):
        raise LandscapeError(f"batch_points={batch_points!r} must be 'auto' or an int >= 1")
    if max_memory_bytes is not None and max_memory_bytes < 1:
        raise LandscapeError(f"max_memory_bytes={max_memory_bytes} must be positive")


def _chunk_points(batch_points, max_memory_bytes, loss_fn, params, device) -> int:
    """Points per call: ``batch_points`` (or the auto choice), cut to the memory bound."""
    if batch_points == "auto":
        if device.type == "cpu":
            return 1
        batch_points = AUTO_GPU_POINTS
        if max_memory_bytes is None:
            max_memory_bytes = int(AUTO_GPU_MEMORY_FRACTION * torch.cuda.mem_get_info(device)[0])
    if batch_points == 1 or max_memory_bytes is None:
        return batch_points
    fit = int(max_memory_bytes) // estimate_point_bytes(loss_fn, params)
    return max(1, min(batch_points, fit))


# ---------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------


def _scalar(loss: torch.Tensor) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise LandscapeError("loss_fn must return a scalar tensor")
    return loss.reshape(())


def _fill(theta0, dirs, coeffs, buf, tmp) -> None:
    """Write the point ``theta0 + sum_k coeffs[k] * dirs[k]`` into ``buf``, in place."""
    torch.mul(dirs[0], coeffs[0], out=buf)
    for k in range(1, dirs.shape[0]):
        buf.add_(torch.mul(dirs[k], coeffs[k], out=tmp))
    buf.add_(theta0)


def _eval_lean(flat_loss, theta0, dirs, coeffs, buf, tmp) -> torch.Tensor:
    """Loss at one point ``theta0 + sum_k coeffs[k] * dirs[k]``, written into ``buf``."""
    _fill(theta0, dirs, coeffs, buf, tmp)
    return _scalar(flat_loss(buf)).reshape(1)


def _eval_batched(batched_loss, theta0, dirs, coeffs) -> torch.Tensor:
    """Losses ``[m]`` at ``theta0 + coeffs @ dirs`` for ``coeffs`` ``[m, k]``, one vmapped call."""
    thetas = dirs[0][None] * coeffs[:, :1]  # [m, P]; same elementwise ops as _eval_lean
    for k in range(1, dirs.shape[0]):
        thetas += dirs[k][None] * coeffs[:, k:k + 1]
    thetas += theta0
    losses = batched_loss(thetas)
    if losses.shape != (coeffs.shape[0],):
        raise LandscapeError("loss_fn must return a scalar tensor")
    return losses


def _run(loss_fn, layout, theta0, dirs, coeffs, todo, chunk, on_chunk, out) -> None:
    """Evaluate the cells ``todo`` (flat indices) in chunks, filling ``out`` and reporting."""

    def flat_loss(v):
        return loss_fn(layout.unflatten(v))

    batched_loss = vmap(flat_loss)
    buf, tmp = torch.empty_like(theta0), torch.empty_like(theta0)
    c = torch.as_tensor(coeffs, dtype=theta0.dtype).to(theta0.device)  # [cells, k]
    bind = getattr(loss_fn, "bind", None)
    if chunk == 1 and bind is not None:
        _run_bound(bind, layout, theta0, dirs, c, todo, on_chunk, out, buf, tmp)
        return
    with torch.no_grad():
        for start in range(0, len(todo), chunk):
            idx = todo[start:start + chunk]
            if chunk == 1:
                losses = _eval_lean(flat_loss, theta0, dirs, c[idx[0]], buf, tmp)
            else:
                losses = _eval_batched(batched_loss, theta0, dirs, c[idx])
            values = losses.detach().to("cpu", torch.float64).numpy()
            out[idx] = values
            if on_chunk is not None:
                on_chunk(idx.copy(), values.copy())


def _run_bound(bind, layout, theta0, dirs, c, todo, on_chunk, out, buf, tmp) -> None:
    """The lean loop through ``loss_fn.bind``: views of ``buf`` go into the module once.

    Each point is then written into ``buf`` in place and the module called as it is,
    without ``functional_call``'s swap of every parameter in and out per point
    (:func:`landscape.curvature.objective.with_binding`); the values are those of the plain lean
    loop. The module's own parameters are never written to.
    """
    with torch.no_grad(), bind(layout.unflatten(buf)) as module_loss:
        for i in todo:
            _fill(theta0, dirs, c[i], buf, tmp)
            values = _scalar(module_loss()).reshape(1).detach().to("cpu", torch.float64).numpy()
            out[i] = values[0]
            if on_chunk is not None:
                on_chunk(np.array([i], dtype=np.int64), values.copy())


def loss_grid(
    loss_fn: LossFn,
    params: Mapping[str, torch.Tensor],
    directions,
    alphas,
    betas=None,
    *,
    batch_points: int | str = "auto",
    max_memory_bytes: int | None = None,
    done=None,
    values=None,
    on_chunk: ChunkCallback | None = None,
) -> np.ndarray:
    """Loss on a 1D or 2D grid ``theta0 + a * x (+ b * y)`` around ``params``.

    Args:
        loss_fn: ``loss_fn(params) -> scalar``, vmappable for ``batch_points > 1``
            (:func:`landscape.train.split_loss.make_loss_fn` is).
        params: ``theta0``, ``{name: tensor}`` in one dtype and device; never modified.
        directions: one direction dict (1D), a :class:`~landscape.geometry.directions.Plane` or two
            dicts (2D); names and shapes of ``params``; cast to its dtype and device.
        alphas: ``[na]`` coordinates along the first direction (odd count, strictly
            increasing; 0 must be on it when it is symmetric about 0; see :func:`make_axis`).
        betas: ``[nb]`` coordinates along the second direction; 2D grids only.
        batch_points: points per evaluation call: 1 is the lean per-point loop, ``k > 1``
            vmaps chunks of up to ``k`` points; ``"auto"``: 1 on CPU, up to
            :data:`AUTO_GPU_POINTS` on a GPU.
        max_memory_bytes: memory bound of one chunk (estimated with
            :func:`estimate_point_bytes`); None: no bound on CPU, a share of free memory on GPU.
        done: ``[na]`` or ``[na, nb]`` boolean mask of cells already computed (to resume).
        values: same shape, their losses (read where ``done``; other entries ignored).
        on_chunk: called after each evaluated chunk as ``on_chunk(indices, losses)`` with
            the flat row-major cell indices ``[m]`` (int64) and their losses ``[m]``
            (float64); a chunk is one point on the lean path. Use it to persist progress.

    Returns:
        ``[na]`` or ``[na, nb]`` float64 losses (a new array).

    Raises:
        LandscapeError: bad directions (naming the parameter), bad axes, bad resume arrays.
    """
    _check_strategy(batch_points, max_memory_bytes)
    dirs_in = _as_directions(directions)
    axes = [_check_axis(alphas, "alphas")]
    if (betas is None) != (len(dirs_in) == 1):
        raise LandscapeError(f"{len(dirs_in)} direction(s) given: pass betas exactly for 2D grids")
    if betas is not None:
        axes.append(_check_axis(betas, "betas"))
    layout, theta0 = _flat_params(params)
    dirs = _direction_matrix(dirs_in, params, theta0)
    shape = tuple(a.size for a in axes)
    done_flat, out = _resume_state(shape, done, values)
    coeffs = np.stack([g.reshape(-1) for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    todo = np.flatnonzero(~done_flat).astype(np.int64)
    if todo.size:
        chunk = _chunk_points(batch_points, max_memory_bytes, loss_fn, params, theta0.device)
        _run(loss_fn, layout, theta0, dirs, coeffs, todo, chunk, on_chunk, out)
    return out.reshape(shape)


def basin_share(alphas, betas, loss, rise: float) -> float:
    """The share of a 2-D grid's cells whose loss is within ``rise`` of the loss at the origin.

    The origin is the cell nearest ``(0, 0)`` (the checkpoint a plane is centred on). A
    wide, flat basin has a large share, a narrow one a small share; on one plane and grid
    the shares of several runs compare their basins on equal terms.

    Args:
        alphas: ``[na]`` x coordinates.
        betas: ``[nb]`` y coordinates.
        loss: ``[na, nb]`` losses (NaN cells count as outside).
        rise: the loss rise (nats, > 0) that marks the basin edge.

    Returns:
        The share in [0, 1]; NaN where the loss at the origin is not finite.
    """
    a, b = np.asarray(alphas, dtype=np.float64), np.asarray(betas, dtype=np.float64)
    z = np.asarray(loss, dtype=np.float64)
    if z.shape != (a.size, b.size):
        raise LandscapeError(f"basin_share: loss has shape {z.shape}, not [{a.size}, {b.size}]")
    if not rise > 0:
        raise LandscapeError(f"basin_share: rise must be > 0, got {rise}")
    centre = z[int(np.argmin(np.abs(a))), int(np.argmin(np.abs(b)))]
    if not np.isfinite(centre):
        return float("nan")
    return float(np.mean(z <= centre + rise))
