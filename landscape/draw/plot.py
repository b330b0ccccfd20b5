"""Figure functions: arrays in, a matplotlib :class:`~matplotlib.figure.Figure` out.

No function here reads a file or computes a measurement: the caller (``landscape plot``,
``reproduce``, a notebook) loads the run files through :mod:`landscape.analysis.series`,
which also derives what is shown (binned spectra, entropy, basin shares), and passes its
typed results (frozen dataclasses validated where they were made, their shapes in their
docstrings), stored parts of :mod:`landscape.runfile.schema`, or plain arrays. Nothing
here checks them again: a wrong type is a programming error, not a user's. Saving is a
separate step, :func:`save`, which writes the settings into the files' metadata, never into
their names.

**One style.** :data:`STYLE` is a small dict of rcParams (Okabe-Ito colorblind-safe
palette; 8 pt text for a 3.25 in column, :func:`figsize` for sizes from a column or
page width), applied with :func:`matplotlib.rc_context` inside every figure function and
inside :func:`save`. Nothing is changed at import and ``matplotlib.rcParams`` is the same
after a call as before it. Every figure function also takes the keyword ``usetex``
(default False): LaTeX text, honoured only where a ``latex`` executable is on the PATH.

**Figures are not registered with pyplot** (they are built with ``Figure()``), so
nothing accumulates in a long loop and no GUI backend is touched; a notebook shows a
returned figure as a cell's value. Pass one to :func:`save` to write it.

**Colors are fixed per model** (:data:`MODEL_COLORS`): Single-Attn blue, Looped-Attn
vermillion, SHIFT bluish green, ceilings gray; in the concept figure River-U takes
Single-Attn's color and River-V Looped-Attn's (the paper's conjecture pairs them).

**Seeds.** Where a model maps to a list of results (one per seed), the line is the mean
over seeds and the band spans their minimum to maximum (runs on other x grids are
interpolated onto the first run's grid, within their own range).

**Missing pieces.** An optional input that is absent (None, or all NaN where the docstring
says so) leaves its panel saying "not computed". The only errors raised here are about
the caller's own choices: :func:`figsize`, :func:`save`'s formats, path and metadata, and
``log_levels`` on losses that are not positive.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib as mpl
import numpy as np
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from landscape import __version__
from landscape.errors import LandscapeError
from landscape.geometry.phases import PHASES, UNASSIGNED, Phases
from landscape.geometry.valley import EPS_REL, KAPPA_U, KAPPA_V, TAU_REL
from landscape.train.archs import LABELS, LOOPED, SHIFT, SINGLE

if TYPE_CHECKING:  # the types drawn; importing them would load the run reader
    from landscape.analysis.series import (
        AblationRow,
        BinnedSpectra,
        BlockSeries,
        Curve,
        EntropySeries,
        LengthSeries,
        SharpnessSeries,
        ShiftTimeline,
        UVSweep,
        ValleySeries,
        WallClock,
        WidthSeries,
    )
    from landscape.geometry.simulator import Simulation
    from landscape.runfile.schema import Grid, LoopCurve, SwitchSide

# ---------------------------------------------------------------------------------------
# style
# ---------------------------------------------------------------------------------------

COLUMN_WIDTH = 3.25  # inches, one column of a two-column paper
PAGE_WIDTH = 6.75  # inches, the full text width
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0

OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
}  # fmt: skip
MODEL_COLORS = {
    SINGLE: OKABE_ITO["blue"], LOOPED: OKABE_ITO["vermillion"],
    SHIFT: OKABE_ITO["green"], "ceiling": "#7F7F7F",
}  # fmt: skip
MODEL_LABELS = LABELS
PHASE_COLORS = {
    "collapse": OKABE_ITO["sky"], "diversification": OKABE_ITO["orange"],
    "stabilization": OKABE_ITO["purple"], UNASSIGNED: "#DDDDDD",
}  # fmt: skip
_EXTRA_COLORS = [OKABE_ITO[k] for k in ("orange", "sky", "purple", "black", "yellow")]

STYLE: dict = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "figure.titlesize": 9,
    "axes.prop_cycle": cycler(color=[MODEL_COLORS[SINGLE], MODEL_COLORS[LOOPED],
                                     MODEL_COLORS[SHIFT], *_EXTRA_COLORS]),
    "axes.spines.top": False, "axes.spines.right": False, "axes.titlepad": 3.0,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5,
    "lines.linewidth": 1.2, "lines.markersize": 3.0, "legend.frameon": False,
    "figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": None,  # the size the caller chose
    "pdf.fonttype": 42, "ps.fonttype": 42, "image.cmap": "viridis", "text.usetex": False,
}  # fmt: skip
"""rcParams of every figure (8 pt text for a 3.25 in column; Okabe-Ito colors).

The saved file has the figure's own size (no ``bbox_inches="tight"``: constrained layout
keeps every label inside), and PDFs embed their fonts as TrueType (``pdf.fonttype`` 42).
"""

MIN_FONT_PT = 7.0  # the smallest text on any figure, at the size it is saved at
MODEL_LINESTYLES = {SINGLE: "-", LOOPED: (0, (5, 1.5)), SHIFT: (0, (1.5, 1)), "ceiling": "--"}
MODEL_MARKERS = {SINGLE: "o", LOOPED: "s", SHIFT: "^"}
"""Per model, a line style and a marker beside its colour, so lines survive grayscale."""


def rc_params(usetex: bool = False) -> dict:
    """The style as an rcParams dict, with LaTeX text only if asked and installed.

    Args:
        usetex: render text with LaTeX; ignored where ``latex`` is not on the PATH.

    Returns:
        A new dict to pass to :func:`matplotlib.rc_context`.
    """
    rc = dict(STYLE)
    if usetex and shutil.which("latex"):
        rc.update({"text.usetex": True, "font.family": "serif"})
    return rc


def figsize(width: str | float = "column", aspect: float = GOLDEN) -> tuple[float, float]:
    """Figure size in inches from a column width.

    Args:
        width: ``"column"`` (3.25 in), ``"page"`` (6.75 in) or a width in inches.
        aspect: height over width.

    Returns:
        ``(width, height)`` in inches.
    """
    widths = {"column": COLUMN_WIDTH, "page": PAGE_WIDTH}
    w = widths.get(width, width) if isinstance(width, str) else float(width)
    if isinstance(w, str) or not w > 0 or not aspect > 0:
        raise LandscapeError(f"figsize: width must be 'column', 'page' or inches > 0 and "
                             f"aspect > 0, got {width!r}, {aspect!r}")
    return (w, w * aspect)


def _styled(fn: Callable[..., Figure]) -> Callable[..., Figure]:
    """Run a figure function inside the style, with ticks created inside it too.

    The wrapped function also takes ``width`` (``"column"``, ``"page"`` or inches; None:
    the function's own choice): the figure is scaled to that width at its own aspect,
    text keeping its size in points.
    """

    @functools.wraps(fn)
    def wrapper(*args, usetex: bool = False, width: str | float | None = None,
                **kwargs) -> Figure:
        with mpl.rc_context(rc_params(usetex)):
            fig = resize(fn(*args, **kwargs), width)
            _make_ticks(fig)
        return fig

    return wrapper


def resize(fig: Figure, width: str | float | None) -> Figure:
    """Scale a figure to ``width`` (``"column"``, ``"page"``, inches) at its own aspect.

    Text keeps its size in points and constrained layout places the panels again at the
    next draw; None leaves the figure as it is.
    """
    if width is not None:
        w, h = fig.get_size_inches()
        fig.set_size_inches(*figsize(width, h / w))
    return fig


CAPTION_KEY = "caption"
"""The metadata key under which :func:`save` writes a figure's caption."""


def set_caption(fig: Figure, text: str) -> Figure:
    """Store a one-sentence caption on the figure (read back with :func:`caption`)."""
    fig.landscape_caption = " ".join(text.split())
    return fig


def caption(fig: Figure) -> str:
    """The figure's one-sentence caption: what is plotted and from which data ("" if none)."""
    return getattr(fig, "landscape_caption", "")


def add_source(fig: Figure, source: str) -> Figure:
    """Append where the data came from (``"Looped-Attn, seed 0"``) to the caption."""
    text = caption(fig).rstrip(".")
    return set_caption(fig, f"{text}; data: {source}." if text else f"Data: {source}.")


def _make_ticks(fig: Figure) -> None:
    """Create every axis' ticks now, inside the style.

    Matplotlib makes ticks lazily, at the first draw, reading their label size and grid
    style from the rcParams of that moment, which would be outside the style. Ticks
    made later copy the first one's properties, so making them here is enough.
    """
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            axis.get_major_ticks()
            axis.get_minor_ticks()


def _new_figure(width: str | float, aspect: float) -> Figure:
    """A constrained-layout figure not registered with pyplot."""
    return Figure(figsize=figsize(width, aspect), layout="constrained")


# ---------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------

FORMATS = ("pdf", "png", "svg")


def _json_default(x: object) -> object:
    """JSON for numpy scalars and arrays; ``str`` for anything else."""
    return x.tolist() if hasattr(x, "tolist") else str(x)


def _metadata_strings(metadata: Mapping | None) -> dict[str, str]:
    """Metadata as ``{key: str}``, values JSON-encoded unless already strings."""
    out = {}
    for key, value in (metadata or {}).items():
        ok = isinstance(key, str) and 0 < len(key) < 80 and key.isascii() and key.isprintable()
        if not ok or key != key.strip():
            raise LandscapeError(f"save: metadata key {key!r} must be 1-79 printable ASCII "
                                 "characters without leading or trailing spaces")
        out[key] = value if isinstance(value, str) else json.dumps(value, default=_json_default)
    return out


def _format_metadata(fmt: str, name: str, meta: dict[str, str]) -> dict:
    """The ``metadata`` argument of ``savefig`` for one format."""
    blob = json.dumps(meta, sort_keys=True)
    software = f"landscape {__version__}"
    if fmt == "pdf":
        keywords = "; ".join(f"{k}={v}" for k, v in sorted(meta.items()))
        return {"Title": name, "Subject": blob, "Keywords": keywords, "Creator": software}
    if fmt == "png":
        return {"Title": name, "Software": software, "landscape": blob, **meta}
    return {"Title": name, "Description": blob, "Creator": software}


def save(
    fig: Figure,
    path: str | Path,
    formats: Sequence[str] = ("pdf", "png"),
    metadata: Mapping | None = None,
    dpi: float = 200,
) -> list[Path]:
    """Write a figure in each format, settings in the files' metadata; close it.

    Where the settings go: PDF ``Subject`` (all settings as one JSON object) and
    ``Keywords`` (``key=value; ...``); PNG text chunks (one per setting, plus
    ``landscape`` with the JSON object, read back with ``PIL.Image.open(p).text``); SVG
    ``Description`` (the JSON object). Non-string values are JSON-encoded. The figure's
    :func:`caption`, where it has one, goes in as ``caption``. The file has the figure's
    size: ``width`` inches by ``dpi`` pixels per inch for a PNG.

    Args:
        fig: the figure.
        path: the output path without a suffix (``out/fig2``); folders are created.
        formats: any of ``"pdf"``, ``"png"``, ``"svg"``.
        metadata: settings to record (keys: 1-79 printable ASCII characters).
        dpi: resolution of raster formats (PNG); lower it for small gallery images.

    Returns:
        The paths written, one per format, in order.
    """
    base = Path(path)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise LandscapeError(f"save: formats must be among {FORMATS}, got {list(formats)}")
    if base.suffix.lower().lstrip(".") in FORMATS:
        raise LandscapeError(f"save: give the path without a suffix, got {str(base)!r}")
    if not dpi > 0:
        raise LandscapeError(f"save: dpi must be > 0, got {dpi}")
    meta = _metadata_strings({CAPTION_KEY: caption(fig)} if caption(fig) else {})
    meta.update(_metadata_strings(metadata))
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with mpl.rc_context(rc_params()):
        for fmt in formats:
            out = base.parent / f"{base.name}.{fmt}"
            fig.savefig(out, format=fmt, dpi=dpi, metadata=_format_metadata(fmt, base.name, meta))
            written.append(out)
    if fig.canvas.manager is not None:  # a pyplot figure: release it from pyplot too
        import matplotlib.pyplot as plt

        plt.close(fig)
    return written


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def _models(d: Mapping) -> list[str]:
    """The keys of a per-model dict, the known models first."""
    known = [m for m in MODEL_LABELS if m in d]
    return known + [m for m in d if m not in known]


def _seeds(value: object) -> list:
    """One result or several (a list, one per seed) as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _colors(keys: Sequence[str]) -> dict[str, str]:
    """A fixed color per model; other keys take the remaining palette in order."""
    extra = iter(_EXTRA_COLORS * (1 + len(keys) // len(_EXTRA_COLORS)))
    return {k: MODEL_COLORS.get(k) or next(extra) for k in keys}


def _label(key: str) -> str:
    return MODEL_LABELS.get(key, key)


def _seed_stats(xys: Sequence[tuple[np.ndarray, np.ndarray]]):
    """``x, mean, lo, hi`` over seeds (``(x, y)`` each) on the first seed's x grid."""
    x0 = np.asarray(xys[0][0], dtype=np.float64).reshape(-1)
    ys = []
    for x, y in xys:
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        order = np.argsort(x)
        ys.append(np.interp(x0, x[order], y[order], left=np.nan, right=np.nan))
    stack = np.vstack(ys)
    with np.errstate(invalid="ignore"):
        valid = np.any(np.isfinite(stack), axis=0)
        mean = np.full(x0.size, np.nan)
        lo, hi = mean.copy(), mean.copy()
        mean[valid] = np.nanmean(stack[:, valid], axis=0)
        lo[valid], hi[valid] = np.nanmin(stack[:, valid], 0), np.nanmax(stack[:, valid], 0)
    return x0, mean, lo, hi


def _seed_label(label: str, n: int) -> str:
    return f"{label} ({n} seeds)" if n > 1 else label


def _ylabel(metric: str) -> str:
    """A readable axis label for a metric key."""
    names = {"acc": "accuracy", "loss": "loss (nats / token)", "seq_acc": "sequence accuracy"}
    split, _, name = metric.rpartition(".")
    return f"{split} {names.get(name, name)}".strip()


def _line_band(ax, xys, color, label, model: str | None = None, **kw) -> None:
    """Mean line over seeds (``(x, y)`` each) with a min-max band (none for one seed).

    ``model``: its line style (:data:`MODEL_LINESTYLES`) unless ``kw`` sets one, and its
    marker (:data:`MODEL_MARKERS`) where ``kw`` asks for one (``marker="o"``).
    """
    x, mean, lo, hi = _seed_stats(xys)
    n = len(xys)
    if model is not None:
        kw.setdefault("linestyle", MODEL_LINESTYLES.get(model, "-"))
        if "marker" in kw:
            kw["marker"] = MODEL_MARKERS.get(model, kw["marker"])
    ax.plot(x, mean, color=color, label=_seed_label(label, n), **kw)
    if n > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)


def _not_computed(ax, what: str) -> None:
    """Leave a panel empty with a note saying what was not computed."""
    ax.text(0.5, 0.5, f"not computed:\n{what}", ha="center", va="center",
            transform=ax.transAxes, color="#555555", wrap=True)  # fmt: skip
    ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)  # not ticks:
    ax.grid(False)  # the x axis may be shared with a panel that has data
    for spine in ax.spines.values():
        spine.set_visible(False)


def _legend_below(fig: Figure, axes, ncol: int | None = None) -> None:
    """One legend for the figure, outside the panels, from the unique labels.

    At most 4 columns on a page-wide figure and 2 on a column-wide one (default).
    """
    seen: dict[str, object] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if not lab.startswith("_"):
                seen.setdefault(lab, h)
    if seen:
        most = 2 if fig.get_size_inches()[0] < 0.75 * PAGE_WIDTH else 4
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center",
                   ncol=ncol or min(len(seen), most))  # fmt: skip


def _log_if_wide(ax, values: np.ndarray, axis: str = "y", decades: float = 1.5) -> None:
    """Log scale if the positive finite values span more than ``decades`` decades."""
    v = values[np.isfinite(values)]
    if v.size and np.all(v > 0) and np.log10(v.max() / v.min()) > decades:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _mark_switch(ax, x: float | None, color: str = MODEL_COLORS[SHIFT]) -> None:
    """A dotted vertical line at the SHIFT switch, labelled."""
    if x is None or not np.isfinite(x):
        return
    ax.axvline(x, color=color, linestyle=":", linewidth=1.0, label="switch")


# ---------------------------------------------------------------------------------------
# Fig. 1: concept
# ---------------------------------------------------------------------------------------


def _surface(ax, sim, levels, color: str):
    """The loss on the simulation's plane with its projected GD path."""
    cs = ax.contourf(sim.plane_r, sim.plane_b, sim.plane_loss.T, levels=levels)
    ax.contour(sim.plane_r, sim.plane_b, sim.plane_loss.T, levels=levels[::2], colors="white",
               linewidths=0.3, alpha=0.5)  # fmt: skip
    path = np.asarray(sim.path)
    ax.plot(path[:, 0], path[:, 1], color="white", linewidth=1.8)
    ax.plot(path[:, 0], path[:, 1], color=color, linewidth=0.9)
    ax.plot(*path[0], marker="o", color="white", markeredgecolor="black", markersize=4)
    ax.plot(*path[-1], marker="*", color="white", markeredgecolor="black", markersize=7)
    lam = np.asarray(sim.valley_eigvals)
    ax.set_title(f"River-{sim.kind}, " + r"$\kappa$" + f" = {lam.max() / lam.min():.3g}")
    ax.set_xlabel("river coordinate $r$")
    ax.grid(False)
    return cs


def _cross_sections(ax, sims) -> None:
    """``0.5 lam_i x^2`` along each valley eigenvector: even (U) or uneven (V) cliffs."""
    x = np.linspace(-1.0, 1.0, 101)
    for sim, model in sims[::-1]:  # U last, on top: its parabolas coincide
        for i, lam in enumerate(np.asarray(sim.valley_eigvals)):
            ax.plot(x, 0.5 * lam * x**2, color=MODEL_COLORS[model], linewidth=0.7,
                    label=f"River-{sim.kind}" if i == 0 else None)  # fmt: skip
    ax.set(xlabel="along a valley eigenvector", ylabel="loss rise",
           title="valley cross-sections")  # fmt: skip
    ax.legend(loc="upper center")


def _progress(ax, sims) -> None:
    """River coordinate against gradient-descent step, labelled at the end with its progress."""
    for sim, model in sims:
        r = np.asarray(sim.descent.r)[:, 0]
        ax.plot(np.arange(r.size), r, color=MODEL_COLORS[model], label=f"River-{sim.kind}")
        ax.annotate(f"{sim.kind}: {r[-1] - r[0]:.3g}", (r.size - 1, r[-1]), xytext=(2, 0),
                    textcoords="offset points", va="center", fontsize=MIN_FONT_PT)  # fmt: skip
    ax.set(xlabel="gradient-descent step", ylabel="river progress $r$", title="river progress")
    ax.set_xlim(0, 1.35 * (r.size - 1))


def _timeline(ax, tl: ShiftTimeline) -> None:
    """SHIFT timeline: the Single phase, the switch, the Looped phase."""
    start, switch, end = tl.start, tl.switch, tl.end
    ax.axvspan(start, switch, color=MODEL_COLORS[SINGLE], alpha=0.18, linewidth=0)
    ax.axvspan(switch, end, color=MODEL_COLORS[LOOPED], alpha=0.18, linewidth=0)
    ax.axvline(switch, color="black", linewidth=1.0)
    ax.text((start + switch) / 2, 0.97, "Single-Attn phase (1 loop)", ha="center", va="top",
            transform=ax.get_xaxis_transform())  # fmt: skip
    ax.text((switch + end) / 2, 0.97, f"Looped-Attn phase ({tl.loops} loops, same weights)",
            ha="center", va="top", transform=ax.get_xaxis_transform())  # fmt: skip
    ax.text(switch, 0.03, " switch", ha="left", va="bottom", transform=ax.get_xaxis_transform())
    if tl.x is not None:
        y = np.asarray(tl.y, dtype=np.float64)
        ax.plot(tl.x, y, color="black", linewidth=1.0)
        ax.set_ylabel(tl.label)
        ax.set_ylim(top=np.nanmax(y) + 0.35 * (np.nanmax(y) - np.nanmin(y) + 1e-12))
    else:
        ax.set_yticks([])
    ax.set_xlim(start, end)
    ax.set_xlabel(tl.unit)
    ax.set_title("SHIFT: train Single-Attn until it plateaus, then loop the same block")


@_styled
def concept(u_sim: Simulation, v_sim: Simulation,
            shift_timeline: ShiftTimeline | None = None) -> Figure:
    """Paper Fig. 1: River-U and River-V valleys with gradient descent, and SHIFT's timeline.

    How to read it. First two panels: the loss on the plane spanned by the river axis
    (horizontal) and the simulation's plane direction in the valley (vertical; see
    ``plane_mode`` of :func:`landscape.geometry.simulator.simulate`), with the GD path projected
    on it (circle: start, star: end); both share the color levels. Third: the valley's
    cross-section along each of its eigenvectors, ``0.5 lambda_i x^2``: a bundle of
    equal parabolas for U (even cliffs), a fan from narrow to wide for V. Fourth: the
    river coordinate against GD step (each line labelled U or V with its final progress):
    the paper's claim is that V goes further. Bottom (when given): SHIFT's schedule,
    Single-Attn until the switch and the same block looped after it.

    Args:
        u_sim: ``landscape.geometry.simulator.simulate("U", ...)`` result (``compare(...).u``).
        v_sim: the matching River-V result.
        shift_timeline: optional SHIFT schedule
            (:func:`landscape.analysis.series.shift_timeline`), with the curve beneath it
            (e.g. accuracy of a SHIFT run) where given.

    Returns:
        The figure (page width).
    """
    timeline = shift_timeline is not None
    fig = _new_figure("page", 0.5 if timeline else 0.3)
    grid = fig.add_gridspec(2 if timeline else 1, 4, height_ratios=[2.2, 1] if timeline else None)
    axes = [fig.add_subplot(grid[0, i]) for i in range(4)]
    lo = min(np.nanmin(s.plane_loss) for s in (u_sim, v_sim))
    hi = max(np.nanmax(s.plane_loss) for s in (u_sim, v_sim))
    levels = mpl.ticker.MaxNLocator(12).tick_values(lo, hi)
    sims = ((u_sim, SINGLE), (v_sim, LOOPED))
    for ax, (sim, model) in zip(axes, sims):
        cs = _surface(ax, sim, levels, MODEL_COLORS[model])
    for ax in axes[:2]:
        ax.set_ylabel("valley coordinate")
    _colorbar(fig, cs, axes[1], label="loss (simulated)")
    _cross_sections(axes[2], sims)
    _progress(axes[3], sims)
    if timeline:
        _timeline(fig.add_subplot(grid[1, :]), shift_timeline)
    return set_caption(fig, "Simulated River-U and River-V valleys with the gradient-descent "
                            "path, their cross-sections and river progress"
                       + (", and SHIFT's schedule" if timeline else "") + ".")


# ---------------------------------------------------------------------------------------
# Fig. 2: sample-level dynamics
# ---------------------------------------------------------------------------------------


def _has(curves: Mapping[str, list[Curve]], key: str) -> bool:
    return any(key in c for runs in curves.values() for c in runs)


def _ceiling(ax, ceilings: Mapping | None, split: str, metric: str) -> None:
    value = ((ceilings or {}).get(split) or {}).get(metric)
    if value is not None and np.isfinite(value):
        ax.axhline(value, color=MODEL_COLORS["ceiling"], linestyle="--", linewidth=1.0,
                   label=f"Bayes ceiling, {split} {metric} {value:.3g}")  # fmt: skip


@_styled
def sample_dynamics(
    curves: Mapping[str, Curve | Sequence[Curve]],
    ceilings: Mapping | None = None,
    splits: Sequence[str] = ("simple", "complex"),
    xkey: str = "epoch",
) -> Figure:
    """Paper Fig. 2: accuracy (and loss) against epoch on simple and complex samples.

    How to read it. One column per split, accuracy on top and loss below (the loss row
    appears when any run has ``"<split>.loss"``). Each model is a line (mean over seeds)
    with a band (min to max over seeds); the dashed gray line is the Bayes-optimal
    ceiling of the split, what any predictor can reach. Claim 1 reads: both models
    master "simple"; only Looped-Attn keeps rising on "complex" after the plateau.

    Args:
        curves: ``{"single": [Curve, ...], "looped": [...], ...}``
            (:func:`landscape.analysis.series.curve`; one or a list, one per seed), each
            with ``xkey`` and ``"<split>.acc"`` (``"<split>.loss"`` where measured).
        ceilings: optional ``{"simple": {"acc": float, "loss": float}, "complex": {...}}``.
        splits: the splits to show, one column each.
        xkey: the x key in each run.

    Returns:
        The figure (page width).
    """
    models = _models(curves)
    curves = {m: _seeds(curves[m]) for m in models}
    metrics = ["acc"] + (["loss"] if any(_has(curves, f"{s}.loss") for s in splits) else [])
    fig = _new_figure("page", 0.3 * len(metrics) + 0.08)
    axes = fig.subplots(len(metrics), len(splits), sharex=True, squeeze=False)
    colors = _colors(models)
    for (i, metric), (j, split) in ((a, b) for a in enumerate(metrics) for b in enumerate(splits)):
        ax, key = axes[i, j], f"{split}.{metric}"
        for m in models:
            runs = [(c[xkey], c[key]) for c in curves[m] if key in c]
            if runs:
                _line_band(ax, runs, colors[m], _label(m), m)
        _ceiling(ax, ceilings, split, metric)
        ax.set_ylabel(_ylabel(metric))
        if i == 0:
            ax.set_title(f"{split} samples")
        if i == len(metrics) - 1:
            ax.set_xlabel(xkey)
    _legend_below(fig, axes, ncol=3)
    return set_caption(fig, f"{' and '.join(_ylabel(m) for m in metrics).capitalize()} on "
                            f"{' and '.join(splits)} samples against {xkey} for "
                            f"{', '.join(_label(m) for m in models)} (mean and range over "
                            "seeds), with the Bayes ceilings dashed.")


# ---------------------------------------------------------------------------------------
# Figs. 3, 7-8: spectra and phases
# ---------------------------------------------------------------------------------------


def _pick(n: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``range(n)``, first and last included."""
    return list(range(n)) if n <= k else sorted(set(np.linspace(0, n - 1, k).round().astype(int)))


def _phase_spans(ax, ph: Phases) -> None:
    """Shade each checkpoint's phase (between midpoints) and mark the boundaries."""
    e = ph.epochs
    mids = np.concatenate([[e[0]], (e[1:] + e[:-1]) / 2, [e[-1]]])
    for i, lab in enumerate(ph.labels):
        ax.axvspan(mids[i], mids[i + 1], color=PHASE_COLORS[lab], alpha=0.25, linewidth=0)
    for name, start in ph.boundaries().items():
        if np.isfinite(start) and start > e[0]:
            ax.axvline(start, color=PHASE_COLORS[name], linestyle="--", linewidth=0.9)


def _found(ph: Phases | None) -> Phases | None:
    """The phases where the rule found the paper's three, else None (nothing to shade)."""
    return ph if ph is not None and ph.three_phases else None


def _fit_label(ph: Phases) -> str:
    pieces = ph.params.get("chosen_segments")
    return f"{pieces}-piece linear fit" if pieces else "piecewise-linear fit"


def _entropy_panel(ax, entropy: EntropySeries, ph, color, unit) -> None:
    """Matrix entropy against time (``unit``: epoch or step), phases shaded where found."""
    e, h = entropy.epoch, entropy.entropy
    if ph is not None:
        if ph.three_phases:
            _phase_spans(ax, ph)
        ax.plot(ph.epochs, ph.smoothed, color="black", linewidth=0.7, linestyle="--",
                label=_fit_label(ph))  # fmt: skip
        ax.set_title("matrix entropy:\n" + ("three phases" if ph.three_phases
                                             else "no three phases"))
    else:
        ax.set_title("matrix entropy\n ")
    ax.plot(e, h, color=color, marker="o", label="matrix entropy")
    ax.set_xlabel(unit)
    ax.set_ylabel("entropy (nats)")


def _symlog_ticks(ax, lo: float, hi: float, lt: float) -> None:
    """Decade ticks on a signed-log axis: a tick at every decade beyond ``linthresh``.

    Labelled: 0, the extreme decades and one between where they are 4+ decades apart (a
    narrow panel has room for no more); the other decades are unlabelled minor ticks, so
    magnitudes can be read by counting.
    """
    labelled, decades = [0.0], []
    first = math.ceil(math.log10(lt))
    if hi > 10 * lt:
        top = math.floor(math.log10(hi))
        decades += [10.0**k for k in range(first, top + 1)]
        labelled += [10.0 ** ((top + first + 1) // 2)] if top - first >= 5 else []
        labelled.append(10.0**top)
    if lo < -10 * lt:
        bottom = math.floor(math.log10(-lo))
        decades += [-(10.0**k) for k in range(first, bottom + 1)]
        labelled.insert(0, -(10.0**bottom))
    ax.set_xticks(labelled, [_power_label(t) for t in labelled])
    ax.xaxis.set_minor_locator(mpl.ticker.FixedLocator(sorted(set(decades) - set(labelled))))


def _power_label(t: float) -> str:
    if t == 0:
        return "0"
    return ("$-" if t < 0 else "$") + f"10^{{{round(math.log10(abs(t)))}}}$"


def _spectrum_panel(ax, ck, mass, edges, xscale, lt, color, ph, unit) -> None:
    ax.stairs(mass, edges, fill=True, color=color, alpha=0.8)
    if xscale == "symlog":
        ax.set_xscale("symlog", linthresh=lt, linscale=0.5)
        _symlog_ticks(ax, edges[0], edges[-1], lt)
    else:
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(3))
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(mpl.ticker.LogLocator(numticks=4))
    ax.yaxis.set_minor_locator(mpl.ticker.NullLocator())  # dozens of log minor ticks: slow
    lab = ph.label_at(ck.epoch) if _found(ph) is not None else None
    if lab is not None:
        ax.set_facecolor(mpl.colors.to_rgba(PHASE_COLORS[lab], 0.18))
    shown = f"\n{lab}" if lab and lab != UNASSIGNED else ("\n " if lab else "")
    ax.set_title(f"{unit} {ck.epoch:g}" + shown)
    ax.grid(False)


@_styled
def spectra(
    binned: BinnedSpectra,
    entropy: Mapping[str, EntropySeries],
    phases: Mapping[str, Phases] | None = None,
    *,
    max_checkpoints: int = 5,
    unit: str = "epoch",
) -> Figure:
    """Paper Fig. 3 (and the per-model grids of Figs. 7-8): Hessian spectra and phases.

    How to read it. One row per model. Each small panel is the Hessian spectrum at one
    checkpoint: eigenvalues per bin (log count) against the eigenvalue on a signed-log
    axis (linear within ``+-linthresh``, logarithmic beyond, so negative outliers, the
    bulk at 0 and the top eigenvalues all show); all panels share the bins. A panel's
    tint is its detected phase. The last panel is the matrix entropy over all
    checkpoints, with the phases (:class:`landscape.geometry.phases.Phases`, e.g.
    ``phase_rule(...).as_phases``) shaded and its verdict in the title.

    Nothing is computed here: the bins come from :func:`landscape.analysis.series.binned_spectra`
    (histograms of exact spectra, smoothed SLQ measures), the entropy from
    :func:`landscape.analysis.series.entropy_series`.

    Args:
        binned: the spectra on shared bins (one row per model).
        entropy: ``{model: EntropySeries}``, every model of ``binned``.
        phases: optional ``{model: Phases}`` (``PhaseFit.as_phases``).
        max_checkpoints: most spectra per row; more are thinned evenly (first and last
            kept); the entropy panel always shows every checkpoint.
        unit: what the ``epoch`` values count, for the time axis and the panel titles:
            ``"epoch"``, or ``"step"`` for runs of your own loop
            (:func:`landscape.analysis.series.time_unit`).

    Returns:
        The figure (page width).
    """
    edges, cks = binned.edges, binned.spectra
    models = _models(cks)
    xscale, lt, counts = binned.xscale, binned.linthresh, binned.counts
    ncol = max(len(_pick(len(c), max_checkpoints)) for c in cks.values())
    fig = _new_figure("page", 0.28 * len(models) + 0.06)
    grid = fig.add_gridspec(len(models), ncol + 1, width_ratios=[1] * ncol + [1.8])
    colors = _colors(models)
    shown = {m: [cks[m][i] for i in _pick(len(cks[m]), max_checkpoints)] for m in models}
    top = max(float(ck.mass.max()) for m in models for ck in shown[m]) or 1.0
    ylim = (0.5 if counts else 1e-5 * top, 2.0 * top)
    for row, m in enumerate(models):
        ph = (phases or {}).get(m)
        for col, ck in enumerate(shown[m]):
            ax = fig.add_subplot(grid[row, col])
            _spectrum_panel(ax, ck, ck.mass, edges, xscale, lt, colors[m], ph, unit)
            ax.set_ylim(ylim)
            per_bin = "Hessian eigenvalues / bin" if counts else "share of spectrum / bin"
            ax.set_ylabel(f"{_label(m)}\n{per_bin}" if col == 0 else "")
            ax.tick_params(labelleft=col == 0, labelbottom=row == len(models) - 1)
            ax.set_xlabel("eigenvalue" if row == len(models) - 1 else "")
        _entropy_panel(fig.add_subplot(grid[row, ncol]), entropy[m], ph, colors[m], unit)
    _spectra_legend(fig, phases)
    n = max(len(c) for c in cks.values())
    kind = "histograms of exact Hessian spectra" if counts else "smoothed SLQ spectral densities"
    return set_caption(fig, f"Hessian eigenvalues ({kind}, signed-log axis) at up to "
                            f"{max_checkpoints} of {n} checkpoints per model, and the matrix "
                            f"entropy of every checkpoint against {unit}"
                       + (", phases shaded where the rule found three" if phases else "") + ".")


def _spectra_legend(fig: Figure, phases: Mapping[str, Phases] | None) -> None:
    """The fit's line, and the phase names only where some model has the three phases."""
    handles = []
    fits = [p for p in (phases or {}).values()]
    if fits:
        handles.append(mpl.lines.Line2D([], [], color="black", linewidth=0.7, linestyle="--",
                                        label=_fit_label(fits[0])))
    if any(p.three_phases for p in fits):
        handles += [Patch(color=PHASE_COLORS[p], alpha=0.5, label=p) for p in PHASES]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))


# ---------------------------------------------------------------------------------------
# Fig. 4: SHIFT vs Single vs Looped
# ---------------------------------------------------------------------------------------


def _switch_of(curves: Mapping[str, list[Curve]], switch_epoch: float | None) -> float | None:
    """The switch epoch: given, or the first SHIFT curve's."""
    if switch_epoch is not None:
        return float(switch_epoch)
    if SHIFT in curves:
        return curves[SHIFT][0].switch_epoch
    return None


@_styled
def shift_comparison(
    curves: Mapping[str, Curve | Sequence[Curve]],
    switch_epoch: float | None = None,
    *,
    metric: str = "complex.acc",
    xkey: str = "epoch",
    wall_key: str = "wall",
) -> Figure:
    """Paper Fig. 4: SHIFT against Single- and Looped-Attn, per epoch and per second.

    How to read it. Left: the metric against epoch; right: against wall-clock seconds
    (mean over seeds of both; band: min-max of the metric). The dotted line is SHIFT's
    switch. Claim 5 reads: SHIFT ends near Looped-Attn's accuracy (left) and gets there
    sooner (right). The wall-clock panel says "not computed" if a run lacks ``wall``.

    Args:
        curves: ``{"single": Curve(s), "looped": ..., "shift": ...}`` (one or a list, one
            per seed), each with ``xkey``, ``metric`` and (for the right panel) ``wall_key``.
        switch_epoch: SHIFT's switch epoch; default the first SHIFT curve's
            ``switch_epoch`` (no line if neither is given).
        metric: the y key, e.g. ``"complex.acc"`` or ``"all.acc"``.
        xkey: the epoch key.
        wall_key: the wall-clock key.

    Returns:
        The figure (page width).
    """
    models = _models(curves)
    runs = {m: _seeds(curves[m]) for m in models}
    fig = _new_figure("page", 0.36)
    ax_e, ax_w = fig.subplots(1, 2, sharey=True)
    colors = _colors(models)
    for m in models:
        _line_band(ax_e, [(c[xkey], c[metric]) for c in runs[m]], colors[m], _label(m), m)
    switch = _switch_of(runs, switch_epoch)
    _mark_switch(ax_e, switch)
    ax_e.set(xlabel=xkey, ylabel=_ylabel(metric), title=f"per {xkey}")
    if all(r.get(wall_key) is not None for m in models for r in runs[m]):
        _wall_panel(ax_w, runs, models, colors, metric, xkey, wall_key, switch)
    else:
        _not_computed(ax_w, f"'{wall_key}' (wall-clock seconds) for every run")
    _legend_below(fig, [ax_e, ax_w])
    return set_caption(fig, f"{_ylabel(metric).capitalize()} of "
                            f"{', '.join(_label(m) for m in models)} against {xkey} and "
                            "wall-clock seconds; dotted: SHIFT's switch.")


def _wall_panel(ax, runs, models, colors, metric, xkey, wall_key, switch) -> None:
    for m in models:
        x, wall, _, _ = _seed_stats([(c[xkey], c[wall_key]) for c in runs[m]])
        _, mean, lo, hi = _seed_stats([(c[xkey], c[metric]) for c in runs[m]])
        ax.plot(wall, mean, color=colors[m], label=_seed_label(_label(m), len(runs[m])))
        if len(runs[m]) > 1:
            ax.fill_between(wall, lo, hi, color=colors[m], alpha=0.2, linewidth=0)
        if m == SHIFT and switch is not None:
            _mark_switch(ax, float(np.interp(switch, x, wall)))
    ax.set(xlabel="wall-clock (s)", title="per second of training")


@_styled
def shift_ablation(rows: Sequence[AblationRow]) -> Figure:
    """Claim 5's ablation: SHIFT's cost to Looped-Attn's target over its switch settings.

    How to read it. Left: one cell per (delta_1, W) at the most common delta_2; its colour
    and first number are SHIFT's training FLOPs to the target over Looped-Attn's (below 1:
    SHIFT is cheaper; "miss": never reached), the second number the switch epoch. Right:
    the same ratio against delta_2 at the most common (delta_1, W), drawn only where
    delta_2 was varied. One seed.

    Args:
        rows: one per setting (:func:`landscape.analysis.series.shift_ablation`), at
            least two of criterion ``training``.

    Returns:
        The figure (page width).
    """
    rows = [r for r in rows if r.criterion == "training"]
    d2 = collections.Counter(r.delta_2 for r in rows).most_common(1)[0][0]
    grid = [r for r in rows if r.delta_2 == d2]
    d1s = sorted({r.delta_1 for r in grid})
    ws = sorted({r.window for r in grid})
    ratio = np.full((len(ws), len(d1s)), np.nan)
    pair = collections.Counter((r.delta_1, r.window) for r in rows).most_common(1)[0][0]
    line = sorted((r for r in rows if (r.delta_1, r.window) == pair), key=lambda r: r.delta_2)
    if len(line) < 2:  # no delta_2 was varied: the grid alone, a column wide
        fig = _new_figure("column", 0.8)
        ax_g, ax_d = fig.subplots(), None
    else:
        fig = _new_figure("page", 0.36)
        ax_g, ax_d = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
    for r in grid:
        i, j = ws.index(r.window), d1s.index(r.delta_1)
        value = r.flops_ratio
        ratio[i, j] = value if np.isfinite(value) else np.nan
        text = f"{value:.2f}" if np.isfinite(value) else "miss"
        ax_g.text(j, i, f"{text}\nep {r.switch_epoch:.0f}", ha="center", va="center",
                  fontsize=MIN_FONT_PT)
    im = ax_g.imshow(ratio, cmap="RdBu_r", vmin=0.5, vmax=1.5, origin="lower", aspect="auto")
    ax_g.set_xticks(range(len(d1s)), [f"{d:g}" for d in d1s])
    ax_g.set_yticks(range(len(ws)), [str(w) for w in ws])
    ax_g.set(xlabel="delta_1 (training-loss plateau)", ylabel="W (evaluations)",
             title=f"FLOPs to target, SHIFT / Looped\n(delta_2 = {d2:g})")
    ax_g.grid(False)
    _colorbar(fig, im, ax_g, label="FLOPs, SHIFT / Looped")
    if ax_d is None:
        return set_caption(fig, "SHIFT's training FLOPs to Looped-Attn's target over "
                                "Looped-Attn's, per switch setting (delta_1, W) at delta_2 = "
                                f"{d2:g}, with the switch epoch, one seed.")
    ax_d.plot([r.delta_2 for r in line], [r.flops_ratio for r in line], marker="o",
              color=MODEL_COLORS["shift"])
    ax_d.axhline(1.0, color=MODEL_COLORS["ceiling"], linestyle="--", linewidth=1.0)
    ax_d.set_xscale("log")
    ax_d.set(xlabel="delta_2 (training-accuracy plateau)", ylabel="FLOPs ratio",
             title=f"delta_1 = {pair[0]:g}, W = {pair[1]}")
    return set_caption(fig, "SHIFT's training FLOPs to Looped-Attn's target over "
                            "Looped-Attn's, per switch setting (delta_1, W, delta_2), one seed.")


# ---------------------------------------------------------------------------------------
# Figs. 11-16: algorithmic tasks, length generalization
# ---------------------------------------------------------------------------------------


@_styled
def algorithmic_wallclock(per_task: Mapping[str, Mapping[str, WallClock]]) -> Figure:
    """Paper Fig. 11: wall-clock of SHIFT against Looped-Attn per algorithmic task.

    How to read it. One group of bars per task, one bar per model (height: seconds to
    train); the number above a bar is that run's final accuracy, so a short bar counts
    only with a comparable accuracy. A model missing for a task shows "n/a".

    Args:
        per_task: ``{"parity": {"looped": WallClock, "shift": ..., "single": ...
            (optional)}, ...}`` (:func:`landscape.analysis.series.wallclock`).

    Returns:
        The figure (column width, wider with many tasks).
    """
    models = _models({m: 1 for t in per_task.values() for m in t})
    tasks = list(per_task)
    fig = _new_figure(max(COLUMN_WIDTH, 0.9 * len(tasks) + 0.8), 0.6)
    ax = fig.subplots()
    width, colors = 0.8 / len(models), _colors(models)
    for j, m in enumerate(models):
        for i, t in enumerate(tasks):
            x = i - 0.4 + (j + 0.5) * width
            entry = per_task[t].get(m)
            if entry is None:
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=MIN_FONT_PT, rotation=90)
                continue
            ax.bar(x, entry.seconds, width, color=colors[m], label=_label(m) if i == 0 else None)
            if entry.acc is not None:
                ax.text(x, entry.seconds, f"{100 * entry.acc:.0f}", ha="center", va="bottom",
                        fontsize=MIN_FONT_PT)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set(xlabel="task", ylabel="wall-clock (s)")
    ax.set_title("training time (numbers: final accuracy, %)")
    ax.margins(y=0.15)
    ax.grid(axis="x", visible=False)
    _legend_below(fig, [ax])
    return set_caption(fig, "Seconds to train each model per algorithmic task, its final "
                            "accuracy above the bar.")


def _task_panel(ax, task: str, entry: Mapping[str, Curve | Sequence[Curve]], metric: str,
                xkey: str) -> None:
    models = _models(entry)
    colors = _colors(models)
    for m in models:
        _line_band(ax, [(c[xkey], c[metric]) for c in _seeds(entry[m])], colors[m], _label(m),
                   m)
    switch = _seeds(entry[SHIFT])[0].switch_step if SHIFT in entry else None
    _mark_switch(ax, switch)
    ax.set_title(task)


@_styled
def task_curves(per_task: Mapping[str, Mapping[str, Curve | Sequence[Curve]]], *,
                metric: str = "iid.seq_acc", xkey: str = "step") -> Figure:
    """Paper Figs. 12-16: per-task accuracy of each model, SHIFT's switch marked.

    How to read it. One panel per task; the dotted line is SHIFT's switch (the first
    SHIFT curve's ``switch_step``), where SHIFT was trained. Claim 5's caveat shows as a
    dip in SHIFT's curve right after it.

    Args:
        per_task: ``{"parity": {"looped": Curve(s), "shift": Curve(s)}, ...}`` (any models)
            (:func:`landscape.analysis.series.curve`), each with ``xkey`` and ``metric``.
        metric: the y key.
        xkey: the x key.

    Returns:
        The figure (page width).
    """
    ncol = min(3, len(per_task))
    nrow = math.ceil(len(per_task) / ncol)
    fig = (_new_figure("page", 0.3 * nrow + 0.08) if ncol > 1 else  # a column is narrower:
           _new_figure("column", 0.62 * nrow + 0.16))  # the same panel height, legend rows
    axes = fig.subplots(nrow, ncol, squeeze=False, sharey=True).ravel()
    for i, (ax, (task, entry)) in enumerate(zip(axes, per_task.items())):
        _task_panel(ax, task, entry, metric, xkey)
        ax.set(xlabel=xkey, ylabel=_ylabel(metric) if i % ncol == 0 else "")
    for ax in axes[len(per_task):]:
        fig.delaxes(ax)
    _legend_below(fig, axes[: len(per_task)])
    models = _models({m: 0 for entry in per_task.values() for m in entry})
    switch = "; dotted: SHIFT's switch" if SHIFT in models else ""
    return set_caption(fig, f"{_ylabel(metric).capitalize()} against {xkey} per algorithmic "
                            f"task for {', '.join(_label(m) for m in models)}{switch}.")


@_styled
def length_generalization(
    per_model: Mapping[str, LengthSeries | Sequence[LengthSeries]],
    train_range: tuple[float, float] | None = None,
) -> Figure:
    """Length generalization (claim 6): token accuracy against the test input size.

    How to read it. The shaded band is the range of lengths seen in training; right of
    it is extrapolation. A model that generalizes keeps its accuracy there.

    Args:
        per_model: ``{"single": LengthSeries(s), "looped": ..., ...}`` (one or a list, one
            per seed; :func:`landscape.analysis.series.length_series`).
        train_range: optional ``(shortest, longest)`` training length.

    Returns:
        The figure (column width).
    """
    models = _models(per_model)
    fig = _new_figure("column", 0.7)
    ax = fig.subplots()
    if train_range is not None:
        ax.axvspan(*train_range, color=MODEL_COLORS["ceiling"], alpha=0.15, linewidth=0,
                   label="train lengths")  # fmt: skip
    colors = _colors(models)
    for m in models:
        _line_band(ax, [(s.length, s.acc) for s in _seeds(per_model[m])], colors[m],
                   _label(m), m, marker="o")
    ax.set(xlabel="test input size n (bits; per operand for addition)", ylabel="token accuracy")
    _legend_below(fig, [ax], ncol=2)
    return set_caption(fig, "Token accuracy against test input size (mean and range over "
                            "seeds)" + (", training lengths shaded" if train_range else "") + ".")


# ---------------------------------------------------------------------------------------
# ours: valley geometry
# ---------------------------------------------------------------------------------------


def _geo_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Per row of ``[n, k]``: geometric mean, min, max over finite values; count of inf."""
    v = np.atleast_2d(np.asarray(values, dtype=np.float64).T).T
    finite = np.isfinite(v) & (v > 0)
    logs = np.where(finite, np.log(np.where(finite, v, 1.0)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-inf row: NaN, not drawn
        mean = np.exp(np.nanmean(logs, axis=1))
        lo, hi = np.exp(np.nanmin(logs, axis=1)), np.exp(np.nanmax(logs, axis=1))
    return mean, lo, hi, int(np.sum(np.isinf(v)))


@_styled
def valley_width_vs_river(series_by_model: Mapping[str, WidthSeries]) -> Figure:
    """Valley width against river progress (ours), measured beside the quadratic prediction.

    How to read it. x: cumulative progress along the river
    (:func:`landscape.geometry.valley.river_progress`); y: the valley's full width at a loss rise
    delta (:func:`landscape.geometry.valley.valley_width`), solid, and the width a parabola of the
    measured curvature would have, ``2 sqrt(2 delta / lambda)``, dashed. With several
    valley directions the line is their geometric mean and the band their range. A
    River-V valley narrows as the river is followed; solid above dashed means walls
    flatter than quadratic. Widths beyond the slice (never rose by delta) are counted
    in the legend, not drawn.

    Args:
        series_by_model: ``{model: WidthSeries}``
            (:func:`landscape.analysis.series.width_series`).

    Returns:
        The figure (column width).
    """
    models = _models(series_by_model)
    fig = _new_figure("column", 0.75)
    ax = fig.subplots()
    colors = _colors(models)
    for m in models:
        w = series_by_model[m]
        mean, lo, hi, n_inf = _geo_band(w.width)
        note = f" ({n_inf} too wide to measure)" if n_inf else ""
        ax.plot(w.progress, mean, color=colors[m], marker=MODEL_MARKERS.get(m, "o"),
                linestyle=MODEL_LINESTYLES.get(m, "-"), label=f"{_label(m)}, measured{note}")
        ax.fill_between(w.progress, lo, hi, color=colors[m], alpha=0.2, linewidth=0)
        ax.plot(w.progress, _geo_band(w.quadratic)[0], color=colors[m], linestyle="--",
                label=f"{_label(m)}, quadratic prediction")  # fmt: skip
    _log_if_wide(ax, np.concatenate([line.get_ydata() for line in ax.get_lines()]))
    ax.set(xlabel="river progress (parameter distance)", ylabel="valley width (distance)")
    _legend_below(fig, [ax], ncol=1)
    return set_caption(fig, "Valley width at a fixed loss rise against progress along the "
                            "river, measured (solid) and predicted by the local curvature "
                            "(dashed).")


_STATS = (
    ("kappa", r"$\kappa(H_\mathrm{valley})$", "condition number of the valley"),
    ("small_count", r"eigenvalues in $(\epsilon, \tau]$", "small valley eigenvalues"),
    ("small_force", r"$\sum 1/\lambda$ over $(\epsilon, \tau]$", "cumulative force"),
)


@_styled
def valley_stats(
    series_by_model: Mapping[str, ValleySeries | Sequence[ValleySeries]], *,
    kappa_u: float = KAPPA_U, kappa_v: float = KAPPA_V, unit: str = "epoch",
    eps_rel: float = EPS_REL, tau_rel: float = TAU_REL,
) -> Figure:
    """River-valley statistics over training (ours; claim 3 and Assumption 1).

    How to read it. Left: ``kappa(H_valley)`` per epoch (log scale), with the U (dotted,
    ``kappa <= kappa_u``) and V (dashed, ``kappa >= kappa_v``) thresholds of
    :func:`landscape.geometry.valley.uv_label`. Middle: the number of valley eigenvalues in
    (eps, tau]. Right: the paper's cumulative force, the sum of their inverses (log
    scale when it spans decades). The conjecture reads: Looped-Attn above Single-Attn in
    all three. A statistic no model has (all NaN) says "not computed".

    Args:
        series_by_model: ``{model: ValleySeries(s)}`` (one or a list, one per seed;
            :func:`landscape.analysis.series.valley_series`).
        kappa_u: U threshold drawn.
        kappa_v: V threshold drawn.
        unit: what the ``epoch`` values count (the x label): ``"epoch"``, or ``"step"``
            for runs of your own loop (:func:`landscape.analysis.series.time_unit`).
        eps_rel: the river threshold eps the series were split at, relative to
            ``lambda_max`` (stated on the figure).
        tau_rel: the small-eigenvalue bound tau, relative to ``lambda_max``.

    Returns:
        The figure (page width).
    """
    models = _models(series_by_model)
    runs = {m: _seeds(series_by_model[m]) for m in models}
    lam = r"$\lambda_{\max}$"
    fig = _new_figure("page", 0.32)
    axes = fig.subplots(1, 3, sharex=True)
    colors = _colors(models)
    for ax, (key, ylabel, title) in zip(axes, _STATS):
        have = [m for m in models
                if all(not np.isnan(getattr(r, key)).all() for r in runs[m])]
        if not have:
            _not_computed(ax, f"'{key}' ({title})")
            continue
        for m in have:
            _line_band(ax, [(r.epoch, getattr(r, key)) for r in runs[m]], colors[m],
                       _label(m), m, marker="o")
        if key == "small_count":
            ax.yaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        if key == "kappa":
            ax.axhline(kappa_u, color="gray", linestyle=":",
                       label=r"River-U threshold $\kappa \leq$" + f" {kappa_u:g}")
            ax.axhline(kappa_v, color="gray", linestyle="--",
                       label=r"River-V threshold $\kappa \geq$" + f" {kappa_v:g}")
            ax.set_yscale("log")
        elif key == "small_force":
            _log_if_wide(ax, np.concatenate([ln.get_ydata() for ln in ax.get_lines()]))
        ax.set(xlabel=unit, ylabel=ylabel, title=title)
    fig.suptitle(r"$\epsilon$ = " + f"{eps_rel:g} {lam} (river threshold), " + r"$\tau$ = "
                 + f"{tau_rel:g} {lam} (small-eigenvalue bound)", fontsize=STYLE["font.size"])
    _legend_below(fig, axes, ncol=2)
    return set_caption(fig, f"The valley's condition number, its eigenvalues in (eps, tau] "
                            f"and their force sum 1/lambda against {unit} for "
                            f"{', '.join(_label(m) for m in models)}, with eps = {eps_rel:g} "
                            f"and tau = {tau_rel:g} times lambda_max.")


@_styled
def valley_sweep(sweep: UVSweep) -> Figure:
    """kappa, small-eigenvalue count and force over a sweep of shared thresholds (claim 3).

    How to read it. Each panel's x axis is the river threshold eps relative to one
    reference shared by both models (Single-Attn's lambda_max at the same checkpoint),
    log-spaced from 1e-4 to 1e-1. Left: ``kappa(H_valley)`` (largest valley eigenvalue
    over the smallest above eps); hollow markers where the smallest valley eigenvalue
    sits within a factor 2 of eps (saturated: kappa then measures the threshold, and the
    dotted line ``lambda_max / eps`` is its ceiling). Middle: the number of eigenvalues
    above eps. Right: their cumulative force, ``sum 1/lambda``. Lines: mean over seeds;
    bands: min to max. A River-V Looped-Attn would sit above Single-Attn in every panel
    at every eps where kappa is not saturated.

    Args:
        sweep: Single- and Looped-Attn's curves, one per seed
            (:func:`landscape.analysis.series.uv_sweep`).

    Returns:
        The figure (page width).
    """
    runs = {SINGLE: sweep.single, LOOPED: sweep.looped}
    models = list(runs)
    fig = _new_figure("page", 0.32)
    axes = fig.subplots(1, 3, sharex=True)
    colors = _colors(models)
    panels = (("kappa", r"$\kappa(H_\mathrm{valley})$", "condition number of the valley"),
              ("count", r"eigenvalues $> \epsilon$", "valley dimension"),
              ("force", r"$\sum 1/\lambda$", "cumulative force"))
    for ax, (key, ylabel, title) in zip(axes, panels):
        for m in models:
            _line_band(ax, [(r.eps_rel, getattr(r, key)) for r in runs[m]], colors[m],
                       _label(m), m, marker="o")
            if key == "kappa":
                for r in runs[m]:
                    sat = r.saturated.astype(bool)
                    ax.plot(r.eps_rel[sat], r.kappa[sat], "o", mfc="white", color=colors[m],
                            zorder=3)
        if key == "kappa":
            eps = np.asarray(runs[models[0]][0].eps_rel, dtype=float)
            ax.plot(eps, 1.0 / eps, ":", color="gray",
                    label=r"saturation ceiling $\kappa$ = 1 / $\epsilon_\mathrm{rel}$")
        ax.set_xscale("log")
        _log_if_wide(ax, np.concatenate([ln.get_ydata() for ln in ax.get_lines()]))
        ax.set(xlabel=r"$\epsilon$ / shared $\lambda_{\max}$", ylabel=ylabel, title=title)
    matrix = ("Adam-preconditioned Hessian " + r"$D^{-1/2} H D^{-1/2}$" if sweep.adam
              else "Hessian")
    fig.suptitle(f"Valley of the {matrix} at the last common checkpoint",
                 fontsize=STYLE["font.size"])
    _legend_below(fig, axes, ncol=3)
    n = max(len(sweep.single), len(sweep.looped))
    what = "Adam-preconditioned Hessian D^-1/2 H D^-1/2" if sweep.adam else "Hessian"
    return set_caption(fig, f"The valley's condition number, dimension and force sum 1/lambda "
                            f"of the {what} of Single- and Looped-Attn at river thresholds "
                            f"eps shared by both models ({n} seed{'s' if n > 1 else ''}, "
                            "mean and range).")


# ---------------------------------------------------------------------------------------
# ours: slices
# ---------------------------------------------------------------------------------------


@_styled
def slice_1d(
    alphas: np.ndarray,
    losses_by_direction: Mapping[str, np.ndarray],
    *,
    title: str | None = None,
    logy: bool = False,
    xlabel: str = "distance along the direction (unit length)",
) -> Figure:
    """A 1-D loss slice along one or several directions (ours).

    How to read it. Loss at ``theta0 + alpha * d`` for each direction d (e.g. the river
    and the top valley directions); the dotted line is the checkpoint (alpha = 0). A
    river direction is flat or falls; valley directions rise on both sides, steeply for
    large eigenvalues. Points not computed (NaN) leave gaps.

    Args:
        alphas: ``[n]`` coordinates.
        losses_by_direction: ``{name: [n] losses}``.
        title: optional title.
        logy: log-scaled loss axis.
        xlabel: the x label.

    Returns:
        The figure (column width).
    """
    fig = _new_figure("column", 0.7)
    ax = fig.subplots()
    for name, loss in losses_by_direction.items():
        ax.plot(alphas, loss, label=str(name))
    ax.axvline(0.0, color="gray", linestyle=":", linewidth=0.8)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel="loss (nats / token)", title=title or "")
    _legend_below(fig, [ax], ncol=3)
    return set_caption(fig, f"Loss along {len(losses_by_direction)} direction"
                            f"{'s' if len(losses_by_direction) > 1 else ''} "
                            f"({', '.join(map(str, losses_by_direction))}) through the checkpoint.")


_NORMED = {"filter": "filter-normalised", "layer": "layer-normalised", "none": "not normalised"}


def plane_axis_labels(plane: Mapping) -> tuple[str, str]:
    """What the x and y axes of a stored plane are, with their normalisation.

    ``plane`` is :attr:`Grid.plane <landscape.runfile.schema.Grid>` (its ``kind``, ``norm``).

    >>> plane_axis_labels({"kind": "river_valley"})[0]
    'river direction (unit length)'
    >>> plane_axis_labels({"kind": "random", "norm": "filter"})[1]
    'random direction 2 (filter-normalised)'
    """
    kind = plane.get("kind")
    normed = _NORMED.get(plane.get("norm", "filter"), str(plane.get("norm")))
    if kind == "river_valley":
        return ("river direction (unit length)", "valley direction (top Hessian eigenvector)")
    if kind in ("random", "shared"):
        return (f"random direction 1 ({normed})", f"random direction 2 ({normed})")
    if kind == "pca":
        return ("PC 1 of the trajectory", "PC 2 of the trajectory")
    if kind == "through":
        return ("towards the second point", "second direction of the plane")
    return ("direction 1", "direction 2")


def _colorbar(fig: Figure, cs, ax, label: str = "loss (nats / token)") -> None:
    """A colour bar with a few round ticks (no three-decimal clutter)."""
    cb = fig.colorbar(cs, ax=ax, label=label)
    if not isinstance(cs.norm, mpl.colors.LogNorm):
        cb.locator = mpl.ticker.MaxNLocator(4)
        cb.formatter = mpl.ticker.ScalarFormatter(useOffset=False)
    else:  # plain numbers at 1-2-5 (within a decade: more of them), never a lone 10^0
        narrow = cs.norm.vmax < 10 * cs.norm.vmin
        subs = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0) if narrow else (1.0, 2.0, 5.0)
        cb.locator = mpl.ticker.LogLocator(subs=subs, numticks=len(subs) + 2)
        cb.formatter = mpl.ticker.FuncFormatter(lambda v, _: f"{v:.3g}")
    cb.minorticks_off()
    cb.update_ticks()


def _levels(z: np.ndarray, n: int, log: bool) -> np.ndarray:
    """``n`` contour levels over the finite values, geometric if ``log``."""
    lo, hi = float(np.nanmin(z)), float(np.nanmax(z))
    if hi <= lo:
        hi = lo + 1e-12 * max(abs(lo), 1.0)
    if log:
        if not lo > 0:
            raise LandscapeError("slice_2d: log_levels need positive losses; pass "
                                 "log_levels=False")
        return np.geomspace(lo, hi, n)
    return np.linspace(lo, hi, n)


@_styled
def slice_2d(
    grid: Grid,
    trajectory_xy: np.ndarray | None = None,
    title: str | None = None,
    *,
    log_levels: bool = False,
    levels: int = 20,
    axis_labels: tuple[str, str] | None = None,
) -> Figure:
    """A 2-D loss slice with the projected trajectory (ours).

    How to read it. Filled contours of the loss at ``theta0 + a x + b y`` (``loss[i, j]``
    at ``(alphas[i], betas[j])``); the star is ``theta0`` (the origin); the line is the
    training trajectory projected on the plane (circle: first checkpoint, square: last).
    Cells not computed (NaN) are blank and counted in the corner. On a PCA plane the
    trajectory lies close to the plane; on a river/valley plane the river is x.

    Args:
        grid: a stored loss grid (:class:`landscape.runfile.schema.Grid`: ``alphas``
            ``[na]``, ``betas`` ``[nb]``, ``loss`` ``[na, nb]``).
        trajectory_xy: optional ``[n, 2]`` projected checkpoints.
        title: optional title.
        log_levels: geometrically spaced levels (losses must be positive).
        levels: number of contour levels.
        axis_labels: the x and y labels; default from the plane's kind
            (:func:`plane_axis_labels`).

    Returns:
        The figure (column width), captioned.
    """
    a, b = grid.alphas, grid.betas
    axis_labels = axis_labels or plane_axis_labels(grid.plane)
    z = np.asarray(grid.loss, dtype=np.float64)
    fig = _new_figure("column", 0.85)
    ax = fig.subplots()
    missing = int(np.sum(~np.isfinite(z)))
    if missing == z.size:
        _not_computed(ax, "every grid cell (run the slice probe)")
        return set_caption(fig, "A loss slice whose grid was not computed.")
    zm = np.ma.masked_invalid(z.T)
    lv = _levels(z, levels, log_levels)
    norm = mpl.colors.LogNorm(lv[0], lv[-1]) if log_levels else None
    cs = ax.contourf(a, b, zm, levels=lv, norm=norm, extend="neither")
    ax.contour(a, b, zm, levels=lv[::4], colors="white", linewidths=0.3, alpha=0.6)
    _colorbar(fig, cs, ax)
    _overlay_path(ax, trajectory_xy)
    ax.plot(0, 0, marker="*", color="white", markeredgecolor="black", markersize=9,
            linestyle="none", label=r"$\theta_0$")  # fmt: skip
    if missing:
        ax.text(0.01, 0.01, f"{missing} of {z.size} cells not computed", fontsize=MIN_FONT_PT,
                transform=ax.transAxes, color="black")  # fmt: skip
    ax.set(xlabel=axis_labels[0], ylabel=axis_labels[1], title=title or "")
    ax.grid(False)
    path = ", with the training trajectory projected on it" if trajectory_xy is not None else ""
    return set_caption(fig, f"Loss on the plane of the {axis_labels[0]} and the "
                            f"{axis_labels[1]} around the checkpoint{path}.")


@_styled
def shared_slices(
    grids: Mapping[str, Mapping[str, Grid]],
    *,
    shares: Mapping | None = None,
    rise: float = 0.1,
    levels: int = 20,
    title: str | None = None,
) -> Figure:
    """Several runs sliced along the same plane, on one colour scale (ours).

    How to read it. One row per model, one column per checkpoint; every panel is the loss
    at ``theta0 + a x + b y`` around that run's own weights ``theta0`` (the star), with
    the same ``x`` and ``y`` for all panels (a random plane normalised against one stated
    reference checkpoint), so that the basins are compared on equal terms. The levels are
    shared (geometric where every loss is positive). The white contour is the basin edge,
    ``loss(theta0) + rise``, and each title gives the share of the plane inside it (where
    ``shares`` are given, from :func:`landscape.geometry.slices.basin_share`): a wide, flat basin
    has a large share, a narrow (sharp) one a small share.

    Args:
        grids: ``{model: {column title: Grid}}`` on one plane and one ``alphas`` x
            ``betas`` grid (the first grid's coordinates are drawn; same column titles per
            row are not required; rows are drawn in the mapping's order).
        shares: optional ``{model: {column title: share of the plane within rise}}``.
        rise: loss rise (nats) above the centre that marks the basin edge.
        levels: number of contour levels.
        title: optional suptitle.

    Returns:
        The figure (page width).
    """
    first = next(iter(next(iter(grids.values())).values()))
    a, b = first.alphas, first.betas
    rows = {m: {t: np.asarray(g.loss, dtype=np.float64) for t, g in row.items()}
            for m, row in grids.items()}
    every = np.concatenate([z[np.isfinite(z)] for row in rows.values() for z in row.values()])
    log = bool(every.min() > 0)
    lv = _levels(every, levels, log=log)
    ncol = max(len(row) for row in rows.values())
    fig = _new_figure("page", len(rows) * (0.9 / max(ncol, 2) + 0.06))
    axes = fig.subplots(len(rows), ncol, sharex=True, sharey=True, squeeze=False)
    norm = mpl.colors.LogNorm(lv[0], lv[-1]) if log else None
    ia, ib = int(np.argmin(np.abs(a))), int(np.argmin(np.abs(b)))
    x_label, y_label = (s.replace(" (", "\n(") for s in plane_axis_labels(first.plane))
    cs = None
    for r, (model, row) in enumerate(rows.items()):
        for ax in axes[r, len(row):]:  # a row with fewer checkpoints
            ax.set_visible(False)
        for c, (name, z) in enumerate(row.items()):
            ax = axes[r, c]
            zm = np.ma.masked_invalid(z.T)
            cs = ax.contourf(a, b, zm, levels=lv, norm=norm, extend="neither")
            centre = z[ia, ib]
            if np.isfinite(centre):
                ax.contour(a, b, zm, levels=[centre + rise], colors="white", linewidths=1.0)
            ax.plot(0, 0, marker="*", color="white", markeredgecolor="black", markersize=7,
                    linestyle="none")
            share = (shares or {}).get(model, {}).get(name)
            within = f"\n{100 * share:.0f} % within +{rise:g}" if share is not None else ""
            ax.set_title(f"{_label(model)}, {name}{within}", fontsize=MIN_FONT_PT)
            ax.grid(False)
            if r == len(rows) - 1:
                ax.set_xlabel(x_label)
            if c == 0:
                ax.set_ylabel(y_label)
    _colorbar(fig, cs, axes)
    if title:
        fig.suptitle(title)
    return set_caption(fig, f"Loss of {', '.join(_label(m) for m in rows)} on one shared "
                            f"random plane around each run's own weights, one colour scale; "
                            f"white: the basin edge at +{rise:g} nats.")


def _overlay_path(ax, trajectory_xy: np.ndarray | None) -> None:
    if trajectory_xy is None:
        return
    xy = np.asarray(trajectory_xy, dtype=np.float64)
    ax.plot(xy[:, 0], xy[:, 1], color="white", linewidth=2.0)
    ax.plot(xy[:, 0], xy[:, 1], color="black", linewidth=0.9, marker=".", markersize=3)
    ax.plot(*xy[0], marker="o", color="white", markeredgecolor="black", linestyle="none")
    ax.plot(*xy[-1], marker="s", color="white", markeredgecolor="black", linestyle="none")


# ---------------------------------------------------------------------------------------
# ours: loops, switch, sharpness
# ---------------------------------------------------------------------------------------


def _loop_panel(ax, loops: np.ndarray, series: Mapping[str, np.ndarray],
                trained: Mapping[str, int]) -> None:
    colors = _colors(list(series))
    for name, y in series.items():
        ax.plot(loops, y, color=colors[name], marker=MODEL_MARKERS.get(name, "o"),
                linestyle=MODEL_LINESTYLES.get(name, "-"), label=_label(name))
    for name, t in trained.items():
        ax.axvline(t, color=colors.get(name, "gray"), linestyle=":", linewidth=1.0,
                   label=f"{_label(name)} trained with {t:g} loop{'s' if t != 1 else ''}")
    if loops.size <= 12:
        ax.set_xticks(loops)


@_styled
def loop_curve(curves: Mapping[str, LoopCurve]) -> Figure:
    """Loss and sharpness against the number of loops at fixed weights (ours).

    How to read it. The same weights evaluated with 1, 2, ... loops of the block. The
    dotted line is the loop count the weights were trained with; a Looped-Attn model
    that learnt an iterative algorithm keeps a low loss around it, a Single-Attn model
    degrades as soon as it is looped. Right: ``lambda_max`` of that objective ("not
    computed" where every value is NaN).

    Args:
        curves: ``{model: LoopCurve}`` (the stored ``loops`` part); drawn on the loop
            counts all of them have (the first model's, cut to the shortest).

    Returns:
        The figure (page width).
    """
    n = min(len(c.loops) for c in curves.values())
    x = np.asarray(next(iter(curves.values())).loops[:n], dtype=np.float64)
    trained = {m: c.trained_loops for m, c in curves.items()}
    fig = _new_figure("page", 0.34)
    ax_l, ax_s = fig.subplots(1, 2, sharex=True)
    _loop_panel(ax_l, x, {m: c.loss[:n] for m, c in curves.items()}, trained)
    ax_l.set(xlabel="loops at evaluation", ylabel="loss (nats / token)", title="loss")
    lam = {m: np.asarray(c.lambda_max[:n], dtype=np.float64) for m, c in curves.items()}
    if all(np.isnan(v).all() for v in lam.values()):
        _not_computed(ax_s, "lambda_max per loop count")
    else:
        _loop_panel(ax_s, x, lam, trained)
        _log_if_wide(ax_s, np.concatenate([ln.get_ydata() for ln in ax_s.get_lines()]))
        ax_s.set(xlabel="loops at evaluation", ylabel=r"$\lambda_{\max}$", title="sharpness")
    _legend_below(fig, [ax_l, ax_s], ncol=2)
    return set_caption(fig, "Loss and lambda_max of "
                            f"{', '.join(_label(m) for m in curves)} at their final weights "
                            "against the number of loops of the block; dotted: the loops "
                            "each was trained with.")


def _before_after(ax, pairs: Sequence[tuple[str, float, float]]) -> bool:
    """Before/after bars of the ``(label, before, after)`` pairs with finite values, if any."""
    present = [p for p in pairs if np.isfinite(p[1]) and np.isfinite(p[2])]
    for i, (_, *values) in enumerate(present):
        for j, (when, color) in enumerate((("before", MODEL_COLORS[SINGLE]),
                                           ("after", MODEL_COLORS[LOOPED]))):
            v = float(values[j])
            ax.bar(i + (j - 0.5) * 0.38, v, 0.38, color=color, label=when if i == 0 else None)
            ax.text(i + (j - 0.5) * 0.38, v, f"{v:.3g}", ha="center",
                    va="bottom" if v >= 0 else "top", fontsize=MIN_FONT_PT)
    ax.set_xticks(range(len(present)), [lab for lab, *_ in present])
    ax.grid(axis="x", visible=False)
    ax.margins(y=0.15)
    return bool(present)


@_styled
def switch_diagnostics(before: SwitchSide, after: SwitchSide,
                       overlap: np.ndarray | None = None, step: int | None = None) -> Figure:
    """What happens at the SHIFT switch (ours): loss jump, sharpness, eigenspace overlap.

    How to read it. Left: the loss just before (blue, one loop) and just after (red,
    looped) the switch, at the same weights. Middle: ``lambda_max`` and the Hessian
    trace before and after (log scale; signed-log through 0 where one is not positive,
    e.g. the trace of an indefinite Hessian). Right: the cosines of the principal angles
    between the top-k Hessian eigenspaces before and after (1: the same directions; near
    0: new ones); their mean square is in the title. Missing pieces (NaN, no overlap)
    say "not computed".

    Args:
        before: the stored switch part's side under 1 loop
            (:class:`landscape.runfile.schema.SwitchSide`: ``loss``, ``values`` ``[k]``
            descending, ``trace``).
        after: the side under the loops after the switch.
        overlap: optional ``[k]`` cosines of the principal angles.
        step: optional switch step, for the title.

    Returns:
        The figure (page width).
    """
    fig = _new_figure("page", 0.34)
    ax_l, ax_s, ax_o = fig.subplots(1, 3)
    _before_after(ax_l, [("loss", before.loss, after.loss)])
    ax_l.set(xlabel="at the same weights", ylabel="loss (nats / token)", title="loss jump")
    sharp = [(r"$\lambda_{\max}$", float(before.values[0]), float(after.values[0])),
             ("trace", before.trace, after.trace)]
    if _before_after(ax_s, sharp):
        values = [v for _, *pair in sharp for v in pair if np.isfinite(v)]
        if min(values) > 0:
            ax_s.set_yscale("log")
            scale = "log scale"
        else:  # an indefinite Hessian's trace can be negative: a signed-log axis through 0
            ax_s.set_yscale("symlog", linthresh=min((abs(v) for v in values if v != 0),
                                                    default=1.0))
            ax_s.axhline(0.0, color="gray", linewidth=0.8)
            scale = "signed-log scale"
        ax_s.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())  # 3x10^0 beside 4x10^0
        ax_s.set(xlabel="Hessian statistic", ylabel=f"value ({scale})", title="sharpness")
    else:
        _not_computed(ax_s, "lambda_max / trace before and after")
    if overlap is not None:
        cos = np.asarray(overlap, dtype=np.float64)
        ax_o.bar(np.arange(1, cos.size + 1), cos, color=MODEL_COLORS[SHIFT])
        ax_o.set(ylim=(0, 1.05), xlabel="principal angle i", ylabel=r"$\cos\theta_i$",
                 title=f"top-{cos.size} eigenspace overlap\nmean " + r"$\cos^2$"
                 + f" = {np.mean(cos**2):.2f}")
        ax_o.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        ax_o.grid(axis="x", visible=False)
    else:
        _not_computed(ax_o, "top-k eigenspace overlap")
    if step is not None:
        fig.suptitle(f"SHIFT switch at step {step}")
    _legend_below(fig, [ax_l])
    return set_caption(fig, "At SHIFT's switch, the loss, lambda_max and Hessian trace under "
                            "one loop (before) and under the loops after it, and the overlap "
                            "of the top Hessian eigenspaces.")


def _sharp_panel(ax, epochs, values, threshold, color, label, tlabel, style, unit) -> None:
    ax.plot(epochs, values, color=color, marker="o", label=label)
    if threshold is not None:
        ax.plot(epochs, threshold, color="black", linestyle=style, linewidth=1.0, label=tlabel)
    _log_if_wide(ax, np.concatenate([ln.get_ydata() for ln in ax.get_lines()]), decades=2.0)
    ax.set_xlabel(unit)


def _edge_label(optimizer: str | None, threshold: object, old: str) -> str:
    """The edge's legend entry with its value: ``"SGD (heavy ball 0.9) edge 38"``.

    A part stored without its optimiser gets ``old`` and the value (``"... 2 / lr = 40"``).
    """
    t = np.asarray(threshold if threshold is not None else [], dtype=np.float64).ravel()
    t = t[np.isfinite(t)]
    if t.size == 0:
        return f"{optimizer} edge unknown" if optimizer else old
    lo, hi = float(t.min()), float(t.max())
    value = f"{hi:.3g}" if np.isclose(lo, hi) else f"{lo:.3g} to {hi:.3g}"
    return f"{optimizer} edge {value}" if optimizer else f"{old} = {value}"


def _has_data(values: object | None) -> bool:
    return values is not None and bool(np.isfinite(np.asarray(values, np.float64)).any())


@_styled
def sharpness(s: SharpnessSeries, *, model: str | None = None, unit: str = "epoch") -> Figure:
    """Sharpness against the optimiser's stability edge over training (edge of stability).

    How to read it. Left: ``lambda_max`` of the Hessian with the optimiser's edge (dashed;
    a line if the learning rate changes), e.g. ``2 / lr`` for SGD, ``(2 + 2 beta) / lr``
    for heavy-ball momentum (:mod:`landscape.curvature.stability`). Right, where it was
    measured: the largest eigenvalue of the Adam-preconditioned Hessian with Adam's edge
    (``38 / lr`` for beta1 = 0.9); for an Adam run it is the panel that tests the edge of
    stability: a curve that rises to the dashed line and hovers there is at the edge.
    The legend names the optimiser and the edge's value; a panel without data is left out,
    and a panel whose edge is unknown says so.

    Args:
        s: the series (:func:`landscape.analysis.series.sharpness_series`).
        model: optional model key, for its color and label.
        unit: what ``s.epoch`` counts (the x label): ``"epoch"``, or ``"step"`` for a run
            of your own loop (:func:`landscape.analysis.series.time_unit`).
        optimizer: the optimiser's name (:attr:`Sharpness.optimizer
            <landscape.runfile.schema.Sharpness>`); None: a part stored before optimisers
            were, whose thresholds are ``2 / lr`` and Adam's.
        edge_on: ``"hessian"`` (``threshold`` goes on the left panel) or
            ``"preconditioned"`` (Adam's edge, on the right one only).
        edge_unknown: why the edge is unknown (then the figure says so).

    Returns:
        The figure (page width, or a column where the right panel is left out).
    """
    pre = _has_data(s.adam_lambda_max)
    fig = _new_figure("page" if pre else "column", 0.34 if pre else 0.68)
    axes = list(np.atleast_1d(fig.subplots(1, 2 if pre else 1, sharex=True)))
    color = MODEL_COLORS.get(model or "", OKABE_ITO["black"])
    label = _label(model) if model else r"$\lambda_{\max}$"
    on_h = s.threshold if s.edge_on == "hessian" and _has_data(s.threshold) else None
    _sharp_panel(axes[0], s.epoch, s.lambda_max, on_h, color, label,
                 _edge_label(s.optimizer, s.threshold, "GD threshold 2 / lr"), "--", unit)
    axes[0].set(ylabel=r"$\lambda_{\max}(H)$", title="Hessian")
    if pre:
        on_p = s.adam_threshold if _has_data(s.adam_threshold) else None
        _sharp_panel(axes[1], s.epoch, s.adam_lambda_max, on_p, color, label,
                     _edge_label(s.optimizer, s.adam_threshold, "Adam threshold"), "-.", unit)
        axes[1].set(ylabel=r"$\lambda_{\max}(P^{-1/2} H P^{-1/2})$", title="preconditioned")
    if s.edge_unknown:
        axes[0].text(0.02, 0.98, f"stability edge unknown: {s.edge_unknown}",
                     transform=axes[0].transAxes, ha="left", va="top", color="#555555")
    _legend_below(fig, axes, ncol=2)
    who = f" of {_label(model)}" if model else ""
    return set_caption(fig, f"The Hessian's largest eigenvalue{who} against {unit} with the "
                            "optimiser's stability edge"
                       + (", and the same for the Adam-preconditioned Hessian" if pre else "")
                       + ".")


def _block_colors(n: int) -> list:
    """The palette for up to eight blocks, else evenly spaced colors of viridis."""
    palette = [OKABE_ITO[k] for k in ("blue", "vermillion", "green", "orange", "sky",
                                      "purple", "black", "yellow")]
    if n <= len(palette):
        return palette[:n]
    return [mpl.colormaps["viridis"](t) for t in np.linspace(0.0, 0.95, n)]


def _block_scale(ax, values: np.ndarray) -> None:
    """Symmetric log where values of both signs span decades, else log where wide."""
    v = values[np.isfinite(values)]
    if v.size and v.min() < 0 < v.max():
        small = np.abs(v[v != 0])
        if small.size and np.log10(small.max() / small.min()) > 1.5:
            ax.set_yscale("symlog", linthresh=float(np.percentile(small, 10)))
        return
    _log_if_wide(ax, values)


@_styled
def block_spectra(s: BlockSeries, *, title: str = "", unit: str = "epoch") -> Figure:
    """Each block's top Hessian eigenvalue and trace over training (``probe --blocks``).

    How to read it. One line per block of parameters (a layer of the model, the module
    owning a parameter, or a ``--blocks`` pattern; its size in the legend). Left: the
    largest eigenvalue of the block's own Hessian ``H[B, B]`` (the other parameters
    frozen), which bounds how sharp the loss is along that block alone. Right: the
    block's trace, its total curvature (a band of one standard error where it was
    estimated by Hutch++). A block whose curve rises above the others is where the
    sharpness of the whole model lives.

    Args:
        s: the series (:func:`landscape.analysis.series.block_series`).
        title: a title above the panels (e.g. the run's name).
        unit: what ``s.epoch`` counts (the x label): ``"epoch"`` or ``"step"``.

    Returns:
        The figure (page width, two panels and a legend below).
    """
    fig = _new_figure("page", 0.36)
    axes = fig.subplots(1, 2, sharex=True)
    marker = "o" if len(s.epoch) < 12 else None
    for j, (name, color) in enumerate(zip(s.blocks, _block_colors(len(s.blocks)))):
        label = f"{name} ({int(s.dims[j]):,})"
        axes[0].plot(s.epoch, s.top[:, j], color=color, marker=marker, label=label)
        axes[1].plot(s.epoch, s.trace[:, j], color=color, marker=marker, label=label)
        err = s.trace_stderr[:, j]
        if np.any(err > 0):
            axes[1].fill_between(s.epoch, s.trace[:, j] - err, s.trace[:, j] + err,
                                 color=color, alpha=0.2, linewidth=0)
    _block_scale(axes[0], s.top)
    _block_scale(axes[1], s.trace)
    axes[0].set(xlabel=unit, ylabel=r"$\lambda_{\max}(H_{BB})$", title="top eigenvalue per block")
    axes[1].set(xlabel=unit, ylabel=r"$\mathrm{tr}(H_{BB})$", title="trace per block")
    if title:
        fig.suptitle(title)
    _legend_below(fig, axes, ncol=min(len(s.blocks), 4))
    return set_caption(fig, f"The largest eigenvalue and the trace of each of {len(s.blocks)} "
                            f"blocks' own Hessian against {unit}.")
