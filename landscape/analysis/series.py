"""From run files to the series that figures and claims read.

One place reads and derives every quantity shown or judged (so a figure and the claims
report can never disagree): training curves, spectra per probed checkpoint with their
matrix entropy and phases, river-valley statistics, widths against river progress,
sharpness, and the stored probe parts themselves (slices, the PCA plane, the loop curve,
the SHIFT switch, the Q/K gradient alignment) as the typed dataclasses of
:mod:`landscape.runfile.schema`. Figures (:mod:`landscape.draw.figures`) and claims
(:mod:`landscape.analysis.claims`) read run files only through here. Functions take
:class:`~landscape.runs.run.Run` objects and return typed parts or the frozen result
dataclasses defined beside them (each validated once, where it is made, so that
:mod:`landscape.draw.plot` draws what it is given); they raise :class:`LandscapeError`
naming the probe to run when data is missing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from landscape.analysis.targets import drop_after, time_to_target
from landscape.curvature.spectral import density_in_bins, signed_log, signed_log_inverse
from landscape.errors import LandscapeError
from landscape.geometry.phases import Phases, density_entropy, matrix_entropy, phase_rule
from landscape.geometry.slices import basin_share as _basin_share
from landscape.runfile import schema
from landscape.runfile.schema import NotProbed
from landscape.runs.run import Run
from landscape.train.tasks.markov import language_of


def _brief(value: object) -> str:
    """A value in a few characters: an array's shape and range, a count of items."""
    if isinstance(value, np.ndarray):
        shape = "x".join(map(str, value.shape))
        if value.dtype.kind not in "fiu" or not value.size:
            return f"[{shape}]"
        finite = value[np.isfinite(value)] if value.dtype.kind == "f" else value
        if not finite.size:
            return f"[{shape}] nan"
        lo, hi = float(finite.min()), float(finite.max())
        return f"[{shape}] {lo:.4g}" + ("" if lo == hi else f"..{hi:.4g}")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return f"<{len(value)} items>"
    if isinstance(value, Mapping):
        return "{" + ", ".join(map(str, value)) + "}"
    return repr(value)


class _Brief:
    """Mixin of the result dataclasses: a repr of shapes and headline numbers, not arrays."""

    def __repr__(self) -> str:
        shown = (f"{f.name}={_brief(getattr(self, f.name))}" for f in fields(self)
                 if f.repr)
        return f"{type(self).__name__}({', '.join(shown)})"


def _same_length(obj: object, names: Iterable[str], ndim: int = 1) -> None:
    """Check that the named array fields share their first dimension (``ndim``: of each).

    Raises:
        LandscapeError: naming the result type and the field that differs.
    """
    names = list(names)
    n = len(getattr(obj, names[0]))
    for name in names:
        a = getattr(obj, name)
        if np.ndim(a) < ndim or len(a) != n:
            raise LandscapeError(f"{type(obj).__name__}: {name!r} has shape {np.shape(a)}, "
                                 f"expected {n} rows like {names[0]!r}")


def task_key(run: Run) -> str:
    """The group a run belongs to: its task name (``custom``: your own model) or ``markov_long``.

    ``markov_long``: a Markov run with a long test split (the length-generalization study),
    kept apart from the main Markov runs; ``markov_<language>``: a Markov run on a named
    control language (``fixed1``, ``modes``, ...: claim 1's no-gap controls), likewise.
    """
    if run.recipe is None:  # a model of your own
        return run.task_name
    task = run.recipe.task
    if getattr(task, "long_len", 0):
        return "markov_long"
    if task.name == "markov":
        lang = language_of(task)
        return "markov" if lang in (None, "hybrid") else f"markov_{lang}"
    return task.name


def is_algorithmic(key: str) -> bool:
    """Whether a :func:`task_key` names an algorithmic task (not Markov, not your model)."""
    return not key.startswith("markov") and key != "custom"

Grouped = dict[str, dict[str, list[Run]]]
"""Runs by :func:`task_key`, then by architecture (:data:`landscape.train.archs.ALL`)."""

SPECTRAL_PREFIX = "markov_spectral_"
"""Runs named so (the paper preset's exact-spectrum runs, a smaller model probed densely)
are grouped apart, under ``spectral_key(arch)`` of task ``markov``: the landscape claims
(2-4) read them where they exist, the accuracy claims and figures never mix them in."""


def spectral_key(arch: str) -> str:
    """The group key of the spectral runs of an architecture (``spectral:looped``)."""
    return f"spectral:{arch}"


def group_runs(runs: Iterable[Run]) -> Grouped:
    """Runs by :func:`task_key`, then by architecture (:data:`landscape.train.archs.ALL`).

    Within an architecture the probed runs come first, then by seed: the first run of
    each list is the one a curvature figure or claim reads, all of them feed the seed
    spreads. Runs of your own models go under task ``custom``, each by its name; the
    spectral runs (:data:`SPECTRAL_PREFIX`) under ``spectral_key(arch)``.
    """
    out: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        key = run.name if run.custom else run.arch
        if not run.custom and run.name.startswith(SPECTRAL_PREFIX):
            key = spectral_key(run.arch)
        out[task_key(run)][key].append(run)
    for task in out.values():
        for lst in task.values():
            lst.sort(key=lambda r: (not r.probed_steps,
                                    r.recipe.train.seed if r.recipe is not None else 0))
    return {t: dict(v) for t, v in out.items()}


def markov_runs(groups: Grouped, archs: Iterable[str], what: str | None = None,
                some: bool = False) -> dict[str, list[Run]] | None:
    """The Markov runs of each architecture in ``archs``.

    Returns None when one is missing, or, with ``what`` (the figure asking), raises
    :class:`LandscapeError` naming the missing ones. With ``some``, those of ``archs``
    that are present, missing only when none is.
    """
    runs = groups.get("markov", {})
    missing = [a for a in archs if a not in runs]
    if some and len(missing) < len(list(archs)):
        return {a: runs[a] for a in archs if a in runs}
    if missing and what is None:
        return None
    if missing:
        raise LandscapeError(f"figure {what} needs Markov runs of {', '.join(missing)} "
                             "(landscape train RECIPE --model ARCH)")
    return {a: runs[a] for a in archs}


@dataclass(frozen=True, repr=False)
class Curve(_Brief):
    """A run's evaluation metrics over training (:func:`curve`).

    Attributes:
        metrics: ``{name: [m] values}``, one per evaluation (``step``, ``epoch``, ``wall``
            and the metrics asked for that the run has), as stored (dtypes kept).
        switch_step: SHIFT's switch step, None for a run that never switched.
        switch_epoch: the switch on the run's time axis (:func:`epoch_of`), or None.
    """

    metrics: dict[str, np.ndarray]
    switch_step: float | None = None
    switch_epoch: float | None = None

    def __post_init__(self) -> None:
        bad = [k for k, v in self.metrics.items() if np.ndim(v) != 1]
        if bad:
            raise LandscapeError(f"Curve: metric {bad[0]!r} is not a vector")

    def __getitem__(self, key: str) -> np.ndarray:
        return self.metrics[key]

    def __contains__(self, key: object) -> bool:
        return key in self.metrics

    def get(self, key: str) -> np.ndarray | None:
        """The metric ``key``, or None where the run has none."""
        return self.metrics.get(key)


def curve(run: Run, keys: Iterable[str] | None = None) -> Curve:
    """A run's evaluation metrics (all, or ``step``, ``epoch``, ``wall`` and ``keys``)."""
    m = run.metrics
    wanted = list(m) if keys is None else ["step", "epoch", "wall", *keys]
    metrics = {k: np.asarray(m[k]) for k in wanted if k in m}
    if run.shift_step is None:
        return Curve(metrics)
    return Curve(metrics, float(run.shift_step), epoch_of(run, run.shift_step))


def epoch_of(run: Run, step: int) -> float:
    """Time of a checkpoint on the run's axis: epoch of an optimiser step, or the step.

    A run of ``landscape train`` counts in epochs (it stores ``steps_per_epoch``); a run
    of your own training loop has none and counts in the steps it recorded (see
    :func:`time_unit`). The series keep this under the key ``epoch`` either way.
    """
    return step / int(run.attrs.get("steps_per_epoch", 1))


def time_unit(run: Run) -> str:
    """What a run's time axis counts: ``"epoch"`` or ``"step"``.

    ``epoch`` for a run of ``landscape train`` (it stores ``steps_per_epoch``), ``step``
    for one recorded or imported from your own loop (the step numbers given to
    ``Recorder.checkpoint`` or named by the imported files).
    """
    return "epoch" if "steps_per_epoch" in run.attrs else "step"


def shared_time_unit(runs: Iterable[Run], what: str) -> str:
    """The one time unit (:func:`time_unit`) of runs drawn on one axis.

    Raises:
        LandscapeError: where epochs and steps would share an axis (``what``: the figure
            asking); steps are not epochs, so such runs are drawn apart.
    """
    units = {time_unit(r) for r in runs}
    if len(units) > 1:
        raise LandscapeError(f"figure {what} cannot put runs counted in epochs (landscape "
                             "train) and in steps (recorded or imported) on one time axis; "
                             "plot them separately")
    return units.pop() if units else "epoch"


@dataclass(frozen=True, repr=False)
class SLQDensity(_Brief):
    """A stochastic Lanczos quadrature estimate of a spectral density.

    Attributes:
        nodes: ``[runs, m]`` quadrature nodes (eigenvalue estimates) per Lanczos run.
        weights: ``[runs, m]`` their weights (each run's sum to 1).
        dim: the parameter count ``P`` (eigenvalues in all), or None where unknown.
    """

    nodes: np.ndarray
    weights: np.ndarray
    dim: int | None

    def __post_init__(self) -> None:
        if np.shape(self.nodes) != np.shape(self.weights) or np.ndim(self.nodes) != 2:
            raise LandscapeError(f"SLQDensity: nodes {np.shape(self.nodes)} and weights "
                                 f"{np.shape(self.weights)} must be one [runs, m] shape")


@dataclass(frozen=True, repr=False)
class SpectrumCheckpoint(_Brief):
    """The Hessian spectrum at one checkpoint: exact, or an SLQ density (one of the two).

    Attributes:
        epoch: the checkpoint on the run's time axis (:func:`epoch_of`).
        step: its optimiser step.
        eigvals: ``[P]`` float64 exact eigenvalues, or None.
        slq: the float64 SLQ density, or None.
    """

    epoch: float
    step: int
    eigvals: np.ndarray | None = None
    slq: SLQDensity | None = None

    def __post_init__(self) -> None:
        if (self.eigvals is None) == (self.slq is None):
            raise LandscapeError("SpectrumCheckpoint: give the exact 'eigvals' or an SLQ "
                                 "density, one of the two")

    @classmethod
    def of(cls, epoch: float, step: int = -1, *, eigvals=None, nodes=None, weights=None,
           dim: int | None = None) -> SpectrumCheckpoint:
        """From arrays: exact ``eigvals`` (``[P]``) or SLQ ``nodes`` and ``weights``.

        SLQ arrays of one Lanczos run may be ``[m]``; everything becomes float64.
        """
        if eigvals is not None:
            return cls(float(epoch), step, np.asarray(eigvals, dtype=np.float64).ravel())
        if nodes is None or weights is None:
            raise LandscapeError("SpectrumCheckpoint: missing 'eigvals' (or SLQ 'nodes' and "
                                 "'weights')")
        return cls(float(epoch), step, slq=SLQDensity(
            np.atleast_2d(np.asarray(nodes, dtype=np.float64)),
            np.atleast_2d(np.asarray(weights, dtype=np.float64)), dim))

    @property
    def values(self) -> np.ndarray:
        """The eigenvalues, or the SLQ nodes flattened (what spans the spectrum)."""
        return self.eigvals if self.eigvals is not None else self.slq.nodes.ravel()


def spectrum_checkpoints(run: Run) -> list[SpectrumCheckpoint]:
    """The spectrum at each Hessian-probed checkpoint, in step order (exact where stored)."""
    out = []
    for step in run.probed_steps:
        exact = run.part("exact", step)
        slq = None if exact is not None else run.part("slq", step)
        if exact is not None:
            out.append(SpectrumCheckpoint.of(epoch_of(run, step), step, eigvals=exact.eigvals))
        elif slq is not None:
            out.append(SpectrumCheckpoint.of(epoch_of(run, step), step, nodes=slq.nodes,
                                             weights=slq.weights, dim=run.layout.size))
    if not out:
        raise NotProbed(f"{run.path} has no Hessian spectra; run `landscape probe "
                             f"{run.path} --hessian`")
    return out


@dataclass(frozen=True, repr=False)
class EntropySeries(_Brief):
    """Matrix entropy of the spectrum at each probed checkpoint (:func:`spectra_entropy`).

    Attributes:
        epoch: ``[n]`` the checkpoints on the run's time axis.
        entropy: ``[n]`` matrix entropy (nats).
        source: ``"exact"`` where every checkpoint is exact, else ``"slq"``.
    """

    epoch: np.ndarray
    entropy: np.ndarray
    source: str = "exact"

    def __post_init__(self) -> None:
        _same_length(self, ("epoch", "entropy"))


def entropy_series(run: Run, checkpoints: list[SpectrumCheckpoint] | None = None
                   ) -> EntropySeries:
    """Matrix entropy of the spectrum at each probed checkpoint (:func:`spectra_entropy`).

    ``checkpoints``: the run's :func:`spectrum_checkpoints` where the caller already has them.
    """
    return spectra_entropy(spectrum_checkpoints(run) if checkpoints is None else checkpoints)


def spectra_entropy(checkpoints: list[SpectrumCheckpoint]) -> EntropySeries:
    """Matrix entropy of each spectrum checkpoint.

    Exact spectra by :func:`landscape.geometry.phases.matrix_entropy`, SLQ densities (which
    need ``dim``) by :func:`landscape.geometry.phases.density_entropy`.

    Raises:
        LandscapeError: for an SLQ checkpoint without ``dim``.
    """
    if any(c.slq is not None and not c.slq.dim for c in checkpoints):
        raise LandscapeError("spectra: an SLQ checkpoint needs 'dim' (the parameter "
                             "count) for its entropy")
    ent = [matrix_entropy(c.eigvals) if c.eigvals is not None else
           density_entropy(c.slq.nodes, c.slq.weights, int(c.slq.dim)) for c in checkpoints]
    return EntropySeries(np.array([c.epoch for c in checkpoints]), np.array(ent),
                         "exact" if all(c.eigvals is not None for c in checkpoints) else "slq")


@dataclass(frozen=True, repr=False)
class BinnedCheckpoint(_Brief):
    """One checkpoint's spectrum on the shared bins of :class:`BinnedSpectra`.

    Attributes:
        epoch: the checkpoint on the run's time axis.
        mass: ``[bins]`` eigenvalues per bin (a share per bin for SLQ without ``dim``).
    """

    epoch: float
    mass: np.ndarray


@dataclass(frozen=True, repr=False)
class BinnedSpectra(_Brief):
    """Spectra of several models on shared bins (:func:`binned_spectra`).

    Attributes:
        edges: ``[bins + 1]`` bin edges (eigenvalues), even on the display axis.
        spectra: ``{model: [BinnedCheckpoint, ...]}`` in epoch order, none empty.
        xscale: ``"symlog"`` or ``"linear"``.
        linthresh: half-width of the linear zone of the signed-log axis.
        counts: every mass is eigenvalues per bin (else some are shares).
    """

    edges: np.ndarray
    spectra: dict[str, list[BinnedCheckpoint]]
    xscale: str
    linthresh: float
    counts: bool

    def __post_init__(self) -> None:
        if self.xscale not in ("symlog", "linear"):
            raise LandscapeError(f"spectra: xscale must be 'symlog' or 'linear', got "
                                 f"{self.xscale!r}")
        if not self.spectra or not all(self.spectra.values()):
            raise LandscapeError("spectra: no models, or a model has no checkpoints")
        for m, cks in self.spectra.items():
            for i, ck in enumerate(cks):
                if ck.mass.shape != (self.edges.size - 1,):
                    raise LandscapeError(f"spectra: checkpoint {i} of {m!r} has "
                                         f"{ck.mass.size} bins for {self.edges.size} edges")


def binned_spectra(spectra_by_model: Mapping[str, list[SpectrumCheckpoint]], *,
                   xscale: str = "symlog", linthresh: float | None = None, bins: int = 60,
                   sigma: float = 0.01) -> BinnedSpectra:
    """Each checkpoint's spectrum as eigenvalues per bin, on bins shared by all of them.

    The bins are even on the display axis: signed-log (``xscale="symlog"``, linear within
    ``+-linthresh``, see :func:`landscape.curvature.spectral.signed_log`) or linear, spanning every
    eigenvalue of every model and checkpoint with a 2 % margin. Exact spectra are
    histograms. An SLQ checkpoint's quadrature measure is smoothed by a Gaussian of width
    ``sigma`` times the axis span in display coordinates (so the smoothing is relative on
    the log parts), integrated over each bin (:func:`landscape.curvature.spectral.density_in_bins`)
    and scaled by ``dim`` to read as eigenvalues per bin (as a share per bin without it).

    Args:
        spectra_by_model: ``{model: [SpectrumCheckpoint, ...]}`` (as
            :func:`spectrum_checkpoints` returns), in epoch order.
        xscale: ``"symlog"`` or ``"linear"``.
        linthresh: half-width of the linear zone; default ``1e-3 * max |eigenvalue|`` (the
            default river threshold of :mod:`landscape.geometry.valley`).
        bins: number of bins.
        sigma: SLQ smoothing width, as a fraction of the display axis.

    Returns:
        The binned spectra, the input of :func:`landscape.draw.plot.spectra`.
    """
    if xscale not in ("symlog", "linear"):
        raise LandscapeError(f"spectra: xscale must be 'symlog' or 'linear', got {xscale!r}")
    if not spectra_by_model or not all(spectra_by_model.values()):
        raise LandscapeError("spectra: no models, or a model has no checkpoints")
    cks = spectra_by_model
    values = np.concatenate([c.values for lst in cks.values() for c in lst])
    lt = float(linthresh) if linthresh else 1e-3 * (float(np.max(np.abs(values))) or 1.0)

    def to_axis(x):
        return signed_log(x, lt) if xscale == "symlog" else np.asarray(x, dtype=np.float64)

    lo, hi = to_axis(np.array([values.min(), values.max()]))
    pad = 0.02 * (hi - lo) + 1e-12
    t_edges = np.linspace(lo - pad, hi + pad, bins + 1)
    edges = signed_log_inverse(t_edges, lt) if xscale == "symlog" else t_edges
    out = {m: [BinnedCheckpoint(c.epoch, np.histogram(c.eigvals, bins=edges)[0]
                                .astype(np.float64) if c.eigvals is not None else
                                density_in_bins(c.slq.nodes, c.slq.weights, edges,
                                                sigma * (hi - lo), transform=to_axis,
                                                dim=c.slq.dim)) for c in lst]
           for m, lst in cks.items()}
    counts = all(c.eigvals is not None or c.slq.dim for lst in cks.values() for c in lst)
    return BinnedSpectra(edges, out, xscale, lt, bool(counts))


def phases_of(run: Run, entropy: EntropySeries | None = None) -> Phases:
    """Collapse / Diversification / Stabilization of the entropy series, for the figures.

    Claim 2's rule (:func:`landscape.geometry.phases.phase_rule`, segmented fits chosen by BIC) on
    this one run from its first checkpoint after initialisation (the initial spectrum is
    drawn, not fitted, as in the claim), its noise estimated from the residuals (the claim
    uses the spread across seeds instead). ``entropy``: the run's :func:`entropy_series`
    where the caller already has it.
    """
    s = entropy_series(run) if entropy is None else entropy
    after = s.epoch > 0  # as claim 2: the initial spectrum is drawn, not fitted
    t, y = s.epoch[after], s.entropy[after]
    if len(t) < 3:
        raise LandscapeError(f"{run.path}: phase detection needs at least 3 probed checkpoints "
                             "after initialisation")
    return phase_rule(t, y).as_phases(t, y)


@dataclass(frozen=True, repr=False)
class ValleySeries(_Brief):
    """The river-valley split at each probed checkpoint (:func:`valley_series`).

    Attributes:
        epoch: ``[n]`` the checkpoints on the run's time axis.
        step: ``[n]`` their optimiser steps.
        kappa: ``[n]`` condition number of the valley Hessian.
        river_dim: ``[n]`` river dimension.
        valley_dim: ``[n]`` valley dimension.
        small_count: ``[n]`` valley eigenvalues in (eps, tau].
        small_force: ``[n]`` the sum of their inverses (the paper's cumulative force).
        label: ``[n]`` the U/V label of each checkpoint.
    """

    epoch: np.ndarray
    step: np.ndarray
    kappa: np.ndarray
    river_dim: np.ndarray
    valley_dim: np.ndarray
    small_count: np.ndarray
    small_force: np.ndarray
    label: np.ndarray

    def __post_init__(self) -> None:
        _same_length(self, [f.name for f in fields(self)])


def valley_series(run: Run) -> ValleySeries:
    """kappa(H_valley), river dimension, small-eigenvalue count and force per checkpoint."""
    rows = []
    for step in run.probed_steps:
        v = run.part("valley", step)
        if v is None:
            continue
        values = [float(getattr(v, k)) for k in
                  ("kappa", "river_dim", "valley_dim", "small_count", "small_force")]
        rows.append((epoch_of(run, step), step, *values, v.label))
    if not rows:
        raise NotProbed(f"{run.path} has no valley split; run `landscape probe "
                             f"{run.path} --geometry`")
    cols = list(zip(*rows))
    return ValleySeries(*(np.asarray(c, dtype=float) for c in cols[:-1]),
                        label=np.asarray(cols[-1]))


@dataclass(frozen=True, repr=False)
class WidthSeries(_Brief):
    """Valley widths against river progress (:func:`width_series`).

    Attributes:
        epoch: ``[n]`` the checkpoints with widths, on the run's time axis.
        progress: ``[n]`` cumulative river progress there.
        width: ``[n, k]`` measured widths along the top ``k`` valley directions (inf:
            beyond the slice).
        quadratic: ``[n, k]`` the widths a parabola of the measured curvature would have.
    """

    epoch: np.ndarray
    progress: np.ndarray
    width: np.ndarray
    quadratic: np.ndarray

    def __post_init__(self) -> None:
        _same_length(self, ("epoch", "progress"))
        _same_length(self, ("width", "quadratic", "epoch"))
        if self.width.shape != self.quadratic.shape:
            raise LandscapeError(f"WidthSeries: width {self.width.shape} and quadratic "
                                 f"{self.quadratic.shape} differ in shape")


def width_series(run: Run) -> WidthSeries:
    """Valley widths (``[n, k]``) and their quadratic predictions against river progress."""
    rp = run.part("river_progress")
    if rp is None:
        raise NotProbed(f"{run.path} has no river progress; run `landscape probe "
                             f"{run.path} --geometry` on at least two checkpoints")
    all_steps, progress = rp.steps, rp.progress
    rows = []
    for step in run.probed_steps:
        w = run.part("widths", step)
        where = np.flatnonzero(all_steps == step)
        if w is not None and where.size:
            rows.append((epoch_of(run, step), progress[where[0]], w.width, w.quadratic))
    if not rows:
        raise NotProbed(f"{run.path} has no valley widths; run `landscape probe --geometry`")
    k = min(len(r[2]) for r in rows)
    return WidthSeries(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                       np.stack([r[2][:k] for r in rows]), np.stack([r[3][:k] for r in rows]))


@dataclass(frozen=True, repr=False)
class SharpnessSeries(_Brief):
    """Sharpness against its stability thresholds per checkpoint (:func:`sharpness_series`).

    Attributes:
        epoch: ``[n]`` the checkpoints on the run's time axis.
        lambda_max: ``[n]`` top Hessian eigenvalues.
        threshold: ``[n]`` the optimiser's edge on the Hessian (``2 / lr`` for SGD, see
            :mod:`landscape.curvature.stability`; NaN where it applies to the
            preconditioned Hessian or is unknown).
        adam_lambda_max: ``[n]`` top eigenvalues of the Adam-preconditioned Hessian, or
            None where not measured.
        adam_threshold: ``[n]`` their edge (``38 / lr`` for beta1 = 0.9), or None.
        optimizer: the last checkpoint's optimiser, e.g. ``"SGD (heavy ball 0.9)"``
            (empty for parts stored before optimisers were recorded).
        edge_on: ``"hessian"`` or ``"preconditioned"``: which panel the edge belongs to.
        edge_unknown: why the edge is unknown, or empty.
    """

    epoch: np.ndarray
    lambda_max: np.ndarray
    threshold: np.ndarray | None
    adam_lambda_max: np.ndarray | None = None
    adam_threshold: np.ndarray | None = None
    optimizer: str = ""
    edge_on: str = "hessian"
    edge_unknown: str = ""

    def __post_init__(self) -> None:
        given = [f.name for f in fields(self)
                 if isinstance(getattr(self, f.name), np.ndarray)]
        _same_length(self, given)


def sharpness_series(run: Run) -> SharpnessSeries:
    """lambda_max, the optimiser's edge, and the Adam-preconditioned ones per checkpoint.

    Beside the arrays, the last checkpoint's ``optimizer``, ``edge_on`` and
    ``edge_unknown`` (see :class:`~landscape.runfile.schema.Sharpness`).
    """
    rows, last = [], None
    for step in run.probed_steps:
        s = run.part("sharpness", step)
        if s is None:
            continue
        rows.append([epoch_of(run, step), s.lambda_max, s.threshold, s.adam_lambda_max,
                     s.adam_threshold])
        last = s
    if not rows:
        raise NotProbed(f"{run.path} has no sharpness; run `landscape probe --hessian`")
    return SharpnessSeries(*np.array(rows).T, optimizer=last.optimizer, edge_on=last.edge_on,
                           edge_unknown=last.edge_unknown)


@dataclass(frozen=True, repr=False)
class BlockSeries(_Brief):
    """Per-block Hessian spectra over training (:func:`block_series`).

    Attributes:
        epoch: ``[n]`` the checkpoints probed with ``--blocks``, on the run's time axis.
        blocks: the ``b`` block names, as in the model (a layer such as
            ``transformer.h.3``, the module owning a parameter, or a ``--blocks`` pattern),
            in the model's order.
        dims: ``[b]`` parameters per block.
        top: ``[n, b]`` each block's largest Hessian eigenvalue (NaN where a checkpoint
            has no such block: probed with other ``--blocks``).
        trace: ``[n, b]`` each block's Hessian trace (NaN likewise).
        trace_stderr: ``[n, b]`` its standard error (0 for an exact trace).
    """

    epoch: np.ndarray
    blocks: tuple[str, ...]
    dims: np.ndarray
    top: np.ndarray
    trace: np.ndarray
    trace_stderr: np.ndarray

    def __post_init__(self) -> None:
        n, b = len(self.epoch), len(self.blocks)
        if not n or not b or len(self.dims) != b:
            raise LandscapeError(f"BlockSeries: {n} checkpoints, {b} blocks and "
                                 f"{len(self.dims)} sizes; needs one or more of each, a size "
                                 "per block")
        for name in ("top", "trace", "trace_stderr"):
            if np.shape(getattr(self, name)) != (n, b):
                raise LandscapeError(f"BlockSeries: {name!r} has shape "
                                     f"{np.shape(getattr(self, name))}, expected ({n}, {b})")


def block_series(run: Run) -> BlockSeries:
    """The top eigenvalue and trace of each block at each checkpoint probed with blocks.

    Blocks keep the model's order (the first checkpoint's order, then blocks first seen
    later); a checkpoint without a block has NaN there.

    Raises:
        LandscapeError: the run has no per-block spectra, naming the probe to run.
    """
    found = [(step, run.part("blocks", step)) for step in run.probed_steps]
    found = [(step, b) for step, b in found if b is not None and b.groups]
    if not found:
        raise NotProbed(f"{run.path} has no per-block spectra; run `landscape probe "
                             f"{run.path} --blocks`")
    names: dict[str, int] = {}
    for _, b in found:
        for name, g in b.groups.items():
            names.setdefault(name, int(g.dim))
    shape = (len(found), len(names))
    top, trace, stderr = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    for i, (_, b) in enumerate(found):
        for j, name in enumerate(names):
            g = b.groups.get(name)
            if g is not None:
                top[i, j] = np.max(g.values) if np.size(g.values) else np.nan
                trace[i, j], stderr[i, j] = g.trace, g.trace_stderr
    return BlockSeries(np.array([epoch_of(run, s) for s, _ in found]), tuple(names),
                       np.array(list(names.values())), top, trace, stderr)


def part(run: Run, name: str, step: int | None = -1, *, required: bool = True):
    """The stored probe part ``name`` (at checkpoint ``step``), a schema dataclass.

    Raises:
        LandscapeError: where it is missing and ``required`` (else None), naming the probe
            to run.
    """
    found = run.part(name, step)
    if found is None and required:
        kind = schema.part_class(name).KIND
        where = "" if kind == schema.RUN else f" at step {run.step_at(step)}"
        flag = "--hessian" if kind == schema.HESSIAN else "--geometry"
        raise NotProbed(f"{run.path} has no {name!r} probe part{where}; run `landscape "
                             f"probe {run.path} {flag}`")
    return found


def slices_at(run: Run, step: int) -> dict[str, schema.Grid]:
    """The complete loss grids at a checkpoint of each run's own planes, ``{name: Grid}``.

    ``random`` and ``river_valley`` (not ``shared``, see :func:`shared_slices`); grids
    stored as skipped are left out.
    """
    out = {}
    for name in ("slice_random", "slice_river_valley"):
        g = run.part(name, step)
        if g is not None and not g.skipped:
            out[name.removeprefix("slice_")] = g
    return out


def shared_slices(run: Run) -> dict[int, schema.SliceShared]:
    """``{step: SliceShared}`` at every probed checkpoint that has a shared-plane slice."""
    found = {s: run.part("slice_shared", s) for s in run.probed_steps}
    return {s: g for s, g in found.items() if g is not None and not g.skipped}


def basin_share(grid: schema.Grid, rise: float) -> float:
    """Share of a stored grid's plane within ``rise`` of the loss at its centre.

    ``grid``: a :class:`~landscape.runfile.schema.Grid` part (e.g. from
    :func:`shared_slices`); see :func:`landscape.geometry.slices.basin_share`.
    """
    return _basin_share(grid.alphas, grid.betas, grid.loss, rise)


def final(run: Run, key: str, last: int = 1) -> float:
    """Mean of the last ``last`` evaluations of metric ``key``."""
    if key not in run.metrics:
        raise LandscapeError(f"{run.path} has no metric {key!r}")
    return float(np.mean(run.metrics[key][-last:]))


@dataclass(frozen=True, repr=False)
class LengthSeries(_Brief):
    """Final accuracy per test length of an algorithmic run (:func:`length_series`).

    Attributes:
        length: ``[n]`` test sequence lengths, ascending.
        acc: ``[n]`` final accuracy at each.
    """

    length: np.ndarray
    acc: np.ndarray

    def __post_init__(self) -> None:
        _same_length(self, ("length", "acc"))


def length_series(run: Run, metric: str = "acc") -> LengthSeries:
    """Final accuracy per test input size of an algorithmic run (token accuracy by default)."""
    lengths = sorted(int(k.split(".")[0].removeprefix("len_")) for k in run.metrics
                     if k.startswith("len_") and k.endswith(f".{metric}"))
    if not lengths:
        raise LandscapeError(f"{run.path} has no per-length evaluation (not an algorithmic task)")
    return LengthSeries(np.array(lengths, dtype=float),
                        np.array([final(run, f"len_{n}.{metric}") for n in lengths]))


POSITIONS_BY_VALIDATION = ("none", "rope", "learned")
"""The positional schemes Single-Attn is trained with in the length study; one per seed is
kept, the best on the held-out ``val`` split (:func:`select_by_validation`)."""


def select_by_validation(runs: Iterable[Run]) -> tuple[dict[int, Run], dict[int, dict]]:
    """Per seed, the run with the best final token accuracy on the held-out ``val`` split.

    The length study trains Single-Attn with each of :data:`POSITIONS_BY_VALIDATION` and
    keeps, per seed, the one that does best on ``val`` (samples of the *training* lengths,
    apart from ``iid``, which the mastery gate reads): the test lengths never choose. Runs
    without a ``val`` split are chosen on ``iid`` (said so in the record). Ties go to the
    first scheme in that order.

    Returns:
        ``({seed: run}, {seed: {"chosen": positions, "split": "val", "candidates":
        {positions: accuracy}}})``.
    """
    by_seed: dict[int, list[Run]] = defaultdict(list)
    for r in runs:
        by_seed[r.recipe.train.seed].append(r)
    order = {p: i for i, p in enumerate(POSITIONS_BY_VALIDATION)}
    chosen, record = {}, {}
    for seed, rs in sorted(by_seed.items()):
        rs = sorted(rs, key=lambda r: order.get(r.recipe.model.positions, len(order)))
        split = "val" if all("val.acc" in r.metrics for r in rs) else "iid"
        accs = [final(r, f"{split}.acc") for r in rs]
        best = int(np.argmax(accs))
        chosen[seed] = rs[best]
        record[seed] = {"chosen": rs[best].recipe.model.positions, "split": split,
                        "candidates": {r.recipe.model.positions: a for r, a in zip(rs, accs)}}
    return chosen, record


def length_models(g: Mapping[str, list[Run]]) -> dict[str, list[Run]]:
    """An algorithmic task's runs by architecture, Single-Attn's as chosen on ``val``.

    Single-Attn keeps one run per seed (:func:`select_by_validation`); the other
    architectures keep all theirs.
    """
    out = {a: list(rs) for a, rs in g.items()}
    if "single" in out and len(out["single"]) > len({r.recipe.train.seed
                                                     for r in out["single"]}):
        chosen, _ = select_by_validation(out["single"])
        out["single"] = [chosen[s] for s in sorted(chosen)]
    return out


def mastery(run: Run, threshold: float, split: str = "iid") -> dict:
    """Whether a run masters its training lengths, and when.

    ``{"mastered": final split token accuracy >= threshold, "acc": it, "step": the step
    of the run's stop-at-mastery event (None if it never stopped), "steps": steps trained}``.
    """
    acc = final(run, f"{split}.acc")
    stop = next((e for e in run.events if e.get("kind") == "stop"), None)
    return {"mastered": bool(acc >= threshold), "acc": acc,
            "step": None if stop is None else int(stop["step"]),
            "steps": int(final(run, "step"))}


@dataclass(frozen=True, repr=False)
class WallClock(_Brief):
    """What a run cost and reached (:func:`wallclock`).

    Attributes:
        seconds: training seconds (the last evaluation's wall-clock).
        acc: final accuracy, a fraction in [0, 1] (None where not measured).
    """

    seconds: float
    acc: float | None = None


def wallclock(run: Run, acc_key: str = "iid.seq_acc") -> WallClock:
    """A run's training seconds and final ``acc_key``."""
    return WallClock(final(run, "wall"), final(run, acc_key))


@dataclass(frozen=True, repr=False)
class ShiftTimeline(_Brief):
    """SHIFT's schedule on a run's time axis, for the concept figure (:func:`shift_timeline`).

    Attributes:
        switch: the switch.
        end: the last evaluation.
        start: the first.
        unit: what the axis counts (``epoch`` or ``step``).
        loops: loops after the switch.
        x: ``[n]`` evaluation times of the curve drawn beneath (or None).
        y: ``[n]`` its values.
        label: its axis label.
    """

    switch: float
    end: float
    start: float = 0.0
    unit: str = "epoch"
    loops: int = 3
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if not self.start <= self.switch <= self.end:
            raise LandscapeError(f"ShiftTimeline: need start <= switch <= end, got "
                                 f"{self.start}, {self.switch}, {self.end}")
        if (self.x is None) != (self.y is None) or (
                self.x is not None and np.shape(self.x) != np.shape(self.y)):
            raise LandscapeError("ShiftTimeline: x and y must be given together, one shape")


def shift_timeline(run: Run, key: str = "complex.acc") -> ShiftTimeline | None:
    """A SHIFT run's schedule with its ``key`` curve beneath (None if it never switched)."""
    c = curve(run, [key])
    if c.switch_epoch is None:
        return None
    return ShiftTimeline(
        switch=c.switch_epoch, end=float(c["epoch"][-1]), unit="epoch",
        loops=run.recipe.shift.loops_after,
        x=c["epoch"], y=c[key], label="SHIFT, complex accuracy")


@dataclass(frozen=True, repr=False)
class Reach(_Brief):
    """Cost until a metric first reaches a target (:func:`reach`); ``inf`` if never.

    Attributes:
        seconds: training seconds.
        flops: training FLOPs.
        epoch: epochs.
    """

    seconds: float
    flops: float
    epoch: float


def reach(run: Run, target: float, key: str = "complex.acc") -> Reach:
    """Training seconds, FLOPs and epochs at the first evaluation where ``key`` >= ``target``.

    ``inf`` where it is never reached (see :func:`landscape.analysis.targets.time_to_target`).
    """
    c = curve(run, [key, "flops"])
    if "flops" not in c:
        raise LandscapeError(f"{run.path} has no FLOP count (trained before it was recorded)")
    if key not in c:
        raise LandscapeError(f"{run.path} has no metric {key!r}")
    return Reach(**{name: time_to_target(c[m], c[key], target)
                    for name, m in (("seconds", "wall"), ("flops", "flops"), ("epoch", "epoch"))})


@dataclass(frozen=True, repr=False)
class SwitchInfo(_Brief):
    """SHIFT's switch and the accuracy drop after it (:func:`switch_info`).

    Attributes:
        step: the switch step, None where the run never switched (then the rest is NaN).
        epoch: the switch on the run's time axis.
        reason: why it fired (``"none"`` if it did not).
        before: the metric at the switch.
        min_after: its minimum over the next evaluations.
        drop: ``before - min_after``.
    """

    step: int | None
    epoch: float
    reason: str
    before: float
    min_after: float
    drop: float


def switch_info(run: Run, key: str = "complex.acc", horizon: int = 3) -> SwitchInfo:
    """SHIFT's switch: step, epoch, why it fired, and ``key``'s drop over the next evaluations."""
    step = run.shift_step
    event = next((e for e in run.events if e.get("kind") == "shift"), {})
    if step is None:
        return SwitchInfo(None, math.nan, "none", math.nan, math.nan, math.nan)
    c = curve(run, [key])
    return SwitchInfo(step, epoch_of(run, step), event.get("reason", "none"),
                      **drop_after(c["step"], c[key], step, horizon))


@dataclass(frozen=True, repr=False)
class AblationRow(_Brief):
    """One SHIFT setting of :func:`shift_ablation` against Looped-Attn's target.

    Attributes:
        seed: the seed compared on.
        target: Looped-Attn's final ``complex.acc`` minus the tolerance.
        criterion: SHIFT's switch criterion.
        delta_1: its training-loss plateau tolerance.
        delta_2: its training-accuracy plateau tolerance.
        window: its window (evaluations).
        patience: its patience.
        switch_epoch: when it switched (NaN: never).
        reason: why.
        drop: the accuracy drop after the switch.
        seconds: training seconds to the target (inf: never reached).
        flops: training FLOPs to the target.
        flops_ratio: ``flops`` over Looped-Attn's.
        seconds_ratio: ``seconds`` over Looped-Attn's.
    """

    seed: int
    target: float
    criterion: str
    delta_1: float
    delta_2: float
    window: int
    patience: int
    switch_epoch: float
    reason: str
    drop: float
    seconds: float
    flops: float
    flops_ratio: float
    seconds_ratio: float


def shift_setting(run: Run) -> tuple:
    """A SHIFT run's switch setting: (criterion, delta_1, delta_2, window, patience)."""
    sc = run.recipe.shift
    return (sc.criterion, sc.delta_1, sc.delta_2, sc.window, sc.patience)


def main_shift_runs(shifts: list[Run]) -> list[Run]:
    """The SHIFT runs of the setting that most seeds share; the rest are claim 5's ablation.

    Ties go to the setting met first. Claim 5's paired rule and Fig. 4 read these; the
    ablation figure reads all of them.
    """
    if not shifts:
        return []
    settings = [shift_setting(r) for r in shifts]

    def support(st):
        return len({r.recipe.train.seed for r in shifts if shift_setting(r) == st}), \
            -settings.index(st)

    main = max(set(settings), key=support)
    return [r for r in shifts if shift_setting(r) == main]


def shift_ablation(shifts: list[Run], looped: list[Run], tol: float,
                   last: int) -> list[AblationRow]:
    """SHIFT settings on one seed: switch, drop and cost to Looped-Attn's target.

    The seed is the one with the most SHIFT runs; the target is that seed's Looped-Attn
    final ``complex.acc`` (mean of its ``last`` evaluations) minus ``tol``. One row per
    setting (criterion, delta_2, delta_1, window order); an empty list when there are
    fewer than two settings on that seed.
    """
    by_seed: dict[int, list[Run]] = defaultdict(list)
    for r in shifts:
        by_seed[r.recipe.train.seed].append(r)
    seed, runs = max(by_seed.items(), key=lambda kv: (len(kv[1]), -kv[0]))
    lo = next((r for r in looped if r.recipe.train.seed == seed), None)
    if lo is None or len(runs) < 2:
        return []
    target = final(lo, "complex.acc", last) - tol
    base = reach(lo, target)
    out = []
    for r in runs:
        sc, got, sw = r.recipe.shift, reach(r, target), switch_info(r)
        out.append(AblationRow(
            seed=seed, target=target, criterion=sc.criterion, delta_1=sc.delta_1,
            delta_2=sc.delta_2, window=sc.window, patience=sc.patience,
            switch_epoch=sw.epoch, reason=sw.reason, drop=sw.drop, seconds=got.seconds,
            flops=got.flops, flops_ratio=got.flops / base.flops,
            seconds_ratio=got.seconds / base.seconds))
    return sorted(out, key=lambda d: (d.criterion, d.delta_2, d.delta_1, d.window))


# --- claims 2-4: per-run inputs of the landscape rules ------------------------------------


def landscape_runs(groups: Grouped, arch: str) -> list[Run]:
    """The Markov runs the landscape claims read for ``arch``: probed, by seed.

    The spectral runs (:data:`SPECTRAL_PREFIX`) where there are any, else the main runs.
    """
    g = groups.get("markov", {})
    runs = g.get(spectral_key(arch)) or g.get(arch, [])
    return sorted((r for r in runs if r.probed_steps), key=lambda r: r.recipe.train.seed)


@dataclass(frozen=True, repr=False)
class LandscapeCheckpoint(_Brief):
    """What the landscape rules read at one Hessian-probed checkpoint.

    Attributes:
        epoch: the checkpoint on the run's time axis.
        step: its optimiser step.
        top: ``[k]`` the top Lanczos eigenvalues, descending.
        eigvals: ``[P]`` the exact spectrum, ascending, or None.
        adam_eigvals: ``[P]`` the exact Adam-preconditioned spectrum, or None.
        slq: the SLQ density where there is no exact spectrum (arrays as stored), or None.
        spread: the direction-spread part (:class:`landscape.runfile.schema.Spread`), or None.
    """

    epoch: float
    step: int
    top: np.ndarray
    eigvals: np.ndarray | None = None
    adam_eigvals: np.ndarray | None = None
    slq: SLQDensity | None = None
    spread: object | None = None

    @property
    def has_spectrum(self) -> bool:
        """An exact spectrum or an SLQ density is stored."""
        return self.eigvals is not None or self.slq is not None


def landscape_checkpoints(run: Run) -> list[LandscapeCheckpoint]:
    """What the landscape rules read at each Hessian-probed checkpoint, in step order.

    Checkpoints without top Lanczos eigenvalues are left out.
    """
    out = []
    for step in run.probed_steps:
        top = run.part("top", step)
        if top is None:
            continue
        exact = run.part("exact", step)
        eigvals = adam = slq = None
        if exact is not None:
            eigvals = np.asarray(exact.eigvals, dtype=float)
            if getattr(exact, "adam_eigvals", None) is not None:
                adam = np.asarray(exact.adam_eigvals, dtype=float)
        else:
            found = run.part("slq", step)
            if found is not None:
                slq = SLQDensity(np.asarray(found.nodes), np.asarray(found.weights),
                                 run.layout.size)
        out.append(LandscapeCheckpoint(epoch_of(run, step), int(step),
                                       np.asarray(top.values, dtype=float), eigvals, adam,
                                       slq, run.part("spread", step)))
    return out


def entropy_with_error(ck: LandscapeCheckpoint) -> tuple[float, float]:
    """Matrix entropy of a checkpoint's spectrum and the estimator's standard error.

    Exact spectra have no estimator error (0); an SLQ density's error is the standard
    error over its runs of the one-run entropies.
    """
    if ck.eigvals is not None:
        return matrix_entropy(ck.eigvals), 0.0
    s = ck.slq
    whole = density_entropy(s.nodes, s.weights, s.dim)
    runs = [density_entropy(n[None], w[None], s.dim) for n, w in zip(s.nodes, s.weights)]
    se = float(np.std(runs, ddof=1) / np.sqrt(len(runs))) if len(runs) > 1 else 0.0
    return whole, se


@dataclass(frozen=True, repr=False)
class HoppingSeries(_Brief):
    """Valley hopping at each probed checkpoint with a step in and out (:func:`hopping_series`).

    Attributes:
        steps: ``[n]`` the checkpoints' optimiser steps.
        hop_fraction: ``[n]`` share of valley coordinates that change sign.
        valley_norm: ``[n]`` norm of the outgoing step's valley part.
        river_norm: ``[n]`` norm of its river part.
        river_gain: ``[n]`` probe-set loss gained along the river part.
        river_speed: ``[n]`` river part over learning rate times optimiser steps.
        epochs: ``[n]`` the checkpoints on the run's time axis.
    """

    steps: np.ndarray
    hop_fraction: np.ndarray
    valley_norm: np.ndarray
    river_norm: np.ndarray
    river_gain: np.ndarray
    river_speed: np.ndarray
    epochs: np.ndarray

    def __post_init__(self) -> None:
        _same_length(self, [f.name for f in fields(self)])

    def per_checkpoint(self) -> dict[str, list]:
        """Every series but ``steps`` as lists, for the claims report."""
        return {f.name: np.asarray(getattr(self, f.name)).tolist() for f in fields(self)
                if f.name != "steps"}


def hopping_series(run: Run, max_k: int | None = None) -> HoppingSeries:
    """Valley hopping at each probed checkpoint (see :mod:`landscape.geometry.hopping`).

    The valley basis at a checkpoint is its stored top Lanczos eigenvectors (the first
    ``max_k``, default all); the steps are to and from the neighbouring stored
    checkpoints; the river gain is the probe-set loss at that checkpoint minus the loss
    after the outgoing step's river part; the river speed divides the river part by the
    learning rate times the optimiser steps it took.
    """
    import torch

    from landscape.geometry.hopping import hopping

    steps = np.asarray(run.steps)
    out: dict[str, list] = {k: [] for k in ("steps", "hop_fraction", "valley_norm",
                                            "river_norm", "river_gain", "river_speed")}
    for step in run.probed_steps:
        i = int(np.flatnonzero(steps == step)[0])
        top = run.part("top", step)
        if top is None or i == 0 or i == len(steps) - 1:
            continue
        basis = np.asarray(top.vectors, dtype=np.float64)[:max_k].T  # [P, k]
        tri = run.trajectory([int(steps[i - 1]), int(step), int(steps[i + 1])])
        fn = run.loss_fn("probe", step=int(step))

        def loss(theta: np.ndarray, fn=fn) -> float:
            with torch.no_grad():
                return float(fn(run.layout.unflatten(torch.as_tensor(theta,
                                                                     dtype=torch.float32))))

        lr = run.lr_at(int(steps[i + 1])) * float(steps[i + 1] - steps[i])
        h = hopping(tri, [1], [basis], loss=loss, lr_steps=[lr])
        out["steps"].append(int(step))
        for k in ("hop_fraction", "valley_norm", "river_norm", "river_gain", "river_speed"):
            out[k].append(float(getattr(h, k)[0]))
    if not out["steps"]:
        raise NotProbed(f"{run.path} has no probed checkpoint with a step in and out "
                             "and its top eigenvectors; run `landscape probe` on interior "
                             "checkpoints")
    return HoppingSeries(**{k: np.asarray(v) for k, v in out.items()},
                         epochs=np.asarray([epoch_of(run, s) for s in out["steps"]]))


def pseudo_spectrum(ck: LandscapeCheckpoint) -> np.ndarray:
    """Exact eigenvalues, or the SLQ density as a list of ``dim * weight / runs`` copies."""
    if ck.eigvals is not None:
        return ck.eigvals
    s = ck.slq
    counts = np.rint(s.dim * s.weights / s.nodes.shape[0]).astype(int)
    return np.repeat(s.nodes.reshape(-1), counts.reshape(-1))


def top_values(ck: LandscapeCheckpoint) -> np.ndarray:
    """The exact spectrum where stored, else the converged top Lanczos values."""
    return ck.eigvals if ck.eigvals is not None else ck.top


@dataclass(frozen=True, repr=False)
class UVInputs(_Brief):
    """What claim 3 compares of one run at one checkpoint (:func:`uv_inputs`).

    Attributes:
        seed: the run's seed.
        spectrum: ``[P]`` the spectrum (exact, or the SLQ pseudo-spectrum).
        top: ``[k]`` the top values, descending (for the outlier kappa).
        cv: the direction-spread CV (NaN where not probed).
        source: ``"exact"`` or ``"slq"``.
        principal_angles: ``[k]`` principal angles (radians) between the raw top-k span
            and another valley definition (the optimiser's) where a stored part gives
            them, else None; claim 3 reports them in ``details.valley``.
    """

    seed: int
    spectrum: np.ndarray
    top: np.ndarray
    cv: float = math.nan
    source: str = "exact"
    principal_angles: np.ndarray | None = None


def uv_inputs(run: Run, step: int, adam: bool = False) -> UVInputs | None:
    """What claim 3 compares at one checkpoint: spectrum, top values, direction-spread CV.

    ``adam``: of the Adam-preconditioned Hessian (None where it was not stored).
    """
    ck = next((c for c in landscape_checkpoints(run) if c.step == step), None)
    if ck is None:
        return None
    sp = ck.spread
    if adam:
        if ck.adam_eigvals is None:
            return None
        spec = ck.adam_eigvals
        top = np.sort(spec)[::-1]
        cv = float(sp.adam_cv) if sp is not None else math.nan
    else:
        spec = pseudo_spectrum(ck)
        top = np.sort(top_values(ck))[::-1]
        cv = float(sp.cv) if sp is not None else math.nan
    return UVInputs(run.recipe.train.seed, spec, top, cv,
                    "exact" if ck.eigvals is not None else "slq")


def last_common_step(a: Run, b: Run) -> int | None:
    """The last checkpoint both runs probed (None if none)."""
    common = sorted(set(a.probed_steps) & set(b.probed_steps))
    return common[-1] if common else None


@dataclass(frozen=True, repr=False)
class SweepCurve(_Brief):
    """kappa, count and force of one run over shared river thresholds (:func:`uv_sweep`).

    Attributes:
        seed: the run's seed.
        step: the checkpoint swept.
        eps_rel: ``[m]`` thresholds relative to the shared reference, ascending.
        kappa: ``[m]`` condition number of the valley above each threshold.
        count: ``[m]`` eigenvalues above it.
        force: ``[m]`` the sum of their inverses.
        saturated: ``[m]`` 1.0 where the smallest valley eigenvalue sits within a factor 2
            of the threshold (kappa then measures the threshold).
    """

    seed: int
    step: int
    eps_rel: np.ndarray
    kappa: np.ndarray
    count: np.ndarray
    force: np.ndarray
    saturated: np.ndarray

    def __post_init__(self) -> None:
        _same_length(self, ("eps_rel", "kappa", "count", "force", "saturated"))


@dataclass(frozen=True, repr=False)
class UVSweep(_Brief):
    """The threshold sweep of Single- and Looped-Attn, one curve per seed (:func:`uv_sweep`).

    Attributes:
        single: Single-Attn's curves.
        looped: Looped-Attn's, same seeds in the same order.
        adam: True where the spectra are of Adam's preconditioned Hessian
            ``D^-1/2 H D^-1/2``, False for the Hessian's.
    """

    single: list[SweepCurve] = field(default_factory=list)
    looped: list[SweepCurve] = field(default_factory=list)
    adam: bool = False


def uv_sweep(single: list[Run], looped: list[Run], adam: bool = False) -> UVSweep:
    """kappa, count and force over the shared thresholds, per seed, for the sweep figure.

    For each seed with both runs probed, at their last common checkpoint and with
    Single-Attn's lambda_max there as the shared reference
    (:func:`landscape.geometry.uv_measures.sweep`).
    """
    from landscape.geometry import uv_measures as uv

    by_seed = {r.recipe.train.seed: r for r in looped}
    out = UVSweep(adam=adam)
    for s in single:
        lo = by_seed.get(s.recipe.train.seed)
        step = None if lo is None else last_common_step(s, lo)
        if step is None:
            continue
        a, b = uv_inputs(s, step, adam), uv_inputs(lo, step, adam)
        if a is None or b is None:
            continue
        ref = float(np.max(a.top))
        for curves, x in ((out.single, a), (out.looped, b)):
            pts = uv.sweep(x.spectrum, ref)
            curves.append(SweepCurve(
                x.seed, step, np.array([p.eps_rel for p in pts]),
                **{k: np.array([getattr(p, k) for p in pts], dtype=float)
                   for k in ("kappa", "count", "force", "saturated")}))
    if not out.single:
        raise LandscapeError("the threshold sweep needs Single and Looped runs of one seed "
                             "probed at a common checkpoint")
    return out


# --- claim 4: per-step windows and interventions -----------------------------------------


@dataclass(frozen=True, repr=False)
class PerStepWindow(_Brief):
    """Valley hopping step by step over one stored window (:func:`per_step_windows`).

    The valley is the optimiser's edge span stored at the window's first step
    (:class:`~landscape.runfile.schema.OptimiserValley`), the river the window's net
    displacement off it (:func:`landscape.geometry.per_step.river_direction`); the per-step
    quantities are :mod:`landscape.geometry.per_step`'s, averaged over the window's steps.

    Attributes:
        start: the window's first optimiser step.
        steps: its rows (consecutive optimiser steps).
        valley_k: the valley's dimension.
        near_edge: whether that span is the optimiser's edge (False: its top ``k``).
        hop_fraction: mean share of valley coordinates that change sign from one step to
            the next.
        amplitude: mean RMS valley displacement of a step.
        river_per_step: mean displacement of a step along the river direction.
        loss_drop_per_step: the batch losses' first minus last, over ``steps - 1``
            (beside: batches differ).
        spacing: the run's checkpoint spacing in optimiser steps (0: one checkpoint).
        spaced_hop_fraction: the hop fraction of the same window with its updates summed
            over ``spacing`` consecutive steps, as checkpoints that far apart see it (NaN
            where the window holds fewer than two such blocks).
    """

    start: int
    steps: int
    valley_k: int
    near_edge: bool
    hop_fraction: float
    amplitude: float
    river_per_step: float
    loss_drop_per_step: float
    spacing: int
    spaced_hop_fraction: float

    def as_dict(self) -> dict:
        """The fields as a dict (for claims.json)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def checkpoint_spacing(run: Run) -> int:
    """The median number of optimiser steps between a run's checkpoints (0: fewer than 2)."""
    steps = np.asarray(run.steps)
    return int(np.median(np.diff(steps))) if steps.size >= 2 else 0


def per_step_windows(run: Run) -> list[PerStepWindow]:
    """Per-step hopping over each stored window with an ``optimiser_valley`` at its start.

    Windows without that part (not probed there: ``landscape probe --steps START``) or of
    fewer than two steps are left out; ``[]`` for a run without windows.
    """
    from landscape.geometry.optimiser_valley import orthonormal_rows
    from landscape.geometry.per_step import per_step_hopping, river_direction

    out = []
    spacing = checkpoint_spacing(run)
    for w in run.windows():
        valley = run.part("optimiser_valley", w.start)
        if valley is None or w.n < 2:
            continue
        v = orthonormal_rows(np.asarray(valley.basis, dtype=np.float64))
        d = np.asarray(w.updates, dtype=np.float64)
        u = river_direction(d.sum(axis=0), v)
        h = per_step_hopping(d, v, u)
        blocks = w.n // spacing if spacing >= 1 else 0
        spaced = math.nan
        if blocks >= 2:
            summed = d[:blocks * spacing].reshape(blocks, spacing, -1).sum(axis=1)
            spaced = per_step_hopping(summed, v, u).mean_hop_fraction
        out.append(PerStepWindow(
            start=int(w.start), steps=int(w.n), valley_k=int(v.shape[0]),
            near_edge=bool(valley.near_edge), hop_fraction=h.mean_hop_fraction,
            amplitude=float(h.amplitude.mean()), river_per_step=float(h.river.mean()),
            loss_drop_per_step=float((w.loss[0] - w.loss[-1]) / (w.n - 1)), spacing=spacing,
            spaced_hop_fraction=float(spaced)))
    return out


def interventions(run: Run) -> dict[int, schema.Intervention]:
    """The stored ``intervention`` parts of a run by start step (``{}``: none)."""
    found = {int(s): run.part("intervention", s) for s in run.probed_steps}
    return {s: p for s, p in found.items() if p is not None}
