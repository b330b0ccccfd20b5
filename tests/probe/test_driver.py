import dataclasses

import numpy as np
import pytest
import torch
from helpers import tiny_recipe

from landscape.curvature.hessian import dense_hessian_reference
from landscape.errors import LandscapeError
from landscape.probe import GeometrySettings, HessianSettings, ProbeSettings, probe
from landscape.probe import driver as drv
from landscape.runfile import schema, store
from landscape.runs.run import Run
from landscape.train.trainer import train

SMALL_H = HessianSettings(k_top=4, k_bottom=2, slq_runs=3, slq_steps=20, trace_hvps=30)
SMALL_G = GeometrySettings(grid=5, width_points=7, width_dirs=2)


def _copy(src, tmp_path, name="r.h5"):
    return store.copy_run(src, tmp_path / name)


@pytest.fixture(scope="module")
def probed(trained_runs, tmp_path_factory):
    """The tiny SHIFT run, probed once (Hessian and geometry) at three checkpoints."""
    path = _copy(trained_runs["shift"], tmp_path_factory.mktemp("probe"))
    steps = probe(path, ProbeSettings(steps="spaced:3", hessian=SMALL_H, geometry=SMALL_G))
    return path, steps


def test_every_part_is_stored(probed):
    path, steps = probed
    run = Run.open(path)
    assert steps == [0, 16, 32] and run.probed_steps == steps  # the switch (16) included
    for s in steps:
        h = run.hessian(s)
        assert {"top", "trace", "slq", "exact", "sharpness"} <= set(h)
        assert isinstance(h["top"], schema.Top)
        assert h["top"].hvps > 0 and h["top"].seconds >= 0
        assert h["top"].vectors.shape == (4, run.layout.size)
        assert h["slq"].nodes.shape == (3, 20)
        g = run.geometry(s)
        assert {"valley", "widths", "river", "slice_random"} <= set(g)
        assert g["slice_random"].loss.shape == (5, 5)
        assert set(g["slice_random"].directions["x"]) == set(run.layout.names)
    assert "overlap" in run.hessian(16) and "overlap" not in run.hessian(0)
    assert run.hessian(32)["top"].loops == 3
    assert run.hessian(16)["top"].loops == 1
    for part in ("river_progress", "pca", "loops", "switch", "qk_alignment"):
        assert run.part(part) is not None, part


def test_top_and_bottom_match_the_exact_spectrum(probed):
    run = Run.open(probed[0])
    for s in probed[1]:
        h = run.hessian(s)
        exact = np.sort(h["exact"].eigvals)
        top, conv = h["top"].values, h["top"].converged
        scale = np.abs(exact).max()
        np.testing.assert_allclose(top[conv], exact[::-1][: len(top)][conv], atol=1e-3 * scale)
        bottom = h["top"].bottom_values
        np.testing.assert_allclose(bottom, exact[: len(bottom)], atol=1e-3 * scale)
        tr = h["trace"]
        assert abs(tr.estimate - exact.sum()) < 5 * tr.stderr + 1e-3 * np.abs(exact).sum()
        assert h["sharpness"].lambda_max == pytest.approx(top[0])


def test_probe_hessian_is_the_dense_hessian_in_float64(trained_runs, tmp_path):
    path = _copy(trained_runs["looped"], tmp_path)
    hs = HessianSettings(k_top=3, k_bottom=2, slq_runs=2, slq_steps=10, trace_hvps=10,
                         dtype="float64", exact="never")
    probe(path, ProbeSettings(steps="last", hessian=hs))
    run = Run.open(path)
    h = run.hessian(-1)["top"]
    dense = dense_hessian_reference(run.loss_fn("probe"), run.params(dtype=torch.float64))
    truth = np.linalg.eigvalsh(dense.numpy())
    assert h.loops == 3 and h.converged.all()
    np.testing.assert_allclose(h.values, truth[::-1][:3], rtol=1e-8)
    np.testing.assert_allclose(h.bottom_values, truth[:2], rtol=1e-8)


def test_second_call_does_nothing_and_force_recomputes(probed, tmp_path):
    path = _copy(probed[0], tmp_path)
    before = path.read_bytes()
    settings = ProbeSettings(steps="spaced:3", hessian=SMALL_H, geometry=SMALL_G)
    lines = []
    probe(path, settings, lines.append)
    assert path.read_bytes() == before  # nothing recomputed, nothing rewritten
    assert all(line.startswith(("step ", drv.NOTE)) for line in lines)
    probe(path, ProbeSettings(steps="0", hessian=SMALL_H, force=True), lines.append)
    assert any("hessian top" in line for line in lines)


def test_killed_probe_resumes_to_the_same_results(trained_runs, tmp_path, monkeypatch):
    full = _copy(trained_runs["single"], tmp_path, "full.h5")
    cut = _copy(trained_runs["single"], tmp_path, "cut.h5")
    settings = ProbeSettings(steps="spaced:2", hessian=SMALL_H)
    probe(full, settings)
    real, calls = drv.Driver.save, {"n": 0}

    def dies_on_fifth(self, part, step):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # a kill between two parts
        return real(self, part, step)

    monkeypatch.setattr(drv.Driver, "save", dies_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        probe(cut, settings)
    monkeypatch.setattr(drv.Driver, "save", real)
    assert store.writer_holding(cut) is None
    probe(cut, settings)
    a, b = Run.open(full), Run.open(cut)
    for s in a.probed_steps:
        for part in ("top", "trace", "slq", "exact"):
            for key in ("values", "estimate", "nodes", "eigvals"):
                if hasattr(a.hessian(s)[part], key):
                    np.testing.assert_array_equal(getattr(a.hessian(s)[part], key),
                                                  getattr(b.hessian(s)[part], key))
    np.testing.assert_array_equal(a.trajectory(), b.trajectory())


def test_probe_never_touches_the_trajectory(probed, trained_runs):
    np.testing.assert_array_equal(Run.open(probed[0]).trajectory(),
                                  Run.open(trained_runs["shift"]).trajectory())


def test_bad_input(trained_runs, tmp_path):
    path = _copy(trained_runs["single"], tmp_path)
    with pytest.raises(LandscapeError, match="step 5 is not a checkpoint"):
        probe(path, ProbeSettings(steps="5", hessian=SMALL_H))
    with pytest.raises(LandscapeError, match="exceeds the model's"):
        probe(path, ProbeSettings(hessian=HessianSettings(k_top=100000)))
    with pytest.raises(LandscapeError, match="has no Hessian probe"):
        probe(path, ProbeSettings(steps="last", hessian=None, geometry=SMALL_G))
    with pytest.raises(LandscapeError, match="steps 'x'"):
        probe(path, ProbeSettings(steps="x", hessian=SMALL_H))
    with store.writer_lock(path, "training"):
        with pytest.raises(LandscapeError, match="being written by training"):
            probe(path, ProbeSettings(steps="last", hessian=SMALL_H))
    with pytest.raises(LandscapeError, match="has no hessian probe"):
        Run.open(path).hessian(-1)


def test_file_without_probe_set_is_refused(trained_runs, tmp_path):
    import h5py

    path = _copy(trained_runs["single"], tmp_path)
    with h5py.File(path, "a") as f:
        for k in list(f["probe_set"]):
            del f["probe_set"][k]
    with pytest.raises(LandscapeError, match="no probe set"):
        probe(path, ProbeSettings(steps="last", hessian=SMALL_H))


def test_killed_grid_resumes_from_its_done_cells(trained_runs, tmp_path, monkeypatch):
    settings = ProbeSettings(steps="last", hessian=SMALL_H,
                             geometry=GeometrySettings(grid=7, width_points=7, width_dirs=1))
    ref, path = (_copy(trained_runs["single"], tmp_path, n) for n in ("ref.h5", "cut.h5"))
    probe(ref, settings)
    monkeypatch.setattr(drv, "PARTIAL_EVERY_S", 0.0)  # commit after every cell
    real, calls = drv._ResumableGrid.cells_done, {"n": 0}

    def dies_after_20_cells(self, cells, losses):
        real(self, cells, losses)
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt

    monkeypatch.setattr(drv._ResumableGrid, "cells_done", dies_after_20_cells)
    with pytest.raises(KeyboardInterrupt):
        probe(path, settings)
    monkeypatch.setattr(drv._ResumableGrid, "cells_done", real)
    group = schema.SliceRandom.group(Run.open(path).steps[-1])
    half = schema.read_partial(path, schema.SliceRandom, group)
    assert half.complete is False and half.done.sum() == 20
    assert schema.read(path, schema.SliceRandom, Run.open(path).steps[-1]) is None
    probe(path, settings)
    done, full = Run.open(path).slices(-1)["random"], Run.open(ref).slices(-1)["random"]
    assert done.resumed_cells == 20 and full.resumed_cells == 0
    np.testing.assert_array_equal(done.loss, full.loss)


def test_probe_on_an_explicit_cpu_device(trained_runs, tmp_path):
    path = _copy(trained_runs["single"], tmp_path)
    probe(path, ProbeSettings(steps="last", hessian=SMALL_H, device="cpu"))
    assert Run.open(path).hessian(-1)["top"].converged.any()
    if not torch.cuda.is_available():
        with pytest.raises(LandscapeError, match="no CUDA device"):
            probe(path, ProbeSettings(steps="last", hessian=SMALL_H, device="cuda"))


# ----------------------------------------------------------------------- shared plane

NO_H = HessianSettings(k_top=2, k_bottom=0, slq_runs=1, slq_steps=4, trace_hvps=4,
                       exact="never")


def _shared(path, spec, steps="0,32", force=False):
    g = GeometrySettings(grid=5, width_points=7, width_dirs=1, shared_plane=spec)
    probe(path, ProbeSettings(steps=steps, hessian=NO_H, geometry=g, force=force))
    run = Run.open(path)
    return {int(s): run.slices(int(s))["shared"] for s in steps.split(",")}


def test_shared_plane_is_one_plane_for_runs_from_one_initialisation(trained_runs, tmp_path):
    from landscape.geometry.directions import filter_norms

    single = _copy(trained_runs["single"], tmp_path, "single.h5")
    looped = _copy(trained_runs["looped"], tmp_path, "looped.h5")
    a, b = _shared(single, "init"), _shared(looped, f"{single}:0")
    hashes = {g.plane_hash for g in (*a.values(), *b.values())}
    assert len(hashes) == 1  # same directions at every step of both runs
    assert b[32].plane["reference"] == "single.h5 step 0"
    assert a[0].plane["kind"] == "shared"
    run = Run.open(single)
    init = run.params(0, dtype=torch.float32)
    for name, w in init.items():
        x = torch.as_tensor(a[32].directions["x"][name])
        np.testing.assert_array_equal(x, b[0].directions["x"][name])
        if w.ndim >= 2:  # filter-normalised against the reference, not the checkpoint
            np.testing.assert_allclose(filter_norms(x), filter_norms(w), rtol=1e-5)
    for path, grids in ((single, a), (looped, b)):
        r = Run.open(path)
        for s, g in grids.items():
            base = float(r.loss_fn("probe")(r.params(s, dtype=torch.float32)))
            assert g.loss[2, 2] == pytest.approx(base, rel=1e-5)
    assert not np.allclose(b[32].loss, a[32].loss)  # each around its own weights


def test_shared_plane_on_another_reference_is_recomputed(trained_runs, tmp_path):
    path = _copy(trained_runs["looped"], tmp_path)
    first = _shared(path, "init", steps="0")
    again = _shared(path, f"{path}:32", steps="0")  # other settings: no --force needed
    assert again[0].plane["reference"] == "r.h5 step 32"
    assert again[0].plane_hash != first[0].plane_hash
    assert not np.array_equal(again[0].loss, first[0].loss)


# ------------------------------------------------------- reuse only with the same settings


def test_a_changed_grid_is_recomputed_and_the_same_settings_are_skipped(probed, tmp_path):
    path = _copy(probed[0], tmp_path)
    settings = ProbeSettings(steps="32", hessian=SMALL_H, geometry=SMALL_G)
    before = {n: Run.open(path).part(n, 32) for n in ("slice_random", "valley", "top")}
    lines = []
    probe(path, dataclasses.replace(settings, geometry=dataclasses.replace(SMALL_G, grid=7)),
          lines.append)
    run = Run.open(path)
    grid = run.part("slice_random", 32)
    assert before["slice_random"].loss.shape == (5, 5) and grid.loss.shape == (7, 7)
    assert grid.settings["grid"] == 7
    assert grid.fingerprint != before["slice_random"].fingerprint
    assert any("2-D slice, random plane" in line for line in lines)
    assert any("river x valley" in line for line in lines)  # its grid changed too
    # what --grid does not shape was kept as it was, byte for byte
    assert not any("hessian" in line or "valley split" in line for line in lines)
    for name in ("valley", "top"):
        assert run.part(name, 32).fingerprint == before[name].fingerprint
        assert run.part(name, 32).seconds == before[name].seconds
    again = path.read_bytes()
    lines.clear()
    probe(path, dataclasses.replace(settings, geometry=dataclasses.replace(SMALL_G, grid=7)),
          lines.append)
    assert path.read_bytes() == again
    assert [x for x in lines if not x.startswith(drv.NOTE)] == ["step 32 (loops 3)"]


def test_a_changed_k_recomputes_the_parts_built_on_the_top_eigenpairs(probed, tmp_path):
    path = _copy(probed[0], tmp_path)
    old = {n: Run.open(path).part(n, 0) for n in ("top", "trace", "sharpness", "slq", "exact")}
    probe(path, ProbeSettings(steps="0", hessian=dataclasses.replace(SMALL_H, k_top=3)))
    run = Run.open(path)
    assert run.part("top", 0).values.shape == (3,) and old["top"].values.shape == (4,)
    for name in ("trace", "sharpness"):  # computed from the top eigenpairs: recomputed
        assert run.part(name, 0).fingerprint != old[name].fingerprint, name
    for name in ("slq", "exact"):  # independent of k: kept
        assert run.part(name, 0).seconds == old[name].seconds, name
    # a geometry-only call uses the stored Hessian parts as they are, and recomputes the
    # valley split because the top eigenpairs it was computed from changed
    valley = run.part("valley", 0)
    probe(path, ProbeSettings(steps="0", hessian=None, geometry=SMALL_G))
    assert Run.open(path).part("valley", 0).fingerprint != valley.fingerprint


def test_shared_plane_bad_references(trained_runs, tmp_path):
    path = _copy(trained_runs["single"], tmp_path)
    other = train(tiny_recipe(model={"d_model": 12}), tmp_path / "wide.h5")
    before = path.read_bytes()
    for spec, message in ((str(tmp_path / "missing.h5"), "missing.h5"),
                          (f"{trained_runs['looped']}:7", "step 7 is not a checkpoint"),
                          (str(other), "different parameter layout")):
        with pytest.raises(LandscapeError, match=message):
            _shared(path, spec)
    assert path.read_bytes() == before


def test_shared_plane_figure_refuses_runs_on_different_planes(trained_runs, tmp_path):
    from landscape.analysis import series
    from landscape.draw import figures

    single = _copy(trained_runs["single"], tmp_path, "single.h5")
    looped = _copy(trained_runs["looped"], tmp_path, "looped.h5")
    _shared(single, "init")
    _shared(looped, f"{looped}:32")  # normalised against another checkpoint
    groups = series.group_runs([Run.open(single), Run.open(looped)])
    with pytest.raises(LandscapeError, match="not on one plane"):
        figures.shared_plane(groups)
    _shared(looped, "init", force=True)
    figs = figures.shared_plane(series.group_runs([Run.open(single), Run.open(looped)]))
    assert [ax.get_title().split(",")[0] for ax in figs["shared_plane"].axes[:2]] == [
        "Single-Attn", "Single-Attn"]


@pytest.mark.parametrize("key", ["grid", "width_points"])
def test_an_even_grid_setting_is_refused_by_its_own_name(key):
    with pytest.raises(LandscapeError, match=f"geometry: {key}=4 must be odd"):
        GeometrySettings(**{key: 4})


def test_figures_of_a_trained_run_count_epochs(probed):
    from landscape.analysis import series
    from landscape.draw import figures

    run = Run.open(probed[0])
    assert series.time_unit(run) == "epoch" and run.attrs["steps_per_epoch"] > 1
    groups = {"markov": {"single": [run], "looped": [run]}}
    spectra = figures.spectra(groups)["fig3_spectra"]
    entropy_axes = [ax for ax in spectra.axes if ax.get_ylabel() == "entropy (nats)"]
    assert {ax.get_xlabel() for ax in entropy_axes} == {"epoch"}
    np.testing.assert_allclose(entropy_axes[0].get_lines()[-1].get_xdata(),
                               np.array(probed[1]) / run.attrs["steps_per_epoch"])
    assert {ax.get_xlabel() for ax in figures.valley(groups)["valley_stats"].axes[:3]} == {
        "epoch"}
    assert {ax.get_xlabel() for ax in figures.sharpness(groups)["sharpness"].axes} == {"epoch"}


def test_a_stale_part_is_computed_anew_and_a_missing_file_is_reported(trained_runs, tmp_path):
    path = _copy(trained_runs["single"], tmp_path)
    hs = HessianSettings(k_top=2, k_bottom=0, slq_runs=1, slq_steps=5, trace_hvps=4,
                         exact="never")
    settings = ProbeSettings(steps="last", hessian=hs)
    probe(path, settings)
    step = int(Run.open(path).steps[-1])
    top = Run.open(path).part("top", step)
    group = schema.Top.group(step)
    store.commit(path, lambda tx: tx.delete(f"{group}/values"))  # as another version wrote it
    with pytest.raises(schema.StaleError):
        Run.open(path).part("top", step)
    probe(path, settings)  # another version's part: computed anew, no error
    np.testing.assert_allclose(Run.open(path).part("top", step).values, top.values, rtol=1e-5)
    big = np.zeros((2, store.SIDECAR_MIN_BYTES // 8), np.float32)  # stored in a file of its own
    store.commit(path, lambda tx: tx.put(group, {"vectors": big}))
    sidecar = next(store.sidecar_dir(path).glob(f"probe.step_{step}.hessian.top.vectors-*"))
    sidecar.unlink()  # e.g. the index copied without its folder
    with pytest.raises(LandscapeError, match="is missing"):
        probe(path, settings)  # reported, never silently computed over


# --- the curvatures: Hessian, GGN, empirical Fisher --------------------------------------


def _cli(*args):
    from click.testing import CliRunner

    from landscape.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


SMALL_CLI = ("--k", 3, "--k-bottom", 1, "--slq-runs", 2, "--slq-steps", 10, "--trace-hvps", 10,
             "--dtype", "float64", "-q")


@pytest.fixture(scope="module")
def three_curvatures(trained_runs, tmp_path_factory):
    """The tiny single run probed at its last checkpoint on all three curvatures."""
    path = _copy(trained_runs["single"], tmp_path_factory.mktemp("curvatures"))
    r = _cli("probe", path, "--steps", "last", "--curvature", "hessian,ggn,fisher",
             "--no-geometry", *SMALL_CLI)
    assert r.exit_code == 0, r.output
    return path


def test_each_curvature_is_stored_in_its_own_group(three_curvatures):
    run = Run.open(three_curvatures)
    step = int(run.steps[-1])
    tops = {}
    for c in schema.CURVATURES:
        got = run.curvature(step, c)
        assert {"top", "trace", "slq", "exact", "sharpness"} <= set(got), c
        assert all(p.curvature == c for p in got.values())
        assert store.read_group(three_curvatures, f"probe/step_{step}/{c}/top") is not None
        tops[c] = got["top"].values
    assert run.hessian(step)["top"].curvature == "hessian"  # run.hessian stays the Hessian's
    assert not np.allclose(tops["hessian"], tops["ggn"])  # three matrices, not one stored thrice
    assert not np.allclose(tops["ggn"], tops["fisher"])


def test_the_stored_ggn_spectrum_is_lanczos_on_the_ggn_operator(three_curvatures):
    from landscape.curvature.ggn import GGNOperator
    from landscape.curvature.spectral import exact_spectrum, lanczos

    run = Run.open(three_curvatures)
    step = int(run.steps[-1])
    ggn = run.curvature(step, "ggn")
    op = GGNOperator(run.split_objective(step=step), run.params(step, dtype=torch.float64))
    direct = lanczos(op, k_top=3, k_bottom=1, tol=1e-8)
    np.testing.assert_allclose(ggn["top"].values, direct.top_values, rtol=1e-7)
    assert ggn["top"].converged.all()
    eig = ggn["exact"].eigvals  # positive semi-definite, to rounding
    assert eig.min() >= -1e-10 * eig.max() and ggn["top"].bottom_values.min() >= -1e-10
    np.testing.assert_allclose(np.sort(eig), np.sort(exact_spectrum(op)), atol=1e-10)
    assert run.curvature(step, "hessian")["exact"].eigvals.min() < -1e-10 * eig.max()


def test_only_the_asked_curvatures_are_probed(trained_runs, tmp_path):
    path = _copy(trained_runs["single"], tmp_path)
    r = _cli("probe", path, "--steps", "last", "--curvature", "ggn", "--no-geometry", *SMALL_CLI)
    assert r.exit_code == 0, r.output
    run = Run.open(path)
    assert run.curvature(-1, "ggn")["top"].values[0] > 0
    for c in ("hessian", "fisher"):
        with pytest.raises(schema.NotProbed, match=f"--curvature {c}|--hessian"):
            run.curvature(-1, c)


@pytest.mark.slow
@pytest.mark.parametrize("valley", ["hessian", "ggn"])
def test_the_valley_split_uses_the_hessian_unless_asked(trained_runs, tmp_path, valley):
    path = _copy(trained_runs["single"], tmp_path)
    settings = ProbeSettings(steps="last", hessian=dataclasses.replace(SMALL_H, slq_runs=2),
                             geometry=SMALL_G, curvatures=("hessian", "ggn"),
                             valley_curvature=valley)
    probe(path, settings)
    run = Run.open(path)
    tops = {c: run.curvature(-1, c)["top"].values[0] for c in ("hessian", "ggn")}
    assert not np.isclose(tops["hessian"], tops["ggn"])
    assert run.valley(-1).lambda_max == pytest.approx(tops[valley], rel=1e-6)


def test_a_custom_loss_without_declared_output_is_refused_in_one_line(tmp_path, monkeypatch):
    import os
    from pathlib import Path

    import own_model

    import landscape

    tests = Path(own_model.__file__).parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tests),
                                                      os.environ.get("PYTHONPATH", "")]))
    path = tmp_path / "mine.h5"
    model = own_model.build_kw()
    ids = torch.randint(0, own_model.VOCAB, (4, own_model.T),
                        generator=torch.Generator().manual_seed(0))
    with landscape.Recorder(path, model, probe={"input_ids": ids,
                                                "attention_mask": torch.ones_like(ids)},
                            loss="own_model:masked_loss", factory="own_model:build_kw") as rec:
        rec.checkpoint(0)
    before = store.read_group(path, "probe")
    r = _cli("probe", path, "--trust-code", "--curvature", "hessian,ggn", "--no-geometry", "-q")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert "output_loss" in r.output
    assert store.read_group(path, "probe") == before  # refused before any work
    r = _cli("probe", path, "--trust-code", "--no-geometry", *SMALL_CLI)  # the Hessian can
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("value", ["gnn", ",", "hessian,fisherman", "Hessian"])
def test_an_unknown_curvature_is_refused_by_name(trained_runs, tmp_path, value):
    r = _cli("probe", trained_runs["single"], "--curvature", value)
    assert r.exit_code == 2 and "--curvature" in r.output, r.output
    assert r.output.count("\n") == 1


def test_the_cli_knows_the_schema_s_curvatures():
    from landscape.cli import CURVATURE_NAMES

    assert CURVATURE_NAMES == schema.CURVATURES


def test_valley_figures_name_the_runs_they_draw_not_every_run_of_the_group(probed,
                                                                           trained_runs):
    """The paper preset probes one seed of many: the others are neither drawn nor named."""
    from landscape.analysis import series
    from landscape.draw import figures, plot

    run, unprobed = Run.open(probed[0]), Run.open(trained_runs["single"])
    assert not unprobed.probed_steps
    figs = figures.valley({"markov": {"single": [run, unprobed], "looped": [run]}})
    for fig in figs.values():
        text = plot.caption(fig)
        assert text.endswith("data: SHIFT, seed 0.") and "Single-Attn, seed" not in text
    assert series.valley_series(run).epoch.size == len(probed[1])
