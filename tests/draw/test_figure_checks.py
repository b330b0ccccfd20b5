"""Every figure family, rendered on tiny data, passes the checks a journal's reader makes.

The renderer itself looks: no two text elements overlap on the drawn canvas, every axis
with tick labels has a label, no panel is empty, no text is under 7 pt at the saved size,
the PDF embeds TrueType fonts, and the saved file has the width asked for. The checks are
shown able to fail on figures built to break them.
"""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image  # noqa: E402
from test_plot import FIGURES, _binned_spectra, _figures  # noqa: E402  (the tiny inputs of every figure)

from landscape.draw import plot  # noqa: E402
from landscape.geometry import simulator  # noqa: E402

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


def drawn_texts(fig: Figure) -> list[Text]:
    """Every text element drawn on the figure (titles, labels, tick labels, legends, notes)."""
    _draw(fig)
    texts = list(fig.texts)  # the suptitle among them
    for legend in fig.legends:
        texts += [*legend.get_texts(), legend.get_title()]
    for ax in fig.axes:
        if ax.get_visible():
            texts += _axes_texts(ax)
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def overlaps(fig: Figure) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose boxes overlap by more than :data:`TOLERANCE_PX`."""
    renderer = _draw(fig)
    boxes = [(t.get_text(), t.get_window_extent(renderer).expanded(1.0, 1.0))
             for t in drawn_texts(fig)]
    bad = []
    for (s, a), (u, b) in itertools.combinations(boxes, 2):
        dx = min(a.x1, b.x1) - max(a.x0, b.x0)
        dy = min(a.y1, b.y1) - max(a.y0, b.y0)
        if dx > TOLERANCE_PX and dy > TOLERANCE_PX:
            bad.append((s, u))
    return bad


def outside(fig: Figure) -> list[str]:
    """Drawn texts that reach beyond the figure's edges (cut off in the saved file)."""
    renderer = _draw(fig)
    box = fig.bbox.padded(TOLERANCE_PX)
    return [t.get_text() for t in drawn_texts(fig)
            if not box.contains(*t.get_window_extent(renderer).p0)
            or not box.contains(*t.get_window_extent(renderer).p1)]


def unlabelled_axes(fig: Figure) -> list[str]:
    """Axes that draw tick labels but name no quantity (``"panel 2 y"``)."""
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


def small_fonts(fig: Figure) -> list[tuple[str, float]]:
    """Drawn texts under :data:`landscape.draw.plot.MIN_FONT_PT` (the file keeps the size)."""
    return [(t.get_text(), t.get_fontsize()) for t in drawn_texts(fig)
            if t.get_fontsize() < plot.MIN_FONT_PT - 1e-9]


def check(fig: Figure) -> None:
    """Fail with what is wrong where the figure breaks one of the checks."""
    problems = {"overlapping texts": overlaps(fig), "texts cut off": outside(fig),
                "axes without a label": unlabelled_axes(fig),
                "empty panels": empty_panels(fig), "fonts under 7 pt": small_fonts(fig),
                "no caption": [] if plot.caption(fig) else ["caption is empty"]}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, problems


# ------------------------------------------------------------------------------ checks


@pytest.fixture(scope="module")
def sims():
    c = simulator.compare(n_valley=4, steps=30, grid=11)  # as test_plot's fixture
    return c.u, c.v


@pytest.mark.parametrize("width", [None, "page"])
@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_passes_the_checks(name, width, sims):
    fig = _figures(sims)[name]() if width is None else _with_width(sims, name, width)
    check(fig)


def test_spectra_with_five_checkpoints_a_row_passes_the_checks():
    binned, entropy = _binned_spectra()
    check(plot.spectra(binned, entropy, max_checkpoints=5))


def _with_width(sims, name, width):
    """The figure of ``name`` rescaled as ``width=`` would (same inputs)."""
    fig = _figures(sims)[name]()
    w, h = fig.get_size_inches()
    fig.set_size_inches(*plot.figsize(width, h / w))
    return fig


@pytest.mark.parametrize("name", FIGURES)
def test_saved_pdf_embeds_truetype_fonts_and_png_has_the_figure_width(name, sims, tmp_path):
    fig = _figures(sims)[name]()
    width = fig.get_size_inches()[0]
    pdf, png = plot.save(fig, tmp_path / name, dpi=40)
    raw = pdf.read_bytes()
    assert b"/FontFile2" in raw and b"/Type3" not in raw
    with Image.open(png) as im:
        assert abs(im.size[0] - width * 40) <= 1  # whole pixels


@pytest.mark.parametrize("width, inches", [("column", 3.25), ("page", 6.75), (5.0, 5.0)])
def test_width_is_the_callers_and_the_saved_file_has_it(width, inches, tmp_path):
    a = np.linspace(-1, 1, 5)
    fig = plot.slice_1d(a, {"river": 1 - 0.1 * a}, width=width)
    (png,) = plot.save(fig, tmp_path / "f", formats=("png",), dpi=50)
    with Image.open(png) as im:
        assert abs(im.size[0] - inches * 50) <= 1  # whole pixels
    assert fig.axes[0].xaxis.label.get_fontsize() == plot.STYLE["axes.labelsize"]


def test_caption_goes_into_the_saved_metadata(tmp_path):
    fig = plot.slice_1d([0, 1, 2], {"d": [1, 0, 1]})
    plot.add_source(fig, "Looped-Attn, seed 0")
    assert plot.caption(fig).endswith("data: Looped-Attn, seed 0.")
    (png,) = plot.save(fig, tmp_path / "f", formats=("png",), dpi=30)
    assert Image.open(png).text["caption"] == plot.caption(fig)


# ------------------------------------------------------------- the checks can fail


def _bad_figure() -> Figure:
    fig = Figure(figsize=(3.25, 2.0), layout="constrained")
    ax, empty = fig.subplots(1, 2)
    ax.plot([0, 1], [0, 1])
    ax.text(0.5, 0.5, "note one", fontsize=6)
    ax.text(0.5, 0.5, "note two")
    ax.set_title("a title far too long to fit on a figure three inches wide, cut off")
    return plot.set_caption(fig, "A figure built to fail.")


def test_the_checks_catch_overlap_missing_labels_empty_panels_and_small_fonts():
    fig = _bad_figure()
    assert ("note one", "note two") in overlaps(fig)
    assert any(b.endswith(" x") for b in unlabelled_axes(fig))
    assert empty_panels(fig) == [1]
    assert outside(fig) == [ax.get_title() for ax in fig.axes[:1]]
    assert small_fonts(fig) == [("note one", 6)]
    with pytest.raises(AssertionError):
        check(fig)


def test_the_pdf_check_catches_type3_fonts(tmp_path):
    fig = plot.slice_1d([0, 1, 2], {"d": [1, 0, 1]})
    with matplotlib.rc_context({"pdf.fonttype": 3}):
        fig.savefig(tmp_path / "t3.pdf", format="pdf")
    raw = (tmp_path / "t3.pdf").read_bytes()
    assert b"/FontFile2" not in raw and b"/Type3" in raw
