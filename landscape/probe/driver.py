"""``landscape probe``: the driver that runs the probe parts on a run file's checkpoints.

For every selected checkpoint the objective is the run's loss on its stored probe set
(mean over all scored tokens), for the architecture live at that checkpoint: for a
Looped-Attn checkpoint, the loss after the final loop. The model is rebuilt from the run
file, evaluated with ``functional_call``, and never trained: nothing of the caller's is
touched.

The driver only drives. What each part *is* (fields, group, keys) is in
:mod:`landscape.runfile.schema`; how each is *measured* is a public function of
:mod:`landscape.probe.parts`. Here: which checkpoints (:func:`select_steps`), which parts
(:data:`REGISTRY`), whether a stored part may be reused, committing each part as soon as
it is done, resuming a half-finished grid at its first missing cell, and the torchrun
ranks.

Reuse. Each part is stored with the canonical JSON of the settings that shaped it and a
fingerprint of those settings and of the parts it was computed from (see
:func:`landscape.runfile.schema.fingerprint`). A rerun skips a part only when the
fingerprint it would produce is the stored one: change ``--grid`` and the slices are
recomputed; change ``--k`` and the top eigenpairs are recomputed, and with them every part
computed from them (trace, sharpness, valley, widths, ...). ``force=True`` recomputes
everything asked for. A part that was not asked for in this call (``--no-hessian``) is
used as stored.

Parts, per checkpoint (``/probe/step_<N>/hessian|geometry/<name>``): ``top``, ``trace``,
``slq``, ``exact`` (where P is small, or asked for), ``sharpness``, ``overlap`` (with the
previous probed checkpoint), ``blocks`` (on request), ``pyhessian`` (on request);
``valley``, ``widths``, ``river``, ``slice_random``, ``slice_river_valley``, with a
shared plane ``slice_shared``, where AdamW's second moment is stored ``optimiser_valley``
(with the alternating span of a per-step window starting there), and at an intervention
start (``[train] intervene_at``) ``intervention`` (claim 4: ``--intervention-steps`` steps
unchanged and with the optimiser's valley removed). A part the run cannot give (no AdamW
state, no intervention start) is skipped with a one-line note (:data:`NOTE`). Per run
(``/probe/run/<name>``, with two or more probed checkpoints and geometry):
``river_progress``, ``pca``, ``loops``, ``switch`` (SHIFT runs) and ``qk_alignment``.

How to add a part (three steps, nothing else changes):

1. In :mod:`landscape.runfile.schema`, a frozen dataclass subclassing ``Part`` with its
   ``KIND`` (``hessian``, ``geometry`` or ``run``), ``NAME`` and typed fields; add it to
   ``schema.PARTS``.
2. In :mod:`landscape.probe.parts`, a public function measuring it from a loss or an
   operator, the settings and the parts it builds on, returning that dataclass.
3. Here, a ``register(Entry(...))`` line: the class, a progress label, ``settings`` (the
   settings that change its result, as a dict, or None when this call does not ask for
   it), ``needs`` (parts of the same checkpoint it is computed from; ``optional`` for
   those used where present), ``when`` (a condition on the checkpoint, e.g. a SHIFT run)
   and ``compute`` (a small adapter calling the function of step 2 with what the
   :class:`Job` provides: ``job.operator()``, ``job.loss_fn()``, ``job.params()``,
   ``job.inputs``, ``job.evaluate()`` for grids).

Then readers get it with ``landscape.analysis.series`` (``series.part(run, "name", step)``).

Under torchrun (see :mod:`landscape.train.distributed`) every rank runs the same probe, on
the CPU (gloo) or, with ``device="cuda"``, on its own GPU (nccl): Hessian products are
sharded over the probe set and summed, grid cells are dealt out and gathered, rank 0
decides which parts are already stored and alone writes them. The other parts (valley
split, widths, loop curve, PyHessian, Q/K alignment) are computed on every rank alike.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from landscape.curvature.fisher import FisherOperator
from landscape.curvature.ggn import GGNOperator
from landscape.curvature.hessian import HessianOperator
from landscape.curvature.spectral import SymmetricOperator
from landscape.errors import LandscapeError
from landscape.geometry.directions import Plane, shared_plane
from landscape.geometry.slices import loss_grid
from landscape.probe import parts
from landscape.probe.costs import (
    MEMORY_FLAG,
    PartPlan,
    UnitCosts,
    available_memory,
    check_memory,
    exact_auto,
    format_plan,
    human_bytes,
    measure_costs,
    plan_parts,
)
from landscape.probe.settings import GeometrySettings, HessianSettings, ProbeSettings
from landscape.runfile import schema as sc
from landscape.runfile import store
from landscape.runfile import windows as window_file
from landscape.runs.run import Run
from landscape.train import distributed
from landscape.train.recipe import check_device
from landscape.train.split_loss import make_loss_fn
from landscape.train.tasks.base import Split

if TYPE_CHECKING:
    from landscape.train.distributed import Ranks

Report = Callable[[str], None]
NOTE = "  note: "
"""How a report line that says what this call leaves unmeasured, and why, begins."""


@dataclass(frozen=True)
class ProbeProgress:
    """Where a probe is, told to a progress callback as each part starts.

    Attributes:
        checkpoint: the checkpoint being probed, counted from 1 (run-level parts: the last).
        checkpoints: checkpoints this call probes.
        step: its optimiser step.
        part: the part starting (a name of :data:`REGISTRY`).
        seconds_left: the plan's estimate of the time left, this part included.
        fraction: the share of the plan's time done, 0 to 1.
    """

    checkpoint: int
    checkpoints: int
    step: int
    part: str
    seconds_left: float
    fraction: float


Progress = Callable[[ProbeProgress], None]


def parse_steps(spec: str) -> str | int | list[int]:
    """``--steps`` read strictly: ``"all"``, ``"last"``, K of ``"spaced:K"`` or the steps.

    Raises:
        LandscapeError: anything else (``","``, ``"spaced:x"``, K < 1, a negative step).
    """
    spec = spec.strip()
    if spec in ("all", "last"):
        return spec
    try:
        if spec.startswith("spaced:"):
            k = int(spec.split(":", 1)[1])
            if k >= 1:
                return k
        else:
            wanted = [int(s) for s in spec.split(",") if s.strip()]
            if wanted and min(wanted) >= 0:
                return sorted(set(wanted))
    except ValueError:
        pass
    raise LandscapeError(f"--steps {spec!r}: use all, last, spaced:K (K >= 1) or N,M,... "
                         "(optimiser steps)")


def select_steps(run: Run, spec: str) -> list[int]:
    """The checkpoint steps named by ``spec`` (see :class:`ProbeSettings`)."""
    wanted = parse_steps(spec)
    steps = [int(s) for s in run.steps]
    if not steps:
        raise LandscapeError(f"{run.path} has no checkpoints")
    if wanted == "all":
        return steps
    if wanted == "last":
        return steps[-1:]
    if isinstance(wanted, int):
        idx = np.unique(np.round(np.linspace(0, len(steps) - 1, min(wanted, len(steps)))))
        chosen = {steps[int(i)] for i in idx}
        if run.shift_step is not None:
            chosen.add(run.shift_step)  # the switch is always probed
        # so are the checkpoints where a per-step window or an intervention starts
        chosen |= {s for s in (*(w.start for w in run.windows()), *(
            () if run.custom else run.intervention_starts())) if s in steps}
        return sorted(chosen)
    for s in wanted:
        run.index(s)  # raises with the available steps
    return wanted


def _shared_reference(run: Run, where: str) -> tuple[str, dict[str, torch.Tensor]]:
    """``(name, float32 parameters)`` of the checkpoint a shared plane is normalised against.

    ``where``: ``init`` (``run``'s own first checkpoint), ``PATH`` (that run file's first
    checkpoint) or ``PATH:STEP``. The reference must have ``run``'s parameter layout.
    """
    where = where.strip()
    if where == "init":
        step = int(run.steps[0])
        return f"init (step {step})", run.params(step, dtype=torch.float32)
    path, step = where, None
    head, sep, tail = where.rpartition(":")
    if sep and head and tail.strip().lstrip("-").isdigit():
        path, step = head, int(tail)
    ref = Run.open(path)
    if not len(ref.steps):
        raise LandscapeError(f"--shared-plane {where}: {path} has no checkpoints")
    step = int(ref.steps[0]) if step is None else step
    ref.index(step)  # raises with the available steps
    if ref.layout.names != run.layout.names or ref.layout.shapes != run.layout.shapes:
        raise LandscapeError(f"--shared-plane {where}: {path} has a different parameter layout "
                             f"from {run.path} (a plane can only be shared by same-shape "
                             "models)")
    return f"{Path(path).name} step {step}", ref.params(step, dtype=torch.float32)


# --- the registry -----------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """How the driver runs one part (see the module docstring, "How to add a part").

    Attributes:
        cls: the part's dataclass (its ``NAME`` is the registry key).
        label: progress line (formatted with ``hs`` and ``gs``), or ``label(job, part)``.
        settings: ``settings(probe_settings, job)``: the settings that change the result,
            or None when this call does not ask for the part.
        compute: ``compute(job)``: the part (None: nothing to store at this checkpoint).
        needs: parts of the same checkpoint (or run) it is computed from.
        optional: parts it uses where they exist.
        when: ``when(job)``: whether the part applies (default: always).
        skip: ``skip(job)``: why a part that applies here cannot be computed from what
            the run stores (e.g. no AdamW state), said once per call in one line; None
            where it can (default: always can).
    """

    cls: type[sc.Part]
    label: str | Callable[[Job, sc.Part], str]
    settings: Callable[[ProbeSettings, Job], dict | None]
    compute: Callable[[Job], sc.Part | None]
    needs: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    when: Callable[[Job], bool] = lambda job: True
    skip: Callable[[Job], str | None] = lambda job: None

    @property
    def name(self) -> str:
        """The part's name."""
        return self.cls.NAME


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    """Add a part to the probe (after the parts it needs: the registry's order is the run's)."""
    missing = [n for n in entry.needs + entry.optional if n not in REGISTRY]
    if missing:
        raise ValueError(f"part {entry.name!r}: register {missing} first")
    REGISTRY[entry.name] = entry
    return entry


# --- what a part's compute function gets ------------------------------------------------


@dataclass
class Job:
    """One part to compute at one checkpoint (or for the run): what its adapter needs.

    Attributes:
        driver: the probe.
        step: the checkpoint (for run-level parts: the last probed one).
        loops: loops live at that checkpoint.
        previous: the previous probed checkpoint, or None.
        steps: every checkpoint this call probes.
        inputs: the parts named in the entry's ``needs`` and ``optional`` (None where absent).
        fingerprint: the fingerprint the part will be stored with.
        curvature: the matrix of the curvature parts (``hessian``, ``ggn``, ``fisher``):
            the one a curvature part measures, or, for the other parts, the one whose
            curvature parts they are computed from (``--valley-curvature``).
    """

    driver: Driver
    step: int
    loops: int
    previous: int | None
    steps: list[int]
    inputs: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    name: str = ""
    curvature: str = sc.HESSIAN

    @property
    def run(self) -> Run:
        """The run being probed."""
        return self.driver.run

    @property
    def hs(self) -> HessianSettings:
        """The Hessian settings (defaults where this call has none)."""
        return self.driver.settings.hessian or HessianSettings()

    @property
    def gs(self) -> GeometrySettings:
        """The geometry settings (defaults where this call has none)."""
        return self.driver.settings.geometry or GeometrySettings()

    def params(self, dtype: torch.dtype = torch.float32, step: int | None = None):
        """Parameters of the checkpoint (or ``step``) on the probe's device."""
        return self.run.params(self.step if step is None else step, dtype=dtype,
                               device=self.driver.device)

    def loss_fn(self, loops: int | None = None, step: int | None = None):
        """The probe-set loss at the checkpoint (or ``step``), under ``loops`` if given."""
        return self.driver.loss_fn(self.step if step is None else step, loops)

    def operator(self) -> SymmetricOperator:
        """The checkpoint's operator of :attr:`curvature` (built once, determinism checked)."""
        return self.driver.operator(self.step, self.curvature)

    def stored(self, name: str, step: int) -> sc.Part | None:
        """Part ``name`` as stored at another checkpoint (of :attr:`curvature`), or None."""
        return self.driver.stored(sc.part_class(name), step, curvature=self.curvature)

    def evaluate(self, sub: str = "") -> parts.GridEvaluator:
        """The grid evaluator of this part (``sub``: the grid's subgroup, e.g. ``grid``)."""
        group = sc.part_class(self.name).group(self.step)
        return self.driver.evaluator(f"{group}/{sub}" if sub else group, self.fingerprint)


CURVATURE_NAMES = {"hessian": "Hessian", "ggn": "GGN", "fisher": "Fisher"}


def _no_curvature_probe(path: Path, step: int, curvature: str) -> str:
    """The one-line message for a checkpoint without the curvature parts a part needs."""
    flag = "--hessian" if curvature == sc.HESSIAN else f"--curvature {curvature}"
    return (f"step {step} has no {CURVATURE_NAMES[curvature]} probe; run `landscape probe "
            f"{path} {flag} --steps {step}` first")


def _hessian_settings(*keys: str) -> Callable[[ProbeSettings, Job], dict | None]:
    def settings(ps: ProbeSettings, job: Job) -> dict | None:
        return None if ps.hessian is None else {k: getattr(ps.hessian, k) for k in keys}
    return settings


def _geometry_settings(*keys: str) -> Callable[[ProbeSettings, Job], dict | None]:
    def settings(ps: ProbeSettings, job: Job) -> dict | None:
        return None if ps.geometry is None else {k: getattr(ps.geometry, k) for k in keys}
    return settings


def _exact_applies(job: Job) -> bool:
    return job.driver.exact_choice(job.steps)[0]


def _sharpness(job: Job) -> sc.Sharpness:
    run = job.run
    v, adam_step = run.adam_state(job.step) if run.has_adam else (None, 0)
    return parts.sharpness(job.operator(), job.inputs["top"], run.lr_at(job.step),
                           run.optimizer_at(job.step), v, adam_step, loops=job.loops)


def _adam(job: Job) -> dict:
    """AdamW's state at the checkpoint for the preconditioned parts (empty without one)."""
    run = job.run
    if not run.has_adam:
        return {}
    v, adam_step = run.adam_state(job.step)
    _, beta2 = run.adam_betas or (0.9, 0.999)
    return {"adam_v": v, "adam_step": adam_step, "beta2": beta2}


def _exact(job: Job) -> sc.Exact:
    return parts.exact(job.operator(), loops=job.loops, **_adam(job))


def _spread(job: Job) -> sc.Spread:
    return parts.spread(job.loss_fn(), job.params(torch.float64), job.gs, job.inputs["top"],
                        job.inputs["exact"], job.operator(), **_adam(job))


def _overlap_settings(ps: ProbeSettings, job: Job) -> dict | None:
    if ps.hessian is None or job.previous is None:
        return None
    prev = job.stored("top", job.previous)
    return {"previous_step": job.previous, "previous_top": prev and prev.fingerprint}


def _overlap(job: Job) -> sc.Overlap | None:
    prev = job.stored("top", job.previous)
    return None if prev is None else parts.overlap(prev, job.inputs["top"], job.previous)


def _pyhessian(job: Job) -> sc.PyHessian:
    return parts.pyhessian(job.run.model(job.step), job.driver.probe_split_cpu, job.hs,
                           loops=job.loops)


def _river(job: Job) -> sc.River:
    before, after = job.driver.neighbours(job.step)
    return parts.river(before, after, parts.valley_basis(job.inputs["top"], job.gs.eps_rel))


def _shared_settings(ps: ProbeSettings, job: Job) -> dict | None:
    gs = ps.geometry
    if gs is None or not gs.shared_plane:
        return None
    return {"grid": gs.grid, "span": gs.span, "seed": gs.seed,
            "reference": job.driver.shared.info["reference"]}


register(Entry(sc.Top, "  {c} top-{hs.k_top}/bottom-{hs.k_bottom}",
               _hessian_settings("k_top", "k_bottom", "tol", "max_steps", "dtype", "seed"),
               lambda job: parts.top(job.operator(), job.hs, job.driver.warm_start(job),
                                     loops=job.loops)))
register(Entry(sc.Trace, "  {c} trace (Hutch++)",
               _hessian_settings("trace_hvps", "dtype", "seed"),
               lambda job: parts.trace(job.operator(), job.hs, job.inputs["top"],
                                       loops=job.loops), needs=("top",)))
register(Entry(sc.Slq, "  {c} SLQ", _hessian_settings("slq_runs", "slq_steps", "dtype", "seed"),
               lambda job: parts.slq(job.operator(), job.hs, loops=job.loops)))
register(Entry(sc.Exact, "  {c} exact spectrum", _hessian_settings("dtype"),
               _exact, when=_exact_applies))
register(Entry(sc.Sharpness, "  sharpness", _hessian_settings("dtype"), _sharpness,
               needs=("top",)))
register(Entry(sc.Overlap, "  top-k overlap with the previous checkpoint", _overlap_settings,
               _overlap, needs=("top",)))
register(Entry(sc.Blocks, "  per-block spectra",
               _hessian_settings("k_top", "tol", "max_steps", "trace_hvps", "dtype", "seed",
                                 "blocks"),
               lambda job: parts.blocks(job.operator(), job.hs, loops=job.loops),
               when=lambda job: job.hs.blocks))
register(Entry(sc.PyHessian, "  PyHessian 0.1", _hessian_settings("k_top", "seed"), _pyhessian,
               when=lambda job: job.hs.backend == "pyhessian" and job.curvature == sc.HESSIAN))
register(Entry(sc.Valley, "  valley split", _geometry_settings("eps_rel", "tau_rel"),
               lambda job: parts.valley(job.gs, job.run.layout.size, job.inputs["top"],
                                        job.inputs["exact"], job.inputs["slq"]),
               needs=("top",), optional=("exact", "slq")))
register(Entry(sc.Widths, "  valley widths",
               _geometry_settings("eps_rel", "width_dirs", "width_points", "delta"),
               lambda job: parts.widths(job.loss_fn(), job.params(torch.float64),
                                        job.inputs["top"], job.gs), needs=("top",)))
register(Entry(sc.Spread, "  direction spread ({gs.spread_dirs} directions, top-{gs.spread_k})",
               _geometry_settings("spread_k", "spread_dirs", "delta", "seed"), _spread,
               needs=("top",), optional=("exact",)))
register(Entry(sc.River, "  river direction", _geometry_settings("eps_rel"), _river,
               needs=("top",)))
register(Entry(sc.SliceRandom, "  2-D slice, random plane",
               _geometry_settings("grid", "span", "seed"),
               lambda job: parts.slice_random(job.loss_fn(), job.params(), job.gs,
                                              loops=job.loops, evaluate=job.evaluate())))
register(Entry(sc.SliceRiverValley, "  2-D slice, river x valley plane",
               _geometry_settings("grid", "delta", "eps_rel"),
               lambda job: parts.slice_river_valley(
                   job.loss_fn(), job.params(), job.inputs["river"], job.inputs["top"], job.gs,
                   loops=job.loops, evaluate=job.evaluate()), needs=("top", "river")))
register(Entry(sc.SliceShared, "  2-D slice, shared plane", _shared_settings,
               lambda job: parts.slice_shared(job.loss_fn(), job.params(), job.driver.shared,
                                              job.gs, loops=job.loops,
                                              evaluate=job.evaluate())))



def _optimiser_valley_skip(job: Job) -> str | None:
    """Why the optimiser's valley cannot be measured at ``job``'s checkpoint (None: it can)."""
    run, step = job.run, job.step
    if job.curvature != sc.HESSIAN:
        return ("optimiser_valley: not measured, it is the Hessian's (--valley-curvature "
                "hessian)")
    if not run.has_adam:
        return "optimiser_valley: skipped, the run stores no AdamW second moment"
    opt = run.optimizer_at(step)
    if opt is None or not opt.preconditioned:
        return f"optimiser_valley: skipped at step {step}, the optimiser is not Adam/AdamW"
    try:
        _, adam_step = job.driver.adam_state(step)
    except LandscapeError as e:
        return f"optimiser_valley: skipped at step {step}, {e}"
    if adam_step < 1:
        return f"optimiser_valley: skipped at step {step}, AdamW has taken no step there"
    if not math.isfinite(opt.edge(run.lr_at(step))):
        return f"optimiser_valley: skipped at step {step}, its learning rate is unknown"
    return None


def _optimiser_valley_settings(ps: ProbeSettings, job: Job) -> dict | None:
    gs = ps.geometry
    if gs is None:
        return None
    w = job.driver.window_at(job.step)
    return {"valley_k": gs.valley_k, "near_edge": gs.near_edge, "fallback_k": gs.fallback_k,
            "window_start": -1 if w is None else w.start, "window_rows": 0 if w is None else w.n}


def _optimiser_valley(job: Job) -> sc.OptimiserValley:
    run, gs = job.run, job.gs
    v, adam_step = job.driver.adam_state(job.step)
    w = job.driver.window_at(job.step)
    return parts.optimiser_valley(
        job.operator(), job.inputs["top"], run.lr_at(job.step), run.optimizer_at(job.step), v,
        adam_step, window_updates=None if w is None else w.updates,
        window_start=-1 if w is None else w.start, k=gs.valley_k, factor=gs.near_edge,
        fallback_k=gs.fallback_k)


def _optimiser_valley_label(job: Job, part: sc.OptimiserValley) -> str:
    where = "near the edge" if part.near_edge else "none near the edge: top"
    alt = f", alternating span of the window at {part.window_start}" \
        if part.alt_basis is not None else ""
    return f"  optimiser's valley ({part.k} directions, {where}{alt})"


def _intervention_steps(job: Job) -> int:
    """K of the intervention at ``job``'s start: the setting, or the steps the budget has left."""
    total = int(job.run.attrs.get("total_steps", 0))
    return min(job.gs.intervention_steps, total - job.step)


def _intervention_applies(job: Job) -> bool:
    return job.step in job.driver.intervention_starts()


def _intervention_skip(job: Job) -> str | None:
    """Why claim 4's intervention cannot run at ``job``'s start (None: it can)."""
    if _intervention_steps(job) < 1:
        return f"intervention: skipped at step {job.step}, no optimiser step left after it"
    why = _optimiser_valley_skip(job)
    return None if why is None else f"intervention: skipped at step {job.step} ({why})"


def _intervention_settings(ps: ProbeSettings, job: Job) -> dict | None:
    if ps.geometry is None:
        return None
    return {"steps": _intervention_steps(job), "valley_source": "edge"}


def _intervention(job: Job) -> sc.Intervention:
    layout, fn = job.run.layout, job.loss_fn()
    device = job.driver.device

    def probe_loss(flat: np.ndarray) -> float:
        with torch.no_grad():
            return float(fn(layout.unflatten(torch.as_tensor(flat, dtype=torch.float32,
                                                             device=device))))

    return parts.intervention(job.run.path, job.step, _intervention_steps(job),
                              job.inputs["optimiser_valley"].basis, probe_loss,
                              valley_source="edge")


def _intervention_label(job: Job, part: sc.Intervention) -> str:
    return (f"  intervention ({part.steps} steps, unchanged vs {part.valley_k}-dim valley "
            f"removed: probe loss {part.unchanged.loss_end:.4g} vs {part.removed.loss_end:.4g})")


register(Entry(sc.OptimiserValley, _optimiser_valley_label, _optimiser_valley_settings,
               _optimiser_valley, needs=("top",), skip=_optimiser_valley_skip))
register(Entry(sc.Intervention, _intervention_label, _intervention_settings, _intervention,
               needs=("optimiser_valley",), when=_intervention_applies,
               skip=_intervention_skip))

STEP_PARTS = tuple(REGISTRY)  # everything registered so far is measured per checkpoint
CURVATURE_PARTS = tuple(n for n in STEP_PARTS if REGISTRY[n].cls.KIND == sc.HESSIAN)
"""The step parts measured on each asked curvature (stored under ``step_N/<curvature>/``)."""


def _river_progress_settings(ps: ProbeSettings, job: Job) -> dict | None:
    if ps.geometry is None:
        return None
    tops = {s: job.stored("top", s) for s in job.steps}
    return {"eps_rel": ps.geometry.eps_rel, "checkpoints": [int(s) for s in job.run.steps],
            "tops": {str(s): t and t.fingerprint for s, t in tops.items()}}


def _river_progress(job: Job) -> sc.RiverProgress:
    tops = {s: job.stored("top", s) for s in job.steps}
    missing = [s for s, t in tops.items() if t is None]
    if missing:
        raise LandscapeError(_no_curvature_probe(job.run.path, missing[0], job.curvature))
    return parts.river_progress(job.run.trajectory(), [int(s) for s in job.run.steps], tops,
                                job.gs)


def _pca_settings(ps: ProbeSettings, job: Job) -> dict | None:
    if ps.geometry is None:
        return None
    return {"grid": ps.geometry.grid, "checkpoints": [int(s) for s in job.run.steps]}


def _pca(job: Job) -> sc.Pca:
    last = int(job.run.steps[-1])
    return parts.pca(job.loss_fn(step=last), job.run.layout, job.run.trajectory(),
                     job.run.steps, job.gs, device=job.driver.device,
                     loops=int(job.run.loops[-1]), evaluate=job.evaluate("grid"))


def _loops_settings(ps: ProbeSettings, job: Job) -> dict | None:
    if ps.geometry is None:
        return None
    return {"loops_max": ps.geometry.loops_max, "step": int(job.run.steps[-1])}


def _loops(job: Job) -> sc.LoopCurve:
    last = int(job.run.steps[-1])
    return parts.loop_curve(lambda n: job.loss_fn(n, step=last), job.params(step=last),
                            int(job.run.loops[-1]), job.gs, step=last)


def _switch_settings(ps: ProbeSettings, job: Job) -> dict | None:
    if ps.geometry is None:
        return None
    hs = job.hs
    return {"k_top": hs.k_top, "tol": hs.tol, "max_steps": hs.max_steps,
            "trace_hvps": hs.trace_hvps, "seed": hs.seed, "grid": ps.geometry.grid,
            "plane_seed": ps.geometry.seed, "step": job.run.shift_step}


def _switch(job: Job) -> sc.Switch:
    run, s = job.run, job.run.shift_step
    i = run.index(s)
    after = int(run.loops[min(i + 1, len(run.loops) - 1)])
    lo, hi = max(i - 1, 0), min(i + 1, len(run.steps) - 1)
    here, nxt, prev = (job.params(step=int(run.steps[j])) for j in (i, hi, lo))

    def operator_at(loops: int) -> HessianOperator:
        return HessianOperator(job.driver.hvp_loss_fn(s, loops), job.params(step=s),
                               reduce=job.driver.reduce)

    return parts.switch(operator_at, job.loss_fn(after, step=s),
                        (here, nxt, prev if lo != i else None), after, job.hs, job.gs, step=s,
                        evaluate=job.evaluate("slice"))


def _qk_settings(ps: ProbeSettings, job: Job) -> dict | None:
    if ps.geometry is None:
        return None
    early = [int(s) for s in job.run.steps[1:1 + parts.QK_CHECKPOINTS]]
    return {"steps": early, "loops": list(parts.QK_LOOPS)}


def _qk(job: Job) -> sc.QkAlignment:
    early = [int(s) for s in job.run.steps[1:1 + parts.QK_CHECKPOINTS]]
    cpu = torch.device("cpu")
    return parts.qk_alignment([(s, lambda n, s=s: job.driver.loss_fn(s, n, cpu),
                                job.run.params(s)) for s in early])


register(Entry(sc.RiverProgress, "river progress over training", _river_progress_settings,
               _river_progress))
register(Entry(sc.Pca, "PCA plane of the trajectory", _pca_settings, _pca))
register(Entry(sc.LoopCurve, lambda job, part: f"loop curve (1..{part.loops[-1]} loops)",
               _loops_settings, _loops,
               when=lambda job: not job.run.custom))  # a model of your own has no loops
register(Entry(sc.Switch, "SHIFT switch diagnostics", _switch_settings, _switch,
               when=lambda job: job.run.shift_step is not None))
register(Entry(sc.QkAlignment, lambda job, part: f"Q/K gradient alignment ({part.loops[0]} "
               f"vs {part.loops[1]} loops)", _qk_settings,
               _qk, when=lambda job: not job.run.custom and len(job.run.steps) >= 2))

RUN_PARTS = tuple(n for n in REGISTRY if n not in STEP_PARTS)


# --- the driver -------------------------------------------------------------------------


class Driver:
    """Runs the registered parts on one run file, committing each as it finishes.

    ``ranks``: the process group when several processes probe together (Hessian products
    and grid cells shared out, rank 0 decides and writes); None for one process.
    """

    def __init__(self, path: str | Path, settings: ProbeSettings, report: Report | None = None,
                 ranks: Ranks | None = None, trust_code: bool = False,
                 progress: Progress | None = None):
        self.path, self.ranks, self.settings = Path(path), ranks, settings
        self.progress = progress
        self._estimate: dict[str, float] = {}  # plan's seconds per part of a checkpoint
        self._total = self._left = 0.0
        self.reduce = None if ranks is None else ranks.all_reduce_sum
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
        self.device = (torch.device(check_device(settings.device, available=True))
                       if ranks is None else ranks.device)
        self.shared: Plane | None = None  # the --shared-plane plane, the same at every step
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
        self._done: dict[tuple[str, int, str], sc.Part | None] = {}
        self._noted: set[str] = set()  # the skip notes said in this call
        self._adam: dict[int, tuple[np.ndarray, int]] = {}
        self._windows: dict[int, window_file.Window] | None = None
        self._starts: list[int] | None = None
        self._op: tuple[int, str, SymmetricOperator] | None = None
        self._costs: UnitCosts | None = None
        self._exact: tuple[bool, str] | None = None
        self.valley_curvature = self._check_curvatures(settings)

    def _check_curvatures(self, settings: ProbeSettings) -> str:
        """The valley split's curvature, after refusing what cannot run, before any work.

        Raises:
            LandscapeError: an unknown curvature, the GGN or Fisher under torchrun, or a
                model of your own whose custom loss does not declare its output (the
                refusal of :meth:`Run.split_objective`).
        """
        asked = tuple(sc.check_curvature(c) for c in settings.curvatures)
        if not asked:
            raise LandscapeError("--curvature: name at least one of " + ", ".join(sc.CURVATURES))
        valley = sc.check_curvature(settings.valley_curvature)
        used = set(asked if settings.hessian is not None else ()) | (
            {valley} if settings.geometry is not None else set())
        if used - {sc.HESSIAN}:
            if self.ranks is not None:
                raise LandscapeError("--curvature ggn/fisher runs in one process (not under "
                                     "torchrun)")
            self.run.split_objective("probe", -1)  # a custom loss's refusal, now
        return valley

    # --- the schedule -------------------------------------------------------------------

    def probe(self) -> list[int]:
        """Probe every selected checkpoint, then the run-level parts. Returns the steps."""
        steps = select_steps(self.run, self.settings.steps)
        if not self.settings.ignore_memory or self.progress is not None:
            costs, plans = self.plan(steps)
            if not self.settings.ignore_memory:
                check_memory(plans, available_memory(self.device), str(self.device))
            self._estimate = {p.name.rsplit("/", 1)[-1]: p.seconds for p in plans}
            starts = len(set(steps) & set(self.intervention_starts()))
            once = self._estimate.get("intervention", 0.0)  # only at intervention starts
            self._total = self._left = ((sum(self._estimate.values()) - once) * len(steps)
                                        + once * starts)
        if self.settings.geometry is not None:
            self._note_starts(steps)
        prev = None
        for step in steps:
            loops = int(self.run.loops[self.run.index(step)])
            self.report(f"step {step}" if self.run.custom else f"step {step} (loops {loops})")
            for curvature in self.settings.curvatures:
                job = Job(self, step, loops, prev, steps, curvature=curvature)
                for name in CURVATURE_PARTS:
                    self.ensure(name, job)
                self._op = None  # free the operator's graph before the next one
            job = Job(self, step, loops, prev, steps, curvature=self.valley_curvature)
            for name in STEP_PARTS:
                if name not in CURVATURE_PARTS:
                    self.ensure(name, job)
            self._op = None
            prev = step
        if self.settings.geometry is not None and len(steps) >= 2:
            job = Job(self, steps[-1], int(self.run.loops[-1]), None, steps,
                      curvature=self.valley_curvature)
            for name in RUN_PARTS:
                self.ensure(name, job)
        return steps

    def _note_starts(self, steps: list[int]) -> None:
        """Say which windows and intervention starts this call leaves unmeasured, and why.

        A run that stores neither is said so in one line (its optimiser's valley has no
        alternating span; claim 4's intervention cannot be measured on it).
        """
        windows = [int(w.start) for w in self.run.windows()]
        starts = self.intervention_starts()
        if not starts and not self.run.custom:
            self.report(f"{NOTE}intervention: none, the run stores no intervention start "
                        "([train] intervene_at)")
        checkpoints = {int(s) for s in self.run.steps}
        for what, at in (("window", windows), ("intervention start", starts)):
            off = [s for s in at if s not in checkpoints]
            unprobed = [s for s in at if s in checkpoints and s not in steps]
            if off:
                self.report(f"{NOTE}{what}s at steps {off} are not at checkpoints: not "
                            "measured (start them at checkpoint steps)")
            if unprobed:
                self.report(f"{NOTE}{what}s at steps {unprobed} are not among the checkpoints "
                            f"probed (--steps {','.join(map(str, unprobed))} measures them)")

    def plan(self, steps: list[int]) -> tuple[UnitCosts, list[PartPlan]]:
        """The estimated cost of each part of one checkpoint (:mod:`landscape.probe.costs`).

        Measured at the first of ``steps`` on this probe's device and dtype: one loss, one
        gradient, one create-graph gradient and three Hessian-vector products.
        """
        hs, gs = self.settings.hessian, self.settings.geometry
        costs = self.costs(steps)
        dense = self.exact_choice(steps)[0]
        sizes = dict(zip(self.run.layout.names, self.run.layout.sizes))
        blocks = None
        if hs is not None and hs.blocks:
            from landscape.curvature.param_blocks import blocks as make_blocks

            blocks = {b: sum(sizes[n] for n in names) for b, names in
                      make_blocks(self.run.layout.names, hs.block_patterns).items()}
        return costs, plan_parts(costs, hs, gs, dense=dense, blocks=blocks,
                                 curvatures=self.settings.curvatures, adam=self.run.has_adam,
                                 intervention=bool(self.intervention_starts()))

    def costs(self, steps: list[int]) -> UnitCosts:
        """The unit costs (:mod:`landscape.probe.costs`), measured once at ``steps[0]``."""
        if self._costs is None:
            hs = self.settings.hessian
            dtype = hs.torch_dtype if hs is not None else torch.float32
            step = steps[0]
            self._costs = measure_costs(self.loss_fn(step), self.run.params(
                step, dtype=dtype, device=self.device), dtype)
        return self._costs

    def exact_choice(self, steps: list[int]) -> tuple[bool, str]:
        """Whether the exact spectrum is computed, and why (decided once per call).

        ``--exact auto``: only where ``P <= --exact-max-params`` and the plan puts it under
        :data:`~landscape.probe.costs.EXACT_AUTO_SECONDS` per checkpoint; under torchrun,
        as rank 0 decides.
        """
        if self._exact is None:
            hs = self.settings.hessian
            if hs is None or hs.exact != "auto":
                on = hs is not None and hs.exact == "always"
                self._exact = (on, f"{'on' if on else 'off'} (--exact "
                                   f"{hs.exact if hs else 'never'})")
            elif self.run.layout.size > hs.exact_max_params:
                self._exact = (False, f"off: P = {self.run.layout.size:,} > "
                                      f"--exact-max-params {hs.exact_max_params:,}")
            else:
                self._exact = exact_auto(self.costs(steps), hs.exact_max_params)
                if self.ranks is not None:
                    self._exact = self.ranks.broadcast_object(self._exact)
        return self._exact

    def _asked(self, entry: Entry, job: Job) -> dict | None:
        """The settings of ``entry`` in this call, or None if it does not apply here."""
        want = entry.settings(self.settings, job)
        if want is None or not entry.when(job):
            return None
        why = entry.skip(job)
        if why is not None:
            if why not in self._noted:
                self._noted.add(why)
                self.report(f"{NOTE}{why}")
            return None
        if entry.cls.KIND == sc.HESSIAN and job.curvature != sc.HESSIAN:
            want = {**want, "curvature": job.curvature}  # (the Hessian's stay as they were)
        return want

    def ensure(self, name: str, job: Job) -> sc.Part | None:
        """The part ``name`` at ``job``'s checkpoint: reused if stored alike, else computed."""
        entry = REGISTRY[name]
        key = (name, job.step if name in STEP_PARTS else -1, self._curvature_of(entry, job))
        if key in self._done:
            return self._done[key]
        want = self._asked(entry, job)
        if want is None:
            return None
        inputs = {}
        for dep in entry.needs + entry.optional:
            inputs[dep] = self.get(dep, job)
            if inputs[dep] is None and dep in entry.needs:
                raise LandscapeError(
                    _no_curvature_probe(self.path, job.step, job.curvature)
                    if REGISTRY[dep].cls.KIND == sc.HESSIAN else f"step {job.step} has no "
                    f"{dep!r} part to compute {name!r} from")
        fp = sc.fingerprint(entry.cls, want, {d: p.fingerprint for d, p in inputs.items()
                                              if p is not None})
        found = None if self.settings.force else self.stored(entry.cls, key[1], fp, key[2])
        if found is not None:
            self._done[key] = found
            self._left -= self._estimate.get(name, 0.0) if name in STEP_PARTS else 0.0
            return found
        job = dataclasses.replace(job, inputs=inputs, fingerprint=fp, name=name)
        self._tell(job, name)
        t0 = time.perf_counter()
        part = entry.compute(job)
        self._left -= self._estimate.get(name, 0.0) if name in STEP_PARTS else 0.0
        if part is not None:
            part = dataclasses.replace(part, seconds=time.perf_counter() - t0,
                                       settings=want, fingerprint=fp)
            if isinstance(part, sc.HessianPart):
                part = dataclasses.replace(part, curvature=job.curvature)
            self.save(part, key[1])
            label = (entry.label(job, part) if callable(entry.label)
                     else entry.label.format(hs=job.hs, gs=job.gs, c=job.curvature))
            self.report(f"{label}: {part.seconds:.1f} s" +
                        (f", {part.hvps} HVPs" if part.hvps else ""))
        self._done[key] = part
        return part

    def _tell(self, job: Job, name: str) -> None:
        """Tell the progress callback (if any) that part ``name`` starts at ``job``."""
        if self.progress is None:
            return
        left = max(self._left, 0.0)
        self.progress(ProbeProgress(
            checkpoint=job.steps.index(job.step) + 1 if job.step in job.steps else len(job.steps),
            checkpoints=len(job.steps), step=job.step, part=name, seconds_left=left,
            fraction=1.0 - left / self._total if self._total > 0 else 0.0))

    def get(self, name: str, job: Job) -> sc.Part | None:
        """A part another one is computed from: ensured where asked for, else as stored."""
        entry = REGISTRY[name]
        if self._asked(entry, job) is not None:
            return self.ensure(name, job)
        return self.stored(entry.cls, job.step if name in STEP_PARTS else -1,
                           curvature=job.curvature)

    @staticmethod
    def _curvature_of(entry: Entry, job: Job) -> str:
        """The curvature a part is stored under ("" for the parts of no curvature)."""
        return job.curvature if entry.cls.KIND == sc.HESSIAN else ""

    # --- storage (rank 0 decides, every rank reads) -------------------------------------

    def stored(self, cls: type[sc.Part], step: int, fp: str | None = None,
               curvature: str = sc.HESSIAN) -> sc.Part | None:
        """The complete stored part, or None.

        With ``fp``: only with that fingerprint; ``curvature``: of a curvature part, the
        matrix ("" or ``hessian``: the Hessian).
        """
        step_arg = None if cls.KIND == sc.RUN else step
        curvature = curvature or sc.HESSIAN
        found = (self._read(cls, step_arg, curvature) if self.ranks is None or self.ranks.is_main
                 else None)
        ok = found is not None and (fp is None or found.fingerprint == fp)
        if self.ranks is None:
            return found if ok else None
        if not self.ranks.broadcast_object(ok):
            return None
        return found if found is not None else self._read(cls, step_arg, curvature)

    def _read(self, cls: type[sc.Part], step: int | None, curvature: str) -> sc.Part | None:
        try:
            return sc.read(self.path, cls, step, curvature)
        except sc.StaleError:  # written by another version: computed anew
            return None

    def save(self, part: sc.Part, step: int) -> None:
        """Commit a finished part (rank 0 only)."""
        if self.ranks is None or self.ranks.is_main:
            sc.write(self.path, part, None if part.KIND == sc.RUN else step)

    def evaluator(self, group: str, fp: str) -> parts.GridEvaluator:
        """Grids dealt out to the ranks, or resumable in one process."""
        if self.ranks is not None:
            from landscape.train.distributed import sharded_loss_grid

            ranks = self.ranks
            return lambda loss_fn, params, plane, alphas, betas: (sharded_loss_grid(
                loss_fn, params, plane, alphas, betas, ranks=ranks), 0)
        return _ResumableGrid(self.path, group, fp, force=self.settings.force)

    # --- the objective ------------------------------------------------------------------

    def loss_fn(self, step: int, loops: int | None = None, device: torch.device | None = None):
        """The probe-set loss at ``step`` (under ``loops`` if given) on ``device``."""
        device = device or self.device
        if self.run.custom:
            return self.run.loss_fn("probe", step, device=device)
        split = self.probe_split if device == self.device else self.probe_split_cpu
        return make_loss_fn(self.run.model(step, loops=loops, device=device), split)

    def hvp_loss_fn(self, step: int, loops: int | None = None):
        """The objective of Hessian products: with ranks, this rank's weighted share of it."""
        if self.ranks is None:
            return self.loss_fn(step, loops)
        from landscape.train.distributed import sharded_loss_fn

        return sharded_loss_fn(self.run.model(step, loops=loops, device=self.device),
                               self.probe_split, self.ranks)

    def operator(self, step: int, curvature: str = sc.HESSIAN) -> SymmetricOperator:
        """The operator of ``curvature`` at ``step`` in the asked dtype, built once.

        ``hessian``: :class:`HessianOperator` on the probe-set loss; ``ggn`` and ``fisher``:
        :class:`GGNOperator` and :class:`FisherOperator` on that loss split at the model's
        output (:meth:`Run.split_objective`). Each is checked for determinism once.
        """
        if self._op is None or self._op[:2] != (step, curvature):
            hs = self.settings.hessian or HessianSettings()
            params = self.run.params(step, dtype=hs.torch_dtype, device=self.device)
            if curvature == sc.HESSIAN:
                op = HessianOperator(self.hvp_loss_fn(step), params, dtype=hs.torch_dtype,
                                     reduce=self.reduce)
            else:
                kind = GGNOperator if curvature == "ggn" else FisherOperator
                op = kind(self.run.split_objective("probe", step, device=self.device), params,
                          dtype=hs.torch_dtype)
            op.check_determinism(seed=hs.seed)
            self._op = (step, curvature, op)
        return self._op[2]

    def warm_start(self, job: Job) -> np.ndarray | None:
        """The previous probed checkpoint's top eigenvectors ``[k, P]``, if stored."""
        if job.previous is None:
            return None
        prev = self.stored(sc.Top, job.previous, curvature=job.curvature)
        return None if prev is None else prev.vectors

    def adam_state(self, step: int) -> tuple[np.ndarray, int]:
        """AdamW's second moment ``[P]`` at checkpoint ``step`` and its step count (read once)."""
        if step not in self._adam:
            self._adam = {step: self.run.adam_state(step)}  # one at a time: P floats each
        return self._adam[step]

    def window_at(self, step: int) -> window_file.Window | None:
        """The per-step window that starts at checkpoint ``step``, or None."""
        if self._windows is None:
            self._windows = {w.start: w for w in self.run.windows()}
        return self._windows.get(int(step))

    def intervention_starts(self) -> list[int]:
        """The steps with a stored intervention start (``[train] intervene_at``)."""
        if self._starts is None:
            self._starts = [] if self.run.custom else self.run.intervention_starts()
        return self._starts

    def neighbours(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Flat parameters of the checkpoints before and after ``step`` (itself at the ends)."""
        i = self.run.index(step)
        lo, hi = max(i - 1, 0), min(i + 1, len(self.run.steps) - 1)
        rows = self.run.trajectory([int(self.run.steps[lo]), int(self.run.steps[hi])])
        return rows[0], rows[1]


# --- resumable grids --------------------------------------------------------------------

PARTIAL_EVERY_S = 20.0  # a grid in progress is committed at most this often


class _ResumableGrid:
    """A grid evaluator that commits finished cells now and then, and resumes from them.

    A grid a killed call left at ``group`` is taken over only if it was started with the
    same fingerprint (settings and inputs) on the same plane and axes.
    """

    def __init__(self, path: Path, group: str, fp: str, force: bool = False):
        self.path, self.group, self.fp, self.force = path, group, fp, force

    def __call__(self, loss_fn, params, plane: Plane, alphas, betas) -> tuple[np.ndarray, int]:
        shape = (len(alphas), len(betas))
        self.partial = sc.Grid(alphas=np.asarray(alphas), betas=np.asarray(betas),
                               loss=np.full(shape, np.nan), done=np.zeros(shape, dtype=bool),
                               plane=dict(plane.info), plane_hash=parts.plane_hash(plane),
                               fingerprint=self.fp, complete=False)
        found = None if self.force else sc.read_partial(self.path, sc.Grid, self.group)
        if (found is not None and not found.complete and found.done is not None
                and found.fingerprint == self.fp and found.plane_hash == self.partial.plane_hash
                and found.loss.shape == shape and np.array_equal(found.alphas, alphas)
                and np.array_equal(found.betas, betas)):
            self.partial = dataclasses.replace(self.partial, loss=found.loss.copy(),
                                               done=found.done.copy())
        resumed = int(self.partial.done.sum())
        self.last = time.perf_counter()
        grid = loss_grid(loss_fn, params, plane, alphas, betas, done=self.partial.done,
                         values=self.partial.loss, on_chunk=self.cells_done)
        return grid, resumed

    def cells_done(self, cells: np.ndarray, losses: np.ndarray) -> None:
        """Record finished cells; commit the grid in progress at most every PARTIAL_EVERY_S."""
        self.partial.done.flat[cells] = True
        self.partial.loss.flat[cells] = losses
        if time.perf_counter() - self.last >= PARTIAL_EVERY_S and not self.partial.done.all():
            store.commit(self.path, lambda tx: sc.put(tx, self.group, self.partial))
            self.last = time.perf_counter()


# --- entry points -----------------------------------------------------------------------


def _check_custom(run: Run, settings: ProbeSettings, ranks: Ranks | None) -> None:
    """What a probe of a model of your own cannot do (yet), said before any work."""
    if ranks is not None:
        raise LandscapeError(f"{run.path} is a model of your own: probe it in one process "
                             "(not under torchrun)")
    if settings.hessian is not None and settings.hessian.backend == "pyhessian":
        raise LandscapeError("--backend pyhessian needs one of landscape's own models")


def probe(path: str | Path, settings: ProbeSettings | None = None,
          report: Report | None = None, trust_code: bool = False,
          progress: Progress | None = None) -> list[int]:
    """Probe a run file's checkpoints (see the module docstring). Returns the steps probed.

    ``report`` gets a line per finished part; ``progress`` a :class:`ProbeProgress` as each
    part starts, with the time left from the plan (:mod:`landscape.probe.costs`).

    Holds the run file's writer lock for the whole call, so a run still being trained (or
    probed by another process) is refused with a message naming the writer. A run of your
    own model is probed only if the code it names may be imported (``trust_code``).
    """
    Run.open(path, trust_code=trust_code).require_code()
    settings = settings or ProbeSettings()
    if distributed.launched():  # torchrun, several ranks
        return _probe_ranks(Path(path), settings, report)
    with store.writer_lock(path, "probe"):
        return Driver(path, settings, report, trust_code=trust_code,
                      progress=progress).probe()


def plan(path: str | Path, settings: ProbeSettings | None = None,
         trust_code: bool = False) -> list[str]:
    """What :func:`probe` would cost, as lines of text, before any work (``--plan``).

    Reads the run file only (no lock, nothing written). Measures the units of
    :mod:`landscape.probe.costs` at the first selected checkpoint and lists each part's estimated
    HVPs, forwards, time and peak memory, the totals for the selected checkpoints, and the
    parts that would be refused for memory.
    """
    Run.open(path, trust_code=trust_code).require_code()
    settings = settings or ProbeSettings()
    driver = Driver(path, settings, None, trust_code=trust_code)
    steps = select_steps(driver.run, settings.steps)
    costs, plans = driver.plan(steps)
    lines = [f"plan for {path}: {len(steps)} checkpoint(s) {steps[:6]}"
             f"{' ...' if len(steps) > 6 else ''} on {driver.device}"]
    lines += format_plan(costs, plans, checkpoints=len(steps))
    if settings.hessian is not None:
        lines.append(f"  exact spectrum: {driver.exact_choice(steps)[1]}")
    avail = available_memory(driver.device)
    over = [p for p in plans if p.peak_bytes > avail]
    lines.append(f"  memory available on {driver.device}: {human_bytes(avail)}" +
                 (f"; refused without {MEMORY_FLAG}: {', '.join(p.name for p in over)}"
                  if over else ""))
    return lines


def _probe_ranks(path: Path, settings: ProbeSettings, report: Report | None) -> list[int]:
    """:func:`probe` on one rank of a torchrun job (gloo on CPU, nccl with cuda)."""
    with distributed.process_group(settings.device) as ranks, ranks.main_only(
            lambda: store.writer_lock(path, f"probe (rank 0 of {ranks.world})")):
        return Driver(path, settings, report if ranks.is_main else None, ranks).probe()
