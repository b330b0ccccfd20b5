"""The figures of a reproduction, built from run files (``landscape plot``, ``reproduce``).

Each entry of :data:`FIGURES` takes the runs (grouped by task and architecture, see
:func:`landscape.analysis.series.group_runs`) and returns ``{file stem: Figure}``; it raises
:class:`LandscapeError` saying which runs or probes it needs when they are missing.
The arrays come from :mod:`landscape.analysis.series`; the drawing from :mod:`landscape.draw.plot`.
A time axis counts epochs for runs of ``landscape train`` and steps for runs of your own
loop (:func:`landscape.analysis.series.time_unit`); a figure that would put both on one axis
raises instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from landscape.analysis import series
from landscape.analysis.claims import FINAL_LAST, TARGET_TOL
from landscape.analysis.series import Grouped, markov_runs
from landscape.draw import plot
from landscape.draw.interactive import SliceView
from landscape.errors import LandscapeError
from landscape.geometry.simulator import compare
from landscape.runfile.schema import SliceShared
from landscape.runs.run import Run
from landscape.train.archs import LOOPED, SHIFT, SINGLE

BASIN_RISE = 0.1  # loss rise (nats) above a checkpoint that marks its basin's edge
MARKOV_KEYS = ("simple.acc", "complex.acc", "simple.loss", "complex.loss", "all.acc")


def _curvature_runs(groups: Grouped, archs: Iterable[str], what: str,
                    some: bool = False) -> dict[str, list[Run]]:
    """The Markov runs of ``archs`` (``some``: those present), else your own models' runs."""
    if "markov" not in groups and groups.get("custom"):
        return dict(groups["custom"])
    return markov_runs(groups, archs, what, some=some)


def who(run: Run, key: str | None = None) -> str:
    """A run's human name: its model and seed (``"Looped-Attn, seed 0"``).

    The run file itself goes into the saved figure's metadata (``runs``).
    """
    name = plot.MODEL_LABELS.get(key or run.arch, key or run.name)
    seed = run.recipe.train.seed if run.recipe is not None else None
    return name if seed is None else f"{name}, seed {seed}"


def _sourced(figs: dict[str, Figure], runs: Iterable[Run]) -> dict[str, Figure]:
    """Append the runs' human names to each figure's caption."""
    names = "; ".join(dict.fromkeys(who(r) for r in runs))
    return {stem: plot.add_source(fig, names) for stem, fig in figs.items()}


def caption_of(png: str | Path) -> str:
    """The caption a saved PNG carries in its metadata ("" where it has none)."""
    from PIL import Image

    with Image.open(png) as im:
        return im.text.get(plot.CAPTION_KEY, "")


def _algorithmic(groups: Grouped) -> dict[str, dict[str, list[Run]]]:
    algo = {t: g for t, g in groups.items() if series.is_algorithmic(t)}
    if not algo:
        raise LandscapeError("needs algorithmic-task runs (landscape train models/parity.toml "
                             "--model looped, ...)")
    return algo


def concept(groups: Grouped) -> dict[str, Figure]:
    """Paper Fig. 1 from the valley-hopping simulator (and a SHIFT run's timeline if any).

    A synthetic illustration of the paper's conjecture, so drawn only beside runs of the
    paper's recipes, never for runs of your own models alone.
    """
    if not set(groups) - {"custom"}:
        raise LandscapeError("figure concept is the paper's synthetic illustration; it is "
                             "drawn for runs of landscape train, not for your own models")
    cmp = compare()
    shift_runs = groups.get("markov", {}).get(SHIFT)
    timeline = series.shift_timeline(shift_runs[0]) if shift_runs else None
    return {"fig1_concept": plot.concept(cmp.u, cmp.v, timeline)}


def sample_dynamics(groups: Grouped) -> dict[str, Figure]:
    """Paper Fig. 2: simple/complex accuracy and loss, Single vs Looped, Bayes ceilings."""
    runs = markov_runs(groups, (SINGLE, LOOPED), "sample_dynamics")
    curves = {a: [series.curve(r, MARKOV_KEYS) for r in rs] for a, rs in runs.items()}
    return {"fig2_sample_dynamics": plot.sample_dynamics(curves, runs[SINGLE][0].ceilings)}


def spectra(groups: Grouped) -> dict[str, Figure]:
    """Paper Figs. 3 and 7-8: spectra over training with phases and matrix entropy.

    One row per model: Single-Attn and Looped-Attn, or whichever of them is given. Where
    there are spectral runs (``markov_spectral_*``: the exact spectra that claim 2 is judged
    on), their first seed; else the main runs' first probed seed.
    """
    markov = groups.get("markov", {})
    runs = {a: rs for a in (SINGLE, LOOPED)
            if markov.get(series.spectral_key(a)) and (rs := series.landscape_runs(groups, a))}
    if not runs:
        runs = _curvature_runs(groups, (SINGLE, LOOPED), "spectra", some=True)
    unit = series.shared_time_unit((rs[0] for rs in runs.values()), "spectra")
    by_model, entropy, phases = {}, {}, {}
    for arch, rs in runs.items():
        by_model[arch] = series.spectrum_checkpoints(rs[0])
        entropy[arch] = series.entropy_series(rs[0], by_model[arch])
        if sum(c.epoch > 0 for c in by_model[arch]) >= 3:  # fitted after initialisation
            phases[arch] = series.phases_of(rs[0], entropy[arch])
    fig = plot.spectra(series.binned_spectra(by_model), entropy, phases or None, unit=unit)
    return _sourced({"fig3_spectra": fig}, (rs[0] for rs in runs.values()))


def shift(groups: Grouped) -> dict[str, Figure]:
    """Paper Fig. 4: SHIFT vs Single vs Looped against epoch and wall-clock."""
    runs = markov_runs(groups, (SINGLE, LOOPED, SHIFT), "shift")
    if SHIFT in runs:  # the main setting's seeds: the ablation's settings are another figure
        runs[SHIFT] = series.main_shift_runs(runs[SHIFT])
    curves = {a: [series.curve(r, MARKOV_KEYS) for r in rs] for a, rs in runs.items()}
    return {"fig4_shift": plot.shift_comparison(curves)}


def algorithmic(groups: Grouped) -> dict[str, Figure]:
    """Paper Figs. 11-16 and length generalization, from the algorithmic-task runs."""
    algo = _algorithmic(groups)
    wall, curves, lengths, train_range = {}, {}, {}, None
    for task, g in algo.items():
        g = series.length_models(g)
        wall[task] = {a: series.wallclock(rs[0]) for a, rs in g.items()}
        curves[task] = {a: [series.curve(r, ["iid.seq_acc"]) for r in rs]
                        for a, rs in g.items()}
        for a, rs in g.items():
            lengths.setdefault(a, []).append(series.length_series(rs[0]))
        t = next(iter(g.values()))[0].recipe.task
        train_range = (t.train_min_len, t.train_max_len)
    out = {"fig11_algorithmic_wallclock": plot.algorithmic_wallclock(wall)}
    if any(curves.values()):
        out["fig12_task_curves"] = plot.task_curves({t: c for t, c in curves.items() if c})
    out["length_generalization"] = plot.length_generalization(lengths, train_range)
    return out


def shift_ablation(groups: Grouped) -> dict[str, Figure]:
    """Claim 5's ablation grid: FLOPs to Looped-Attn's target over SHIFT's settings."""
    runs = markov_runs(groups, (LOOPED, SHIFT), "shift_ablation")
    rows = series.shift_ablation(runs["shift"], runs["looped"], TARGET_TOL, FINAL_LAST)
    if len([r for r in rows if r.criterion == "training"]) < 2:
        raise LandscapeError("figure shift_ablation needs SHIFT runs with at least two "
                             "settings of the training criterion on one seed")
    return {"shift_ablation": plot.shift_ablation(rows)}


def length_tasks(groups: Grouped) -> dict[str, Figure]:
    """Claim 6: accuracy against test length per task, every seed (band), each model."""
    out = {}
    for task, g in _algorithmic(groups).items():
        g = series.length_models(g)
        lengths = {a: [series.length_series(r) for r in rs] for a, rs in g.items()
                   if a != "shift"}
        t = next(iter(g.values()))[0].recipe.task
        out[f"length_{task}"] = plot.length_generalization(
            lengths, (t.train_min_len, t.train_max_len))
    return out


def valley(groups: Grouped) -> dict[str, Figure]:
    """Ours: kappa, small-eigenvalue counts and force; width against river progress."""
    runs = _curvature_runs(groups, (SINGLE, LOOPED), "valley")
    # the seeds probed (the paper preset probes one seed of the main runs): the caption
    # names the runs drawn, not every run of the group
    runs = {a: [r for r in rs if r.probed_steps] or rs[:1] for a, rs in runs.items()}
    unit = series.shared_time_unit((r for rs in runs.values() for r in rs), "valley")
    stats = {a: [series.valley_series(r) for r in rs] for a, rs in runs.items()}
    out = _sourced({"valley_stats": plot.valley_stats(stats, unit=unit)},
                   (r for rs in runs.values() for r in rs))
    widths = {a: series.width_series(rs[0]) for a, rs in runs.items()}  # one seed each
    out |= _sourced({"valley_width_vs_river": plot.valley_width_vs_river(widths)},
                    (rs[0] for rs in runs.values()))
    return out


def valley_sweep(groups: Grouped) -> dict[str, Figure]:
    """Ours (claim 3): kappa, count and force over shared thresholds, per seed."""
    runs = {a: series.landscape_runs(groups, a) for a in (SINGLE, LOOPED)}
    sweep = series.uv_sweep(runs[SINGLE], runs[LOOPED])
    out = {"valley_sweep": plot.valley_sweep(sweep)}
    try:  # Adam's preconditioned spectra, where the runs have them
        out["valley_sweep_adam"] = plot.valley_sweep(
            series.uv_sweep(runs[SINGLE], runs[LOOPED], adam=True))
    except LandscapeError:
        pass
    seeds = {c.seed for c in sweep.single}
    return _sourced(out, (r for a in (SINGLE, LOOPED) for r in runs[a]
                          if r.recipe.train.seed in seeds))


def _axis_titles(grid) -> tuple[str, str]:
    """What the x and y directions of a stored slice are, from the plane's record."""
    plane = grid.plane or {}
    if plane.get("kind") == "random":
        how = f"{plane.get('norm', 'filter')}-normalised, seed {plane.get('seed', '?')}"
        return f"random direction 1 ({how})", f"random direction 2 ({how})"
    return plane.get("x", "x direction"), plane.get("y", "y direction")


def slice_views(groups: Grouped) -> dict[str, SliceView]:
    """The 2-D slices at the last probed checkpoint, ``{file stem: SliceView}``.

    Random and river x valley planes, and the PCA plane with the projected trajectory;
    drawn by :func:`slices` (PNG/PDF) and :mod:`landscape.draw.interactive` (HTML).
    """
    runs = _curvature_runs(groups, (SINGLE, LOOPED), "slices")
    out = {}
    for arch, rs in runs.items():
        run = rs[0]
        if not run.probed_steps:
            raise LandscapeError(f"{run.path} has no probes; run `landscape probe {run.path}`")
        step = run.probed_steps[-1]
        at = f"{series.time_unit(run)} {series.epoch_of(run, step):g}"
        for name, grid in series.slices_at(run, step).items():
            out[f"slice_{name}_{arch}"] = SliceView(
                grid, f"{who(run, arch)}, {at}\n{name.replace('_', ' x ')} plane",
                _axis_titles(grid))
        pca = series.part(run, "pca", required=False)
        if pca is not None:
            evr = pca.explained_variance_ratio
            out[f"slice_pca_{arch}"] = SliceView(
                pca.grid, f"{who(run, arch)}\nPCA plane of the trajectory "
                          f"({100 * evr[0]:.0f} % + {100 * evr[1]:.0f} %)",
                (f"PC 1 ({100 * evr[0]:.0f} % of the trajectory's variance)",
                 f"PC 2 ({100 * evr[1]:.0f} %)"), pca.coords, pca.true_loss)
    return out


def slices(groups: Grouped) -> dict[str, Figure]:
    """Ours: 2-D slices at the last probed checkpoint (random, river x valley, PCA plane)."""
    out = {}
    for stem, v in slice_views(groups).items():
        labels = (("PC 1 of the trajectory", "PC 2 of the trajectory")
                  if stem.startswith("slice_pca_") else None)  # else from the plane's kind
        fig = plot.slice_2d(v.grid, trajectory_xy=v.trajectory_xy, title=v.title,
                            axis_labels=labels)
        out[stem] = plot.add_source(fig, v.title.replace("\n", ", "))
    return out


def shared_plane(groups: Grouped) -> dict[str, Figure]:
    """Ours: Single- vs Looped-Attn (and SHIFT) on one plane, at up to three checkpoints."""
    runs = markov_runs(groups, (SINGLE, LOOPED), "shared_plane")
    if SHIFT in groups["markov"]:
        runs[SHIFT] = groups["markov"][SHIFT]
    found: dict[str, dict[int, SliceShared]] = {}
    for arch, rs in runs.items():
        run = rs[0]
        steps = series.shared_slices(run)
        if steps:
            found[arch] = steps
    if not {SINGLE, LOOPED} <= set(found):
        raise LandscapeError("figure shared_plane needs Single- and Looped-Attn runs probed "
                             "with `landscape probe RUN.h5 --shared-plane init` (or REF.h5)")
    grids = [g for steps in found.values() for g in steps.values()]
    if len({g.plane_hash for g in grids}) != 1:
        raise LandscapeError("figure shared_plane: the runs' shared slices are not on one plane "
                             "(different references, seeds or initialisations); probe them "
                             "with the same --shared-plane REF.h5")
    if any(g.alphas.shape != grids[0].alphas.shape
           or not np.allclose(g.alphas, grids[0].alphas)
           or not np.allclose(g.betas, grids[0].betas) for g in grids):
        raise LandscapeError("figure shared_plane: the shared slices have different grids; "
                             "probe the runs with the same --grid")
    common = sorted(set(found[SINGLE]) & set(found[LOOPED]))
    if not common:
        raise LandscapeError("figure shared_plane: Single- and Looped-Attn have no probed "
                             "checkpoint in common")
    if len(common) >= 4:  # leave out the initialisation, whose flat plateau sets the scale
        common = common[1:]
    picks = sorted({common[0], common[len(common) // 2], common[-1]})
    panels, shares = {}, {}
    for arch, steps in found.items():
        run = runs[arch][0]
        if all(s in steps for s in picks):  # SHIFT only where probed at the same steps
            titles = {f"epoch {series.epoch_of(run, s):g}": steps[s] for s in picks}
            panels[arch] = titles
            shares[arch] = {t: series.basin_share(g, BASIN_RISE) for t, g in titles.items()}
    ref = grids[0].plane.get("reference", "?")
    return {"shared_plane": plot.shared_slices(
        panels, shares=shares, rise=BASIN_RISE,
        title=f"one random plane for all runs, normalised against {ref}")}


def loops(groups: Grouped) -> dict[str, Figure]:
    """Ours: loss and lambda_max against the number of loops at the final weights."""
    runs = markov_runs(groups, (SINGLE, LOOPED), "loops")
    fig = plot.loop_curve({a: series.part(rs[0], "loops") for a, rs in runs.items()})
    return _sourced({"loop_curve": fig}, (rs[0] for rs in runs.values()))


def switch(groups: Grouped) -> dict[str, Figure]:
    """Ours: what happens at the SHIFT switch."""
    run = markov_runs(groups, (SHIFT,), "switch")[SHIFT][0]
    d = series.part(run, "switch")
    fig = plot.switch_diagnostics(d.before, d.after, d.overlap, run.shift_step)
    return _sourced({"switch": fig}, [run])


def sharpness(groups: Grouped) -> dict[str, Figure]:
    """Ours: lambda_max (and the Adam-preconditioned one) against the optimiser's edge."""
    runs = _curvature_runs(groups, (LOOPED,), "sharpness")
    arch = LOOPED if LOOPED in runs else next(iter(runs))
    s = series.sharpness_series(runs[arch][0])
    fig = plot.sharpness(s, model=arch, unit=series.time_unit(runs[arch][0]))
    return _sourced({"sharpness": fig}, [runs[arch][0]])


def blocks(groups: Grouped) -> dict[str, Figure]:
    """Ours: each block's top eigenvalue and trace over training, one figure per run.

    Every run probed with ``--blocks`` (the first run of each model, the one probed).
    """
    out = {}
    for task, by_model in groups.items():
        for model, rs in by_model.items():
            run = rs[0]
            if not _has_part(run, "blocks"):
                continue
            stem = f"blocks_{model}" if task == "custom" else f"blocks_{task}_{model}"
            out[stem] = plot.add_source(
                plot.block_spectra(series.block_series(run), title=who(run, model),
                                   unit=series.time_unit(run)), who(run, model))
    if not out:
        raise LandscapeError("figure blocks needs runs probed with per-block spectra "
                             "(landscape probe RUN.h5 --blocks)")
    return out


HTML_VIEWS: dict[str, Callable[[Grouped], dict[str, SliceView]]] = {"slices": slice_views}
"""The figures that have an interactive page (``--format html``)."""

FIGURES: dict[str, Callable[[Grouped], dict[str, Figure]]] = {
    "concept": concept, "sample_dynamics": sample_dynamics, "spectra": spectra,
    "shift": shift, "algorithmic": algorithmic, "valley": valley,
    "valley_sweep": valley_sweep, "slices": slices,
    "shared_plane": shared_plane, "loops": loops, "switch": switch, "sharpness": sharpness,
    "shift_ablation": shift_ablation, "length_tasks": length_tasks, "blocks": blocks,
}

DEFAULT = "supported"
"""The figure name that stands for :func:`supported` (``landscape plot``'s default)."""

PARTS_OF: dict[str, tuple[tuple[str, ...], ...]] = {
    "spectra": (("exact", "slq"),), "valley": (("valley",), ("widths",)),
    "slices": (("slice_random", "slice_river_valley"),), "sharpness": (("sharpness",),),
    "blocks": (("blocks",),), "loops": (("loops",),), "switch": (("switch",),),
    "shared_plane": (("slice_shared",),),
}  # fmt: skip
"""The stored parts a figure draws: every tuple needs one of its parts in some run."""

PAPER_FIGURES = tuple(n for n in FIGURES if n != "blocks")
"""The figures a reproduction draws (its probes compute no per-block spectra)."""

OWN_FIGURES = ("spectra", "valley", "slices", "sharpness", "blocks")
"""The figures a run of your own model can support (the others need the paper's runs)."""


def _has_part(run: Run, name: str) -> bool:
    """Whether ``run`` stores the part ``name`` at some checkpoint (or for the run)."""
    from landscape.runfile.schema import RUN, part_class

    if part_class(name).KIND == RUN:
        return run.part(name) is not None
    return any(run.part(name, step) is not None for step in run.probed_steps)


def supported(groups: Grouped) -> list[str]:
    """The figures the runs' stored parts support, in :data:`FIGURES`' order.

    A figure that draws stored probe parts (:data:`PARTS_OF`) is supported where some run
    has them; the paper's other figures wherever runs of ``landscape train`` are given
    (they say why where those runs are not the ones they need). Runs of your own models
    alone support only :data:`OWN_FIGURES`, and nothing synthetic.
    """
    runs = [r for by_model in groups.values() for rs in by_model.values() for r in rs]
    paper = bool(set(groups) - {"custom"})
    out = []
    for name in FIGURES:
        if not paper and name not in OWN_FIGURES:
            continue
        needs = PARTS_OF.get(name, ())
        if all(any(_has_part(r, p) for r in runs for p in one) for one in needs):
            out.append(name)
    return out


def run_files(folder: str | Path) -> list[Path]:
    """The run files of a reproduce folder (its ``runs/*.h5``) or of a folder of run files."""
    folder = Path(folder)
    return sorted((folder / "runs").glob("*.h5")) or sorted(folder.glob("*.h5"))


def _draw(name: str, groups: Grouped, out: Path, static: tuple[str, ...], html: bool,
          sources: list[str], dpi: int, width: str | float | None = None,
          inspect: Callable[[str, Figure], None] | None = None) -> list[Path]:
    """Write figure ``name`` in the ``static`` formats and, where it has one, its HTML page."""
    if not static and name not in HTML_VIEWS:
        raise LandscapeError(f"no HTML view of {name} (html: {', '.join(HTML_VIEWS)})")
    paths = []
    for stem, fig in (FIGURES[name](groups) if static else {}).items():
        fig = plot.resize(fig, width)
        if inspect is not None:
            inspect(stem, fig)
        paths += plot.save(fig, out / stem, static,
                           {"figure": name, "runs": sources}, dpi=dpi)
    if html and name in HTML_VIEWS:
        from landscape.draw.interactive import save_html

        paths += [save_html(v, out / stem) for stem, v in HTML_VIEWS[name](groups).items()]
    return paths


def render(runs: list[Run], names: Iterable[str], out: str | Path,
           formats: tuple[str, ...] = ("pdf", "png"), dpi: int = 200,
           report: Callable[[str], None] | None = None,
           width: str | float | None = None,
           inspect: Callable[[str, Figure], None] | None = None) -> dict[str, list[Path] | str]:
    """Draw the named figures into ``out``.

    ``names``: figures of :data:`FIGURES`, ``all`` for every one (each that cannot be
    drawn says why), or ``supported`` (:data:`DEFAULT`) for those the runs' stored parts
    support (:func:`supported`).

    ``formats``: those of :data:`landscape.draw.plot.FORMATS`, and ``html`` for an
    interactive page of each figure of :data:`HTML_VIEWS` (:mod:`landscape.draw.interactive`).
    ``width``: ``"column"``, ``"page"`` or inches for every figure (None: each figure's
    own); the saved files have that width. Each file carries its caption and the run
    files in its metadata (:func:`caption_of`). ``inspect(stem, figure)`` is called on
    every figure before it is saved (e.g. :func:`landscape.draw.checks.problems`).

    Returns:
        ``{figure name: written paths}``, or the reason a figure was skipped.
    """
    if width is not None:
        plot.figsize(width)  # a bad width fails before any work
    names = list(names)
    unknown = [n for n in names if n not in FIGURES and n not in ("all", DEFAULT)]
    if unknown:
        raise LandscapeError(f"unknown figure {unknown[0]!r} (figures: {DEFAULT}, all, "
                             f"{', '.join(FIGURES)})")
    groups = series.group_runs(runs)
    if "all" in names:
        names = list(FIGURES)
    elif DEFAULT in names:
        names = list(dict.fromkeys(supported(groups) + [n for n in names if n != DEFAULT]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(r.path) for r in runs)
    done: dict[str, list[Path] | str] = {}
    static = tuple(f for f in formats if f != "html")
    for name in names:
        try:
            paths = _draw(name, groups, out, static, "html" in formats, sources, dpi, width,
                          inspect)
        except LandscapeError as e:
            done[name] = f"skipped: {e}"
            if report:
                report(f"{name}: skipped ({e})")
            continue
        done[name] = paths
        if report:
            report(f"{name}: {', '.join(p.name for p in paths)}")
    return done
