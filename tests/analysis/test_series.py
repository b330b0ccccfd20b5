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
    assert set(c) == {"step", "epoch", "wall", "complex.acc", "switch_step", "switch_epoch"}
    assert c["switch_step"] == 15.0 and c["switch_epoch"] == 1.5
    assert set(series.curve(fake(metrics=m))) == set(m)  # no switch without SHIFT
    assert series.final(run, "complex.acc") == 0.6
    assert series.final(run, "complex.acc", last=2) == pytest.approx(0.5)
    assert series.epoch_of(run, 25) == 2.5
    with pytest.raises(LandscapeError, match="no metric 'simple.acc'"):
        series.final(run, "simple.acc")


def test_length_series_sorts_lengths_numerically_and_reads_the_last_evaluation():
    m = {"len_16.seq_acc": np.array([0.1, 0.3]), "len_8.seq_acc": np.array([0.5, 0.9]),
         "len_12.seq_acc": np.array([0.2, 0.6]), "len_12.acc": np.array([0.7, 0.8]),
         "iid.seq_acc": np.array([0.9, 1.0])}
    s = series.length_series(fake(LOOPED, task="parity", metrics=m))
    np.testing.assert_array_equal(s["length"], [8, 12, 16])
    np.testing.assert_array_equal(s["acc"], [0.9, 0.6, 0.3])
    np.testing.assert_array_equal(series.length_series(fake(metrics=m), "acc")["acc"], [0.8])
    with pytest.raises(LandscapeError, match="no per-length evaluation"):
        series.length_series(fake(metrics={"complex.acc": np.ones(2)}))


def test_series_of_a_real_run_match_its_metrics(trained_runs):
    run = Run.open(trained_runs["shift"])
    c = series.curve(run)
    np.testing.assert_array_equal(c["complex.acc"], run.metrics["complex.acc"])
    assert c["switch_step"] == run.shift_step == 16
    assert c["switch_epoch"] == pytest.approx(16 / run.attrs["steps_per_epoch"])
    assert series.final(run, "epoch") == pytest.approx(4.0)
    with pytest.raises(LandscapeError, match="no Hessian spectra|has no"):
        series.spectrum_checkpoints(run)  # never probed: names the probe to run
