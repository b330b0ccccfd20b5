"""series: the one place that turns run files into the arrays figures and claims read."""

from types import SimpleNamespace

import numpy as np
import pytest
from helpers import tiny_recipe

from landscape.analysis import series
from landscape.errors import LandscapeError
from landscape.runs.run import Run
from landscape.train.archs import LOOPED, SHIFT, SINGLE
from landscape.train.recipe import load_recipe


def fake(arch=SINGLE, task="markov", seed=0, probed=(), metrics=None, shift_step=None,
         steps_per_epoch=10):
    tables = {"model": {"loops": 3 if arch == LOOPED else 1},
              "shift": {"enabled": arch == SHIFT}, "train": {"seed": seed}}
    recipe = (tiny_recipe(**tables) if task == "markov" else
              load_recipe(overrides=[{"task": {"name": task}}, tables]))
    return SimpleNamespace(
        recipe=recipe, task_name=recipe.task.name, arch=recipe.arch, custom=False,
        name=recipe.name,
        probed_steps=list(probed), metrics=metrics or {}, shift_step=shift_step,
        attrs={"steps_per_epoch": steps_per_epoch}, path=f"{task}_{arch}_{seed}.h5")


def test_group_runs_by_task_and_architecture_probed_first_then_by_seed():
    s2, s0, s1p = fake(seed=2), fake(seed=0), fake(seed=1, probed=[5])
    lo, par = fake(LOOPED), fake(SHIFT, task="parity")
    mine = SimpleNamespace(recipe=None, task_name="custom", arch="custom", custom=True,
                           name="mine", probed_steps=[])
    g = series.group_runs([s2, lo, s0, par, s1p, mine])
    assert set(g) == {"markov", "parity", "custom"} and set(g["markov"]) == {SINGLE, LOOPED}
    assert g["custom"] == {"mine": [mine]}  # a model of your own, by its name
    assert g["markov"][SINGLE] == [s1p, s0, s2]  # the probed one is the one figures read
    assert g["markov"][LOOPED] == [lo] and g["parity"] == {SHIFT: [par]}
    assert series.group_runs([]) == {}


def test_markov_runs_returns_none_or_names_the_missing_architectures():
    g = series.group_runs([fake(SINGLE), fake(LOOPED), fake(SHIFT, task="parity")])
    assert set(series.markov_runs(g, (SINGLE, LOOPED))) == {SINGLE, LOOPED}
    assert series.markov_runs(g, (SINGLE, SHIFT)) is None
    with pytest.raises(LandscapeError, match="figure shift needs Markov runs of shift "):
        series.markov_runs(g, (SINGLE, SHIFT), "shift")


def test_curve_final_and_epoch_of():
    m = {"step": np.array([0, 10, 20, 30]), "epoch": np.arange(4.0), "wall": np.arange(4.0),
         "complex.acc": np.array([0.1, 0.2, 0.4, 0.6]), "lr": np.ones(4)}
    run = fake(SHIFT, metrics=m, shift_step=15)
    c = series.curve(run, ["complex.acc", "absent"])
    assert set(c.metrics) == {"step", "epoch", "wall", "complex.acc"}
    assert "complex.acc" in c and "absent" not in c and c.get("absent") is None
    assert c.switch_step == 15.0 and c.switch_epoch == 1.5
    plain = series.curve(fake(metrics=m))
    assert set(plain.metrics) == set(m) and plain.switch_step is None  # no switch: no SHIFT
    assert series.final(run, "complex.acc") == 0.6
    assert series.final(run, "complex.acc", last=2) == pytest.approx(0.5)
    assert series.epoch_of(run, 25) == 2.5
    with pytest.raises(LandscapeError, match="no metric 'simple.acc'"):
        series.final(run, "simple.acc")


def test_length_series_sorts_lengths_numerically_and_reads_the_last_evaluation():
    m = {"len_16.seq_acc": np.array([0.1, 0.3]), "len_8.seq_acc": np.array([0.5, 0.9]),
         "len_12.seq_acc": np.array([0.2, 0.6]), "len_12.acc": np.array([0.7, 0.8]),
         "iid.seq_acc": np.array([0.9, 1.0])}
    s = series.length_series(fake(LOOPED, task="parity", metrics=m), "seq_acc")
    np.testing.assert_array_equal(s.length, [8, 12, 16])
    np.testing.assert_array_equal(s.acc, [0.9, 0.6, 0.3])
    np.testing.assert_array_equal(series.length_series(fake(metrics=m)).acc, [0.8])  # token
    with pytest.raises(LandscapeError, match="no per-length evaluation"):
        series.length_series(fake(metrics={"complex.acc": np.ones(2)}))


def test_series_of_a_real_run_match_its_metrics(trained_runs):
    run = Run.open(trained_runs["shift"])
    c = series.curve(run)
    np.testing.assert_array_equal(c["complex.acc"], run.metrics["complex.acc"])
    assert c.switch_step == run.shift_step == 16
    assert c.switch_epoch == pytest.approx(16 / run.attrs["steps_per_epoch"])
    assert series.final(run, "epoch") == pytest.approx(4.0)
    with pytest.raises(LandscapeError, match="no Hessian spectra|has no"):
        series.spectrum_checkpoints(run)  # never probed: names the probe to run


# ------------------------------------------------------------ the typed results themselves


def test_results_are_frozen_and_their_repr_is_short():
    ep = np.arange(500.0)
    s = series.EntropySeries(ep, np.sqrt(ep))
    with pytest.raises(AttributeError):
        s.source = "slq"
    text = repr(s)
    assert text == "EntropySeries(epoch=[500] 0..499, entropy=[500] 0..22.34, source='exact')"
    assert repr(series.Reach(1.5, float("inf"), 3.0)) == "Reach(seconds=1.5, flops=inf, epoch=3)"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: series.EntropySeries(np.arange(3.0), np.arange(4.0)), "'entropy' has shape"),
        (lambda: series.ValleySeries(*[np.arange(3.0)] * 7, label=np.array(["U"] * 2)),
         "'label' has shape"),
        (lambda: series.WidthSeries(np.arange(2.0), np.arange(2.0), np.ones((2, 3)),
                                    np.ones((2, 2))), "differ in shape"),
        (lambda: series.SharpnessSeries(np.arange(3.0), np.arange(2.0), None), "lambda_max"),
        (lambda: series.SpectrumCheckpoint(0.0, 0), "one of the two"),
        (lambda: series.SpectrumCheckpoint.of(0.0), "eigvals"),
        (lambda: series.SpectrumCheckpoint.of(0.0, nodes=[[1.0, 2.0]], weights=[[1.0]]),
         "one \\[runs, m\\] shape"),
        (lambda: series.spectra_entropy([series.SpectrumCheckpoint.of(
            0, nodes=[[1.0, 2.0]], weights=[[0.5, 0.5]])]), "dim"),
        (lambda: series.binned_spectra({}), "no models"),
        (lambda: series.binned_spectra({"single": [series.SpectrumCheckpoint.of(0, eigvals=[1.0])]},
                                       xscale="log"), "xscale"),
        (lambda: series.BinnedSpectra(np.arange(3.0), {"single": [series.BinnedCheckpoint(
            0.0, np.ones(3))]}, "linear", 1.0, True), "3 bins for 3 edges"),
        (lambda: series.ShiftTimeline(switch=60.0, end=50.0), "start <= switch <= end"),
        (lambda: series.ShiftTimeline(switch=20.0, end=50.0, x=np.arange(3.0)), "together"),
        (lambda: series.Curve({"epoch": np.ones((2, 2))}), "not a vector"),
        (lambda: series.BlockSeries(np.arange(2.0), ("a", "b"), np.array([3, 4]),
                                    np.ones((2, 2)), np.ones((2, 1)), np.ones((2, 2))),
         "'trace' has shape"),
        (lambda: series.BlockSeries(np.arange(2.0), ("a",), np.array([3, 4]), np.ones((2, 1)),
                                    np.ones((2, 1)), np.ones((2, 1))), "a size per block"),
        (lambda: series.BlockSeries(np.arange(0.0), (), np.array([]), np.ones((0, 0)),
                                    np.ones((0, 0)), np.ones((0, 0))), "one or more"),
    ],
)
def test_results_are_validated_where_they_are_made(make, match):
    with pytest.raises(LandscapeError, match=match):
        make()


def test_valid_results_are_accepted_as_given():
    ck = series.SpectrumCheckpoint.of(2, 20, nodes=[1.0, 2.0], weights=[0.5, 0.5], dim=4)
    assert ck.slq.nodes.shape == (1, 2) and ck.epoch == 2.0 and ck.eigvals is None
    np.testing.assert_array_equal(ck.values, [1.0, 2.0])
    v = series.ValleySeries(*[np.arange(3.0)] * 7, label=np.array(["U", "V", "V"]))
    assert v.kappa.shape == (3,)
    assert series.SharpnessSeries(np.arange(3.0), np.ones(3), np.ones(3)).adam_lambda_max is None
    b = series.BlockSeries(np.arange(3.0), ("layers.0", "head"), np.array([40, 5]),
                           np.ones((3, 2)), np.ones((3, 2)), np.zeros((3, 2)))
    assert repr(b).startswith("BlockSeries(epoch=[3] 0..2, blocks=<2 items>, dims=[2] 5..40")


def test_control_languages_group_apart_from_the_main_markov_runs():
    main, fixed1 = fake(), fake()
    fixed1.recipe = tiny_recipe(task={"language": "fixed1"})
    modes = fake(LOOPED)
    modes.recipe = tiny_recipe(task={"language": "modes"}, model={"loops": 3})
    g = series.group_runs([main, fixed1, modes])
    assert set(g) == {"markov", "markov_fixed1", "markov_modes"}
    assert g["markov_fixed1"] == {SINGLE: [fixed1]}
    assert [k for k in ("markov", "markov_fixed1", "custom", "parity", "markov_long")
            if series.is_algorithmic(k)] == ["parity"]


def _algo(seed, positions, val, iid=0.99, stop=None):
    r = fake(SINGLE, task="parity", seed=seed,
             metrics={"step": np.array([0.0, 50.0]), "iid.acc": np.array([0.5, iid]),
                      "val.acc": np.array([0.5, val])})
    r.recipe = load_recipe(overrides=[{"task": {"name": "parity"}, "train": {"seed": seed},
                                       "model": {"positions": positions}}])
    r.events = [] if stop is None else [{"kind": "stop", "step": stop}]
    return r


def test_single_positions_are_chosen_on_val_per_seed_ties_to_the_first_scheme():
    runs = [_algo(0, "learned", 0.9), _algo(0, "none", 0.8), _algo(0, "rope", 0.9),
            _algo(1, "none", 0.7), _algo(1, "rope", 0.6)]
    chosen, record = series.select_by_validation(runs)
    assert chosen[0] is runs[2] and chosen[1] is runs[3]  # rope before learned on a tie
    assert record[0] == {"chosen": "rope", "split": "val",
                         "candidates": {"none": 0.8, "rope": 0.9, "learned": 0.9}}
    del runs[4].metrics["val.acc"]  # no val split: chosen on iid, and said so
    assert series.select_by_validation(runs[3:])[1][1]["split"] == "iid"
    models = series.length_models({"single": runs[:4], "looped": [runs[0]]})
    assert models["single"] == [runs[2], runs[3]] and models["looped"] == [runs[0]]


def test_mastery_reads_the_held_out_accuracy_and_the_stop_event():
    assert series.mastery(_algo(0, "none", 0.9, iid=0.96, stop=50), 0.95) == {
        "mastered": True, "acc": 0.96, "step": 50, "steps": 50}
    assert series.mastery(_algo(0, "none", 0.9, iid=0.94), 0.95)["mastered"] is False
