"""Every figure renders from tiny synthetic arrays; style, saving and missing data behave."""

from __future__ import annotations

import importlib
import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from landscape.analysis import series
from landscape.analysis.series import (
    AblationRow,
    BlockSeries,
    Curve,
    LengthSeries,
    SharpnessSeries,
    ShiftTimeline,
    SpectrumCheckpoint,
    SweepCurve,
    UVSweep,
    ValleySeries,
    WallClock,
    WidthSeries,
)
from landscape.draw import plot
from landscape.errors import LandscapeError  # noqa: E402
from landscape.geometry import simulator  # noqa: E402
from landscape.geometry.phases import matrix_entropy, phase_rule  # noqa: E402
from landscape.geometry.slices import basin_share  # noqa: E402
from landscape.runfile.schema import Grid, LoopCurve, SwitchSide  # noqa: E402

EP = np.arange(0.0, 60.0, 10.0)  # 6 checkpoints


def _drawn_phases(entropy):
    """What figures.spectra passes: claim 2's rule as Phases."""
    return phase_rule(EP, entropy).as_phases(EP, entropy)


def _run(level, seed, wall_rate=1.0, switch_epoch=None):
    r = np.random.default_rng(seed)
    return Curve({"epoch": EP, "simple.acc": 0.9 - 0.5 * np.exp(-EP / 10),
                  "complex.acc": level - 0.2 * np.exp(-EP / 20)
                  + 0.01 * r.standard_normal(EP.size),
                  "simple.loss": 0.5 + np.exp(-EP / 10), "complex.loss": 1.5 + np.exp(-EP / 20),
                  "wall": wall_rate * EP}, switch_epoch=switch_epoch)  # fmt: skip


def _curves():
    return {"single": [_run(0.45, s) for s in range(2)],
            "looped": [_run(0.55, s, 3.0) for s in range(2)]}


def _grid(loss, a, b):
    return Grid(alphas=np.asarray(a, float), betas=np.asarray(b, float),
                loss=np.asarray(loss, float), plane={}, plane_hash="")


def _loops(loops, loss, lam, trained=3):
    n = len(loops)
    return LoopCurve(loops=np.asarray(loops), loss=np.asarray(loss, float),
                     lambda_max=np.asarray(lam, float), converged=np.ones(n, bool),
                     hvps_per_loop=np.zeros(n), step=0, trained_loops=trained)


def _side(loss, top, trace):
    return SwitchSide(loss=loss, values=np.array([top]), trace=trace, trace_stderr=0.0)


def _sharp(lam=None, adam=True):
    lam = 1 + EP if lam is None else lam
    return SharpnessSeries(EP, lam, np.full(EP.size, 40.0), 10 * lam if adam else None,
                           np.full(EP.size, 380.0) if adam else None)


def _valley(kappa, count=None, force=None):
    nan = np.full(EP.size, np.nan)
    return ValleySeries(EP, 10 * EP, kappa, nan, nan, nan if count is None else count,
                        nan if force is None else force, np.array(["U"] * EP.size))


def _sweep_curve(scale, seed):
    eps = np.geomspace(1e-4, 1e-1, 5)
    return SweepCurve(seed, 30, eps, scale / eps ** 0.5, 10 - np.arange(5.0),
                      scale * np.arange(5.0, 0, -1), np.array([0, 0, 0, 1, 1.0]))


def _spectrum(k, p=60, seed=0):
    r = np.random.default_rng(seed)
    return np.concatenate([1e-5 * r.standard_normal(p - k), np.geomspace(10, 0.01, k), [-0.05]])


ENT_V = [20, 8, 4, 10, 20, 20]


def _spectra():
    return {"single": [SpectrumCheckpoint.of(e, eigvals=_spectrum(12, seed=i))
                       for i, e in enumerate(EP)],
            "looped": [SpectrumCheckpoint.of(e, eigvals=_spectrum(k, seed=i))
                       for i, (e, k) in enumerate(zip(EP, ENT_V))]}  # fmt: skip


@pytest.fixture(scope="module")
def sims():
    c = simulator.compare(n_valley=4, steps=30, grid=11)
    return c.u, c.v


def _binned_spectra():
    """The synthetic spectra as the spectra figure takes them: bins and entropy series."""
    sp = _spectra()
    return series.binned_spectra(sp), {m: series.spectra_entropy(c) for m, c in sp.items()}


def _figures(sims):
    """One call per figure function, from small synthetic results."""
    sp = _spectra()
    ph = {m: _drawn_phases([matrix_entropy(c.eigvals) for c in sp[m]]) for m in sp}
    binned, entropy = _binned_spectra()
    shift = _run(0.54, 9, 2.0, switch_epoch=20.0)
    st = np.arange(0.0, 100.0, 20.0)
    a, b = np.linspace(-1, 1, 5), np.linspace(-1, 1, 3)
    loops = np.arange(1, 5)

    def task(scale, switch=None):
        return Curve({"step": st, "iid.seq_acc": st / scale}, switch_step=switch)

    return {
        "concept": lambda: plot.concept(*sims, ShiftTimeline(switch=20.0, end=50.0)),
        "sample_dynamics": lambda: plot.sample_dynamics(
            _curves(), {"simple": {"acc": 0.95, "loss": 0.4}, "complex": {"acc": 0.6}}),
        "spectra": lambda: plot.spectra(binned, entropy, phases=ph, max_checkpoints=3),
        "shift_comparison": lambda: plot.shift_comparison(dict(_curves(), shift=shift)),
        "algorithmic_wallclock": lambda: plot.algorithmic_wallclock(
            {"parity": {"looped": WallClock(30.0, 0.99), "shift": WallClock(20.0, 0.98)},
             "copy": {"looped": WallClock(40.0, 1.0)}}),
        "task_curves": lambda: plot.task_curves(
            {t: {"looped": task(100), "shift": task(120, 40.0)} for t in ("parity", "copy")}),
        "length_generalization": lambda: plot.length_generalization(
            {"single": LengthSeries(st + 4, 1 - st / 100),
             "looped": [LengthSeries(st + 4, 1 - st / 200)]}, train_range=(4, 30)),
        "valley_width_vs_river": lambda: plot.valley_width_vs_river(
            {"looped": WidthSeries(EP, EP, np.outer(np.exp(-EP / 30), [1, 3]),
                                   np.outer(np.exp(-EP / 30), [1.1, 2.5])),
             "single": WidthSeries(EP, EP, np.ones((6, 1)), np.ones((6, 1)))}),
        "valley_stats": lambda: plot.valley_stats(
            {"looped": _valley(np.geomspace(2, 200, 6), EP // 10, np.geomspace(1, 1e3, 6)),
             "single": [_valley(1.5 + 0 * EP, 1 + 0 * EP, 2 + 0 * EP)] * 2}),
        "valley_sweep": lambda: plot.valley_sweep(UVSweep(
            [_sweep_curve(1.0, s) for s in range(2)], [_sweep_curve(3.0, s) for s in range(2)])),
        "slice_1d": lambda: plot.slice_1d(a, {"river": 1 - 0.1 * a, "valley": 1 + a**2}),
        "slice_2d": lambda: plot.slice_2d(_grid(1 + np.add.outer(a**2, b**2), a, b),
                                          [[-1, 0.5], [0, 0]], "plane", log_levels=True),
        "shared_slices": lambda: plot.shared_slices(
            {"single": {"epoch 10": _grid(1 + np.add.outer(a**2, b**2), a, b)},
             "looped": {"epoch 10": _grid(1 + np.add.outer(4 * a**2, b**2), a, b),
                        "epoch 20": _grid(1 + np.add.outer(9 * a**2, b**2), a, b)}}),
        "loop_curve": lambda: plot.loop_curve(
            {"single": _loops(loops, 1 + (loops - 3) ** 2, 5.0 * loops, 1),
             "looped": _loops(loops, 1 + 0.1 * loops, 2.0 * loops)}),
        "switch_diagnostics": lambda: plot.switch_diagnostics(
            _side(1.0, 2.0, 10.0), _side(1.5, 9.0, 30.0), np.array([0.9, 0.5, 0.1]), 100),
        "sharpness": lambda: plot.sharpness(_sharp(), model="looped"),
        "block_spectra": lambda: plot.block_spectra(_blocks(3, stderr=0.5), title="mine"),
    }  # fmt: skip


FIGURES = list(_figures((None, None)))


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


# ----------------------------------------------------------------------- every figure


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_renders_saves_and_leaves_no_state(name, sims, tmp_path):
    before = dict(matplotlib.rcParams)
    fig = _figures(sims)[name]()
    assert isinstance(fig, matplotlib.figure.Figure) and fig.axes
    assert dict(matplotlib.rcParams) == before
    paths = plot.save(fig, tmp_path / name, metadata={"figure": name}, dpi=40)
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert plt.get_fignums() == []
    assert dict(matplotlib.rcParams) == before


def test_importing_the_module_changes_no_rcparams():
    before = dict(matplotlib.rcParams)
    importlib.reload(plot)  # runs the module's top level again
    assert dict(matplotlib.rcParams) == before


def test_style_is_applied_inside_the_figure_only():
    before = matplotlib.rcParams["font.size"]
    fig = plot.slice_1d([0, 1, 2], {"d": [1, 0, 1]})
    ax = fig.axes[0]
    assert ax.xaxis.label.get_fontsize() == plot.STYLE["axes.labelsize"]
    assert ax.xaxis.get_major_ticks()[0].label1.get_fontsize() == plot.STYLE["xtick.labelsize"]
    assert matplotlib.rcParams["font.size"] == before
    assert plt.get_fignums() == []  # figures are not registered with pyplot


def test_model_colors_are_fixed():
    fig = plot.sample_dynamics({"looped": _run(0.5, 0), "single": _run(0.4, 1)})
    colors = {ln.get_label(): ln.get_color() for ln in fig.axes[0].get_lines()}
    assert colors["Single-Attn"] == plot.MODEL_COLORS["single"]
    assert colors["Looped-Attn"] == plot.MODEL_COLORS["looped"]


def test_figsize_from_column_width():
    assert plot.figsize("column", 0.5) == (3.25, 1.625)
    assert plot.figsize("page")[0] == 6.75
    assert plot.figsize(4.0, 1.0) == (4.0, 4.0)
    with pytest.raises(LandscapeError, match="width"):
        plot.figsize("poster")


def test_latex_only_where_installed(monkeypatch):
    monkeypatch.setattr(plot.shutil, "which", lambda name: None)
    assert plot.rc_params(usetex=True)["text.usetex"] is False
    monkeypatch.setattr(plot.shutil, "which", lambda name: "/usr/bin/latex")
    assert plot.rc_params(usetex=True)["text.usetex"] is True
    assert plot.rc_params()["text.usetex"] is False


# ----------------------------------------------------------------------------- saving


def test_save_writes_settings_into_metadata_not_names(tmp_path):
    meta = {"figure": "fig2", "seed": 3, "eps_rel": 1e-3, "runs": ["a.h5", "b.h5"]}
    fig = plot.slice_1d([0, 1, 2], {"d": [1, 0, 1]})
    pdf, png = plot.save(fig, tmp_path / "sub" / "fig2", metadata=meta, dpi=50)
    assert (pdf.name, png.name) == ("fig2.pdf", "fig2.png")
    text = Image.open(png).text
    assert text["seed"] == "3" and text["figure"] == "fig2"
    assert json.loads(text["runs"]) == ["a.h5", "b.h5"]
    assert json.loads(text["landscape"])["eps_rel"] == "0.001"
    raw = pdf.read_bytes()
    assert b"/Subject" in raw and b"/Keywords" in raw
    assert b"seed=3" in raw and b"eps_rel=0.001" in raw


def test_save_svg_carries_the_settings_too(tmp_path):
    fig = plot.slice_1d([0, 1, 2], {"d": [1, 0, 1]})
    (svg,) = plot.save(fig, tmp_path / "f", formats=("svg",), metadata={"seed": 7})
    text = svg.read_text()
    assert '"seed": "7"}</dc:description>' in text and '<dc:description>{"caption": ' in text


def test_save_png_dpi_sets_the_pixel_size(tmp_path):
    fig = plot.slice_1d([0, 1, 2], {"d": [1, 0, 1]})
    (png,) = plot.save(fig, tmp_path / "f", formats=("png",), dpi=50)
    with Image.open(png) as im:
        w, _ = im.size
    assert abs(w - 50 * plot.COLUMN_WIDTH) <= 1  # the figure's own width, nothing trimmed


def test_save_closes_a_pyplot_figure(tmp_path):
    fig = plt.figure()
    fig.add_subplot().plot([0, 1])
    plot.save(fig, tmp_path / "p", formats=("png",), dpi=30)
    assert plt.get_fignums() == []


@pytest.mark.parametrize(
    "path, kwargs, match",
    [
        ("f.png", {}, "without a suffix"),
        ("f", {"formats": ("jpg",)}, "formats"),
        ("f", {"metadata": {"bad key ": 1}}, "metadata key"),
        ("f", {"dpi": 0}, "dpi"),
    ],
)
def test_save_rejects_bad_arguments(tmp_path, path, kwargs, match):
    fig = plot.slice_1d([0, 1], {"d": [1, 0]})
    with pytest.raises(LandscapeError, match=match):
        plot.save(fig, tmp_path / path, **kwargs)


# --------------------------------------------------------------- numbers on the figures


def test_seed_mean_and_band_are_the_mean_and_range_of_the_seeds():
    runs = [_run(0.5, 0), _run(0.5, 1), _run(0.5, 2)]
    fig = plot.sample_dynamics({"looped": runs})
    ax = fig.axes[1]  # complex accuracy
    line = next(ln for ln in ax.get_lines() if ln.get_label().startswith("Looped"))
    stack = np.vstack([r["complex.acc"] for r in runs])
    np.testing.assert_allclose(line.get_ydata(), stack.mean(axis=0), rtol=1e-12)
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(stack.min()) and band.max() == pytest.approx(stack.max())


def test_seeds_on_other_grids_are_interpolated_within_their_range():
    a = Curve({"epoch": np.array([0.0, 10.0, 20.0]), "complex.acc": np.array([0.0, 1.0, 2.0]),
               "simple.acc": np.zeros(3)})  # fmt: skip
    b = Curve({"epoch": np.array([0.0, 5.0]), "complex.acc": np.array([1.0, 2.0]),
               "simple.acc": np.zeros(2)})
    fig = plot.sample_dynamics({"single": [a, b]})
    y = next(ln for ln in fig.axes[1].get_lines() if "Single" in ln.get_label()).get_ydata()
    np.testing.assert_allclose(y, [0.5, 1.0, 2.0])  # b adds 1 at 0, nothing beyond epoch 5


def test_spectra_entropy_panel_shows_the_matrix_entropy():
    sp = _spectra()
    fig = plot.spectra(*_binned_spectra(), max_checkpoints=2)
    ent_ax = [ax for ax in fig.axes if ax.get_ylabel() == "entropy (nats)"]
    assert len(ent_ax) == 2
    y = ent_ax[1].get_lines()[-1].get_ydata()
    np.testing.assert_allclose(y, [matrix_entropy(c.eigvals) for c in sp["looped"]])


def test_spectra_from_slq_density_and_given_entropy():
    sp = {"looped": [SpectrumCheckpoint.of(e, nodes=np.sort(_spectrum(k, seed=i)[None, ::7]),
                                           weights=np.full((1, 9), 1 / 9), dim=61)
                     for i, (e, k) in enumerate(zip(EP, ENT_V))]}  # fmt: skip
    ent = {"looped": series.EntropySeries(EP, np.arange(6.0))}
    binned = series.binned_spectra(sp)
    assert binned.counts  # SLQ densities with their dimension read as eigenvalues / bin
    for ck in binned.spectra["looped"]:  # all 61 but the smoothing's tails beyond the edges
        assert 0.97 * 61 < ck.mass.sum() <= 61
    fig = plot.spectra(binned, ent, max_checkpoints=3)
    assert len(fig.axes) == 4  # 3 spectra, thinned evenly, and the entropy
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["epoch 0", "epoch 20", "epoch 50"]  # indices 0, round(2.5) = 2, 5
    np.testing.assert_array_equal(fig.axes[3].get_lines()[-1].get_ydata(), np.arange(6.0))


def test_time_axis_says_the_unit_given_and_epoch_by_default():
    binned, entropy = _binned_spectra()
    stats = {"single": _valley(1.5 + 0 * EP)}

    def labels(unit=None):
        kw = {} if unit is None else {"unit": unit}
        figs = (plot.spectra(binned, entropy, max_checkpoints=2, **kw),
                plot.valley_stats(stats, **kw), plot.sharpness(_sharp(adam=False), **kw))
        return ({ax.get_xlabel() for f in figs for ax in f.axes
                 if ax.get_xlabel() and ax.get_xlabel() != "eigenvalue"},
                {ax.get_title().split()[0] for ax in figs[0].axes
                 if ax.get_xlabel() == "eigenvalue"})

    assert labels() == ({"epoch"}, {"epoch"})
    assert labels("step") == ({"step"}, {"step"})
    plt.close("all")


def test_phase_verdict_is_in_the_entropy_title():
    sp = _spectra()
    ph = {m: _drawn_phases([matrix_entropy(c.eigvals) for c in sp[m]]) for m in sp}
    binned, entropy = _binned_spectra()
    titles = [ax.get_title() for ax in plot.spectra(binned, entropy, phases=ph,
                                                    max_checkpoints=2).axes]
    verdicts = [t for t in titles if t.startswith("matrix entropy:")]
    expected = ["matrix entropy:\n" + ("three phases" if ph[m].three_phases
                                      else "no three phases")
                for m in ("single", "looped")]  # fmt: skip
    assert verdicts == expected


def test_shift_switch_is_drawn_at_the_switch_epoch_and_its_wall_time():
    shift = _run(0.5, 3, 2.0, switch_epoch=20.0)
    fig = plot.shift_comparison({"looped": _run(0.55, 0), "shift": shift})
    xs = [ln.get_xdata()[0] for ax in fig.axes for ln in ax.get_lines()
          if ln.get_label() == "switch"]  # fmt: skip
    assert xs == [20.0, 40.0]  # wall = 2 s per epoch


# --------------------------------------------------------------- missing optional data


@pytest.mark.parametrize(
    "make, what",
    [
        (lambda: plot.shift_comparison({"single": Curve({"epoch": EP, "complex.acc": EP})}),
         "wall"),
        (lambda: plot.switch_diagnostics(_side(1.0, 2.0, 3.0), _side(2.0, 5.0, 6.0)), "overlap"),
        (lambda: plot.switch_diagnostics(_side(1.0, np.nan, np.nan), _side(2.0, 5.0, np.nan)),
         "lambda_max / trace"),
        (lambda: plot.valley_stats({"single": _valley(1 + EP)}), "small_force"),
        (lambda: plot.loop_curve({"single": _loops([1, 2], [1.0, 2.0], [np.nan] * 2)}),
         "lambda_max"),
        (lambda: plot.slice_2d(_grid(np.full((2, 2), np.nan), [0, 1], [0, 1])), "grid cell"),
    ],
)
def test_missing_optional_data_says_not_computed(make, what):
    notes = [t for t in _texts(make()) if t.startswith("not computed")]
    assert any(what in t for t in notes), notes


def test_partial_slice_counts_missing_cells():
    g = np.ones((3, 3))
    g[0, 0] = np.nan
    assert "1 of 9 cells not computed" in _texts(plot.slice_2d(_grid(g, [-1, 0, 1], [-1, 0, 1])))


def test_shared_slices_share_one_scale_and_report_the_basin_share():
    a = np.linspace(-1, 1, 5)
    wide, narrow = 1 + 0.04 * np.add.outer(a**2, a**2), 1 + np.add.outer(a**2, a**2)
    shares = {m: {"e": basin_share(a, a, z, 0.1)} for m, z in (("single", wide),
                                                                 ("looped", narrow))}
    fig = plot.shared_slices({"single": {"e": _grid(wide, a, a)},
                              "looped": {"e": _grid(narrow, a, a)}}, shares=shares, rise=0.1)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    # wide: every cell within +0.1 (largest rise 0.08); narrow: only the centre is (its
    # nearest neighbours rise by 0.25), 1 cell of 25
    assert titles == ["Single-Attn, e\n100 % within +0.1", "Looped-Attn, e\n4 % within +0.1"]
    bare = plot.shared_slices({"single": {"e": _grid(wide, a, a)}})  # no shares given: none shown
    assert [ax.get_title() for ax in bare.axes if ax.get_title()] == ["Single-Attn, e"]
    (cbar,) = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    lo, hi = cbar.get_ylim()
    assert lo == pytest.approx(1.0) and hi == pytest.approx(3.0)  # both grids on one scale
    fig.canvas.draw()  # a log scale within a decade: several plain-number labels
    labels = [t.get_text() for t, y in zip(cbar.yaxis.get_ticklabels(), cbar.get_yticks())
              if lo - 1e-9 <= y <= hi + 1e-9]
    assert labels == ["1", "2", "3"]


def test_log_levels_on_losses_that_are_not_positive_raise():
    with pytest.raises(LandscapeError, match="log_levels"):
        plot.slice_2d(_grid([[-1.0, 0.0], [1.0, 2.0]], [0, 1], [0, 1]), log_levels=True)
    assert plt.get_fignums() == []


def test_shift_ablation_grid():
    def row(d1, d2, w, ratio, epoch, criterion="training"):
        return AblationRow(seed=0, target=0.6, criterion=criterion, delta_1=d1, delta_2=d2,
                           window=w, patience=0, switch_epoch=epoch, reason="plateau",
                           drop=0.0, seconds=1.0, flops=1.0, flops_ratio=ratio,
                           seconds_ratio=ratio)

    rows = [row(d1, 0.01, w, r, 10.0)
            for (d1, w), r in zip([(a, b) for a in (0.003, 0.01, 0.03) for b in (3, 5, 8)],
                                  [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, float("inf"), 0.5])]
    rows += [row(0.01, d2, 5, 0.9, 12.0) for d2 in (0.003, 0.03)]
    rows += [row(0.01, 0.01, 5, 5.0, 1.0, criterion="validation")]  # not drawn
    fig = plot.shift_ablation(rows)
    grid = fig.axes[0]
    texts = [t.get_text() for t in grid.texts]
    assert len(texts) == 9 and "miss\nep 10" in texts and "0.60\nep 10" in texts
    assert len(fig.axes[1].lines[0].get_xdata()) == 3  # delta_2 = 0.003, 0.01, 0.03
    corners = plot.shift_ablation([r for r in rows if r.delta_2 == 0.01])
    # the paper preset's corners vary no delta_2: one panel and its colour bar, no empty one
    assert len(corners.axes) == 2 and "delta_2 = 0.01" in plot.caption(corners)


def test_task_curves_name_the_switch_only_where_shift_was_trained():
    def curve(n):
        return {"step": np.arange(n, dtype=float), "iid.seq_acc": np.linspace(0, 1, n)}

    without = plot.task_curves({"parity": {"looped": curve(5), "single": curve(4)}})
    assert "switch" not in plot.caption(without)
    assert "Single-Attn" in plot.caption(without) and "Looped-Attn" in plot.caption(without)
    with_shift = plot.task_curves({"parity": {"looped": curve(5), "shift": Curve(
        curve(5), switch_step=2.0)}})
    assert plot.caption(with_shift).endswith("dotted: SHIFT's switch.")
    assert [ln.get_xdata()[0] for ln in with_shift.axes[0].lines
            if ln.get_label() == "switch"] == [2.0]


# ------------------------------------------------------------ the optimiser's own edge


def _legend(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_sharpness_names_the_optimiser_and_its_edge_and_leaves_out_an_empty_panel():
    full = np.full(EP.size, 1.0)
    sgd = plot.sharpness(SharpnessSeries(EP, 1 + EP, 38 * full, np.nan * full, np.nan * full,
                                         optimizer="SGD (heavy ball 0.9)"))
    assert len(sgd.axes) == 1 and "SGD (heavy ball 0.9) edge 38" in _legend(sgd)
    assert not _texts(sgd)
    adam = plot.sharpness(SharpnessSeries(EP, 1 + EP, 380 * full, 10 * (1 + EP), 380 * full,
                                          optimizer="AdamW (beta1 0.9)",
                                          edge_on="preconditioned"))
    assert len(adam.axes) == 2 and "AdamW (beta1 0.9) edge 380" in _legend(adam)
    assert [ln.get_label() for ln in adam.axes[0].get_lines()] == [r"$\lambda_{\max}$"]
    old = plot.sharpness(_sharp())  # a part stored before optimisers were recorded
    assert {"GD threshold 2 / lr = 40", "Adam threshold = 380"} <= set(_legend(old))


def test_sharpness_says_where_the_edge_is_unknown():
    fig = plot.sharpness(SharpnessSeries(EP, 1 + EP, np.full(EP.size, np.nan),
                                         optimizer="RMSprop",
                                         edge_unknown="edge of RMSprop unknown"))
    assert _texts(fig) == ["stability edge unknown: edge of RMSprop unknown"]
    assert "RMSprop edge unknown" not in _legend(fig)  # no line, so no legend entry


# ------------------------------------------------------------------- per-block spectra


def _blocks(n_blocks: int, stderr: float = 0.0) -> BlockSeries:
    names = tuple(f"layers.{j}" for j in range(n_blocks))
    top = np.outer(1 + EP, np.arange(1.0, n_blocks + 1))
    return BlockSeries(EP, names, np.arange(10, 10 + n_blocks), top, 3 * top,
                       np.full(top.shape, stderr))


def test_block_spectra_draws_one_line_per_block_named_as_in_the_model(tmp_path):
    before = dict(matplotlib.rcParams)
    fig = plot.block_spectra(_blocks(3, stderr=0.5), title="mine", unit="step")
    top, trace = fig.axes
    assert [ln.get_label() for ln in top.get_lines()] == ["layers.0 (10)", "layers.1 (11)",
                                                          "layers.2 (12)"]
    np.testing.assert_array_equal(trace.get_lines()[2].get_ydata(), 3 * 3 * (1 + EP))
    assert top.get_xlabel() == "step" and len(trace.collections) == 3  # stderr bands
    assert fig.get_suptitle() == "mine" and len(_legend(fig)) == 3
    assert dict(matplotlib.rcParams) == before
    assert plot.save(fig, tmp_path / "blocks", ("png",), dpi=40)[0].stat().st_size > 1000
    exact = plot.block_spectra(_blocks(12))  # exact traces: no band; more blocks than colors
    assert not exact.axes[1].collections and len({ln.get_color() for ln in
                                                  exact.axes[0].get_lines()}) == 12


def test_block_spectra_takes_a_log_scale_only_where_values_span_decades():
    wide = _blocks(2)
    wide = BlockSeries(EP, wide.blocks, wide.dims, wide.top * np.array([1.0, 1e4]),
                       wide.trace, wide.trace_stderr)
    assert plot.block_spectra(wide).axes[0].get_yscale() == "log"
    narrow = BlockSeries(EP, wide.blocks, wide.dims, np.full(wide.top.shape, 2.0), wide.trace,
                         wide.trace_stderr)
    assert plot.block_spectra(narrow).axes[0].get_yscale() == "linear"
    signed = BlockSeries(EP, wide.blocks, wide.dims, wide.top, wide.trace * np.array([-1, 1e3]),
                         wide.trace_stderr)
    assert plot.block_spectra(signed).axes[1].get_yscale() == "symlog"


def test_valley_sweep_names_the_matrix_it_swept():
    """The Hessian's and Adam's preconditioned sweep differ in title and caption."""
    curves = ([_sweep_curve(1.0, s) for s in range(2)], [_sweep_curve(3.0, s) for s in range(2)])
    raw, adam = plot.valley_sweep(UVSweep(*curves)), plot.valley_sweep(UVSweep(*curves, adam=True))
    assert "Adam" not in plot.caption(raw) and "Adam" not in raw.get_suptitle()
    assert "Adam-preconditioned Hessian" in plot.caption(adam)
    assert "Adam-preconditioned" in adam.get_suptitle()
