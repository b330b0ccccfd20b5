"""Every figure family, rendered on tiny data, passes the checks a journal's reader makes.

The renderer itself looks: no two text elements overlap on the drawn canvas, every axis
with tick labels has a label, no panel is empty, no text is under 7 pt at the saved size,
the PDF embeds TrueType fonts, and the saved file has the width asked for. The checks are
shown able to fail on figures built to break them.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from test_plot import FIGURES, _binned_spectra, _figures  # noqa: E402  (the tiny inputs of every figure)

from landscape.draw import plot  # noqa: E402
from landscape.draw.checks import (  # noqa: E402
    empty_panels,
    outside,
    overlaps,
    problems,
    small_fonts,
    unlabelled_axes,
)
from landscape.geometry import simulator  # noqa: E402


def check(fig: Figure) -> None:
    """Fail with what is wrong where the figure breaks one of the checks."""
    found = problems(fig)
    assert not found, found


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


@pytest.mark.parametrize("tasks", [("parity",), ("parity", "copy", "addition", "x")])
def test_task_curves_of_every_model_in_a_column_or_a_page_pass_the_checks(tasks):
    """Four models' legend (two rows in a column) must leave the panels their labels."""
    from landscape.analysis.series import Curve

    st = np.arange(5.0)
    entry = {m: Curve({"step": st, "iid.seq_acc": st / 5}, switch_step=2.0)
             for m in ("looped", "shift", "single", "untied")}
    check(plot.task_curves({t: entry for t in tasks}))


def test_switch_figure_with_a_negative_trace_draws_every_bar_and_passes_the_checks():
    """An indefinite Hessian after the switch (trace -176, the quick preset's): no log axis."""
    from test_plot import _side

    fig = plot.switch_diagnostics(_side(0.42, 16.3, 288.0), _side(0.67, 204.0, -176.0),
                                  np.array([0.5, 0.1, 0.05]), 672)
    check(fig)
    ax = fig.axes[1]
    assert ax.get_yscale() == "symlog" and "signed-log" in ax.get_ylabel()
    assert sorted(round(p.get_height()) for p in ax.patches) == [-176, 16, 204, 288]
