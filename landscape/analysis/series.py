"""From run files to the series that figures and claims read.

One place reads and derives every quantity shown or judged (so a figure and the claims
report can never disagree): training curves, spectra per probed checkpoint with their
matrix entropy and phases, river-valley statistics, widths against river progress,
sharpness, and the stored probe parts themselves (slices, the PCA plane, the loop curve,
the SHIFT switch, the Q/K gradient alignment) as the typed dataclasses of
:mod:`landscape.runfile.schema`. Figures (:mod:`landscape.draw.figures`) and claims
(:mod:`landscape.analysis.claims`) read run files only through here. Functions take
:class:`~landscape.runs.run.Run` objects and return typed parts or dicts of numpy arrays; they
raise :class:`LandscapeError` naming the probe to run when data is missing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from landscape.analysis.targets import drop_after, time_to_target
from landscape.curvature.spectral import density_in_bins, signed_log, signed_log_inverse
from landscape.errors import LandscapeError
from landscape.geometry.phases import Phases, density_entropy, matrix_entropy, phase_rule
from landscape.geometry.slices import basin_share as _basin_share
from landscape.runfile import schema
from landscape.runs.run import Run


def task_key(run: Run) -> str:
    """The group a run belongs to: its task name (``custom``: your own model) or ``markov_long``.

    ``markov_long``: a Markov run with a long test split (the length-generalization study),
    kept apart from the main Markov runs.
    """
    if run.recipe is None:  # a model of your own
        return run.task_name
    task = run.recipe.task
    return "markov_long" if getattr(task, "long_len", 0) else task.name

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


def curve(run: Run, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """A run's evaluation metrics (all, or ``keys``), with ``switch_epoch``/``switch_step``."""
    m = run.metrics
    wanted = list(m) if keys is None else ["step", "epoch", "wall", *keys]
    out = {k: np.asarray(m[k]) for k in wanted if k in m}
    if run.shift_step is not None:
        out["switch_step"] = float(run.shift_step)
        out["switch_epoch"] = epoch_of(run, run.shift_step)
    return out


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


def spectrum_checkpoints(run: Run) -> list[dict]:
    """The spectrum at each Hessian-probed checkpoint, in step order.

    Each is ``{"epoch", "step"}`` with the exact ``eigvals`` or the SLQ ``nodes``,
    ``weights`` and ``dim``.
    """
    out = []
    for step in run.probed_steps:
        ck = {"epoch": epoch_of(run, step), "step": step}
        exact = run.part("exact", step)
        slq = None if exact is not None else run.part("slq", step)
        if exact is not None:
            ck["eigvals"] = exact.eigvals
        elif slq is not None:
            ck.update(nodes=slq.nodes, weights=slq.weights, dim=run.layout.size)
        else:
            continue
        out.append(ck)
    if not out:
        raise LandscapeError(f"{run.path} has no Hessian spectra; run `landscape probe "
                             f"{run.path} --hessian`")
    return out


def entropy_series(run: Run, checkpoints: list[dict] | None = None) -> dict[str, np.ndarray]:
    """Matrix entropy of the spectrum at each probed checkpoint.

    Returns ``epoch`` and ``entropy`` arrays, and ``source``: ``exact`` where every
    checkpoint has its exact spectrum, else ``slq``. ``checkpoints``: the run's
    :func:`spectrum_checkpoints` where the caller already has them.
    """
    return spectra_entropy(spectrum_checkpoints(run) if checkpoints is None else checkpoints)


def spectra_entropy(checkpoints: list[dict]) -> dict[str, np.ndarray]:
    """Matrix entropy of each spectrum checkpoint (see :func:`spectrum_checkpoints`).

    Exact spectra by :func:`landscape.geometry.phases.matrix_entropy`, SLQ densities (which need
    ``dim``) by :func:`landscape.geometry.phases.density_entropy`. Returns ``epoch``, ``entropy``
    and ``source`` (``exact`` where every checkpoint is exact, else ``slq``).
    """
    cks = [_spectrum(c, f"spectra: checkpoint {i}") for i, c in enumerate(checkpoints)]
    for c in cks:
        if "nodes" in c and not c.get("dim"):
            raise LandscapeError("spectra: an SLQ checkpoint needs 'dim' (the parameter "
                                 "count) for its entropy")
    ent = [matrix_entropy(c["eigvals"]) if "eigvals" in c else
           density_entropy(c["nodes"], c["weights"], int(c["dim"])) for c in cks]
    return {"epoch": np.array([c["epoch"] for c in cks]), "entropy": np.array(ent),
            "source": "exact" if all("eigvals" in c for c in cks) else "slq"}


def _spectrum(ck: dict, where: str) -> dict:
    """One checkpoint's spectrum, validated: ``epoch`` and ``eigvals`` or SLQ arrays."""
    if ck.get("epoch") is None:
        raise LandscapeError(f"{where}: missing 'epoch'")
    epoch = float(ck["epoch"])
    if ck.get("eigvals") is not None:
        return {"epoch": epoch, "eigvals": np.asarray(ck["eigvals"], dtype=np.float64).ravel()}
    if ck.get("nodes") is None or ck.get("weights") is None:
        raise LandscapeError(f"{where}: missing 'eigvals' (or SLQ 'nodes' and 'weights')")
    nodes = np.atleast_2d(np.asarray(ck["nodes"], dtype=np.float64))
    weights = np.atleast_2d(np.asarray(ck["weights"], dtype=np.float64))
    if nodes.shape != weights.shape:
        raise LandscapeError(f"{where}: SLQ nodes {nodes.shape} and weights {weights.shape} "
                             "differ in shape")
    return {"epoch": epoch, "nodes": nodes, "weights": weights, "dim": ck.get("dim")}


def binned_spectra(spectra_by_model: dict[str, list[dict]], *, xscale: str = "symlog",
                   linthresh: float | None = None, bins: int = 60,
                   sigma: float = 0.01) -> dict:
    """Each checkpoint's spectrum as eigenvalues per bin, on bins shared by all of them.

    The bins are even on the display axis: signed-log (``xscale="symlog"``, linear within
    ``+-linthresh``, see :func:`landscape.curvature.spectral.signed_log`) or linear, spanning every
    eigenvalue of every model and checkpoint with a 2 % margin. Exact spectra are
    histograms. An SLQ checkpoint's quadrature measure is smoothed by a Gaussian of width
    ``sigma`` times the axis span in display coordinates (so the smoothing is relative on
    the log parts), integrated over each bin (:func:`landscape.curvature.spectral.density_in_bins`)
    and scaled by ``dim`` to read as eigenvalues per bin (as a share per bin without it).

    Args:
        spectra_by_model: ``{model: [checkpoint, ...]}``, a checkpoint being ``{"epoch",
            "eigvals": [P]}`` or ``{"epoch", "nodes": [runs, m], "weights": [runs, m],
            "dim": P}`` (as :func:`spectrum_checkpoints` returns), in epoch order.
        xscale: ``"symlog"`` or ``"linear"``.
        linthresh: half-width of the linear zone; default ``1e-3 * max |eigenvalue|`` (the
            default river threshold of :mod:`landscape.geometry.valley`).
        bins: number of bins.
        sigma: SLQ smoothing width, as a fraction of the display axis.

    Returns:
        ``{"edges": [bins + 1], "spectra": {model: [{"epoch", "mass": [bins]}, ...]},
        "xscale", "linthresh", "counts"}`` (``counts``: every mass is eigenvalues per bin,
        else some are shares), the input of :func:`landscape.draw.plot.spectra`.
    """
    if xscale not in ("symlog", "linear"):
        raise LandscapeError(f"spectra: xscale must be 'symlog' or 'linear', got {xscale!r}")
    if not spectra_by_model:
        raise LandscapeError("spectra: no models")
    cks = {m: [_spectrum(c, f"spectra: checkpoint {i} of {m!r}") for i, c in enumerate(lst)]
           for m, lst in spectra_by_model.items()}
    if not all(cks.values()):
        raise LandscapeError("spectra: a model has no checkpoints")
    values = np.concatenate([c["eigvals"] if "eigvals" in c else c["nodes"].ravel()
                             for lst in cks.values() for c in lst])
    lt = float(linthresh) if linthresh else 1e-3 * (float(np.max(np.abs(values))) or 1.0)

    def to_axis(x):
        return signed_log(x, lt) if xscale == "symlog" else np.asarray(x, dtype=np.float64)

    lo, hi = to_axis(np.array([values.min(), values.max()]))
    pad = 0.02 * (hi - lo) + 1e-12
    t_edges = np.linspace(lo - pad, hi + pad, bins + 1)
    edges = signed_log_inverse(t_edges, lt) if xscale == "symlog" else t_edges
    out = {m: [{"epoch": c["epoch"], "mass": np.histogram(c["eigvals"], bins=edges)[0]
                .astype(np.float64) if "eigvals" in c else
                density_in_bins(c["nodes"], c["weights"], edges, sigma * (hi - lo),
                                transform=to_axis, dim=c.get("dim"))} for c in lst]
           for m, lst in cks.items()}
    counts = all("eigvals" in c or c.get("dim") for lst in cks.values() for c in lst)
    return {"edges": edges, "spectra": out, "xscale": xscale, "linthresh": lt,
            "counts": counts}


def phases_of(run: Run, entropy: dict[str, np.ndarray] | None = None) -> Phases:
    """Collapse / Diversification / Stabilization of the entropy series, for the figures.

    Claim 2's rule (:func:`landscape.geometry.phases.phase_rule`, segmented fits chosen by BIC) on
    this one run, its noise estimated from the residuals (the claim uses the spread across
    seeds instead). ``entropy``: the run's :func:`entropy_series` where the caller already
    has it.
    """
    s = entropy_series(run) if entropy is None else entropy
    if len(s["epoch"]) < 3:
        raise LandscapeError(f"{run.path}: phase detection needs at least 3 probed checkpoints")
    return phase_rule(s["epoch"], s["entropy"]).as_phases(s["epoch"], s["entropy"])


def valley_series(run: Run) -> dict[str, np.ndarray]:
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
        raise LandscapeError(f"{run.path} has no valley split; run `landscape probe "
                             f"{run.path} --geometry`")
    cols = list(zip(*rows))
    keys = ("epoch", "step", "kappa", "river_dim", "valley_dim", "small_count", "small_force")
    out = {k: np.asarray(c, dtype=float) for k, c in zip(keys, cols[:-1])}
    out["label"] = np.asarray(cols[-1])
    return out


def width_series(run: Run) -> dict[str, np.ndarray]:
    """Valley widths (``[n, k]``) and their quadratic predictions against river progress."""
    rp = run.part("river_progress")
    if rp is None:
        raise LandscapeError(f"{run.path} has no river progress; run `landscape probe "
                             f"{run.path} --geometry` on at least two checkpoints")
    all_steps, progress = rp.steps, rp.progress
    rows = []
    for step in run.probed_steps:
        w = run.part("widths", step)
        where = np.flatnonzero(all_steps == step)
        if w is not None and where.size:
            rows.append((epoch_of(run, step), progress[where[0]], w.width, w.quadratic))
    if not rows:
        raise LandscapeError(f"{run.path} has no valley widths; run `landscape probe --geometry`")
    k = min(len(r[2]) for r in rows)
    return {"epoch": np.array([r[0] for r in rows]), "progress": np.array([r[1] for r in rows]),
            "width": np.stack([r[2][:k] for r in rows]),
            "quadratic": np.stack([r[3][:k] for r in rows])}


def sharpness_series(run: Run) -> dict[str, np.ndarray | str]:
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
        raise LandscapeError(f"{run.path} has no sharpness; run `landscape probe --hessian`")
    a = np.array(rows)
    return {**dict(zip(("epoch", "lambda_max", "threshold", "adam_lambda_max",
                        "adam_threshold"), a.T)),
            "optimizer": last.optimizer, "edge_on": last.edge_on,
            "edge_unknown": last.edge_unknown}


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
        raise LandscapeError(f"{run.path} has no {name!r} probe part{where}; run `landscape "
                             f"probe {run.path} {flag}`")
    return found


def slices_at(run: Run, step: int) -> dict:
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


def shared_slices(run: Run) -> dict:
    """``{step: SliceShared}`` at every probed checkpoint that has a shared-plane slice."""
    found = {s: run.part("slice_shared", s) for s in run.probed_steps}
    return {s: g for s, g in found.items() if g is not None and not g.skipped}


def basin_share(grid, rise: float) -> float:
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


def length_series(run: Run, metric: str = "seq_acc") -> dict[str, np.ndarray]:
    """Final accuracy per test length of an algorithmic run (``length``, ``acc``)."""
    lengths = sorted(int(k.split(".")[0].removeprefix("len_")) for k in run.metrics
                     if k.startswith("len_") and k.endswith(f".{metric}"))
    if not lengths:
        raise LandscapeError(f"{run.path} has no per-length evaluation (not an algorithmic task)")
    return {"length": np.array(lengths, dtype=float),
            "acc": np.array([final(run, f"len_{n}.{metric}") for n in lengths])}


def reach(run: Run, target: float, key: str = "complex.acc") -> dict[str, float]:
    """Training seconds, FLOPs and epochs at the first evaluation where ``key`` >= ``target``.

    ``inf`` where it is never reached (see :func:`landscape.analysis.targets.time_to_target`).
    """
    c = curve(run, [key, "flops"])
    if "flops" not in c:
        raise LandscapeError(f"{run.path} has no FLOP count (trained before it was recorded)")
    if key not in c:
        raise LandscapeError(f"{run.path} has no metric {key!r}")
    return {name: time_to_target(c[m], c[key], target)
            for name, m in (("seconds", "wall"), ("flops", "flops"), ("epoch", "epoch"))}


def switch_info(run: Run, key: str = "complex.acc", horizon: int = 3) -> dict:
    """SHIFT's switch: step, epoch, why it fired, and ``key``'s drop over the next evaluations."""
    step = run.shift_step
    event = next((e for e in run.events if e.get("kind") == "shift"), {})
    if step is None:
        return {"step": None, "epoch": float("nan"), "reason": "none", "before": float("nan"),
                "min_after": float("nan"), "drop": float("nan")}
    c = curve(run, [key])
    return {"step": step, "epoch": epoch_of(run, step), "reason": event.get("reason", "none"),
            **drop_after(c["step"], c[key], step, horizon)}


def shift_ablation(shifts: list[Run], looped: list[Run], tol: float, last: int) -> list[dict]:
    """SHIFT settings on one seed: switch, drop and cost to Looped-Attn's target.

    The seed is the one with the most SHIFT runs; the target is that seed's Looped-Attn
    final ``complex.acc`` (mean of its ``last`` evaluations) minus ``tol``. Each row holds the
    setting (criterion, delta_1, delta_2, window, patience), the switch epoch and reason,
    the drop after it, seconds and FLOPs to the target and their ratios to Looped-Attn's.
    An empty list when there are fewer than two settings on that seed.
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
        out.append({"seed": seed, "target": target, "criterion": sc.criterion,
                    "delta_1": sc.delta_1, "delta_2": sc.delta_2, "window": sc.window,
                    "patience": sc.patience, "switch_epoch": sw["epoch"],
                    "reason": sw["reason"], "drop": sw["drop"], "seconds": got["seconds"],
                    "flops": got["flops"], "flops_ratio": got["flops"] / base["flops"],
                    "seconds_ratio": got["seconds"] / base["seconds"]})
    return sorted(out, key=lambda d: (d["criterion"], d["delta_2"], d["delta_1"], d["window"]))


# --- claims 2-4: per-run inputs of the landscape rules ------------------------------------


def landscape_runs(groups: Grouped, arch: str) -> list[Run]:
    """The Markov runs the landscape claims read for ``arch``: probed, by seed.

    The spectral runs (:data:`SPECTRAL_PREFIX`) where there are any, else the main runs.
    """
    g = groups.get("markov", {})
    runs = g.get(spectral_key(arch)) or g.get(arch, [])
    return sorted((r for r in runs if r.probed_steps), key=lambda r: r.recipe.train.seed)


def landscape_checkpoints(run: Run) -> list[dict]:
    """What the landscape rules read at each Hessian-probed checkpoint, in step order.

    Each is ``{"epoch", "step", "top"}`` (the top Lanczos eigenvalues, descending) with
    ``eigvals`` (the exact spectrum, ascending) and ``adam_eigvals`` where stored, or
    ``slq`` (``nodes``, ``weights``, ``dim``); and ``spread`` (the direction-spread
    part) where probed.
    """
    out = []
    for step in run.probed_steps:
        top = run.part("top", step)
        if top is None:
            continue
        ck: dict = {"epoch": epoch_of(run, step), "step": int(step),
                    "top": np.asarray(top.values, dtype=float)}
        exact = run.part("exact", step)
        if exact is not None:
            ck["eigvals"] = np.asarray(exact.eigvals, dtype=float)
            if getattr(exact, "adam_eigvals", None) is not None:
                ck["adam_eigvals"] = np.asarray(exact.adam_eigvals, dtype=float)
        else:
            slq = run.part("slq", step)
            if slq is not None:
                ck["slq"] = {"nodes": np.asarray(slq.nodes),
                             "weights": np.asarray(slq.weights), "dim": run.layout.size}
        spread = run.part("spread", step)
        if spread is not None:
            ck["spread"] = spread
        out.append(ck)
    return out


def entropy_with_error(ck: dict) -> tuple[float, float]:
    """Matrix entropy of a checkpoint's spectrum and the estimator's standard error.

    Exact spectra have no estimator error (0); an SLQ density's error is the standard
    error over its runs of the one-run entropies.
    """
    if "eigvals" in ck:
        return matrix_entropy(ck["eigvals"]), 0.0
    s = ck["slq"]
    whole = density_entropy(s["nodes"], s["weights"], s["dim"])
    runs = [density_entropy(n[None], w[None], s["dim"]) for n, w in zip(s["nodes"],
                                                                        s["weights"])]
    se = float(np.std(runs, ddof=1) / np.sqrt(len(runs))) if len(runs) > 1 else 0.0
    return whole, se


def hopping_series(run: Run, max_k: int | None = None) -> dict:
    """Valley hopping at each probed checkpoint (see :mod:`landscape.geometry.hopping`).

    The valley basis at a checkpoint is its stored top Lanczos eigenvectors (the first
    ``max_k``, default all); the steps are to and from the neighbouring stored
    checkpoints; the river gain is the probe-set loss at that checkpoint minus the loss
    after the outgoing step's river part; the river speed divides the river part by the
    learning rate times the optimiser steps it took.

    Returns:
        ``{"steps", "epochs", "hop_fraction", "valley_norm", "river_norm", "river_gain",
        "river_speed"}`` arrays over the probed checkpoints with a step in and out.
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
        raise LandscapeError(f"{run.path} has no probed checkpoint with a step in and out "
                             "and its top eigenvectors; run `landscape probe` on interior "
                             "checkpoints")
    res = {k: np.asarray(v) for k, v in out.items()}
    res["epochs"] = np.asarray([epoch_of(run, s) for s in out["steps"]])
    return res


def pseudo_spectrum(ck: dict) -> np.ndarray:
    """Exact eigenvalues, or the SLQ density as a list of ``dim * weight / runs`` copies."""
    if "eigvals" in ck:
        return ck["eigvals"]
    s = ck["slq"]
    counts = np.rint(s["dim"] * s["weights"] / s["nodes"].shape[0]).astype(int)
    return np.repeat(s["nodes"].reshape(-1), counts.reshape(-1))


def top_values(ck: dict) -> np.ndarray:
    """The exact spectrum where stored, else the converged top Lanczos values."""
    return ck["eigvals"] if "eigvals" in ck else ck["top"]


def uv_inputs(run: Run, step: int, adam: bool = False) -> dict | None:
    """What claim 3 compares at one checkpoint: spectrum, top values, direction-spread CV.

    ``adam``: of the Adam-preconditioned Hessian (None where it was not stored).
    """
    ck = next((c for c in landscape_checkpoints(run) if c["step"] == step), None)
    if ck is None:
        return None
    sp = ck.get("spread")
    if adam:
        if "adam_eigvals" not in ck:
            return None
        spec = ck["adam_eigvals"]
        top = np.sort(spec)[::-1]
        cv = float(sp.adam_cv) if sp is not None else math.nan
    else:
        spec = pseudo_spectrum(ck)
        top = np.sort(top_values(ck))[::-1]
        cv = float(sp.cv) if sp is not None else math.nan
    return {"seed": run.recipe.train.seed, "spectrum": spec, "top": top, "cv": cv,
            "source": "exact" if "eigvals" in ck else "slq"}


def last_common_step(a: Run, b: Run) -> int | None:
    """The last checkpoint both runs probed (None if none)."""
    common = sorted(set(a.probed_steps) & set(b.probed_steps))
    return common[-1] if common else None


def uv_sweep(single: list[Run], looped: list[Run], adam: bool = False) -> dict[str, list]:
    """kappa, count and force over the shared thresholds, per seed, for the sweep figure.

    For each seed with both runs probed, at their last common checkpoint and with
    Single-Attn's lambda_max there as the shared reference
    (:func:`landscape.geometry.uv_measures.sweep`).

    Returns:
        ``{"single": [...], "looped": [...]}``, one dict per seed with ``eps_rel``,
        ``kappa``, ``count``, ``force`` and ``saturated`` arrays, ``seed`` and ``step``.
    """
    from landscape.geometry import uv_measures as uv

    by_seed = {r.recipe.train.seed: r for r in looped}
    out: dict[str, list] = {"single": [], "looped": []}
    for s in single:
        lo = by_seed.get(s.recipe.train.seed)
        step = None if lo is None else last_common_step(s, lo)
        if step is None:
            continue
        a, b = uv_inputs(s, step, adam), uv_inputs(lo, step, adam)
        if a is None or b is None:
            continue
        ref = float(np.max(a["top"]))
        for arch, x in (("single", a), ("looped", b)):
            pts = uv.sweep(x["spectrum"], ref)
            out[arch].append({"seed": x["seed"], "step": step,
                              "eps_rel": np.array([p.eps_rel for p in pts]),
                              **{k: np.array([getattr(p, k) for p in pts], dtype=float)
                                 for k in ("kappa", "count", "force", "saturated")}})
    if not out["single"]:
        raise LandscapeError("the threshold sweep needs Single and Looped runs of one seed "
                             "probed at a common checkpoint")
    return out
