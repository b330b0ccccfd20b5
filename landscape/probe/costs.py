"""What a probe will cost before it runs: HVPs, seconds and peak memory of each part.

:func:`measure_costs` times the units a probe is made of on the real model and data (one
no-grad loss, one gradient, the gradient graph that Hessian products run through, one
Hessian-vector product, one pass of vector arithmetic over ``P`` floats) and measures the
memory autograd keeps for them. :func:`plan_parts` turns the probe's settings into a
:class:`PartPlan` per part from these units, and :func:`check_memory` refuses the parts
whose estimated peak exceeds the memory available on the device.

The counts are exact where the algorithm fixes them (Hutch++, SLQ, the dense Hessian,
grids) and an estimate for Lanczos, which stops when its residuals are small: about
``4 k_top + 8 k_bottom + 20`` steps, capped at ``max_steps`` (measured: 14-16 steps for
the top 5 at ``tol=1e-3`` and 65 for the top 10 and bottom 5 at ``1e-4`` on the default
models, 90 for the top 4 and bottom 2 on a tiny one: the bottom of a Hessian spectrum is
crowded and converges slowly).

Memory model (bytes; ``s`` = bytes per float of the products, ``G`` = the gradient graph,
``A`` = the activations of one forward):

* every Hessian part: ``G`` plus its vectors, ``m P s`` for a Krylov basis of ``m``
  vectors (Lanczos, SLQ; in blocks, never copied:
  :data:`landscape.curvature.krylov_basis.BASIS_BLOCK`; a Lanczos basis beyond 64 MiB is capped,
  :func:`landscape.curvature.spectral.basis_cap`),
  ``(k + 2 c + 1) P s`` for Hutch++ with ``k`` deflated vectors and ``c`` probes per chunk
  (:data:`landscape.curvature.spectral.AUTO_CHUNK`, fewer for large P); a basis above 256 MiB goes
  to a temporary file (:mod:`landscape.curvature.krylov_basis`): ``5 P s`` then;
* the dense Hessian: ``P^2 s`` for the matrix, ``8 P^2`` for its float64 copy and
  ``8 P^2`` for ``eigvalsh``'s workspace;
* a grid: ``A`` and a few parameter vectors (a vmapped chunk of ``b`` points: ``b A``),
  and :data:`GRID_CELL_BYTES` per point of the grid for its arrays (``grid^2`` points:
  a ``--grid 1001`` slice holds about 92 MiB of them).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from landscape.curvature.spectral import probes_per_call
from landscape.errors import LandscapeError

LossFn = Callable[[Mapping[str, torch.Tensor]], torch.Tensor]

GRID_CELL_BYTES = 96
"""Bytes per point of a 2-D slice's arrays: measured 50 in
:func:`landscape.geometry.slices.loss_grid` with the grid in progress it fills (float64
losses, done mask, the meshgrid and the point coefficients, the cells to do), plus the
coefficients on the device (8-16), a resumed grid read back and its copy (18) and the
stored result (8 and HDF5's buffers)."""

MEMORY_FLAG = "--ignore-memory"
"""The command-line flag that overrides :func:`check_memory`."""


@dataclass(frozen=True)
class UnitCosts:
    """Measured costs of the operations a probe is made of, on one model and data set.

    Attributes:
        params: number of parameters P.
        itemsize: bytes per float of the Hessian products (4 for float32).
        device: where they were measured.
        forward_s: one loss evaluation without gradients.
        gradient_s: one loss and gradient (forward and backward).
        graph_s: one loss and gradient with ``create_graph`` (building an operator).
        hvp_s: one Hessian-vector product through that graph.
        vector_s: one ``axpy``-like pass over ``P`` floats (re-orthogonalisation unit).
        graph_bytes: memory autograd keeps for the gradient graph (saved tensors of the
            forward and of the create-graph backward, and the gradient).
        forward_bytes: activations autograd would keep for one forward (an upper bound of
            a no-grad evaluation's live memory).
        eigh_s_per_n3: seconds of a float64 ``eigvalsh`` divided by ``n^3``.
        ritz_s_per_m2: seconds of one Lanczos step's bookkeeping (the tridiagonal
            eigenproblem with vectors, residuals) divided by ``m^2``.
    """

    params: int
    itemsize: int
    device: str
    forward_s: float
    gradient_s: float
    graph_s: float
    hvp_s: float
    vector_s: float
    graph_bytes: int
    forward_bytes: int
    eigh_s_per_n3: float
    ritz_s_per_m2: float


@dataclass(frozen=True)
class PartPlan:
    """The estimated cost of one probe part.

    Attributes:
        name: the part (as stored, e.g. ``hessian/top``).
        label: what it computes, for humans.
        hvps: Hessian-vector products (an estimate for Lanczos).
        forwards: loss evaluations without gradients.
        seconds: estimated wall-clock time.
        peak_bytes: estimated peak memory while it runs (model and data excluded).
    """

    name: str
    label: str
    hvps: int
    forwards: int
    seconds: float
    peak_bytes: int


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of every tensor autograd saves while ``fn`` runs (storage counted once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            key = t.untyped_storage().data_ptr()
            size = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            key, size = id(t), t.numel() * t.element_size()
        seen[key] = max(seen.get(key, 0), size)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def measure_costs(loss_fn: LossFn, params: Mapping[str, torch.Tensor],
                  dtype: torch.dtype = torch.float32, seed: int = 0) -> UnitCosts:
    """Time and size the units of a probe on ``loss_fn`` at ``params`` (see the module).

    Costs two losses, two gradients and one create-graph gradient, three Hessian-vector
    products (a warm-up, then the faster of two timed ones: a single timing on a shared
    machine can be hit by another job), and small ``eigvalsh`` and ``eigh_tridiagonal``
    calls. Nothing of the caller's is changed.

    Args:
        loss_fn: ``loss_fn(params) -> 0-d tensor``, as for
            :class:`~landscape.curvature.hessian.HessianOperator`.
        params: parameter values by name (on the device the probe will use).
        dtype: dtype of the products.
        seed: seed of the random product vector.

    Returns:
        A :class:`UnitCosts`.
    """
    from landscape.curvature.hessian import double_backward_attention

    names = list(params)
    if not names:
        raise LandscapeError("plan: no parameters")
    dev = next(iter(params.values())).device
    values = {n: p.detach().to(dtype=dtype if p.is_floating_point() else p.dtype)
              for n, p in params.items()}
    p_count = sum(v.numel() for v in values.values() if v.is_floating_point())
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            loss_fn(values)
        sync()

    forward()  # warm-up (allocations, kernels)
    forward_s = _timed(forward)

    def leaves():
        return {n: v.clone().requires_grad_(v.is_floating_point()) for n, v in values.items()}

    def gradient():
        lv = leaves()
        with torch.enable_grad():
            torch.autograd.grad(loss_fn(lv), [lv[n] for n in names if lv[n].requires_grad],
                                allow_unused=True)
        sync()

    gradient()  # warm-up: the first backward pays one-time costs
    gradient_s = _timed(gradient)
    forward_bytes = _saved_bytes(lambda: loss_fn(leaves()))

    lv = leaves()
    wrt = [lv[n] for n in names if lv[n].requires_grad]
    state = {}

    def build():
        with torch.enable_grad(), double_backward_attention():
            loss = loss_fn(lv)
            grads = torch.autograd.grad(loss, wrt, create_graph=True, allow_unused=True)
        state["g"] = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, wrt)]
        sync()

    t0 = time.perf_counter()
    graph_bytes = _saved_bytes(build)
    graph_s = time.perf_counter() - t0
    graph_bytes += p_count * torch.finfo(dtype).bits // 8  # the gradient itself
    gen = torch.Generator().manual_seed(seed)
    vec = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dev, dtype) for p in wrt]
    live = [(g, v) for g, v in zip(state["g"], vec) if g.requires_grad]

    def hvp():
        if live:
            torch.autograd.grad([g for g, _ in live], wrt, grad_outputs=[v for _, v in live],
                                retain_graph=True, allow_unused=True)
        sync()

    hvp()  # warm-up: the first double backward pays one-time costs
    hvp_s = min(_timed(hvp), _timed(hvp))
    state.clear()
    vector_s = _vector_seconds(p_count, dtype, dev)
    return UnitCosts(params=p_count, itemsize=torch.finfo(dtype).bits // 8, device=str(dev),
                     forward_s=forward_s, gradient_s=gradient_s, graph_s=graph_s, hvp_s=hvp_s,
                     vector_s=vector_s, graph_bytes=int(graph_bytes),
                     forward_bytes=int(forward_bytes), eigh_s_per_n3=_eigh_constant(),
                     ritz_s_per_m2=_ritz_constant())


def _vector_seconds(p: int, dtype: torch.dtype, dev: torch.device) -> float:
    """Seconds per column of a ``[P, 8]`` projection (``Q^T w`` and ``w - Q c``)."""
    q = torch.randn(p, 8, dtype=dtype, device=dev)
    w = torch.randn(p, dtype=dtype, device=dev)

    def project():
        c = q.T @ w
        (w - q @ c).sum().item()

    project()
    return min(_timed(project) for _ in range(3)) / 8


def _ritz_constant(m: int = 64) -> float:
    from scipy.linalg import eigh_tridiagonal

    rng = np.random.default_rng(0)
    d, e = rng.standard_normal(m), rng.standard_normal(m - 1)
    return min(_timed(lambda: eigh_tridiagonal(d, e)) for _ in range(3)) / m**2


def _eigh_constant(n: int = 300) -> float:
    a = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a = a + a.T
    return min(_timed(lambda: torch.linalg.eigvalsh(a)) for _ in range(2)) / n**3


# ----------------------------------------------------------------------------- estimates


RESTART_MARGIN = 1.25
"""Extra steps estimated for a Lanczos run whose basis is capped below its steps (thick
restarts; the measured overheads it covers: BENCHMARKS.md, "Figures behind constants of
the code")."""


def lanczos_steps(k_top: int, k_bottom: int, max_steps: int, dim: int,
                  cap: int | None = None) -> int:
    """Estimated Lanczos steps for ``k_top`` / ``k_bottom`` eigenpairs (see the module).

    With a basis ``cap`` below that estimate, :data:`RESTART_MARGIN` more (still at most
    ``max_steps``).
    """
    m = int(min(max_steps, dim, 4 * k_top + 8 * k_bottom + 20))
    if cap is not None and m > cap:
        m = int(min(max_steps, dim, math.ceil(RESTART_MARGIN * m)))
    return m


def _dtype(c: UnitCosts) -> torch.dtype:
    return torch.float64 if c.itemsize == 8 else torch.float32


def _lanczos_cap(c: UnitCosts, k_top: int, k_bottom: int, max_steps: int) -> int | None:
    """The basis cap :func:`~landscape.curvature.spectral.lanczos` applies under its defaults."""
    from landscape.curvature.spectral import basis_cap

    return basis_cap(SimpleNamespace(dim=c.params, dtype=_dtype(c)), k_top, k_bottom,
                     max_steps)


def _krylov_seconds(c: UnitCosts, m: int, cap: int | None = None) -> float:
    """Seconds of ``m`` fully re-orthogonalised Lanczos steps (products included).

    Each step: one product, about 2.5 projections over the ``min(j, cap)`` vectors of the
    basis, and an eigendecomposition of the projected matrix of that size.
    """
    w = m if cap is None else min(m, cap)
    cols = w * (w + 1) / 2 + (m - w) * w  # sum over steps of the basis size
    squares = w * (w + 1) * (2 * w + 1) / 6 + (m - w) * w * w
    return m * c.hvp_s + 2.5 * c.vector_s * cols + c.ritz_s_per_m2 * squares


def _krylov_bytes(c: UnitCosts, m: int, cap: int | None = None) -> int:
    """Bytes of a Krylov basis of ``m`` steps, at most ``cap`` vectors, and four more vectors.

    ``cap`` None: all ``m``, in blocks (an uncapped Lanczos); SLQ's basis has ``cap = m``.
    A basis that goes to a file (:func:`landscape.curvature.krylov_basis.choose_storage`,
    also an uncapped one whose ``m + 1`` rows are too many) costs one row read at a time.
    """
    from landscape.curvature.krylov_basis import BASIS_BLOCK, choose_storage

    if choose_storage("auto", cap, c.params, _dtype(c), torch.device(c.device),
                      rows=m + 1) == "file":
        return 5 * c.params * c.itemsize
    blocks = math.ceil(m / BASIS_BLOCK) * BASIS_BLOCK
    if cap is not None:
        blocks = min(blocks, cap)
    return (min(blocks, c.params) + 4) * c.params * c.itemsize


def _curvature_plans(c: UnitCosts, hs, curvature: str, dense: bool,
                     blocks: Mapping[str, int] | None, new_operator: bool) -> list[PartPlan]:
    """The curvature parts of one matrix (see :func:`plan_parts`)."""
    p, s, out = c.params, c.itemsize, []
    g = c.graph_bytes
    cap = _lanczos_cap(c, hs.k_top, hs.k_bottom, min(hs.max_steps, p))
    m = lanczos_steps(hs.k_top, hs.k_bottom, hs.max_steps, p, cap)
    build = (2 * c.graph_s + 2 * c.hvp_s) if new_operator else 0.0
    out.append(PartPlan(f"{curvature}/top", f"top-{hs.k_top}/bottom-{hs.k_bottom} (Lanczos)",
                        m + (2 if new_operator else 0), 0,
                        build + _krylov_seconds(c, m, cap) + 2 * hs.k_top * c.vector_s,
                        g + _krylov_bytes(c, m, cap)))
    k = min(hs.k_top, p)
    n_tr = hs.trace_hvps + k
    chunk = probes_per_call(p, _dtype(c), c.device)
    out.append(PartPlan(f"{curvature}/trace", "trace (Hutch++)", n_tr, 0,
                        n_tr * c.hvp_s + 4 * k * n_tr * c.vector_s,
                        g + (k + 2 * chunk + 1) * p * s))
    n = min(hs.slq_steps, p)
    out.append(PartPlan(f"{curvature}/slq", "density (SLQ)", hs.slq_runs * n, 0,
                        hs.slq_runs * _krylov_seconds(c, n), g + _krylov_bytes(c, n, n)))
    if dense:
        out.append(PartPlan(f"{curvature}/exact", f"exact spectrum (dense {curvature})", p, 0,
                            exact_seconds(c),
                            g + p * p * (s + 16) + 64 * p * s))
    cap1 = _lanczos_cap(c, 1, 0, min(100, p))
    ms = lanczos_steps(1, 0, 100, p, cap1)
    out.append(PartPlan(f"{curvature}/sharpness", "sharpness (Adam-preconditioned Lanczos)",
                        ms, 0, _krylov_seconds(c, ms, cap1),
                        g + _krylov_bytes(c, ms, cap1)))
    if blocks:
        n_b = sum(lanczos_steps(min(hs.k_top, d), 0, hs.max_steps, d)
                  + (d if 3 * d <= max(4, hs.trace_hvps) else max(4, hs.trace_hvps))
                  for d in blocks.values())
        big = max(blocks.values())
        m_b = lanczos_steps(min(hs.k_top, big), 0, hs.max_steps, big)
        out.append(PartPlan(f"{curvature}/blocks", f"per-block spectra ({len(blocks)} blocks)",
                            n_b, 0, len(blocks) * c.graph_s + n_b * c.hvp_s,
                            2 * g + (m_b + 4) * big * s))
    return out


def plan_parts(c: UnitCosts, hessian=None, geometry=None, *, dense: bool = False,
               blocks: Mapping[str, int] | None = None, new_operator: bool = True,
               curvatures: Sequence[str] = ("hessian",), adam: bool = False,
               intervention: bool = False) -> list[PartPlan]:
    """Estimated cost of each part of one checkpoint's probe.

    Args:
        c: the measured unit costs.
        hessian: Hessian settings (``k_top``, ``k_bottom``, ``max_steps``, ``trace_hvps``,
            ``slq_runs``, ``slq_steps``), or None for no curvature parts.
        geometry: geometry settings (``grid``, ``width_dirs``, ``width_points``), or None.
        dense: whether the exact spectrum (dense matrix) is computed.
        blocks: ``{block: dim}`` when per-block spectra are asked for.
        new_operator: the first part builds the operator and checks its determinism
            (one create-graph gradient, one more gradient and two products).
        curvatures: the matrices whose parts are computed (``hessian``, ``ggn``,
            ``fisher``), each counted on its own (``ggn/top``, ...). A GGN or Fisher
            product is counted as one Hessian-vector product and its retained graphs as
            the gradient graph: a product is a Jacobian-vector product, a small product
            with the loss's Hessian (or the per-example gradients) and a vector-Jacobian
            product through the retained forward graph.
        adam: the run stores AdamW's second moment (the optimiser's valley is measured:
            Lanczos for ``valley_k`` preconditioned eigenpairs, and up to ``2 valley_k``
            products for the Hessian restricted to its two spans).
        intervention: the run stores intervention starts (claim 4's intervention, planned
            per checkpoint but run only at a start: ``2 K`` training steps, each counted
            as one gradient, two ``[K+1, P]`` float32 trajectories, three losses).

    Returns:
        One :class:`PartPlan` per part, in the order a probe runs them.
    """
    p, s, out = c.params, c.itemsize, []
    if hessian is not None:
        for curvature in curvatures:
            out += _curvature_plans(c, hessian, curvature, dense, blocks, new_operator)
    if geometry is not None:
        gs = geometry
        grid = gs.grid * gs.grid
        widths = gs.width_dirs * gs.width_points
        out.append(PartPlan("geometry/widths", "valley widths (float64)", 0, widths,
                            2 * widths * c.forward_s, 2 * c.forward_bytes + 4 * p * 8))
        for part in ("slice_random", "slice_river_valley"):
            out.append(PartPlan(f"geometry/{part}", f"2-D slice {gs.grid} x {gs.grid}", 0,
                                grid, grid * c.forward_s,
                                c.forward_bytes + 6 * p * s + grid * GRID_CELL_BYTES))
        if adam and hessian is not None:
            k = min(gs.valley_k, p)
            cap = _lanczos_cap(c, k, 0, min(300, p))
            m = lanczos_steps(k, 0, 300, p, cap)
            out.append(PartPlan("geometry/optimiser_valley",
                                f"optimiser's valley (top-{k} preconditioned, Lanczos)",
                                m + 2 * k, 0, _krylov_seconds(c, m, cap) + 2 * k * c.hvp_s,
                                c.graph_bytes + _krylov_bytes(c, m, cap) + 4 * k * p * 8))
        if intervention:
            k_steps = gs.intervention_steps
            out.append(PartPlan("geometry/intervention",
                                f"intervention ({k_steps} steps, two arms)", 0, 3,
                                2 * k_steps * c.gradient_s + 3 * c.forward_s,
                                c.forward_bytes + 2 * (k_steps + 1) * p * 4 + 4 * p * 8))
    return out


EXACT_AUTO_SECONDS = 60.0
"""Under ``--exact auto`` the exact spectrum is computed only where the plan puts its
dense Hessian under this many seconds per checkpoint (and ``P <= --exact-max-params``):
the default probe of any model stays within minutes."""


def exact_seconds(c: UnitCosts) -> float:
    """Estimated seconds of the exact spectrum at one checkpoint (``P`` products, ``eigvalsh``)."""
    return c.params * c.hvp_s + c.eigh_s_per_n3 * c.params**3


def exact_auto(c: UnitCosts, max_params: int,
               budget_s: float | None = None) -> tuple[bool, str]:
    """Whether ``--exact auto`` computes the exact spectrum, and why (for the plan's text).

    Args:
        c: the measured unit costs.
        max_params: the ``--exact-max-params`` bound.
        budget_s: the most estimated seconds per checkpoint (None:
            :data:`EXACT_AUTO_SECONDS`).

    Returns:
        ``(on, reason)``.
    """
    budget_s = EXACT_AUTO_SECONDS if budget_s is None else budget_s
    est = exact_seconds(c)
    if c.params > max_params:
        return False, f"off: P = {c.params:,} > --exact-max-params {max_params:,}"
    if est > budget_s:
        return False, (f"off: estimated {human_seconds(est)} per checkpoint > the "
                       f"{human_seconds(budget_s)} budget of --exact auto (--exact always "
                       f"computes it)")
    return True, f"on: estimated {human_seconds(est)} per checkpoint <= {human_seconds(budget_s)}"


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes a probe may use on ``device``: free GPU memory, or the host's available memory."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1  # unknown: do not refuse


def human_bytes(n: float) -> str:
    """``1.5 GiB``-style size."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(t: float) -> str:
    """``12.3 s``, ``4.5 min`` or ``2.1 h``."""
    if t < 120:
        return f"{t:.1f} s"
    if t < 7200:
        return f"{t / 60:.1f} min"
    return f"{t / 3600:.1f} h"


def check_memory(plans: list[PartPlan], available: int, device: str = "cpu") -> None:
    """Refuse the first part whose estimated peak exceeds ``available`` bytes.

    Raises:
        LandscapeError: one line with the part, its estimate, what is available and the
            flag (:data:`MEMORY_FLAG`) that runs it anyway.
    """
    for part in plans:
        if part.peak_bytes > available:
            raise LandscapeError(
                f"part {part.name} ({part.label}) needs about {human_bytes(part.peak_bytes)} "
                f"(estimated), {human_bytes(available)} available on {device}; add "
                f"{MEMORY_FLAG} to run it anyway")


def format_plan(c: UnitCosts, plans: list[PartPlan], checkpoints: int = 1) -> list[str]:
    """The plan as lines of text: the units, one line per part, the totals."""
    lines = [f"P = {c.params:,} ({c.itemsize * 8}-bit products) on {c.device}: one forward "
             f"{1e3 * c.forward_s:.1f} ms, one gradient {1e3 * c.gradient_s:.1f} ms, one HVP "
             f"{1e3 * c.hvp_s:.1f} ms (HVP / gradient {c.hvp_s / max(c.gradient_s, 1e-12):.2f}),"
             f" gradient graph {human_bytes(c.graph_bytes)}",
             f"  {'part':<28} {'HVPs':>7} {'forwards':>9} {'time':>10} {'peak memory':>12}"]
    for part in plans:
        lines.append(f"  {part.name:<28} {part.hvps:>7,} {part.forwards:>9,} "
                     f"{human_seconds(part.seconds):>10} {human_bytes(part.peak_bytes):>12}")
    hv = sum(x.hvps for x in plans)
    sec = sum(x.seconds for x in plans)
    lines.append(f"  per checkpoint: {hv:,} HVPs, {human_seconds(sec)}; {checkpoints} "
                 f"checkpoint(s): {human_seconds(sec * checkpoints)}")
    return lines
