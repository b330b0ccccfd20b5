"""The HTML slice page in a real headless Chromium (``make test-browser``; marker ``browser``).

Chromium from the system (``apt-get install chromium``), driven by Playwright for Python;
WebGL through SwiftShader where there is no GPU. Saves the screenshot shown in README.md
(docs/gallery/interactive_slice.png) when LANDSCAPE_GALLERY is set.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from landscape.cli import main

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install 'looped-landscape[browser]')")
pytest.importorskip("plotly", reason="the html extra is not installed")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--use-gl=swiftshader",
        "--enable-unsafe-swiftshader", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
GALLERY = Path(__file__).parents[2] / "docs" / "gallery" / "interactive_slice.png"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_the_page_draws_in_chromium(browser, probed_own_run, tmp_path):
    r = CliRunner().invoke(main, ["plot", str(probed_own_run), "--figure", "slices",
                                  "--format", "html", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    page = browser.new_page(viewport={"width": 1120, "height": 580})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests = []
    page.on("request", lambda q: requests.append(q.url))
    page.goto((tmp_path / "slice_pca_own.html").as_uri())
    page.wait_for_function("document.querySelector('.plotly-graph-div')?._fullLayout")
    page.wait_for_timeout(1500)  # WebGL's first frame in SwiftShader
    traces = page.evaluate("Array.from(document.querySelector('.plotly-graph-div').data, "
                           "t => ({name: t.name, type: t.type}))")
    assert [(t["name"], t["type"]) for t in traces] == [
        ("surface", "surface"), ("contour", "contour"), ("trajectory (3-D)", "scatter3d"),
        ("trajectory", "scatter"), ("checkpoint (3-D)", "scatter3d"),
        ("checkpoint", "scatter")]
    assert errors == []
    assert all(u.startswith("file:") for u in requests)  # nothing fetched from a network
    shot = page.screenshot()
    pixels = _pixels(shot)
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, pixels.shape[-1]),
                                               axis=0)) > 200  # not a blank page
    surface = pixels[80:520, 40:600]  # the 3-D scene: the surface drawn by WebGL
    assert len(np.unique(surface.reshape(-1, surface.shape[-1]), axis=0)) > 100
    if os.environ.get("LANDSCAPE_GALLERY"):
        GALLERY.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(GALLERY), type="png")


def _pixels(png: bytes) -> np.ndarray:
    import io

    import matplotlib.image as mpimg

    return (mpimg.imread(io.BytesIO(png), format="png")[..., :3] * 255).astype(np.int16)
