"""``landscape probe`` computes optimiser_valley and intervention where the run has what
they need (AdamW state, a window, an intervention start), and skips them with a note."""

import dataclasses

import numpy as np
import pytest
import torch
from helpers import tiny_recipe

from landscape.errors import LandscapeError
from landscape.geometry import optimiser_valley as ov
from landscape.probe import GeometrySettings, HessianSettings, ProbeSettings, probe
from landscape.probe import driver as drv
from landscape.probe.costs import plan_parts
from landscape.runfile import store
from landscape.runs.run import Run
from landscape.train.trainer import train

HS = HessianSettings(k_top=3, k_bottom=0, slq_runs=2, slq_steps=8, trace_hvps=3,
                     exact="never")
GS = GeometrySettings(grid=3, width_points=3, width_dirs=1, spread_k=2, spread_dirs=2,
                      valley_k=4, fallback_k=3, intervention_steps=8)


@pytest.fixture(scope="module")
def windowed(tmp_path_factory):
    """A tiny run with a window and an intervention start at checkpoint 8 (of 0, 8, ... 32)."""
    r = tiny_recipe(model={"d_model": 4, "n_heads": 1},
                    train={"window_steps": 8, "window_at": [8], "intervene_at": [8]})
    return train(r, tmp_path_factory.mktemp("ovd") / "run.h5")


def test_plain_probe_measures_both_parts_and_a_second_call_skips_them(windowed, tmp_path):
    path = store.copy_run(windowed, tmp_path / "r.h5")
    lines = []
    steps = probe(path, ProbeSettings(steps="spaced:2", hessian=HS, geometry=GS), lines.append)
    assert steps == [0, 8, 32]  # spaced:2 is 0 and 32; the window and intervention start join
    run = Run.open(path)
    valley = run.part("optimiser_valley", 8)
    assert valley.window_start == 8 and valley.alt_basis is not None  # the window's span
    assert valley.settings == {"valley_k": 4, "near_edge": 0.5, "fallback_k": 3,
                               "window_start": 8, "window_rows": 8}
    assert 1 <= valley.k <= 4 and valley.basis.shape == (valley.k, run.layout.size)
    later = run.part("optimiser_valley", 32)
    assert later.window_start == -1 and later.alt_basis is None  # no window there
    assert run.part("optimiser_valley", 0) is None  # AdamW had taken no step
    assert sum("optimiser_valley: skipped at step 0" in x for x in lines) == 1
    iv = run.part("intervention", 8)
    assert iv.steps == 8 and iv.valley_k == valley.k and iv.valley_source == "edge"
    assert run.part("intervention", 32) is None  # not a start
    # the unchanged arm is the recorded run: after K = 8 steps it is checkpoint 16, whose
    # probe loss the part holds
    with torch.no_grad():
        recorded = float(run.loss_fn("probe", step=16)(run.params(16)))
    assert iv.unchanged.loss_end == pytest.approx(recorded, abs=1e-6)
    assert iv.removed.valley < 1e-4 * max(iv.unchanged.valley, 1e-3)
    # a second call computes nothing: the file is not rewritten, only steps and notes said
    before = path.read_bytes()
    lines.clear()
    probe(path, ProbeSettings(steps="spaced:2", hessian=HS, geometry=GS), lines.append)
    assert path.read_bytes() == before
    assert all(x.startswith(("step ", drv.NOTE)) for x in lines)
    # another K recomputes the intervention only
    lines.clear()
    probe(path, ProbeSettings(steps="8", hessian=HS, geometry=dataclasses.replace(
        GS, intervention_steps=4)), lines.append)
    assert Run.open(path).part("intervention", 8).steps == 4
    assert any("intervention (4 steps" in x for x in lines)
    assert not any("optimiser's valley" in x for x in lines)


def test_a_run_without_windows_or_starts_probes_as_before(trained_runs, tmp_path):
    path = store.copy_run(trained_runs["looped"], tmp_path / "r.h5")
    run = Run.open(path)
    assert run.windows() == [] and run.intervention_starts() == []
    assert drv.select_steps(run, "spaced:2") == [0, int(run.steps[-1])]
    lines = []
    probe(path, ProbeSettings(steps="16", hessian=HS, geometry=GS), lines.append)
    run = Run.open(path)
    assert run.part("intervention", 16) is None
    valley = run.part("optimiser_valley", 16)  # AdamW's state is stored: measured
    assert valley is not None and valley.alt_basis is None
    assert any(x.startswith(drv.NOTE + "intervention: none") for x in lines)
    # without the Hessian probe the geometry cannot run from nothing: refused in one line
    bare = store.copy_run(trained_runs["single"], tmp_path / "s.h5")
    with pytest.raises(LandscapeError, match="no Hessian probe"):
        probe(bare, ProbeSettings(steps="16", hessian=None, geometry=GS))


def test_an_unprobed_start_is_named(windowed, tmp_path):
    path = store.copy_run(windowed, tmp_path / "r.h5")
    lines = []
    probe(path, ProbeSettings(steps="16", hessian=HS, geometry=GS), lines.append)
    assert any("intervention starts at steps [8] are not among" in x for x in lines)
    assert Run.open(path).part("intervention", 8) is None


def test_settings_defaults_and_bad_values():
    gs = GeometrySettings()
    assert (gs.near_edge, gs.fallback_k) == (ov.NEAR_EDGE, ov.FALLBACK_K)
    assert gs.intervention_steps == 32 and gs.valley_k >= gs.fallback_k
    for bad in ({"fallback_k": 0}, {"valley_k": 2, "fallback_k": 3}, {"near_edge": 0.0},
                {"near_edge": 1.5}, {"intervention_steps": 0}):
        with pytest.raises(LandscapeError, match="geometry"):
            GeometrySettings(**bad)


def test_the_plan_counts_both_parts_only_where_they_run():
    from types import SimpleNamespace

    c = SimpleNamespace(params=500, itemsize=4, device="cpu", forward_s=1e-3, gradient_s=2e-3,
                        graph_s=3e-3, hvp_s=4e-3, vector_s=1e-6, graph_bytes=10_000,
                        forward_bytes=5_000, eigh_s_per_n3=1e-9, ritz_s_per_m2=1e-7)
    names = {p.name: p for p in plan_parts(c, HS, GS, adam=True, intervention=True)}
    assert names["geometry/intervention"].seconds == pytest.approx(
        2 * 8 * 2e-3 + 3 * 1e-3)
    assert names["geometry/optimiser_valley"].hvps >= 2 * 4
    plain = {p.name for p in plan_parts(c, HS, GS)}
    assert not {"geometry/intervention", "geometry/optimiser_valley"} & plain
    assert np.isfinite(names["geometry/optimiser_valley"].seconds)
