"""``landscape probe``: Hessian and River-Valley diagnostics on a run file's checkpoints.

For every selected checkpoint the objective is the run's loss on its stored probe set
(mean over all scored tokens), for the architecture live at that checkpoint: for a
Looped-Attn checkpoint, the loss after the final loop. The model is rebuilt from the run
file, evaluated with ``functional_call``, and never trained: nothing of the caller's is
touched.

Each result is a *part* stored under ``/probe/step_<N>/<kind>/<part>`` (or
``/probe/run/<part>`` for run-level results) and committed atomically as soon as it is
done, with its HVP count and seconds. A second call skips parts already present
(``force=True`` recomputes), and a killed probe resumes at the first missing part (a
half-finished grid resumes at its first missing cell).

Hessian parts (``kind = hessian``):
    ``top``     top-k and bottom-k eigenvalues by Lanczos (residuals, converged flags, top-k
                eigenvectors), warm-started from the previous probed checkpoint;
    ``trace``   Hutch++ with the top-k vectors deflated: trace, stderr, bulk trace;
    ``slq``     stochastic Lanczos quadrature nodes and weights (raw);
    ``exact``   the full spectrum (dense Hessian, float64 ``eigh``) where P is small;
    ``sharpness`` lambda_max beside 2/lr, and the Adam-preconditioned lambda_max beside
                38/lr (Cohen et al. 2022), with the learning rate at that step;
    ``overlap`` cosines of the principal angles between this and the previous probed
                checkpoint's top-k eigenspaces;
    ``blocks``  (on request) top eigenvalues and trace of each parameter group's block;
    ``pyhessian`` (``backend="pyhessian"``) PyHessian 0.1's eigenvalues and trace.
Geometry parts (``kind = geometry``): ``valley`` (river/valley split, kappa, small
eigenvalue count and force, U/V label), ``widths`` (valley widths along the top valley
eigenvectors), ``river`` (the river direction's share of the step), ``slice_random``
and ``slice_river_valley`` (2-D grids), and on request ``slice_shared`` (a random plane
normalised against a reference checkpoint, so that several runs are sliced along the same
directions; see :attr:`GeometrySettings.shared_plane`). Run-level parts:
``river_progress``, ``pca`` (plane of the trajectory with its grid), ``loops`` (loss and
lambda_max vs loops) and, for SHIFT runs, ``switch``.

Under ``torchrun`` (see :mod:`landscape.distributed`) every rank runs the same probe, on
the CPU (gloo) or, with ``device="cuda"``, on its own GPU (nccl):
Hessian products are sharded over the probe set and summed, grid cells are dealt out and
gathered, rank 0 decides which parts are already stored and alone writes them. The other
parts (valley split, widths, loop curve, PyHessian) are computed on every rank alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from landscape import distributed, store
from landscape.directions import (
    Plane,
    pca_directions,
    plane_through,
    projection_losses,
    random_plane,
    shared_plane,
)
from landscape.errors import LandscapeError
from landscape.geometry import loop_curve, unit_direction, valley_widths
from landscape.hessian import (
    HessianOperator,
    param_groups,
    preconditioned_operator,
    pyhessian_backend,
    stability_threshold,
)
from landscape.objective import make_loss_fn
from landscape.run import Run
from landscape.slices import loss_grid, make_axis
from landscape.spectral import default_tol, exact_spectrum, hutchpp, lanczos, slq
from landscape.spectral import subspace_overlap as _overlap
from landscape.tasks.base import Split
from landscape.valley import river_direction, river_progress, split_from_slq, split_spectrum

if TYPE_CHECKING:
    from landscape.distributed import Ranks

Report = Callable[[str], None]
EXACT_OPTIONS = ("auto", "always", "never")


@dataclass(frozen=True)
class HessianSettings:
    """What the Hessian probe computes. CLI flags of ``landscape probe --hessian``."""

    k_top: int = 10  # top eigenpairs (the sharpest valley directions)
    k_bottom: int = 5  # bottom eigenvalues (negative curvature)
    tol: float = 0.0  # Lanczos relative residual tolerance; 0: 1e-4 float32, 1e-8 float64
    max_steps: int = 300  # Lanczos step cap
    trace_hvps: int = 60  # Hutch++ budget beyond the deflated top-k
    slq_runs: int = 10  # SLQ start vectors
    slq_steps: int = 90  # Lanczos steps per SLQ run
    exact: str = "auto"  # full spectrum: "auto" (P <= exact_max_params), "always", "never"
    exact_max_params: int = 3000  # the "auto" bound (the dense Hessian costs P HVPs)
    blocks: bool = False  # per-parameter-group spectra
    dtype: str = "float32"  # "float32" or "float64" products
    backend: str = "landscape"  # "landscape", or "pyhessian" to add PyHessian's numbers
    seed: int = 0

    def __post_init__(self):
        if self.k_top < 1 or self.k_bottom < 0:
            raise LandscapeError("hessian: k_top must be >= 1 and k_bottom >= 0")
        if self.exact not in EXACT_OPTIONS:
            raise LandscapeError(f"hessian: exact must be one of {EXACT_OPTIONS}")
        if self.dtype not in ("float32", "float64"):
            raise LandscapeError("hessian: dtype must be float32 or float64")
        if self.backend not in ("landscape", "pyhessian"):
            raise LandscapeError("hessian: backend must be landscape or pyhessian")
        if min(self.slq_runs, self.slq_steps, self.trace_hvps, self.max_steps) < 1:
            raise LandscapeError("hessian: slq_runs, slq_steps, trace_hvps, max_steps >= 1")


@dataclass(frozen=True)
class GeometrySettings:
    """What the geometry probe computes. CLI flags of ``landscape probe --geometry``."""

    eps_rel: float = 1e-3  # river threshold relative to lambda_max (see valley.py)
    tau_rel: float = 0.1  # small-valley-eigenvalue threshold relative to lambda_max
    delta: float = 0.02  # loss rise (nats) at which valley widths are read
    width_dirs: int = 3  # top valley eigenvectors to measure widths along
    width_points: int = 31  # points per width slice (odd)
    grid: int = 21  # points per axis of 2-D slices (odd)
    span: float = 1.0  # half-extent of the random plane (filter-normalised units)
    loops_max: int = 0  # loop curve up to this many loops; 0: twice the trained loops
    seed: int = 0  # random plane seed
    # A random plane shared between runs ("" for none): "init" normalises it against the
    # run's own first checkpoint (runs started from the same initialisation, e.g. Single-
    # and Looped-Attn with one seed, then get the same directions); "PATH" or "PATH:STEP"
    # against a checkpoint of another run file (default: its first). Stored as slice_shared.
    shared_plane: str = ""

    def __post_init__(self):
        if self.grid % 2 == 0 or self.width_points % 2 == 0:
            raise LandscapeError("geometry: grid and width_points must be odd (the origin "
                                 "must be a grid point)")
        if self.delta <= 0 or not 0 < self.eps_rel < self.tau_rel:
            raise LandscapeError("geometry: need delta > 0 and 0 < eps_rel < tau_rel")


@dataclass(frozen=True)
class ProbeSettings:
    """A whole probe call."""

    steps: str = "spaced:6"  # "all", "last", "spaced:K" or "N,M,..." (optimiser steps)
    hessian: HessianSettings | None = field(default_factory=HessianSettings)
    geometry: GeometrySettings | None = None
    force: bool = False  # recompute parts already stored
    device: str = "cpu"  # where products and grids are computed ("cuda" on a GPU)


def select_steps(run: Run, spec: str) -> list[int]:
    """The checkpoint steps named by ``spec`` (see :class:`ProbeSettings`)."""
    steps = [int(s) for s in run.steps]
    if not steps:
        raise LandscapeError(f"{run.path} has no checkpoints")
    spec = spec.strip()
    if spec == "all":
        return steps
    if spec == "last":
        return steps[-1:]
    if spec.startswith("spaced:"):
        k = int(spec.split(":", 1)[1])
        if k < 1:
            raise LandscapeError("--steps spaced:K needs K >= 1")
        idx = np.unique(np.round(np.linspace(0, len(steps) - 1, min(k, len(steps)))))
        chosen = {steps[int(i)] for i in idx}
        if run.shift_step is not None:
            chosen.add(run.shift_step)  # the switch is always probed
        return sorted(chosen)
    try:
        wanted = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise LandscapeError(f"--steps {spec!r}: use all, last, spaced:K or N,M,...") from None
    for s in wanted:
        run.index(s)  # raises with the available steps
    return sorted(set(wanted))


def _shared_reference(run: Run, spec: str) -> tuple[str, dict[str, torch.Tensor]]:
    """``(name, float32 parameters)`` of the checkpoint a shared plane is normalised against.

    ``spec``: ``init`` (``run``'s own first checkpoint), ``PATH`` (that run file's first
    checkpoint) or ``PATH:STEP``. The reference must have ``run``'s parameter layout.
    """
    spec = spec.strip()
    if spec == "init":
        step = int(run.steps[0])
        return f"init (step {step})", run.params(step, dtype=torch.float32)
    path, step = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail.strip().lstrip("-").isdigit():
        path, step = head, int(tail)
    ref = Run.open(path)
    if not len(ref.steps):
        raise LandscapeError(f"--shared-plane {spec}: {path} has no checkpoints")
    step = int(ref.steps[0]) if step is None else step
    ref.index(step)  # raises with the available steps
    if ref.layout.names != run.layout.names or ref.layout.shapes != run.layout.shapes:
        raise LandscapeError(f"--shared-plane {spec}: {path} has a different parameter layout "
                             f"from {run.path} (a plane can only be shared by same-shape "
                             "models)")
    return f"{Path(path).name} step {step}", ref.params(step, dtype=torch.float32)


class Prober:
    """Runs the parts of a probe on one run file, committing each as it finishes.

    ``ranks``: the process group when several processes probe together (Hessian products
    and grid cells shared out, rank 0 decides and writes); None for one process.
    """

    def __init__(self, path: str | Path, settings: ProbeSettings, report: Report | None = None,
                 ranks: Ranks | None = None, trust_code: bool = False):
        self.path, self.ranks = Path(path), ranks
        self._reduce = None if ranks is None else ranks.all_reduce_sum
        self.settings = settings
        self.report = report or (lambda msg: None)
        self.run = Run.open(self.path, trust_code=trust_code)
        self.run.require_code()
        if self.run.custom:
            _check_custom(self.run, settings, ranks)
        store.read_probe_set(self.path)  # raises if there is none
        hs, p = settings.hessian, self.run.layout.size
        if hs is not None and hs.k_top + hs.k_bottom > p:
            raise LandscapeError(f"k_top + k_bottom = {hs.k_top + hs.k_bottom} exceeds the "
                                 f"model's {p} parameters")
        self.device = torch.device(settings.device) if ranks is None else ranks.device
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise LandscapeError("--device cuda: no CUDA device is available")
        self.shared = None  # the --shared-plane plane, the same at every step
        if settings.geometry is not None and settings.geometry.shared_plane:
            name, ref = _shared_reference(self.run, settings.geometry.shared_plane)
            self.shared = shared_plane({k: v.to(self.device) for k, v in ref.items()},
                                       settings.geometry.seed, reference_name=name)
        if self.run.custom:  # a model of your own: its recorded loss on its probe set
            self.probe_split_cpu = self.probe_split = None
        else:
            self.probe_split_cpu = self.run.split("probe")
            self.probe_split = Split(self.probe_split_cpu.inputs.to(self.device),
                                     self.probe_split_cpu.targets.to(self.device))
        self.hvps = 0

    # --- storage helpers ----------------------------------------------------------------

    def _stored(self, group: str) -> dict | None:
        """The complete part at ``group``, or None; with ranks, rank 0's answer for all."""
        found = self._read_complete(group) if self.ranks is None or self.ranks.is_main else None
        if self.ranks is None:
            return found
        if not self.ranks.broadcast_object(found is not None):
            return None
        return found if found is not None else self._read_complete(group)

    def _read_complete(self, group: str) -> dict | None:
        found = store.read_group(self.path, group)
        if found is None or not found["attrs"].get("complete", False):
            return None
        return found

    def _part(self, group: str, compute: Callable[[], dict], label: str) -> dict:
        """Return the stored part, or compute, commit and return it."""
        if not self.settings.force:
            found = self._stored(group)
            if found is not None:
                return found
        t0 = time.perf_counter()
        arrays, attrs = compute()
        attrs = {**attrs, "seconds": time.perf_counter() - t0, "complete": True}

        def change(tx: store.Transaction) -> None:
            tx.delete(group)
            tx.put(group, arrays, attrs)

        if self.ranks is None or self.ranks.is_main:
            store.commit(self.path, change)
        hv = attrs.get("hvps")
        self.report(f"{label}: {attrs['seconds']:.1f} s" + (f", {hv} HVPs" if hv else ""))
        return {"attrs": attrs, **arrays}

    def _params(self, step: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return self.run.params(step, dtype=dtype, device=self.device)

    def _loss_fn(self, step: int, loops: int | None = None):
        if self.run.custom:
            return self.run.loss_fn("probe", step, device=self.device)
        return make_loss_fn(self.run.model(step, loops=loops, device=self.device),
                            self.probe_split)

    def _hvp_loss_fn(self, step: int, loops: int | None = None):
        """The objective of Hessian products: with ranks, this rank's weighted share of it."""
        if self.ranks is None:
            return self._loss_fn(step, loops)
        from landscape.distributed import sharded_loss_fn

        return sharded_loss_fn(self.run.model(step, loops=loops, device=self.device),
                               self.probe_split, self.ranks)

    def _loss_grid(self, loss_fn, params, plane, alphas, betas) -> np.ndarray:
        """A grid whose cells are shared out between the ranks (``self.ranks`` is set)."""
        from landscape.distributed import sharded_loss_grid

        return sharded_loss_grid(loss_fn, params, plane, alphas, betas, ranks=self.ranks)

    # --- the driver ---------------------------------------------------------------------

    def probe(self) -> list[int]:
        """Probe every selected checkpoint, then the run-level parts. Returns the steps."""
        steps = select_steps(self.run, self.settings.steps)
        prev = None
        for step in steps:
            loops = int(self.run.loops[self.run.index(step)])
            self.report(f"step {step} (loops {loops})")
            if self.settings.hessian is not None:
                self._hessian(step, prev)
            if self.settings.geometry is not None:
                self._geometry(step)
            prev = step
        if self.settings.geometry is not None and len(steps) >= 2:
            self._river_progress(steps)
            self._pca()
            if not self.run.custom:  # a model of your own has no loops to vary
                self._loops()
            if self.run.shift_step is not None:
                self._switch()
        return steps

    # --- Hessian ------------------------------------------------------------------------

    def _operator(self, step: int, loops: int | None = None) -> HessianOperator:
        hs = self.settings.hessian
        dtype = torch.float64 if hs.dtype == "float64" else torch.float32
        op = HessianOperator(self._hvp_loss_fn(step, loops), self._params(step, dtype),
                             dtype=dtype, reduce=self._reduce)
        op.check_determinism(seed=hs.seed)
        return op

    def _hessian(self, step: int, prev: int | None) -> None:
        hs = self.settings.hessian
        base = store.probe_group(step, "hessian")
        op = None

        def get_op():
            nonlocal op
            if op is None:
                op = self._operator(step)
            return op

        loops = int(self.run.loops[self.run.index(step)])
        common = {"loops": loops, "dtype": hs.dtype, "objective":
                  f"mean token loss on the probe set after {loops} loop(s)"}
        warm = self._top_vectors(prev) if prev is not None else None
        top = self._part(f"{base}/top", lambda: _top_part(get_op(), hs, warm, common),
                         f"  hessian top-{hs.k_top}/bottom-{hs.k_bottom}")
        vecs = torch.as_tensor(top["vectors"]).T  # [P, k]
        self._part(f"{base}/trace", lambda: _trace_part(get_op(), hs, vecs, common),
                   "  hessian trace (Hutch++)")
        self._part(f"{base}/slq", lambda: _slq_part(get_op(), hs, common), "  hessian SLQ")
        if hs.exact == "always" or (hs.exact == "auto" and self.run.layout.size
                                    <= hs.exact_max_params):
            self._part(f"{base}/exact", lambda: _exact_part(get_op(), common),
                       "  hessian exact spectrum")
        self._part(f"{base}/sharpness", lambda: self._sharpness_part(step, get_op(), top,
                                                                       common),
                   "  sharpness")
        if prev is not None:
            prev_vecs = self._top_vectors(prev)
            self._part(f"{base}/overlap", lambda: ({"cosines": _overlap(
                torch.as_tensor(prev_vecs, dtype=torch.float64),
                vecs.to(torch.float64))}, {"previous_step": prev, **common}),
                "  top-k overlap with the previous checkpoint")
        if hs.blocks:
            self._part(f"{base}/blocks", lambda: self._blocks_part(step, common),
                       "  per-block spectra")
        if hs.backend == "pyhessian":
            self._part(f"{base}/pyhessian", lambda: self._pyhessian_part(step, common),
                       "  PyHessian 0.1")
        if op is not None:
            self.hvps += op.n_matvec
        del op

    def _top_vectors(self, step: int) -> torch.Tensor | None:
        found = self._stored(f"{store.probe_group(step, 'hessian')}/top")
        if found is None:
            return None
        return torch.as_tensor(found["vectors"]).T.contiguous()

    def _sharpness_part(self, step: int, op: HessianOperator, top: dict, common: dict):
        lr = self.run.lr_at(step)
        beta1, beta2 = self.run.adam_betas or (0.9, 0.999)
        lam = float(top["values"][0])
        known = math.isfinite(lr) and lr > 0  # not recorded for an imported trajectory
        arrays = {"lambda_max": lam, "lr": lr,
                  "threshold": stability_threshold(lr) if known else math.nan,
                  "adam_threshold": stability_threshold(lr, beta1) if known else math.nan}
        v, adam_step = self.run.adam_state(step) if self.run.has_adam else (None, 0)
        n0 = op.n_matvec
        if adam_step >= 1:
            pre = preconditioned_operator(op, torch.as_tensor(v, device=op.device), eps=1e-8,
                                          step=adam_step, beta2=beta2)
            res = lanczos(pre, k_top=1, tol=1e-3, max_steps=min(100, op.dim))
            arrays["adam_lambda_max"] = float(res.top_values[0])
        else:
            arrays["adam_lambda_max"] = float("nan")  # no Adam state before the first step
        return arrays, {**common, "adam_step": adam_step, "hvps": op.n_matvec - n0}

    def _blocks_part(self, step: int, common: dict):
        hs = self.settings.hessian
        op = self._operator(step)
        arrays, hvps = {}, 0
        for group, names in param_groups(op.names).items():
            sub = op.restrict(names)
            k = min(hs.k_top, sub.dim)
            res = lanczos(sub, k_top=k, tol=hs.tol or None, max_steps=min(hs.max_steps, sub.dim))
            tr = hutchpp(sub, min(max(4, hs.trace_hvps), 3 * sub.dim), seed=hs.seed)
            arrays[group] = {"values": res.top_values, "converged": res.top_converged,
                             "trace": tr.estimate, "trace_stderr": tr.stderr,
                             "dim": sub.dim, "names": np.array(names, dtype=object)}
            hvps += sub.n_matvec
        return arrays, {**common, "hvps": hvps}

    def _pyhessian_part(self, step: int, common: dict):
        hs = self.settings.hessian
        model = self.run.model(step)
        res = pyhessian_backend(model, self.probe_split_cpu, top_n=min(hs.k_top, 5), seed=hs.seed)
        return ({"eigenvalues": res.eigenvalues, "trace": res.trace,
                 "trace_stderr": res.trace_stderr},
                {**common, "hvps": res.n_hvp_eigen + res.n_hvp_trace,
                 "unsupported": res.unsupported})

    # --- geometry -----------------------------------------------------------------------

    def _spectrum_for(self, step: int) -> dict:
        base = store.probe_group(step, "hessian")
        top = self._stored(f"{base}/top")
        if top is None:
            raise LandscapeError(f"step {step} has no Hessian probe; run `landscape probe "
                                 f"{self.path} --hessian --steps {step}` first")
        return {"top": top, "exact": self._stored(f"{base}/exact"),
                "slq": self._stored(f"{base}/slq")}

    def _geometry(self, step: int) -> None:
        gs = self.settings.geometry
        base = store.probe_group(step, "geometry")
        spec = self._spectrum_for(step)
        self._part(f"{base}/valley", lambda: _valley_part(spec, self.run.layout.size, gs),
                   "  valley split")
        top = spec["top"]
        lam, vecs = np.asarray(top["values"]), np.asarray(top["vectors"])
        eps = gs.eps_rel * lam[0]
        keep = np.flatnonzero(lam > eps)[: gs.width_dirs]
        if keep.size:
            self._part(f"{base}/widths", lambda: (valley_widths(
                self._loss_fn(step), self._params(step, torch.float64), vecs[keep].T,
                lam[keep], gs.delta, gs.width_points), {"delta": gs.delta}),
                "  valley widths")
        valley_basis = vecs[np.flatnonzero(lam > eps)].T  # [P, k]
        self._part(f"{base}/river", lambda: self._river_part(step, valley_basis),
                   "  river direction")
        self._part(f"{base}/slice_random", lambda: self._random_slice(step),
                   "  2-D slice, random plane")
        self._part(f"{base}/slice_river_valley",
                   lambda: self._river_valley_slice(step, valley_basis, lam),
                   "  2-D slice, river x valley plane")
        if self.shared is not None:
            self._check_shared(f"{base}/slice_shared")
            self._part(f"{base}/slice_shared", lambda: self._shared_slice(step),
                       "  2-D slice, shared plane")

    def _neighbours(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        i = self.run.index(step)
        lo, hi = max(i - 1, 0), min(i + 1, len(self.run.steps) - 1)
        rows = self.run.trajectory([int(self.run.steps[lo]), int(self.run.steps[hi])])
        return rows[0], rows[1]

    def _river_part(self, step: int, valley_basis: np.ndarray):
        before, after = self._neighbours(step)
        rd = river_direction(before, after, valley_basis)
        return ({"direction": rd.direction.astype(np.float32)},
                {"step_norm": rd.step_norm, "river_norm": rd.river_norm,
                 "valley_fraction": rd.valley_fraction, "degenerate": rd.degenerate,
                 "valley_rank": int(valley_basis.shape[1])})

    def _grid(self, group: str, step: int, plane, alphas, betas, info: dict,
              loops: int | None = None):
        """A 2-D loss grid; resumed from the cells a killed call already stored there."""
        loss_fn = self._loss_fn(step, loops)
        params = self._params(step, torch.float32)
        dirs = {"x": {k: v.float().cpu().numpy() for k, v in plane.x.items()},
                "y": {k: v.float().cpu().numpy() for k, v in plane.y.items()}}
        attrs = {"plane": info, "points": len(alphas) * len(betas), "loops": loops or
                 int(self.run.loops[self.run.index(step)]), "plane_hash": _digest(dirs)}
        arrays = {"alphas": alphas, "betas": betas, "directions": dirs}
        if self.ranks is not None:
            grid = self._loss_grid(loss_fn, params, plane, alphas, betas)
        else:
            saver = _PartialGrid(self.path, group, arrays, attrs, self._partial(group, attrs))
            grid = loss_grid(loss_fn, params, plane, alphas, betas, done=saver.done,
                             values=saver.loss, on_chunk=saver)
            attrs["resumed_cells"] = saver.resumed
        return {**arrays, "loss": grid}, attrs

    def _partial(self, group: str, attrs: dict) -> dict | None:
        """A half-done grid of the same plane stored at ``group`` by a killed call, or None."""
        if self.settings.force:
            return None
        found = store.read_group(self.path, group)
        if found is None or found["attrs"].get("plane_hash") != attrs["plane_hash"]:
            return None
        return found if "done" in found else None

    def _random_slice(self, step: int):
        gs = self.settings.geometry
        params = self._params(step, torch.float32)
        plane = random_plane(params, gs.seed)
        axis = make_axis(-gs.span, gs.span, gs.grid)
        return self._grid(f"{store.probe_group(step, 'geometry')}/slice_random", step, plane,
                          axis, axis, {**plane.info, "seed": gs.seed})

    def _shared_slice(self, step: int):
        gs = self.settings.geometry
        axis = make_axis(-gs.span, gs.span, gs.grid)
        return self._grid(f"{store.probe_group(step, 'geometry')}/slice_shared", step,
                          self.shared, axis, axis, {**self.shared.info, "seed": gs.seed})

    def _check_shared(self, group: str) -> None:
        """A stored shared slice must be on the plane asked for now (else --force)."""
        found = None if self.settings.force else self._stored(group)
        if found is None:
            return
        plane = found["attrs"].get("plane", {})
        asked = (self.shared.info["reference"], self.settings.geometry.seed)
        if (plane.get("reference"), plane.get("seed")) != asked:
            raise LandscapeError(
                f"{self.path}: {group} was normalised against {plane.get('reference')!r} "
                f"(seed {plane.get('seed')}), not {asked[0]!r} (seed {asked[1]}); add --force "
                "to recompute it")

    def _river_valley_slice(self, step: int, valley_basis: np.ndarray, lam: np.ndarray):
        gs = self.settings.geometry
        rd = self._stored(f"{store.probe_group(step, 'geometry')}/river")
        layout = self.run.layout
        if rd is None or rd["attrs"]["degenerate"] or valley_basis.shape[1] == 0:
            return {}, {"skipped": "no river direction or empty valley at this checkpoint"}
        x = unit_direction(layout, rd["direction"])
        y = unit_direction(layout, valley_basis[:, 0])
        plane = Plane(x, y, {"kind": "river_valley"})
        step_len = max(float(rd["attrs"]["step_norm"]), 1e-8)
        a = make_axis(-2 * step_len, 2 * step_len, gs.grid)
        half = 3 * math.sqrt(2 * gs.delta / float(lam[0]))
        b = make_axis(-half, half, gs.grid)
        group = f"{store.probe_group(step, 'geometry')}/slice_river_valley"
        return self._grid(group, step, plane, a, b, {"kind": "river_valley", "x": "river (unit)",
                                              "y": "top valley eigenvector (unit)"})

    # --- run-level parts ----------------------------------------------------------------

    def _river_progress(self, steps: list[int]) -> None:
        def compute():
            traj = self.run.trajectory()
            all_steps = self.run.steps
            bases = []
            probed = np.array(steps)
            for s in all_steps[:-1]:
                nearest = int(probed[np.argmin(np.abs(probed - s))])
                top = self._spectrum_for(nearest)["top"]
                lam = np.asarray(top["values"])
                keep = lam > self.settings.geometry.eps_rel * lam[0]
                bases.append(np.asarray(top["vectors"])[keep].T)
            rp = river_progress(traj, valley_basis=bases)
            return ({"steps": all_steps, "progress": rp.progress,
                     "river_steps": rp.river_steps, "off_river_steps": rp.off_river_steps,
                     "probed_steps": probed}, {"signed": rp.signed})

        self._part("probe/run/river_progress", compute, "river progress over training")

    def _pca(self) -> None:
        gs = self.settings.geometry

        def compute():
            traj = self.run.trajectory()
            pca = pca_directions(traj, centred=False)
            last = int(self.run.steps[-1])
            layout = self.run.layout
            loss_fn = self._loss_fn(last)
            proj = projection_losses(loss_fn, layout, traj, pca.centre.float().to(self.device),
                                     pca)
            x, y = pca.directions(layout)
            coords = pca.coords.numpy()
            lo, hi = coords.min(0), coords.max(0)
            pad = 0.2 * np.maximum(hi - lo, 1e-6)
            ext = np.maximum(np.abs(lo - pad), np.abs(hi + pad))
            a = make_axis(-ext[0], ext[0], gs.grid)
            b = make_axis(-ext[1], ext[1], gs.grid)
            arrays, attrs = self._grid("probe/run/pca", last, Plane(x, y, pca.info), a, b,
                                       pca.info)
            arrays.pop("directions")
            arrays.update({"components": pca.components.float().numpy(), "coords": coords,
                           "residuals": pca.residuals.numpy(), "steps": self.run.steps,
                           "true_loss": np.asarray(proj.true_loss),
                           "plane_loss": np.asarray(proj.plane_loss),
                           "explained_variance_ratio": pca.explained_variance_ratio.numpy()})
            return arrays, attrs

        self._part("probe/run/pca", compute, "PCA plane of the trajectory")

    def _loops(self) -> None:
        gs = self.settings.geometry
        last = int(self.run.steps[-1])
        trained = int(self.run.loops[-1])
        top = gs.loops_max or max(2 * trained, 6)

        def compute():
            res = loop_curve(lambda n: self._loss_fn(last, n), self._params(last, torch.float32),
                             list(range(1, top + 1)))
            return res, {"step": last, "trained_loops": trained, "hvps": int(res["hvps"].sum())}

        self._part("probe/run/loops", compute, f"loop curve (1..{top} loops)")

    def _switch(self) -> None:
        s = self.run.shift_step
        i = self.run.index(s)
        after_loops = int(self.run.loops[min(i + 1, len(self.run.loops) - 1)])
        gs, hs = self.settings.geometry, self.settings.hessian or HessianSettings()

        def compute():
            out, hvps = {}, 0
            for name, loops in (("before", 1), ("after", after_loops)):
                op = HessianOperator(self._hvp_loss_fn(s, loops),
                                     self._params(s, torch.float32), reduce=self._reduce)
                top = lanczos(op, k_top=hs.k_top, tol=hs.tol or None,
                              max_steps=min(hs.max_steps, op.dim))
                tr = hutchpp(op, hs.trace_hvps + hs.k_top, basis=top.top_vectors, seed=hs.seed)
                out[name] = {"loss": op.loss, "values": top.top_values, "trace": tr.estimate,
                             "trace_stderr": tr.stderr, "vectors": top.top_vectors}
                hvps += op.n_matvec
            cos = _overlap(out["before"].pop("vectors").double().cpu(),
                           out["after"].pop("vectors").double().cpu())
            lo, hi = max(i - 1, 0), min(i + 1, len(self.run.steps) - 1)
            a_, b_, c_ = (self.run.params(int(self.run.steps[j])) for j in (i, hi, lo))
            plane = plane_through(a_, b_, c_ if lo != i else None, seed=gs.seed)
            axis = make_axis(-1.5, 1.5, gs.grid)
            arrays, attrs = self._grid("probe/run/switch/slice", s, plane, axis, axis,
                                       plane.info, loops=after_loops)
            arrays.pop("directions")
            return ({**out, "overlap": cos, "loss_jump": out["after"]["loss"] -
                     out["before"]["loss"], "slice": arrays},
                    {"step": s, "loops_after": after_loops, "hvps": hvps,
                     "slice_plane": attrs["plane"],
                     "slice_note": "origin: the switch checkpoint; (1, 0): the next one; "
                                   "(c, 1): the previous one; loss under loops_after"})

        self._part("probe/run/switch", compute, "SHIFT switch diagnostics")


# --- resumable grids --------------------------------------------------------------------

PARTIAL_EVERY_S = 20.0  # a grid in progress is committed at most this often


def _digest(dirs: dict) -> str:
    """A fingerprint of a plane's directions: a stored half-grid resumes only on the same one."""
    h = hashlib.sha1()
    for axis in ("x", "y"):
        for name in sorted(dirs[axis]):
            h.update(name.encode())
            h.update(np.ascontiguousarray(dirs[axis][name]).tobytes())
    return h.hexdigest()


class _PartialGrid:
    """Receives finished grid cells and commits the grid with its done-mask now and then."""

    def __init__(self, path: Path, group: str, arrays: dict, attrs: dict, found: dict | None):
        shape = (len(arrays["alphas"]), len(arrays["betas"]))
        self.path, self.group, self.arrays, self.attrs = path, group, arrays, attrs
        self.done = np.zeros(shape, dtype=bool) if found is None else found["done"].copy()
        self.loss = np.full(shape, np.nan) if found is None else found["loss"].copy()
        self.resumed = int(self.done.sum())
        self.last = time.perf_counter()

    def __call__(self, cells: np.ndarray, losses: np.ndarray) -> None:
        self.done.flat[cells] = True
        self.loss.flat[cells] = losses
        if time.perf_counter() - self.last >= PARTIAL_EVERY_S and not self.done.all():
            arrays = {**self.arrays, "loss": self.loss, "done": self.done}
            attrs = {**self.attrs, "complete": False}

            def change(tx: store.Transaction) -> None:
                tx.delete(self.group)
                tx.put(self.group, arrays, attrs)

            store.commit(self.path, change)
            self.last = time.perf_counter()


# --- Hessian parts as functions of an operator (usable from a notebook) ------------------


def _check_custom(run: Run, settings: ProbeSettings, ranks: Ranks | None) -> None:
    """What a probe of a model of your own cannot do (yet), said before any work."""
    if ranks is not None:
        raise LandscapeError(f"{run.path} is a model of your own: probe it in one process "
                             "(not under torchrun)")
    if settings.hessian is not None and settings.hessian.backend == "pyhessian":
        raise LandscapeError("--backend pyhessian needs one of landscape's own models")


def _top_part(op: HessianOperator, hs: HessianSettings, warm, common: dict):
    k_top = min(hs.k_top, op.dim)
    k_bottom = min(hs.k_bottom, max(op.dim - k_top, 0))
    if warm is not None and warm.shape[0] != op.dim:
        warm = None
    if warm is not None:
        warm = warm.to(device=op.device, dtype=op.dtype)
    res = lanczos(op, k_top=k_top, k_bottom=k_bottom, tol=hs.tol or None,
                  max_steps=min(hs.max_steps, op.dim), warm=warm, seed=hs.seed)
    return ({"values": res.top_values, "residuals": res.top_residuals,
             "converged": res.top_converged,
             "vectors": res.top_vectors.T.to(torch.float32).cpu().numpy(),
             "bottom_values": res.bottom_values, "bottom_residuals": res.bottom_residuals,
             "bottom_converged": res.bottom_converged},
            {**common, "hvps": res.n_matvec, "lanczos_steps": res.steps,
             "tol": res.tol or default_tol(op.dtype), "warm_start": warm is not None,
             "converged_all": bool(res.converged)})


def _trace_part(op: HessianOperator, hs: HessianSettings, vecs: torch.Tensor, common: dict):
    basis = vecs.to(device=op.device, dtype=op.dtype)
    tr = hutchpp(op, hs.trace_hvps + basis.shape[1], seed=hs.seed, basis=basis)
    return ({"estimate": tr.estimate, "stderr": tr.stderr, "bulk": tr.residual,
             "top_sum": tr.low_rank, "samples": tr.samples},
            {**common, "hvps": tr.n_matvec, "probes": tr.n_probes,
             "note": "bulk = trace on the complement of the top-k eigenvectors"})


def _slq_part(op: HessianOperator, hs: HessianSettings, common: dict):
    res = slq(op, n_runs=hs.slq_runs, n_steps=min(hs.slq_steps, op.dim), seed=hs.seed)
    return {"nodes": res.nodes, "weights": res.weights}, {**common, "hvps": res.n_matvec,
                                                           "dim": op.dim}


def _exact_part(op: HessianOperator, common: dict):
    n0 = op.n_matvec
    values = exact_spectrum(op)
    return {"eigvals": np.asarray(values)}, {**common, "hvps": op.n_matvec - n0}


def _valley_part(spec: dict, dim: int, gs: GeometrySettings):
    exact, top, s = spec["exact"], spec["top"], None
    if exact is not None:
        s = split_spectrum(exact["eigvals"], eps_rel=gs.eps_rel, tau_rel=gs.tau_rel)
        source = "exact"
    elif spec["slq"] is not None:
        s = split_from_slq(spec["slq"]["nodes"], spec["slq"]["weights"], dim,
                           eps_rel=gs.eps_rel, tau_rel=gs.tau_rel,
                           lambda_max=float(top["values"][0]))
        source = "slq"
    else:
        raise LandscapeError("the valley split needs the exact spectrum or an SLQ density")
    fields = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
              for k, v in dataclasses.asdict(s).items()}
    return {}, {"source": source, **fields}


def probe(path: str | Path, settings: ProbeSettings | None = None,
          report: Report | None = None, trust_code: bool = False) -> list[int]:
    """Probe a run file's checkpoints (see the module docstring). Returns the steps probed.

    Holds the run file's writer lock for the whole call, so a run still being trained (or
    probed by another process) is refused with a message naming the writer. A run of your
    own model is probed only if the code it names may be imported (``trust_code``).
    """
    Run.open(path, trust_code=trust_code).require_code()
    settings = settings or ProbeSettings()
    if distributed.launched():  # torchrun, several ranks
        return _probe_ranks(Path(path), settings, report)
    with store.writer_lock(path, "probe"):
        return Prober(path, settings, report, trust_code=trust_code).probe()


def _probe_ranks(path: Path, settings: ProbeSettings, report: Report | None) -> list[int]:
    """:func:`probe` on one rank of a torchrun job (gloo on CPU, nccl with cuda)."""
    with distributed.process_group(settings.device) as ranks, ranks.main_only(
            lambda: store.writer_lock(path, f"probe (rank 0 of {ranks.world})")):
        return Prober(path, settings, report if ranks.is_main else None, ranks).probe()
