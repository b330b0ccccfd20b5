"""`landscape plot --format html`: the page's structure, checked in Python."""

import re

import numpy as np
import pytest
from click.testing import CliRunner

from landscape.cli import main
from landscape.draw import figures
from landscape.errors import LandscapeError
from landscape.runs.run import Run

pytest.importorskip("plotly", reason="the html extra is not installed (pip install "
                                     "'looped-landscape[html]')")
from landscape.draw import interactive  # noqa: E402


def _views(path):
    from landscape.analysis.series import group_runs

    return figures.slice_views(group_runs([Run.open(path)]))


def test_slice_views_say_what_each_direction_is(probed_own_run):
    views = _views(probed_own_run)
    assert {"slice_random_own", "slice_pca_own"} <= set(views)
    rnd, pca = views["slice_random_own"], views["slice_pca_own"]
    assert rnd.axis_titles[0].startswith("random direction 1 (filter-normalised, seed 0")
    assert pca.axis_titles[0].startswith("PC 1 (") and "variance" in pca.axis_titles[0]
    assert rnd.trajectory_xy is None and pca.trajectory_xy.shape == (3, 2)


def test_the_figure_holds_surface_contour_trajectory_and_checkpoint(probed_own_run):
    view = _views(probed_own_run)["slice_pca_own"]
    fig = interactive.slice_figure(view)
    names = [t.name for t in fig.data]
    assert names == ["surface", "contour", "trajectory (3-D)", "trajectory",
                     "checkpoint (3-D)", "checkpoint"]
    surface = fig.data[0]
    np.testing.assert_array_equal(np.asarray(surface.z), view.grid.loss.T)  # rows follow y
    np.testing.assert_array_equal(fig.data[2].z, view.trajectory_loss)
    i, j = (int(np.argmin(np.abs(a))) for a in (view.grid.alphas, view.grid.betas))
    assert fig.data[4].z[0] == view.grid.loss[i, j]  # the checkpoint sits on the surface
    assert fig.layout.scene.xaxis.title.text == view.axis_titles[0]
    assert fig.layout.xaxis.title.text == view.axis_titles[0]
    assert fig.layout.yaxis.title.text == view.axis_titles[1]
    rnd = interactive.slice_figure(_views(probed_own_run)["slice_random_own"])
    assert "trajectory" not in [t.name for t in rnd.data]


def test_a_grid_never_computed_is_refused():
    from landscape.runfile.schema import SliceRandom

    grid = SliceRandom(alphas=np.zeros(2), betas=np.zeros(2), loss=np.full((2, 2), np.nan))
    with pytest.raises(LandscapeError, match="every grid cell is missing"):
        interactive.slice_figure(interactive.SliceView(grid, "t", ("x", "y")))


def test_plot_format_html_writes_self_contained_pages(probed_own_run, tmp_path):
    r = CliRunner().invoke(main, ["plot", str(probed_own_run), "--figure", "slices",
                                  "--figure", "spectra", "--format", "html",
                                  "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    pages = sorted(p.name for p in tmp_path.iterdir())
    assert pages == sorted(f"{s}.html" for s in _views(probed_own_run))  # no PNG, no PDF
    assert "spectra: skipped (no HTML view of spectra" in r.output
    html = (tmp_path / "slice_pca_own.html").read_text()
    assert html.count('class="plotly-graph-div"') == 1
    assert not re.search(r"<script[^>]+src=", html)  # plotly.js inlined: works offline
    assert "Plotly.newPlot" in html and len(html) > 1_000_000
    for name in ("surface", "contour", "trajectory (3-D)", "checkpoint"):
        assert f'"name":"{name}"' in html


def test_html_beside_png_leaves_the_png_path_alone(probed_own_run, tmp_path):
    r = CliRunner().invoke(main, ["plot", str(probed_own_run), "--figure", "slices",
                                  "--format", "png,html", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    stems = set(_views(probed_own_run))
    assert {p.name for p in tmp_path.iterdir()} == {f"{s}.{e}" for s in stems
                                                    for e in ("png", "html")}
    r = CliRunner().invoke(main, ["plot", str(probed_own_run), "--format", "htm"])
    assert r.exit_code == 2 and "formats: pdf, png, svg, html" in r.output
