"""A run's stored numbers as TensorBoard events (``landscape export RUN --tensorboard DIR``).

Scalars over the optimiser step: the run's metrics (``metrics/<name>``: losses,
accuracies, the learning rate), and at each probed checkpoint ``curvature/lambda_max``,
``curvature/edge`` (the optimiser's stability edge), their Adam-preconditioned
``curvature/adam_lambda_max`` and ``curvature/adam_edge``, ``curvature/trace``,
``curvature/kappa`` (the valley's condition number) and ``blocks/<group>/top`` (each
parameter block's top eigenvalue). Histograms: the Hessian spectrum per probed checkpoint
(``spectrum/hessian``: the exact eigenvalues, or the SLQ density's nodes weighted by
eigenvalue count) and the exact Adam-preconditioned one (``spectrum/adam``). Numbers a run
does not have (a part never probed, NaN) are left out.

Everything is read through :mod:`landscape.analysis.series`; the events are written with
torch's ``SummaryWriter`` (the ``tensorboard`` extra).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landscape.analysis import series
from landscape.errors import LandscapeError
from landscape.runs.run import Run

TIME_KEYS = ("step", "epoch", "wall")  # a metric table's time axes, not metrics


@dataclass(frozen=True)
class Exported:
    """What :func:`export_tensorboard` wrote.

    Attributes:
        folder: the event files' folder.
        scalars: ``{tag: points written}``.
        histograms: ``{tag: checkpoints written}``.
    """

    folder: Path
    scalars: dict[str, int]
    histograms: dict[str, int]


def _writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LandscapeError("--tensorboard needs the tensorboard package: pip install "
                             "'looped-landscape[tensorboard]'") from None
    return SummaryWriter(log_dir=str(folder))


def curvature_scalars(run: Run, step: int) -> dict[str, float]:
    """The probe numbers of checkpoint ``step``: ``{tag: value}``, finite values only."""
    values: dict[str, float] = {}
    sharp = series.part(run, "sharpness", step, required=False)
    if sharp is not None:
        values.update({"curvature/lambda_max": sharp.lambda_max,
                       "curvature/edge": sharp.threshold,
                       "curvature/adam_lambda_max": sharp.adam_lambda_max,
                       "curvature/adam_edge": sharp.adam_threshold})
    trace = series.part(run, "trace", step, required=False)
    if trace is not None:
        values["curvature/trace"] = trace.estimate
    valley = series.part(run, "valley", step, required=False)
    if valley is not None:
        values["curvature/kappa"] = valley.kappa
    blocks = series.part(run, "blocks", step, required=False)
    for name, block in (blocks.groups.items() if blocks is not None else ()):
        if len(block.values):
            values[f"blocks/{name}/top"] = float(np.max(block.values))
    return {k: float(v) for k, v in values.items() if math.isfinite(float(v))}


def _spectrum_histograms(writer, run: Run, counts: dict[str, int]) -> None:
    """The Hessian spectrum (exact or SLQ) and the exact Adam one at each probed step."""
    try:
        spectra = series.spectrum_checkpoints(run)
    except LandscapeError:  # no spectrum probed: scalars only
        return
    for ck in spectra:
        if ck.eigvals is not None:
            writer.add_histogram("spectrum/hessian", ck.eigvals, ck.step, bins="auto")
        else:
            _slq_histogram(writer, ck.slq, ck.step)
        counts["spectrum/hessian"] = counts.get("spectrum/hessian", 0) + 1
        exact = series.part(run, "exact", ck.step, required=False)
        if exact is not None and exact.adam_eigvals is not None:
            writer.add_histogram("spectrum/adam", exact.adam_eigvals, ck.step, bins="auto")
            counts["spectrum/adam"] = counts.get("spectrum/adam", 0) + 1


def _slq_histogram(writer, slq: series.SLQDensity, step: int, bins: int = 64) -> None:
    """An SLQ density as a histogram of eigenvalue counts (weights scaled to ``dim``)."""
    nodes, weights = slq.nodes.ravel(), slq.weights.ravel() / len(slq.nodes)
    scale = slq.dim or 1
    counts, edges = np.histogram(nodes, bins=bins, weights=weights * scale)
    centers = 0.5 * (edges[:-1] + edges[1:])
    writer.add_histogram_raw(
        "spectrum/hessian", min=float(nodes.min()), max=float(nodes.max()),
        num=float(counts.sum()), sum=float(np.sum(counts * centers)),
        sum_squares=float(np.sum(counts * centers**2)), bucket_limits=edges[1:].tolist(),
        bucket_counts=counts.tolist(), global_step=step)


def export_tensorboard(run: Run, folder: str | Path) -> Exported:
    """Write a run's metrics, probe numbers and spectra as TensorBoard events in ``folder``.

    Args:
        run: the run (probed or not: an unprobed run exports its metrics only).
        folder: the log folder (created); point ``tensorboard --logdir`` at it.

    Returns:
        What was written (:class:`Exported`).

    Raises:
        LandscapeError: the tensorboard package is missing, or the run has nothing to export.
    """
    folder = Path(folder)
    curve = series.curve(run)
    steps = curve.get("step")
    scalars: dict[str, int] = {}
    histograms: dict[str, int] = {}
    writer = _writer(folder)
    try:
        for name, values in curve.metrics.items():
            if name in TIME_KEYS or steps is None:
                continue
            for step, value in zip(steps, values):
                if math.isfinite(float(value)):
                    writer.add_scalar(f"metrics/{name}", float(value), int(step))
                    scalars[f"metrics/{name}"] = scalars.get(f"metrics/{name}", 0) + 1
        for step in run.probed_steps:
            for tag, value in curvature_scalars(run, step).items():
                writer.add_scalar(tag, value, int(step))
                scalars[tag] = scalars.get(tag, 0) + 1
        _spectrum_histograms(writer, run, histograms)
    finally:
        writer.close()
    if not scalars and not histograms:
        raise LandscapeError(f"{run.path} has no metrics or probe results to export")
    return Exported(folder, scalars, histograms)
