"""Any model through the default path: record it, `landscape probe` with default settings,
`landscape plot`, for every kind of :mod:`any_model` (float inputs, BatchNorm and dropout,
attention, recurrent cells, three HuggingFace heads)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from any_model import HF_KINDS, KINDS, record
from click.testing import CliRunner

from landscape.cli import main
from landscape.runs.run import Run

TESTS = Path(__file__).parents[1]

STEP_PARTS = ("top", "trace", "slq", "exact", "sharpness", "overlap", "valley", "widths",
              "spread", "river", "slice_random", "slice_river_valley")
"""What a default probe stores at each checkpoint of a model under 3,000 parameters (the
overlap from the second probed checkpoint on)."""
RUN_PARTS = ("river_progress", "pca")
FIGURES = ("fig3_spectra", "sharpness", "slice_random_{name}", "slice_river_valley_{name}",
           "slice_pca_{name}", "valley_stats")


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    """The CLI imports any_model by name, as a user's package would be."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS),
                                                      os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _reference_loss(kind, model, probe):
    """The loss as the user's own training loop computes it, in float32, eval mode."""
    with torch.no_grad():
        return float(KINDS[kind].train_loss(model.eval(), probe))


pytestmark = pytest.mark.slow
"""10-50 s each on a loaded 2-core machine (1m40 of CPU for the nine): the default plan
runs SLQ (900 products) and the dense spectrum (P products) on every checkpoint, ~1 ms
per product on the plain models and ~8 ms on the HuggingFace ones."""


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_default_probe_and_plot_run_on_every_kind_of_model(kind, tmp_path):
    if kind in HF_KINDS:
        pytest.importorskip("transformers", reason="the hf extra is not installed")
    path = tmp_path / f"{kind}.h5"
    model = record(kind, path)
    res = _cli("probe", path, "--trust-code", "--steps", "2,3")
    assert res.exit_code == 0, res.output
    run = Run.open(path, trust_code=True)
    for step in (2, 3):
        missing = [p for p in STEP_PARTS if run.part(p, step) is None
                   and not (p == "overlap" and step == 2)]
        assert not missing, f"step {step}: {missing} not stored"
    assert all(run.part(p) is not None for p in RUN_PARTS)
    top, widths = run.part("top"), run.part("widths")  # widths: float64 parameters
    assert np.isfinite(top.values).all() and np.isfinite(widths.losses).all()
    # the probe's loss at the checkpoint is the user's own loss of the trained model
    grid = run.part("slice_random")
    centre = grid.loss[len(grid.alphas) // 2, len(grid.betas) // 2]
    np.testing.assert_allclose(centre, _reference_loss(kind, model, KINDS[kind].probe(99)),
                               rtol=1e-4)
    out = tmp_path / "figures"
    res = _cli("plot", path, "--out", out, "--format", "png")
    assert res.exit_code == 0, res.output
    written = {p.stem for p in out.glob("*.png")}
    missing = [f.format(name=kind) for f in FIGURES if f.format(name=kind) not in written]
    assert not missing, f"figures not written: {missing} (wrote {sorted(written)})"
