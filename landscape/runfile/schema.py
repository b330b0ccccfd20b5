"""What the probe stores: one frozen dataclass per part, its group, and its codec.

This module is the only place that knows where probe results live in a run file and
under which keys. Every part is a frozen dataclass whose fields are its arrays and
scalars; :func:`write` turns one into the group it is stored as, :func:`read` turns a
stored group back into the dataclass (``None`` where the part was never completed).

Storage of a field, decided by its value: a numpy array is a dataset, a scalar (int,
float, bool, str) an attribute; fields declared with :func:`_json` are JSON attributes
(dicts such as a plane's description), with :func:`_nested` a subgroup holding another
dataclass, with :func:`_table` a subgroup of such subgroups by name, and with
:func:`_directions` two subgroups of named arrays (a plane's directions). A field left at
``None`` is not stored.

Every part also carries what the driver (:mod:`landscape.probe.driver`) needs to decide
whether a stored copy may be reused: ``settings``, the settings that shaped it (stored as
canonical JSON), and ``fingerprint``, a digest of those settings, the part's schema
``VERSION`` and the fingerprints of the parts it was computed from. A rerun skips a part
only when the fingerprint it would produce equals the stored one.

Groups::

    /probe/step_<N>/hessian/<name>    Top, Trace, Slq, Exact, Sharpness, Overlap, Blocks,
                                      PyHessian
    /probe/step_<N>/ggn/<name>        the same curvature parts of the generalised
    /probe/step_<N>/fisher/<name>     Gauss-Newton matrix and the empirical Fisher
    /probe/step_<N>/geometry/<name>   Valley, Widths, Spread, River, Grid (slice_random,
                                      slice_river_valley, slice_shared), OptimiserValley,
                                      Intervention
    /probe/run/<name>                 RiverProgress, Pca, LoopCurve, Switch, QkAlignment

To add a part: subclass :class:`Part` here (``KIND``, ``NAME``, typed fields), add it
to :data:`PARTS`, then see :mod:`landscape.probe.driver` for its compute function and
registry entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from landscape.errors import LandscapeError
from landscape.runfile import store

HESSIAN, GEOMETRY, RUN = "hessian", "geometry", "run"
CURVATURES = ("hessian", "ggn", "fisher")
"""The curvature matrices whose parts (``KIND`` :data:`HESSIAN`) can be stored: each in a
group of its own name beside ``hessian`` (:meth:`Part.group`)."""
P = TypeVar("P", bound="Part")


def _json(**kw) -> Any:
    """A dict field stored as one JSON attribute."""
    return field(metadata={"as": "json"}, **kw)


def _nested(cls: type, **kw) -> Any:
    """A field holding another dataclass, stored as a subgroup."""
    return field(metadata={"as": "nested", "cls": cls}, **kw)


def _table(cls: type, **kw) -> Any:
    """A ``{name: dataclass}`` field, stored as one subgroup per name."""
    return field(metadata={"as": "table", "cls": cls}, **kw)


def _directions(**kw) -> Any:
    """A plane's ``{"x": {name: array}, "y": {...}}``, stored as two subgroups of datasets."""
    return field(metadata={"as": "directions"}, **kw)


# --- the base ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Part:
    """What every stored part has beside its own fields.

    Attributes:
        hvps: Hessian-vector products it cost (0 for parts without any).
        seconds: wall-clock seconds it took.
        settings: the settings that shaped it (set by the driver; stored as canonical JSON).
        fingerprint: digest of ``settings``, the schema ``VERSION`` and the fingerprints
            of the parts it was computed from (set by the driver).
    """

    KIND: ClassVar[str] = ""
    NAME: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1  # bump when what a part means or how it is computed changes

    hvps: int = 0
    seconds: float = 0.0
    settings: dict = _json(default_factory=dict)
    fingerprint: str = ""

    @classmethod
    def group(cls, step: int | None = None, curvature: str = HESSIAN) -> str:
        """The group this part is stored at (``step``: the checkpoint, for per-step parts).

        ``curvature``: for a curvature part (``KIND`` :data:`HESSIAN`), the matrix it
        measures (one of :data:`CURVATURES`), whose name is its group's folder.

        >>> Top.group(8), Top.group(8, "ggn"), Valley.group(8, "ggn")
        ('probe/step_8/hessian/top', 'probe/step_8/ggn/top', 'probe/step_8/geometry/valley')
        """
        if cls.KIND == RUN:
            return f"probe/run/{cls.NAME}"
        if step is None:
            raise LandscapeError(f"part {cls.NAME!r} is stored per checkpoint: give a step")
        kind = cls.KIND
        if kind == HESSIAN:
            check_curvature(curvature)
            kind = curvature
        return f"probe/step_{int(step)}/{kind}/{cls.NAME}"


def check_curvature(name: str) -> str:
    """``name`` if it is one of :data:`CURVATURES`, else a LandscapeError naming them."""
    if name not in CURVATURES:
        raise LandscapeError(f"unknown curvature {name!r}: use one of {', '.join(CURVATURES)}")
    return name


def settings_json(settings: Mapping) -> str:
    """The canonical JSON of a settings mapping (sorted keys, no spaces)."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=_plain)


def fingerprint(cls: type[Part], settings: Mapping, inputs: Mapping[str, str]) -> str:
    """The digest a part computed with ``settings`` from parts of ``inputs`` fingerprints."""
    text = settings_json({"part": cls.NAME, "version": cls.VERSION, "settings": settings,
                          "inputs": dict(inputs)})
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


# --- Hessian parts (per checkpoint) -----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HessianPart(Part):
    """A Hessian part: the objective is the probe-set loss after ``loops`` loops.

    Attributes:
        loops: loops of the objective (the architecture live at the checkpoint).
        dtype: ``float32`` or ``float64`` products.
        curvature: the matrix measured, one of :data:`CURVATURES` (the Hessian, the
            generalised Gauss-Newton matrix or the empirical Fisher of that loss).
    """

    KIND: ClassVar[str] = HESSIAN
    loops: int = 0
    dtype: str = "float32"
    curvature: str = HESSIAN  # the matrix measured: one of CURVATURES


@dataclass(frozen=True, kw_only=True)
class Top(HessianPart):
    """Top-k and bottom-k eigenpairs by Lanczos.

    Attributes:
        values: ``[k]`` top eigenvalues, descending.
        residuals: ``[k]`` their relative residuals.
        converged: ``[k]`` whether each met ``tol``.
        vectors: ``[k, P]`` float32 top eigenvectors (rows, ParamLayout order).
        bottom_values: ``[k_bottom]`` bottom eigenvalues, ascending.
        bottom_residuals: ``[k_bottom]``.
        bottom_converged: ``[k_bottom]``.
        lanczos_steps: Lanczos steps taken.
        tol: the relative residual tolerance.
        warm_start: whether it started from the previous checkpoint's vectors.
        converged_all: every requested pair converged.
    """

    NAME: ClassVar[str] = "top"
    values: np.ndarray
    residuals: np.ndarray
    converged: np.ndarray
    vectors: np.ndarray
    bottom_values: np.ndarray
    bottom_residuals: np.ndarray
    bottom_converged: np.ndarray
    lanczos_steps: int
    tol: float
    warm_start: bool
    converged_all: bool

    @property
    def lambda_max(self) -> float:
        """The largest eigenvalue."""
        return float(self.values[0])


@dataclass(frozen=True, kw_only=True)
class Trace(HessianPart):
    """Hutch++ trace with the top-k eigenvectors deflated.

    Attributes:
        estimate: the trace.
        stderr: its standard error.
        bulk: the trace on the complement of the top-k eigenvectors.
        top_sum: the deflated part (sum of the top-k Rayleigh quotients).
        samples: ``[n]`` the bulk's Hutchinson samples.
        probes: random probes drawn.
    """

    NAME: ClassVar[str] = "trace"
    estimate: float
    stderr: float
    bulk: float
    top_sum: float
    samples: np.ndarray
    probes: int


@dataclass(frozen=True, kw_only=True)
class Slq(HessianPart):
    """Stochastic Lanczos quadrature: raw nodes and weights ``[runs, steps]``, and P."""

    NAME: ClassVar[str] = "slq"
    nodes: np.ndarray
    weights: np.ndarray
    dim: int


@dataclass(frozen=True, kw_only=True)
class Exact(HessianPart):
    """The full spectrum of the dense Hessian, and of the Adam-preconditioned one.

    Attributes:
        eigvals: ``[P]`` ascending eigenvalues (float64 ``eigvalsh``).
        vectors: ``[k, P]`` float32 top-k eigenvectors (rows, descending eigenvalue).
        adam_eigvals: ``[P]`` ascending eigenvalues of ``D^-1/2 H D^-1/2`` with ``D``
            AdamW's update denominator at the checkpoint (None without Adam state).
        adam_vectors: ``[k, P]`` its top-k eigenvectors (None without Adam state).
        adam_step: Adam's step count behind ``D`` (0: none).
    """

    NAME: ClassVar[str] = "exact"
    VERSION: ClassVar[int] = 2
    eigvals: np.ndarray
    vectors: np.ndarray | None = None
    adam_eigvals: np.ndarray | None = None
    adam_vectors: np.ndarray | None = None
    adam_step: int = 0


@dataclass(frozen=True, kw_only=True)
class Sharpness(HessianPart):
    """lambda_max beside the stability edge of the optimiser that produced the checkpoint.

    The edges are those of :mod:`landscape.curvature.stability`: ``2 / lr`` for SGD,
    ``(2 + 2 beta) / lr`` for heavy-ball momentum ``beta``, Nesterov's, and for Adam/AdamW
    ``(2 + 2 beta1) / ((1 - beta1) lr)`` on the preconditioned Hessian.

    Attributes:
        lambda_max: the top Hessian eigenvalue.
        lr: the learning rate of the step that led to the checkpoint.
        threshold: the optimiser's edge (NaN where unknown: ``edge_unknown`` says why).
        adam_lambda_max: top eigenvalue of the Adam-preconditioned Hessian (NaN without
            Adam state, or before the first optimiser step).
        adam_threshold: the edge it is compared with (NaN for an optimiser without one).
        adam_step: Adam's step count behind the preconditioner.
        optimizer: the optimiser, e.g. ``SGD (heavy ball 0.9)`` (``""``: stored by a
            version before optimisers were recorded, where ``threshold`` is ``2 / lr``).
        edge_on: what ``threshold`` is compared with: ``hessian`` (``lambda_max``) or
            ``preconditioned`` (``adam_lambda_max``).
        edge_unknown: why the edge is unknown (``""`` where it is known).
    """

    NAME: ClassVar[str] = "sharpness"
    VERSION: ClassVar[int] = 2
    lambda_max: float
    lr: float
    threshold: float
    adam_lambda_max: float
    adam_threshold: float
    adam_step: int
    optimizer: str = ""
    edge_on: str = "hessian"
    edge_unknown: str = ""


@dataclass(frozen=True, kw_only=True)
class Overlap(HessianPart):
    """Cosines of the principal angles between this and ``previous_step``'s top-k spaces."""

    NAME: ClassVar[str] = "overlap"
    cosines: np.ndarray
    previous_step: int


@dataclass(frozen=True)
class BlockSpectrum:
    """One parameter group's Hessian block: top ``values``, ``trace``, its ``names``."""

    values: np.ndarray
    converged: np.ndarray
    trace: float
    trace_stderr: float
    dim: int
    names: np.ndarray


@dataclass(frozen=True, kw_only=True)
class Blocks(HessianPart):
    """Per-block spectra, ``{block: BlockSpectrum}`` (see landscape.curvature.param_blocks)."""

    NAME: ClassVar[str] = "blocks"
    groups: dict[str, BlockSpectrum] = _table(BlockSpectrum)


@dataclass(frozen=True, kw_only=True)
class PyHessian(HessianPart):
    """PyHessian 0.1's numbers on the same objective (``--backend pyhessian``).

    Attributes:
        eigenvalues: ``[n]`` in PyHessian's order.
        trace: its Hutchinson trace.
        trace_stderr: its standard error.
        unsupported: ``{what: why}`` for what PyHessian cannot do here.
    """

    NAME: ClassVar[str] = "pyhessian"
    eigenvalues: np.ndarray
    trace: float
    trace_stderr: float
    unsupported: dict = _json(default_factory=dict)


# --- geometry parts (per checkpoint) ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Valley(Part):
    """The river/valley split of the spectrum (:mod:`landscape.geometry.valley`).

    Attributes:
        source: ``exact`` (the full spectrum) or ``slq`` (estimated from the density).
        eps: the absolute river threshold.
        tau: the upper bound of the small-eigenvalue band (eps, tau].
        lambda_max: the largest eigenvalue.
        dim: P.
        river_dim: (estimated) count of ``|lambda| <= eps``.
        valley_dim: count of ``lambda > eps``.
        negative_dim: count of ``lambda < -eps``.
        valley_min: the smallest valley eigenvalue.
        kappa: ``lambda_max / valley_min``.
        small_count: count in (eps, tau].
        small_force: sum of ``1/lambda`` over (eps, tau].
        label: ``U``, ``V``, ``intermediate`` or ``none``.
        extra: the rest of the split (standard errors of an SLQ split, ``kappa_source``,
            ``valley_force`` of an exact one).
    """

    KIND: ClassVar[str] = GEOMETRY
    NAME: ClassVar[str] = "valley"
    source: str
    eps: float
    tau: float
    lambda_max: float
    dim: int
    river_dim: float
    valley_dim: float
    negative_dim: float
    valley_min: float
    kappa: float
    small_count: float
    small_force: float
    label: str
    extra: dict = _json(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Widths(Part):
    """Valley widths along the top valley eigenvectors at a loss rise ``delta``.

    Attributes:
        delta: the loss rise (nats).
        lam: ``[k]`` the eigenvalues of the directions.
        alphas: ``[k, n]`` slice coordinates.
        losses: ``[k, n]`` the losses along them.
        left: ``[k]`` where each slice first rises by delta on the left (negative).
        right: ``[k]`` on the right.
        width: ``[k]`` ``right - left``.
        quadratic: ``[k]`` the parabola's width ``2 sqrt(2 delta / lambda)``.
        ratio: ``[k]`` ``width / quadratic``.
    """

    KIND: ClassVar[str] = GEOMETRY
    NAME: ClassVar[str] = "widths"
    delta: float
    lam: np.ndarray
    alphas: np.ndarray
    losses: np.ndarray
    left: np.ndarray
    right: np.ndarray
    width: np.ndarray
    quadratic: np.ndarray
    ratio: np.ndarray


@dataclass(frozen=True, kw_only=True)
class Spread(Part):
    """How varied the valley's cliffs are: loss rises along random valley directions.

    Attributes:
        k: the number of top eigenvectors spanning the valley subspace (the same for every
            run compared).
        delta: the loss rise that sets the distance ``sqrt(2 delta / lambda_max)``.
        radius: that distance.
        rises: ``[n]`` the symmetric loss rise along each direction.
        cv: their coefficient of variation (0: uniformly steep cliffs, River-U).
        p90_p10: their 90th over 10th percentile.
        adam_radius: the same on the Adam-preconditioned Hessian (NaN without Adam state).
        adam_rises: ``[n]`` (None without Adam state).
        adam_cv: their coefficient of variation (NaN without).
        adam_p90_p10: their 90th over 10th percentile (NaN without).
        source: where the eigenvectors came from: ``exact`` or ``lanczos``.
    """

    KIND: ClassVar[str] = GEOMETRY
    NAME: ClassVar[str] = "spread"
    k: int
    delta: float
    radius: float
    rises: np.ndarray
    cv: float
    p90_p10: float
    adam_radius: float = float("nan")
    adam_rises: np.ndarray | None = None
    adam_cv: float = float("nan")
    adam_p90_p10: float = float("nan")
    source: str = "lanczos"


@dataclass(frozen=True, kw_only=True)
class River(Part):
    """The river direction at a checkpoint: the step with its valley part removed.

    Attributes:
        direction: ``[P]`` float32 unit river direction (zeros where degenerate).
        step_norm: norm of the step between the neighbouring checkpoints.
        river_norm: norm of its river part.
        valley_fraction: share of the step's squared norm in the valley.
        degenerate: no river direction (a zero step, or all of it in the valley).
        valley_rank: valley eigenvectors projected out.
    """

    KIND: ClassVar[str] = GEOMETRY
    NAME: ClassVar[str] = "river"
    direction: np.ndarray
    step_norm: float
    river_norm: float
    valley_fraction: float
    degenerate: bool
    valley_rank: int


@dataclass(frozen=True, kw_only=True)
class Grid(Part):
    """A 2-D loss grid on a plane through a checkpoint.

    Attributes:
        alphas: ``[na]`` x coordinates.
        betas: ``[nb]`` y coordinates.
        loss: ``[na, nb]`` losses (NaN where not yet computed).
        plane: how the plane was made (``kind``, seed, reference, ...).
        loops: loops of the objective.
        plane_hash: digest of the directions (equal hashes: the same plane).
        directions: ``{"x": {name: array}, "y": {...}}``, or None where not stored.
        done: ``[na, nb]`` mask of computed cells of a grid in progress (else None).
        complete: False for a grid in progress.
        resumed_cells: cells taken over from a killed call.
        skipped: why no grid was computed (then the arrays are empty), else "".
    """

    KIND: ClassVar[str] = GEOMETRY
    NAME: ClassVar[str] = "slice"
    alphas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    betas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    plane: dict = _json(default_factory=dict)
    loops: int = 0
    plane_hash: str = ""
    directions: dict | None = _directions(default=None)
    done: np.ndarray | None = None
    complete: bool = True
    resumed_cells: int = 0
    skipped: str = ""


@dataclass(frozen=True, kw_only=True)
class SliceRandom(Grid):
    """A random filter-normalised plane around the checkpoint."""

    NAME: ClassVar[str] = "slice_random"


@dataclass(frozen=True, kw_only=True)
class SliceRiverValley(Grid):
    """The plane of the river direction and the top valley eigenvector."""

    NAME: ClassVar[str] = "slice_river_valley"


@dataclass(frozen=True, kw_only=True)
class SliceShared(Grid):
    """A random plane normalised against a reference checkpoint shared by several runs."""

    NAME: ClassVar[str] = "slice_shared"


@dataclass(frozen=True, kw_only=True)
class OptimiserValley(Part):
    """The valley AdamW defines at a checkpoint (:mod:`landscape.geometry.optimiser_valley`).

    The edge span: the preconditioned eigen-directions with eigenvalue at least ``factor``
    times the edge ``(2 + 2 beta1) / ((1 - beta1) lr)``, mapped to parameters by
    ``D^-1/2``, orthonormalised; where none is near the edge (``near_edge`` False) its
    top ``k`` instead (``note`` says which). The alternating span (where a per-step window
    starts at this checkpoint): the top directions of the window's second differences.
    Angles are principal angles in radians, ascending; the U/V measures are those of the
    Hessian restricted to the span (``Q H Q'``).

    Attributes:
        edge: the optimiser's edge.
        factor: near means ``>= factor * edge``.
        near_edge: some preconditioned eigenvalue is near the edge.
        all_near: every one examined is (the span may be incomplete).
        k: the edge span's dimension.
        note: what the edge span is, in words.
        pre_values: ``[m]`` preconditioned eigenvalues examined, descending.
        basis: ``[k, P]`` float32 orthonormal rows of the edge span.
        raw_k: the raw top-k Hessian span's dimension compared.
        angles_raw_edge: ``[min(raw_k, k)]`` principal angles raw top-k vs edge span.
        edge_eigvals: ``[k]`` eigenvalues of H restricted to the edge span, descending.
        edge_kappa: their max / min (NaN unless all > 0).
        edge_force: sum of 1 / eigenvalue over the positive ones.
        edge_cv: steepness CV ``sqrt(2 / (k + 2)) std / mean``.
        window_start: the window read for the alternating span (-1: none).
        alt_basis: ``[k_alt, P]`` float32 rows of the alternating span (None: no window).
        alt_singular: ``[n]`` singular values of the second differences.
        alt_captured: share of their energy in the span.
        alt_share: alternating energy over the updates' energy.
        angles_edge_alt: ``[.]`` principal angles edge vs alternating span.
        angles_raw_alt: ``[.]`` raw top-k vs alternating span.
        alt_eigvals: ``[k_alt]`` H restricted to the alternating span.
        alt_kappa: their max / min.
        alt_force: sum of 1 / eigenvalue over the positive ones.
        alt_cv: steepness CV.
    """

    KIND: ClassVar[str] = GEOMETRY
    NAME: ClassVar[str] = "optimiser_valley"
    edge: float
    factor: float
    near_edge: bool
    all_near: bool
    k: int
    note: str
    pre_values: np.ndarray
    basis: np.ndarray
    raw_k: int
    angles_raw_edge: np.ndarray
    edge_eigvals: np.ndarray
    edge_kappa: float
    edge_force: float
    edge_cv: float
    window_start: int = -1
    alt_basis: np.ndarray | None = None
    alt_singular: np.ndarray | None = None
    alt_captured: float = float("nan")
    alt_share: float = float("nan")
    angles_edge_alt: np.ndarray | None = None
    angles_raw_alt: np.ndarray | None = None
    alt_eigvals: np.ndarray | None = None
    alt_kappa: float = float("nan")
    alt_force: float = float("nan")
    alt_cv: float = float("nan")


@dataclass(frozen=True, kw_only=True)
class InterventionArm:
    """One arm of an intervention: K steps from the start, unchanged or valley removed.

    Attributes:
        loss_end: probe-set loss after the K steps.
        batch_loss: ``[K]`` training loss of each step's batch, before its update.
        river: displacement along the unit river direction (``u . (theta_K - theta_0)``).
        valley: norm of the displacement in the valley span (``||V (theta_K - theta_0)||``).
        valley_path: summed per-step valley motion ``sum_t ||V d_t||``.
    """

    loss_end: float
    batch_loss: np.ndarray
    river: float
    valley: float
    valley_path: float


@dataclass(frozen=True, kw_only=True)
class Intervention(Part):
    """Claim 4's intervention at a start step (:mod:`landscape.train.intervention`).

    From the stored state at this step, K steps with the same batches: ``unchanged``, and
    ``removed`` with each AdamW update's component in the valley span removed. The river
    direction ``u`` is the unchanged arm's displacement with the valley part projected
    out, normalised; the loss is the run's probe-set loss.

    Attributes:
        steps: K.
        valley_k: the valley span's dimension.
        valley_source: which span: ``edge`` (the optimiser's edge span) or ``raw``.
        projects: what is projected: ``adam_update`` (the move, not the gradient).
        loss_start: probe-set loss at the start.
        unchanged: the unchanged arm.
        removed: the valley-removed arm.
    """

    KIND: ClassVar[str] = GEOMETRY
    NAME: ClassVar[str] = "intervention"
    steps: int
    valley_k: int
    valley_source: str
    projects: str
    loss_start: float
    unchanged: InterventionArm = _nested(InterventionArm)
    removed: InterventionArm = _nested(InterventionArm)

    @property
    def progress_lost(self) -> float:
        """Loss decrease unchanged minus valley removed (> 0: removing the valley costs)."""
        return self.removed.loss_end - self.unchanged.loss_end


# --- run-level parts --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RiverProgress(Part):
    """Progress along the river over the whole trajectory.

    Attributes:
        steps: ``[n]`` every checkpoint's step.
        progress: ``[n]`` cumulative river progress at each.
        river_steps: ``[n-1]`` river part of each step.
        off_river_steps: ``[n-1]`` its valley part.
        probed_steps: the checkpoints whose valley bases were used.
        signed: whether progress is signed.
    """

    KIND: ClassVar[str] = RUN
    NAME: ClassVar[str] = "river_progress"
    steps: np.ndarray
    progress: np.ndarray
    river_steps: np.ndarray
    off_river_steps: np.ndarray
    probed_steps: np.ndarray
    signed: bool


@dataclass(frozen=True, kw_only=True)
class Pca(Part):
    """The PCA plane of the trajectory, with a loss grid on it at the last checkpoint.

    Attributes:
        grid: the loss on the plane (:class:`Grid`, without directions).
        components: ``[2, P]`` the principal directions.
        coords: ``[n, 2]`` each checkpoint's coordinates on the plane.
        residuals: ``[n]`` each checkpoint's distance from the plane.
        steps: ``[n]`` the checkpoints.
        true_loss: ``[n]`` loss at each checkpoint.
        plane_loss: ``[n]`` loss at its projection on the plane.
        explained_variance_ratio: ``[2]``.
    """

    KIND: ClassVar[str] = RUN
    NAME: ClassVar[str] = "pca"
    grid: Grid = _nested(Grid)
    components: np.ndarray
    coords: np.ndarray
    residuals: np.ndarray
    steps: np.ndarray
    true_loss: np.ndarray
    plane_loss: np.ndarray
    explained_variance_ratio: np.ndarray


@dataclass(frozen=True, kw_only=True)
class LoopCurve(Part):
    """Loss and lambda_max against the number of loops at the final weights.

    Attributes:
        loops: ``[n]`` loop counts.
        loss: ``[n]``.
        lambda_max: ``[n]``.
        converged: ``[n]``.
        hvps_per_loop: ``[n]`` products spent per loop count.
        step: the checkpoint.
        trained_loops: the loops it was trained with.
    """

    KIND: ClassVar[str] = RUN
    NAME: ClassVar[str] = "loops"
    loops: np.ndarray
    loss: np.ndarray
    lambda_max: np.ndarray
    converged: np.ndarray
    hvps_per_loop: np.ndarray
    step: int
    trained_loops: int


@dataclass(frozen=True)
class SwitchSide:
    """The top of the spectrum on one side of the SHIFT switch."""

    loss: float
    values: np.ndarray
    trace: float
    trace_stderr: float


@dataclass(frozen=True, kw_only=True)
class Switch(Part):
    """What happens at the SHIFT switch: one checkpoint, before (1 loop) and after.

    Attributes:
        before: under 1 loop.
        after: under ``loops_after`` loops.
        overlap: cosines of the principal angles between the two top-k eigenspaces.
        loss_jump: ``after.loss - before.loss``.
        slice: a grid through the switch and its neighbouring checkpoints (origin: the
            switch; (1, 0): the next checkpoint; (c, 1): the previous one), under
            ``loops_after``.
        step: the switch checkpoint.
        loops_after: loops after the switch.
    """

    KIND: ClassVar[str] = RUN
    NAME: ClassVar[str] = "switch"
    before: SwitchSide = _nested(SwitchSide)
    after: SwitchSide = _nested(SwitchSide)
    overlap: np.ndarray
    loss_jump: float
    slice: Grid = _nested(Grid)
    step: int
    loops_after: int


@dataclass(frozen=True, kw_only=True)
class QkAlignment(Part):
    """Cosine between the W_Q/W_K gradients under two loop counts, at early checkpoints.

    The same weights, the same probe set; only the number of loops differs, so the cosine
    says whether looping changes the direction in which attention is pulled.

    Attributes:
        steps: ``[n]`` the checkpoints (the first ones after initialisation).
        loops: ``[2]`` the two loop counts compared.
        cosine: ``[n]`` the cosines.
    """

    KIND: ClassVar[str] = RUN
    NAME: ClassVar[str] = "qk_alignment"
    steps: np.ndarray
    loops: np.ndarray
    cosine: np.ndarray


PARTS: dict[str, type[Part]] = {cls.NAME: cls for cls in (
    Top, Trace, Slq, Exact, Sharpness, Overlap, Blocks, PyHessian,
    Valley, Widths, Spread, River, SliceRandom, SliceRiverValley, SliceShared,
    OptimiserValley, Intervention, RiverProgress, Pca, LoopCurve, Switch, QkAlignment)}


_BOOKKEEPING = ("hvps", "seconds", "settings", "fingerprint")
_SHOWN_VALUES = 4  # a 1-D array up to this long is shown by its values


def _short(v: Any) -> str:
    """A field's value in a repr: arrays by shape and first values, dicts by keys."""
    if isinstance(v, np.ndarray):
        if v.ndim == 1 and v.dtype.kind == "b":
            return f"[{int(v.sum())} of {v.size} True]"
        if v.ndim == 1 and v.dtype.kind in "iuf":
            head = ", ".join(f"{x:.4g}" if v.dtype.kind == "f" else str(x)
                             for x in v[:_SHOWN_VALUES].tolist())
            return f"[{head}]" if v.size <= _SHOWN_VALUES else f"[{head}, ... ({v.size})]"
        return f"array{list(v.shape)}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, dict):
        keys = list(v)
        more = ", ..." if len(keys) > _SHOWN_VALUES else ""
        return "{" + ", ".join(map(str, keys[:_SHOWN_VALUES])) + more + "}"
    return repr(v)


def short_repr(obj: Any) -> str:
    """``Name(field=value, ...)`` with arrays as shapes: what printing a part shows.

    >>> Slq(nodes=np.zeros((2, 3)), weights=np.zeros((2, 3)), dim=7, curvature="ggn")
    Slq(loops=0, dtype='float32', curvature='ggn', nodes=array[2, 3], weights=array[2, 3], dim=7)
    >>> Overlap(cosines=np.linspace(1, 0.5, 6), previous_step=8)  # doctest: +ELLIPSIS
    Overlap(loops=0, ..., cosines=[1, 0.9, 0.8, 0.7, ... (6)], previous_step=8)
    """
    shown = (f"{f.name}={_short(getattr(obj, f.name))}" for f in dataclasses.fields(obj)
             if f.name not in _BOOKKEEPING and getattr(obj, f.name) is not None)
    return f"{type(obj).__name__}({', '.join(shown)})"


for _cls in (*PARTS.values(), Part, HessianPart, Grid, BlockSpectrum, SwitchSide,
             InterventionArm):
    _cls.__repr__ = short_repr  # the dataclasses' own repr would print whole arrays


def part_class(name: str) -> type[Part]:
    """The part class stored under ``name`` (raises LandscapeError naming the known ones)."""
    if name not in PARTS:
        raise LandscapeError(f"unknown probe part {name!r} (parts: {', '.join(PARTS)})")
    return PARTS[name]


# --- the codec --------------------------------------------------------------------------


class StaleError(LandscapeError):
    """A stored group that does not fit the part's schema (written by another version)."""


class NotProbed(LandscapeError):
    """A part that was never computed (or whose computation never completed).

    Raised by the reader where a part is required; a caller that can do without the part
    catches exactly this, so that a damaged part (:class:`StaleError`, or a damaged file)
    still reaches the user.
    """


def encode(obj: Any) -> list[tuple[str, dict, dict]]:
    """``[(relative group, arrays, attrs), ...]`` of a dataclass ("" is its own group)."""
    arrays: dict = {}
    attrs: dict = {}
    subs: list[tuple[str, dict, dict]] = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        kind = f.metadata.get("as")
        if v is None:
            continue
        if kind == "nested":
            subs += [(_join(f.name, g), a, t) for g, a, t in encode(v)]
        elif kind == "table":
            for key, item in v.items():
                subs += [(_join(f"{f.name}/{key}", g), a, t) for g, a, t in encode(item)]
            subs.append((f.name, {}, {"keys": list(v)}))
        elif kind == "directions":
            for axis, d in v.items():
                subs.append((f"{f.name}/{axis}", {k: np.asarray(a) for k, a in d.items()}, {}))
        elif kind == "json":
            attrs[f.name] = dict(v)
        elif isinstance(v, np.ndarray):
            arrays[f.name] = v
        elif isinstance(v, (bool, np.bool_)):
            attrs[f.name] = bool(v)
        elif isinstance(v, (int, np.integer)):
            attrs[f.name] = int(v)
        elif isinstance(v, (float, np.floating)):
            attrs[f.name] = float(v)
        elif isinstance(v, str):
            attrs[f.name] = v
        else:
            raise TypeError(f"{type(obj).__name__}.{f.name}: cannot store {type(v).__name__}")
    return [("", arrays, attrs), *subs]


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if b else a


def decode(cls: type, d: Mapping) -> Any:
    """The dataclass ``cls`` from a group read by :func:`landscape.runfile.store.read_group`."""
    attrs = d.get("attrs", {})
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind = f.metadata.get("as")
        sub = d.get(f.name)
        if kind == "nested":
            if isinstance(sub, Mapping):
                kwargs[f.name] = decode(f.metadata["cls"], sub)
        elif kind == "table":
            if isinstance(sub, Mapping):
                keys = sub.get("attrs", {}).get("keys") or [k for k in sub if k != "attrs"]
                kwargs[f.name] = {k: decode(f.metadata["cls"], sub[k]) for k in keys}
        elif kind == "directions":
            if isinstance(sub, Mapping):
                kwargs[f.name] = {axis: {k: np.asarray(v) for k, v in g.items() if k != "attrs"}
                                  for axis, g in sub.items() if axis != "attrs"}
        elif kind == "json":
            if f.name in attrs:
                v = attrs[f.name]
                kwargs[f.name] = v if isinstance(v, dict) else {}
        elif f.name in d and not isinstance(sub, Mapping):
            kwargs[f.name] = np.asarray(sub)
        elif f.name in attrs:
            kwargs[f.name] = attrs[f.name]
        if f.name not in kwargs and f.default is dataclasses.MISSING and \
                f.default_factory is dataclasses.MISSING:
            raise StaleError(f"stored {getattr(cls, 'NAME', cls.__name__)!r} has no "
                             f"{f.name!r}: written by another version of landscape")
    return cls(**kwargs)


# --- reading and writing ----------------------------------------------------------------


def read(path: str | Path, cls: type[P], step: int | None = None,
         curvature: str = HESSIAN) -> P | None:
    """The part ``cls`` stored in a run file (at checkpoint ``step``), or None.

    None also for a part in progress (a grid a killed call left half done). ``curvature``:
    which matrix's part, for a curvature part (see :meth:`Part.group`).

    Raises:
        StaleError: the stored group does not fit the schema (another version wrote it;
            probe again with ``--force``).
        LandscapeError: the run file is damaged (e.g. a missing or truncated array).
    """
    d = store.read_group(path, cls.group(step, curvature))
    if d is None or not d.get("attrs", {}).get("complete", False):
        return None
    try:
        return decode(cls, d)
    except StaleError as e:
        raise StaleError(f"{path}: {e}; probe it again with --force") from None


def require(path: str | Path, cls: type[P], step: int | None = None,
            curvature: str = HESSIAN) -> P:
    """The part ``cls`` stored in a run file (at checkpoint ``step``, of ``curvature``).

    Raises:
        NotProbed: it was never computed (or not completed); the message names the probe.
        StaleError: it does not fit the schema (see :func:`read`).
    """
    found = read(path, cls, step, curvature)
    if found is None:
        where = "" if cls.KIND == RUN else f"step {step} of "
        flag = "--hessian" if cls.KIND == HESSIAN else "--geometry"
        if cls.KIND == HESSIAN and curvature != HESSIAN:
            flag = f"--curvature {curvature}"
        raise NotProbed(f"{where}{path} has no {cls.NAME!r} part; run `landscape probe "
                        f"{path} {flag}`")
    return found


def read_partial(path: str | Path, cls: type[Grid], group: str) -> Grid | None:
    """A grid stored at ``group``, complete or in progress, or None (unreadable: None)."""
    d = store.read_group(path, group)
    if d is None:
        return None
    try:
        return decode(cls, d)
    except StaleError:
        return None


def put(tx: store.Transaction, group: str, obj: Any) -> None:
    """Replace ``group`` inside a commit with the stored form of ``obj``.

    The group is marked ``complete`` unless ``obj`` says otherwise (a grid in progress).
    """
    tx.delete(group)
    for rel, arrays, attrs in encode(obj):
        if rel == "":
            attrs = {**attrs, "complete": bool(getattr(obj, "complete", True))}
        tx.put(_join(group, rel), arrays, attrs)


def write(path: str | Path, part: Part, step: int | None = None) -> None:
    """Commit ``part`` to its group in the run file (the caller holds the writer lock).

    A curvature part goes to the group of its own ``curvature``.
    """
    group = type(part).group(step, getattr(part, "curvature", HESSIAN))
    store.commit(path, lambda tx: put(tx, group, part))
