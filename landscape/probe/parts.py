"""Every probe measurement as a public function returning its stored part.

Each function takes what it measures (a :class:`~landscape.curvature.hessian.HessianOperator`, or a
``loss_fn`` with its ``params``, see :mod:`landscape.curvature.objective`), the settings that shape
it, and the parts it builds on, and returns the frozen dataclass of
:mod:`landscape.runfile.schema` that the probe stores. None of them reads or writes a run
file, so a notebook can call them on any model (here a quadratic with the Hessian
``diag(4, 3, 2, 1)``):

>>> import torch
>>> from landscape.curvature.hessian import HessianOperator
>>> from landscape.probe import parts
>>> h = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))
>>> op = HessianOperator(lambda p: 0.5 * p["w"] @ h @ p["w"], {"w": torch.ones(4)})
>>> top = parts.top(op, parts.HessianSettings(k_top=2, k_bottom=1))
>>> top.values.round(4).tolist(), top.bottom_values.round(4).tolist()
([4.0, 3.0], [1.0])
>>> density = parts.slq(op, parts.HessianSettings())
>>> valley = parts.valley(parts.GeometrySettings(), op.dim, top, slq_part=density)
>>> valley.source, valley.valley_dim, round(valley.kappa, 4)
('slq', 4.0, 4.0)

The driver (:mod:`landscape.probe.driver`) decides which checkpoints and which parts,
skips what is stored, and commits each result; these functions only measure.

Grids take an ``evaluate`` argument (default :func:`evaluate_grid`, one process): the
driver passes one that resumes a killed grid from its stored cells, or shares the cells
out between torchrun ranks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from landscape.curvature.dense_hessian import exact_valley
from landscape.curvature.hessian import HessianOperator, preconditioned_operator
from landscape.curvature.objective import LossFn, ParamLayout
from landscape.curvature.spectral import (
    default_tol,
    dense_matrix,
    hutchpp,
    lanczos,
    subspace_overlap,
)
from landscape.curvature.spectral import slq as _slq
from landscape.curvature.stability import UNKNOWN as UNKNOWN_OPTIMIZER
from landscape.curvature.stability import OptimizerRecord
from landscape.errors import LandscapeError
from landscape.geometry.directions import Plane, pca_directions, plane_through, projection_losses
from landscape.geometry.directions import random_plane as _random_plane
from landscape.geometry.measurements import loop_curve as _loop_curve
from landscape.geometry.measurements import unit_direction, valley_spread, valley_widths
from landscape.geometry.optimiser_valley import (
    FALLBACK_K,
    NEAR_EDGE,
    alternating_span,
    edge_valley,
    orthonormal_rows,
    principal_angles,
    restricted_hessian,
    restricted_measures,
)
from landscape.geometry.per_step import river_direction as per_step_river
from landscape.geometry.slices import loss_grid, make_axis
from landscape.geometry.uv_measures import precondition_denominator
from landscape.geometry.valley import river_direction, split_from_slq, split_spectrum
from landscape.geometry.valley import river_progress as _river_progress
from landscape.probe.settings import GeometrySettings, HessianSettings
from landscape.runfile import schema as sc
from landscape.train.intervention import continue_from
from landscape.train.model import param_groups

QK_CHECKPOINTS = 2  # checkpoints after initialisation at which Q/K gradients are compared
QK_LOOPS = (1, 3)  # the loop counts compared (Single- and Looped-Attn's)

GridEvaluator = Callable[[LossFn, Mapping[str, torch.Tensor], Plane, np.ndarray, np.ndarray],
                         tuple[np.ndarray, int]]


# --- Hessian parts ----------------------------------------------------------------------


def _hessian_fields(op: HessianOperator, loops: int) -> dict:
    return {"loops": int(loops), "dtype": "float64" if op.dtype == torch.float64 else "float32"}


def top(op: HessianOperator, hs: HessianSettings, warm: np.ndarray | None = None,
        loops: int = 0) -> sc.Top:
    """Top-k and bottom-k eigenpairs by Lanczos, warm-started from ``warm`` ``[k, P]`` rows."""
    k_top = min(hs.k_top, op.dim)
    k_bottom = min(hs.k_bottom, max(op.dim - k_top, 0))
    start = None
    if warm is not None and warm.shape[-1] == op.dim:
        start = torch.as_tensor(np.asarray(warm).T.copy()).to(device=op.device, dtype=op.dtype)
    n0 = op.n_matvec
    res = lanczos(op, k_top=k_top, k_bottom=k_bottom, tol=hs.tol or None,
                  max_steps=min(hs.max_steps, op.dim), warm=start, seed=hs.seed)
    return sc.Top(
        values=np.asarray(res.top_values), residuals=np.asarray(res.top_residuals),
        converged=np.asarray(res.top_converged),
        vectors=res.top_vectors.T.to(torch.float32).cpu().numpy(),
        bottom_values=np.asarray(res.bottom_values),
        bottom_residuals=np.asarray(res.bottom_residuals),
        bottom_converged=np.asarray(res.bottom_converged), lanczos_steps=int(res.steps),
        tol=float(res.tol or default_tol(op.dtype)), warm_start=start is not None,
        converged_all=bool(res.converged), hvps=op.n_matvec - n0, **_hessian_fields(op, loops))


def trace(op: HessianOperator, hs: HessianSettings, top_part: sc.Top, loops: int = 0) -> sc.Trace:
    """Hutch++ with ``top_part``'s eigenvectors deflated (its ``bulk`` is the rest)."""
    vectors = np.asarray(top_part.vectors)  # [k, P]: its columns view it (no copy of k P)
    basis = torch.as_tensor(vectors if vectors.flags.writeable else vectors.copy()).T.to(
        device=op.device, dtype=op.dtype)
    n0 = op.n_matvec
    tr = hutchpp(op, hs.trace_hvps + basis.shape[1], seed=hs.seed, basis=basis)
    return sc.Trace(estimate=float(tr.estimate), stderr=float(tr.stderr), bulk=float(tr.residual),
                    top_sum=float(tr.low_rank), samples=np.asarray(tr.samples),
                    probes=int(tr.n_probes), hvps=op.n_matvec - n0, **_hessian_fields(op, loops))


def slq(op: HessianOperator, hs: HessianSettings, loops: int = 0) -> sc.Slq:
    """Stochastic Lanczos quadrature nodes and weights (raw, ``[runs, steps]``)."""
    n0 = op.n_matvec
    res = _slq(op, n_runs=hs.slq_runs, n_steps=min(hs.slq_steps, op.dim), seed=hs.seed)
    return sc.Slq(nodes=np.asarray(res.nodes), weights=np.asarray(res.weights), dim=op.dim,
                  hvps=op.n_matvec - n0, **_hessian_fields(op, loops))


EXACT_VECTORS = 16  # top eigenvectors the exact part keeps (a constant: independent of --k)


def exact(op: HessianOperator, loops: int = 0, k: int = EXACT_VECTORS,
          adam_v: np.ndarray | None = None,
          adam_step: int = 0, beta2: float = 0.999, eps: float = 1e-8) -> sc.Exact:
    """The full spectrum: the dense Hessian (P products), float64 ``eigvalsh``.

    Beside the eigenvalues: the top-``k`` eigenvectors (Lanczos on the dense matrix), and,
    with AdamW's state (``adam_v`` after ``adam_step`` steps), the spectrum and top-k
    eigenvectors of the preconditioned Hessian ``D^-1/2 H D^-1/2`` the optimiser sees
    (:func:`landscape.geometry.uv_measures.precondition_denominator`; see
    :mod:`landscape.curvature.dense_hessian`).
    """
    n0 = op.n_matvec
    h = dense_matrix(op).double().cpu()
    denominator = None
    if adam_v is not None and adam_step >= 1:
        denominator = precondition_denominator(adam_v, adam_step, beta2, eps)
    ev = exact_valley(h, min(k, op.dim), denominator)
    return sc.Exact(eigvals=ev.eigvals, vectors=ev.vectors.astype(np.float32),
                    adam_eigvals=ev.adam_eigvals,
                    adam_vectors=None if ev.adam_vectors is None
                    else ev.adam_vectors.astype(np.float32),
                    adam_step=int(adam_step) if denominator is not None else 0,
                    hvps=op.n_matvec - n0, **_hessian_fields(op, loops))


def sharpness(op: HessianOperator, top_part: sc.Top, lr: float,
              optimizer: OptimizerRecord | None, adam_v: np.ndarray | None = None,
              adam_step: int = 0, loops: int = 0) -> sc.Sharpness:
    """lambda_max beside the stability edge of ``optimizer`` at learning rate ``lr``.

    The edge is :meth:`OptimizerRecord.edge <landscape.curvature.stability.OptimizerRecord.edge>`
    (NaN for an optimiser not recorded, ``None``, or of an unknown kind, or an unknown
    ``lr``). For Adam/AdamW it applies to the preconditioned Hessian ``D^-1/2 H D^-1/2``,
    whose top eigenvalue is computed from ``adam_v``, AdamW's ``exp_avg_sq`` ``[P]`` after
    ``adam_step`` steps (NaN before the first step, or without it).
    """
    n0 = op.n_matvec
    opt = optimizer or OptimizerRecord(UNKNOWN_OPTIMIZER)
    adam_lam = math.nan
    if adam_step >= 1 and adam_v is not None:
        eps, beta2 = (opt.eps, opt.beta2) if opt.preconditioned else (1e-8, 0.999)
        pre = preconditioned_operator(op, torch.as_tensor(adam_v, device=op.device), eps=eps,
                                      step=adam_step, beta2=beta2)
        adam_lam = float(lanczos(pre, k_top=1, tol=1e-3, max_steps=min(100, op.dim))
                         .top_values[0])
    edge = opt.edge(lr)
    return sc.Sharpness(lambda_max=top_part.lambda_max, lr=float(lr), threshold=edge,
                        adam_lambda_max=adam_lam,
                        adam_threshold=edge if opt.preconditioned else math.nan,
                        adam_step=int(adam_step), optimizer=opt.label,
                        edge_on="preconditioned" if opt.preconditioned else "hessian",
                        edge_unknown=opt.unknown_edge(lr), hvps=op.n_matvec - n0,
                        **_hessian_fields(op, loops))


def overlap(previous: sc.Top, current: sc.Top, previous_step: int) -> sc.Overlap:
    """Cosines of the principal angles between two checkpoints' top-k eigenspaces."""
    cos = subspace_overlap(torch.as_tensor(previous.vectors.T, dtype=torch.float64),
                           torch.as_tensor(current.vectors.T, dtype=torch.float64))
    return sc.Overlap(cosines=np.asarray(cos), previous_step=int(previous_step),
                      loops=current.loops, dtype=current.dtype)


def blocks(op: HessianOperator, hs: HessianSettings, loops: int = 0) -> sc.Blocks:
    """Top eigenvalues and trace of each block's Hessian.

    Blocks: see :mod:`landscape.curvature.param_blocks`.

    Blocks by ``hs.blocks``: the architecture's layers, or one per parameter-name pattern.
    """
    from landscape.curvature.param_blocks import block_spectra
    from landscape.curvature.param_blocks import blocks as make_blocks

    groups = make_blocks(op.names, hs.block_patterns)
    res = block_spectra(op, groups, hs.k_top, tol=hs.tol or None, max_steps=hs.max_steps,
                        trace_hvps=hs.trace_hvps, seed=hs.seed)
    out = {name: sc.BlockSpectrum(values=np.asarray(r["values"]),
                                  converged=np.asarray(r["converged"]),
                                  trace=float(r["trace"]), trace_stderr=float(r["trace_stderr"]),
                                  dim=int(r["dim"]), names=np.array(r["names"], dtype=object))
           for name, r in res.items()}
    return sc.Blocks(groups=out, hvps=sum(r["hvps"] for r in res.values()),
                     **_hessian_fields(op, loops))


def pyhessian(model: torch.nn.Module, split, hs: HessianSettings, loops: int = 0) -> sc.PyHessian:
    """PyHessian 0.1's top eigenvalues and trace on ``model`` and ``split`` (the peer)."""
    from landscape.probe.pyhessian_backend import pyhessian_backend

    res = pyhessian_backend(model, split, top_n=min(hs.k_top, 5), seed=hs.seed)
    return sc.PyHessian(eigenvalues=np.asarray(res.eigenvalues), trace=float(res.trace),
                        trace_stderr=float(res.trace_stderr), unsupported=dict(res.unsupported),
                        hvps=res.n_hvp_eigen + res.n_hvp_trace, loops=int(loops),
                        dtype=hs.dtype)


# --- geometry parts ---------------------------------------------------------------------

_VALLEY_CORE = ("eps", "tau", "lambda_max", "dim", "river_dim", "valley_dim", "negative_dim",
                "valley_min", "kappa", "small_count", "small_force", "label")


def valley(gs: GeometrySettings, dim: int, top_part: sc.Top, exact_part: sc.Exact | None = None,
           slq_part: sc.Slq | None = None) -> sc.Valley:
    """The river/valley split: of the exact spectrum where there is one, else of the density."""
    if exact_part is not None:
        s = split_spectrum(exact_part.eigvals, eps_rel=gs.eps_rel, tau_rel=gs.tau_rel)
        source = "exact"
    elif slq_part is not None:
        s = split_from_slq(slq_part.nodes, slq_part.weights, dim, eps_rel=gs.eps_rel,
                           tau_rel=gs.tau_rel, lambda_max=top_part.lambda_max)
        source = "slq"
    else:
        raise LandscapeError("the valley split needs the exact spectrum or an SLQ density")
    fields = dataclasses.asdict(s)
    core = {k: fields.pop(k) for k in _VALLEY_CORE}
    core = {k: (float(v) if k not in ("dim", "label") else v) for k, v in core.items()}
    return sc.Valley(source=source, extra=fields, **core)


def valley_basis(top_part: sc.Top, eps_rel: float) -> np.ndarray:
    """``[P, k]`` the top eigenvectors above the river threshold ``eps_rel * lambda_max``."""
    keep = np.flatnonzero(top_part.values > eps_rel * top_part.values[0])
    return top_part.vectors[keep].T


def widths(loss_fn: LossFn, params: Mapping[str, torch.Tensor], top_part: sc.Top,
           gs: GeometrySettings) -> sc.Widths | None:
    """Valley widths along the top ``width_dirs`` valley eigenvectors (None: empty valley)."""
    lam = top_part.values
    keep = np.flatnonzero(lam > gs.eps_rel * lam[0])[: gs.width_dirs]
    if not keep.size:
        return None
    w = valley_widths(loss_fn, params, top_part.vectors[keep].T, lam[keep], gs.delta,
                      gs.width_points)
    return sc.Widths(delta=gs.delta, **{k: np.asarray(v) for k, v in w.items()})


def spread(loss_fn: LossFn, params: Mapping[str, torch.Tensor], gs: GeometrySettings,
           top_part: sc.Top, exact_part: sc.Exact | None = None,
           op: HessianOperator | None = None, adam_v: np.ndarray | None = None,
           adam_step: int = 0, beta2: float = 0.999, eps: float = 1e-8) -> sc.Spread:
    """The direction spread of H and of Adam's preconditioned Hessian.

    See :func:`landscape.geometry.measurements.valley_spread`.

    The valley subspace is the span of the top ``gs.spread_k`` eigenvectors (fewer where
    the probe computed fewer; the part stores the k used): the exact ones where the exact
    part has them, else the Lanczos ones of ``top_part``. On the
    preconditioned Hessian: its exact top eigenvectors, or Lanczos on
    :func:`landscape.curvature.hessian.preconditioned_operator` (``op`` needed), with directions
    scaled by ``D^-1/2``.
    """
    use_exact = exact_part is not None and exact_part.vectors is not None
    vecs = exact_part.vectors if use_exact else top_part.vectors
    vals = np.sort(exact_part.eigvals)[::-1] if use_exact else top_part.values
    k = min(gs.spread_k, vecs.shape[0])  # fewer where the probe has fewer (stored as k)
    h = valley_spread(loss_fn, params, vecs[:k], float(vals[0]), gs.spread_dirs, gs.delta,
                      gs.seed)
    adam: dict = {}
    if adam_v is not None and adam_step >= 1:
        d = precondition_denominator(adam_v, adam_step, beta2, eps)
        if use_exact and exact_part.adam_vectors is not None:
            avecs = exact_part.adam_vectors[:k]
            atop = float(np.max(exact_part.adam_eigvals))
        elif op is not None:
            pre = preconditioned_operator(op, torch.as_tensor(adam_v, device=op.device),
                                          eps=eps, step=adam_step, beta2=beta2)
            res = lanczos(pre, k_top=k, tol=1e-3, max_steps=min(300, op.dim), seed=gs.seed)
            avecs = res.top_vectors.T.to(torch.float64).cpu().numpy()
            atop = float(res.top_values[0])
        else:
            avecs = None
        if avecs is not None:
            a = valley_spread(loss_fn, params, avecs, atop, gs.spread_dirs, gs.delta, gs.seed,
                              scale=1.0 / np.sqrt(d))
            adam = {"adam_radius": a["radius"], "adam_rises": a["rises"], "adam_cv": a["cv"],
                    "adam_p90_p10": a["p90_p10"]}
    return sc.Spread(k=k, delta=gs.delta, radius=h["radius"], rises=h["rises"], cv=h["cv"],
                     p90_p10=h["p90_p10"], source="exact" if use_exact else "lanczos", **adam)


def river(before: np.ndarray, after: np.ndarray, basis: np.ndarray) -> sc.River:
    """The river direction: the step ``before -> after`` with the valley ``basis`` removed."""
    rd = river_direction(before, after, basis)
    return sc.River(direction=rd.direction.astype(np.float32), step_norm=float(rd.step_norm),
                    river_norm=float(rd.river_norm), valley_fraction=float(rd.valley_fraction),
                    degenerate=bool(rd.degenerate), valley_rank=int(basis.shape[1]))


def plane_hash(plane: Plane) -> str:
    """A fingerprint of a plane's directions: equal hashes, the same plane."""
    h = hashlib.sha1()
    for axis in (plane.x, plane.y):
        for name in sorted(axis):
            h.update(name.encode())
            h.update(np.ascontiguousarray(axis[name].float().cpu().numpy()).tobytes())
    return h.hexdigest()


def evaluate_grid(loss_fn: LossFn, params: Mapping[str, torch.Tensor], plane: Plane,
                  alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, int]:
    """The grid in one process, from scratch: ``(losses, 0 resumed cells)``."""
    return loss_grid(loss_fn, params, plane, alphas, betas), 0


def surface(cls: type[sc.Grid], loss_fn: LossFn, params: Mapping[str, torch.Tensor],
            plane: Plane, alphas: np.ndarray, betas: np.ndarray, *, loops: int = 0,
            info: Mapping | None = None, directions: bool = True,
            evaluate: GridEvaluator | None = None) -> sc.Grid:
    """A 2-D loss grid ``loss(params + a x + b y)`` as the stored part ``cls``."""
    loss, resumed = (evaluate or evaluate_grid)(loss_fn, params, plane, alphas, betas)
    dirs = None
    if directions:
        dirs = {"x": {k: v.float().cpu().numpy() for k, v in plane.x.items()},
                "y": {k: v.float().cpu().numpy() for k, v in plane.y.items()}}
    return cls(alphas=np.asarray(alphas), betas=np.asarray(betas), loss=np.asarray(loss),
               plane=dict(info if info is not None else plane.info), loops=int(loops),
               plane_hash=plane_hash(plane), directions=dirs, resumed_cells=int(resumed))


def slice_random(loss_fn: LossFn, params: Mapping[str, torch.Tensor], gs: GeometrySettings,
                 loops: int = 0, evaluate: GridEvaluator | None = None) -> sc.SliceRandom:
    """The loss on a random filter-normalised plane around ``params`` (seed ``gs.seed``)."""
    plane = _random_plane(params, gs.seed)
    axis = make_axis(-gs.span, gs.span, gs.grid)
    return surface(sc.SliceRandom, loss_fn, params, plane, axis, axis, loops=loops,
                   info={**plane.info, "seed": gs.seed}, evaluate=evaluate)


def slice_shared(loss_fn: LossFn, params: Mapping[str, torch.Tensor], plane: Plane,
                 gs: GeometrySettings, loops: int = 0,
                 evaluate: GridEvaluator | None = None) -> sc.SliceShared:
    """The loss on a plane shared between runs.

    The plane: :func:`~landscape.geometry.directions.shared_plane`.
    """
    axis = make_axis(-gs.span, gs.span, gs.grid)
    return surface(sc.SliceShared, loss_fn, params, plane, axis, axis, loops=loops,
                   info={**plane.info, "seed": gs.seed}, evaluate=evaluate)


def slice_river_valley(loss_fn: LossFn, params: Mapping[str, torch.Tensor], river_part: sc.River,
                       top_part: sc.Top, gs: GeometrySettings, loops: int = 0,
                       evaluate: GridEvaluator | None = None) -> sc.SliceRiverValley:
    """The loss on the plane of the river direction and the top valley eigenvector.

    The river axis spans twice the step on each side, the valley axis three quadratic
    half-widths at ``gs.delta``. Where there is no river direction or no valley, the part
    is stored as skipped.
    """
    basis = valley_basis(top_part, gs.eps_rel)
    if river_part.degenerate or basis.shape[1] == 0:
        return sc.SliceRiverValley(skipped="no river direction or empty valley at this "
                                           "checkpoint", loops=int(loops))
    layout = ParamLayout.of(params)
    plane = Plane(unit_direction(layout, river_part.direction),
                  unit_direction(layout, basis[:, 0]), {"kind": "river_valley"})
    step_len = max(river_part.step_norm, 1e-8)
    a = make_axis(-2 * step_len, 2 * step_len, gs.grid)
    half = 3 * math.sqrt(2 * gs.delta / top_part.lambda_max)
    b = make_axis(-half, half, gs.grid)
    return surface(sc.SliceRiverValley, loss_fn, params, plane, a, b, loops=loops,
                   info={"kind": "river_valley", "x": "river (unit)",
                         "y": "top valley eigenvector (unit)"}, evaluate=evaluate)


# --- run-level parts --------------------------------------------------------------------


def river_progress(trajectory: np.ndarray, steps: Sequence[int], tops: Mapping[int, sc.Top],
                   gs: GeometrySettings) -> sc.RiverProgress:
    """Progress along the river over the trajectory ``[n, P]`` at checkpoints ``steps``.

    Each step between checkpoints has the valley of the nearest probed checkpoint (a key
    of ``tops``) removed.
    """
    probed = np.array(sorted(tops))
    bases = []
    for s in list(steps)[:-1]:
        nearest = int(probed[np.argmin(np.abs(probed - s))])
        bases.append(valley_basis(tops[nearest], gs.eps_rel))
    rp = _river_progress(trajectory, valley_basis=bases)
    return sc.RiverProgress(steps=np.asarray(steps), progress=np.asarray(rp.progress),
                            river_steps=np.asarray(rp.river_steps),
                            off_river_steps=np.asarray(rp.off_river_steps),
                            probed_steps=probed, signed=bool(rp.signed))


def pca(loss_fn: LossFn, layout: ParamLayout, trajectory: np.ndarray, steps: Sequence[int],
        gs: GeometrySettings, device: str | torch.device = "cpu", loops: int = 0,
        evaluate: GridEvaluator | None = None) -> sc.Pca:
    """The PCA plane of the trajectory (around its last row) with a loss grid on it."""
    p = pca_directions(trajectory, centred=False)
    proj = projection_losses(loss_fn, layout, trajectory, p.centre.float().to(device), p)
    x, y = p.directions(layout)
    coords = p.coords.numpy()
    lo, hi = coords.min(0), coords.max(0)
    pad = 0.2 * np.maximum(hi - lo, 1e-6)
    ext = np.maximum(np.abs(lo - pad), np.abs(hi + pad))
    a = make_axis(-ext[0], ext[0], gs.grid)
    b = make_axis(-ext[1], ext[1], gs.grid)
    params = layout.unflatten(torch.as_tensor(trajectory[-1]).to(device=device,
                                                                 dtype=torch.float32))
    grid = surface(sc.Grid, loss_fn, params, Plane(x, y, p.info), a, b, loops=loops,
                   directions=False, evaluate=evaluate)
    return sc.Pca(grid=grid, components=p.components.float().numpy(), coords=coords,
                  residuals=p.residuals.numpy(), steps=np.asarray(steps),
                  true_loss=np.asarray(proj.true_loss), plane_loss=np.asarray(proj.plane_loss),
                  explained_variance_ratio=p.explained_variance_ratio.numpy())


def loop_curve(loss_fn_at: Callable[[int], LossFn], params: Mapping[str, torch.Tensor],
               trained_loops: int, gs: GeometrySettings, step: int = -1) -> sc.LoopCurve:
    """Loss and lambda_max at fixed weights for 1 .. ``loops_max`` loops."""
    n = gs.loops_max or max(2 * trained_loops, 6)
    res = _loop_curve(loss_fn_at, params, list(range(1, n + 1)))
    return sc.LoopCurve(loops=res["loops"], loss=res["loss"], lambda_max=res["lambda_max"],
                        converged=res["converged"], hvps_per_loop=res["hvps"],
                        hvps=int(res["hvps"].sum()), step=int(step),
                        trained_loops=int(trained_loops))


def switch(operator_at: Callable[[int], HessianOperator], loss_fn_after: LossFn,
           checkpoints: Sequence[Mapping[str, torch.Tensor] | None], loops_after: int,
           hs: HessianSettings, gs: GeometrySettings, step: int = -1,
           evaluate: GridEvaluator | None = None) -> sc.Switch:
    """The SHIFT switch: top spectrum under 1 and ``loops_after`` loops, and a grid.

    Args:
        operator_at: ``operator_at(loops)``, the Hessian operator at the switch checkpoint.
        loss_fn_after: the objective under ``loops_after``.
        checkpoints: float32 parameters of the switch, the next and the previous
            checkpoint (None where the switch is the first).
        loops_after: loops after the switch.
        hs: eigenvalue and trace settings.
        gs: grid settings.
        step: the switch checkpoint's step.
        evaluate: grid evaluator.
    """
    sides, vecs, hvps = {}, {}, 0
    for name, loops in (("before", 1), ("after", loops_after)):
        op = operator_at(loops)
        t = lanczos(op, k_top=hs.k_top, tol=hs.tol or None, max_steps=min(hs.max_steps, op.dim))
        tr = hutchpp(op, hs.trace_hvps + hs.k_top, basis=t.top_vectors, seed=hs.seed)
        sides[name] = sc.SwitchSide(loss=float(op.loss), values=np.asarray(t.top_values),
                                    trace=float(tr.estimate), trace_stderr=float(tr.stderr))
        vecs[name] = t.top_vectors.double().cpu()
        hvps += op.n_matvec
    cos = subspace_overlap(vecs["before"], vecs["after"])
    here, nxt, prev = checkpoints
    plane = plane_through(here, nxt, prev, seed=gs.seed)
    axis = make_axis(-1.5, 1.5, gs.grid)
    grid = surface(sc.Grid, loss_fn_after, here, plane, axis, axis, loops=loops_after,
                   directions=False, evaluate=evaluate)
    return sc.Switch(before=sides["before"], after=sides["after"], overlap=np.asarray(cos),
                     loss_jump=sides["after"].loss - sides["before"].loss, slice=grid,
                     step=int(step), loops_after=int(loops_after), hvps=hvps)


def qk_cosine(loss_fn_at: Callable[[int], LossFn], params: Mapping[str, torch.Tensor],
              loops: Sequence[int] = QK_LOOPS) -> float:
    """Cosine between the W_Q/W_K gradients under two loop counts at the same weights."""
    grads = []
    for n in loops:
        g = torch.func.grad(loss_fn_at(int(n)))(params)
        names = [k for grp, ks in param_groups(g).items() if grp in ("q", "k") for k in ks]
        if not names:
            raise LandscapeError("the model has no attention Q/K parameters")
        grads.append(torch.cat([g[k].reshape(-1) for k in names]))
    return float(torch.nn.functional.cosine_similarity(*grads, dim=0))


def qk_alignment(checkpoints: Sequence[tuple[int, Callable[[int], LossFn],
                                             Mapping[str, torch.Tensor]]],
                 loops: Sequence[int] = QK_LOOPS) -> sc.QkAlignment:
    """:func:`qk_cosine` at each ``(step, loss_fn_at, params)``."""
    return sc.QkAlignment(steps=np.array([s for s, _, _ in checkpoints], dtype=np.int64),
                          loops=np.asarray(loops, dtype=np.int64),
                          cosine=np.array([qk_cosine(f, p, loops) for _, f, p in checkpoints]))


# --- the optimiser's valley and the intervention (claim 4) ------------------------------


def _numpy_hvp(op: HessianOperator) -> Callable[[np.ndarray], np.ndarray]:
    def hvp(v: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(v, dtype=op.dtype, device=op.device)
        return op.matvec(t).double().cpu().numpy()
    return hvp


def optimiser_valley(op: HessianOperator, top_part: sc.Top, lr: float,
                     optimizer: OptimizerRecord | None, adam_v: np.ndarray | None,
                     adam_step: int, window_updates: np.ndarray | None = None,
                     window_start: int = -1, k: int = 16,
                     factor: float = NEAR_EDGE, fallback_k: int = FALLBACK_K,
                     alt_k: int | None = None) -> sc.OptimiserValley:
    """The valley AdamW defines at a checkpoint: edge span, alternating span, angles, U/V.

    See :mod:`landscape.geometry.optimiser_valley` and :class:`~landscape.runfile.schema.
    OptimiserValley`. ``k`` preconditioned eigenpairs are examined (Lanczos on
    :func:`landscape.curvature.hessian.preconditioned_operator`); the raw span compared
    is ``top_part``'s top ``fallback_k`` eigenvectors; the alternating span has
    ``alt_k`` directions (default: the edge span's size, at most the window's ``n - 2``).

    Raises:
        LandscapeError: not AdamW/Adam, no second moment (before the first step), or an
            unknown learning rate.
    """
    opt = optimizer or OptimizerRecord(UNKNOWN_OPTIMIZER)
    edge = opt.edge(lr)
    if not opt.preconditioned or adam_v is None or adam_step < 1 or not math.isfinite(edge):
        raise LandscapeError("the optimiser's valley needs AdamW's second moment after at "
                             f"least one step and its edge ({opt.label}, step {adam_step}, "
                             f"lr {lr:g})")
    n0 = op.n_matvec
    denominator = precondition_denominator(adam_v, adam_step, opt.beta2, opt.eps)
    pre = preconditioned_operator(op, torch.as_tensor(adam_v, device=op.device), eps=opt.eps,
                                  step=adam_step, beta2=opt.beta2)
    res = lanczos(pre, k_top=min(k, op.dim), max_steps=min(300, op.dim))
    ev = edge_valley(np.asarray(res.top_values), res.top_vectors.T.double().cpu().numpy(),
                     denominator, edge, factor, fallback_k)
    raw = orthonormal_rows(top_part.vectors[:fallback_k])
    hvp = _numpy_hvp(op)
    em = restricted_measures(restricted_hessian(hvp, ev.basis))
    alt: dict = {}
    if window_updates is not None and np.asarray(window_updates).shape[0] >= 3:
        upd = np.asarray(window_updates, dtype=np.float64)
        span = alternating_span(upd, min(alt_k or ev.k, upd.shape[0] - 2))
        am = restricted_measures(restricted_hessian(hvp, span.basis))
        alt = {"window_start": int(window_start), "alt_basis": span.basis.astype(np.float32),
               "alt_singular": span.singular_values, "alt_captured": span.captured,
               "alt_share": span.alternating_share,
               "angles_edge_alt": principal_angles(ev.basis, span.basis),
               "angles_raw_alt": principal_angles(raw, span.basis), "alt_eigvals": am.eigvals,
               "alt_kappa": am.kappa, "alt_force": am.force, "alt_cv": am.steepness_cv}
    return sc.OptimiserValley(
        edge=ev.edge, factor=ev.factor, near_edge=ev.near_edge, all_near=ev.all_near,
        k=ev.k, note=ev.note, pre_values=ev.eigvals, basis=ev.basis.astype(np.float32),
        raw_k=int(raw.shape[0]), angles_raw_edge=principal_angles(raw, ev.basis),
        edge_eigvals=em.eigvals, edge_kappa=em.kappa, edge_force=em.force,
        edge_cv=em.steepness_cv, hvps=op.n_matvec - n0, **alt)


def intervention(path, start: int, steps: int, valley: np.ndarray,
                 probe_loss: Callable[[np.ndarray], float],
                 valley_source: str = "edge") -> sc.Intervention:
    """Claim 4's intervention: K steps from ``start``, unchanged and valley removed.

    Args:
        path: a run file of ``landscape train`` with an intervention start at ``start``.
        start: the start step.
        steps: K.
        valley: ``[k, P]`` orthonormal rows of the valley span (e.g. an
            :class:`~landscape.runfile.schema.OptimiserValley`'s ``basis``).
        probe_loss: flat float32 parameters ``[P]`` -> the run's probe-set loss.
        valley_source: the span's name, stored.
    """
    v = orthonormal_rows(valley)
    arms = {"unchanged": continue_from(path, start, steps),
            "removed": continue_from(path, start, steps, valley=v)}
    first = arms["unchanged"].params
    u = per_step_river(first[-1].astype(np.float64) - first[0], v)
    out = {}
    for name, c in arms.items():
        moved = c.params[-1].astype(np.float64) - c.params[0]
        out[name] = sc.InterventionArm(
            loss_end=float(probe_loss(c.params[-1])), batch_loss=c.batch_loss,
            river=float(u @ moved), valley=float(np.linalg.norm(v @ moved)),
            valley_path=float(np.linalg.norm(c.updates.astype(np.float64) @ v.T, axis=1).sum()))
    return sc.Intervention(steps=int(steps), valley_k=int(v.shape[0]),
                           valley_source=valley_source, projects="adam_update",
                           loss_start=float(probe_loss(first[0])), **out)
