"""What a journal's reader checks on a figure, done by the renderer: nothing cut or hidden.

:func:`problems` draws a figure on an Agg canvas and lists what breaks a check: two text
elements that overlap, text cut off at the figure's edge, an axis with tick labels but no
label, an empty panel, a font under :data:`landscape.draw.plot.MIN_FONT_PT` at the
figure's size, no caption. The test suite runs it on every figure family with tiny data;
``figures/gallery.py`` and ``landscape reproduce`` on the real figures before they are
saved (:func:`landscape.draw.figures.render`'s ``inspect``).
"""

from __future__ import annotations

import itertools

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from landscape.draw import plot

TOLERANCE_PX = 1.0  # bounding boxes may touch by this much (anti-aliasing, rounding)


def _drawn_tick_labels(axis) -> list[Text]:
    """The tick labels an axis draws: ticks inside the view, label on, text not empty."""
    out = []
    for tick in axis._update_ticks():  # the ticks the draw placed (inside the view)
        out += [lab for lab in (tick.label1, tick.label2)
                if tick.get_visible() and lab.get_visible() and lab.get_text()]
    return out


def _axes_texts(ax) -> list[Text]:
    texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label,
             ax.xaxis.offsetText, ax.yaxis.offsetText, *ax.texts]
    texts += _drawn_tick_labels(ax.xaxis) + _drawn_tick_labels(ax.yaxis)
    if ax.get_legend() is not None:
        texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    return texts


def _draw(fig: Figure):
    """Draw the figure on an Agg canvas; its renderer."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _texts(fig: Figure) -> list[Text]:
    """The text elements of a figure that has been drawn (see :func:`drawn_texts`)."""
    texts = list(fig.texts)  # the suptitle among them
    for legend in fig.legends:
        texts += [*legend.get_texts(), legend.get_title()]
    for ax in fig.axes:
        if ax.get_visible():
            texts += _axes_texts(ax)
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def drawn_texts(fig: Figure) -> list[Text]:
    """Every text element drawn on the figure (titles, labels, tick labels, legends, notes)."""
    _draw(fig)
    return _texts(fig)


def _boxes(fig: Figure, renderer=None) -> list[tuple[str, object]]:
    """``(text, window extent)`` of every drawn text; draws the figure unless ``renderer``."""
    renderer = renderer or _draw(fig)
    return [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(fig)]


def overlaps(fig: Figure, boxes=None) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose boxes overlap by more than :data:`TOLERANCE_PX`."""
    bad = []
    for (s, a), (u, b) in itertools.combinations(boxes or _boxes(fig), 2):
        dx = min(a.x1, b.x1) - max(a.x0, b.x0)
        dy = min(a.y1, b.y1) - max(a.y0, b.y0)
        if dx > TOLERANCE_PX and dy > TOLERANCE_PX:
            bad.append((s, u))
    return bad


def outside(fig: Figure, boxes=None) -> list[str]:
    """Drawn texts that reach beyond the figure's edges (cut off in the saved file)."""
    box = fig.bbox.padded(TOLERANCE_PX)
    return [s for s, b in boxes or _boxes(fig)
            if not box.contains(*b.p0) or not box.contains(*b.p1)]


def unlabelled_axes(fig: Figure, drawn: bool = False) -> list[str]:
    """Axes that draw tick labels but name no quantity (``"panel 2 y"``)."""
    if not drawn:
        _draw(fig)
    bad = []
    for i, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if _drawn_tick_labels(axis) and not axis.label.get_text().strip():
                bad.append(f"panel {i} ({ax.get_title()!r}) {name}")
    return bad


def empty_panels(fig: Figure) -> list[int]:
    """Visible axes with nothing drawn in them (no line, patch, image, collection or note)."""
    bad = []
    for i, ax in enumerate(fig.axes):
        if ax.get_visible() and not (ax.lines or ax.collections or ax.patches or ax.images
                                     or ax.texts or ax.containers):
            bad.append(i)
    return bad


def small_fonts(fig: Figure, drawn: bool = False) -> list[tuple[str, float]]:
    """Drawn texts under :data:`landscape.draw.plot.MIN_FONT_PT` (the file keeps the size)."""
    return [(t.get_text(), t.get_fontsize()) for t in (_texts(fig) if drawn else
                                                        drawn_texts(fig))
            if t.get_fontsize() < plot.MIN_FONT_PT - 1e-9]


def problems(fig: Figure) -> dict[str, list]:
    """What breaks a check, by check (``{}`` where the figure passes them all).

    The figure is drawn once and every check reads that drawing.
    """
    boxes = _boxes(fig)
    found = {"overlapping texts": overlaps(fig, boxes), "texts cut off": outside(fig, boxes),
             "axes without a label": unlabelled_axes(fig, drawn=True),
             "empty panels": empty_panels(fig), "fonts under 7 pt": small_fonts(fig, True),
             "no caption": [] if plot.caption(fig) else ["caption is empty"]}
    return {k: v for k, v in found.items() if v}
