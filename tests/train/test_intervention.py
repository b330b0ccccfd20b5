"""Intervention starts: stored with both AdamW moments; continued exactly, or valley removed."""

import h5py
import numpy as np
import pytest
import torch
from helpers import tiny_recipe

from landscape.errors import LandscapeError
from landscape.geometry.optimiser_valley import orthonormal_rows
from landscape.runfile import interventions
from landscape.runs.run import Run
from landscape.train.intervention import continue_from
from landscape.train.trainer import train

# 4 epochs of 8 steps (32); checkpoints every 8; a window and a start at step 8
TABLES = {"window_steps": 8, "window_at": [8], "intervene_at": [0, 8]}


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    return train(tiny_recipe(train=TABLES), tmp_path_factory.mktemp("iv") / "run.h5")


def test_starts_store_parameters_and_both_moments(run_file):
    run = Run.open(run_file)
    first, second = interventions.read(run_file)
    assert (first.start, second.start) == (0, 8)
    assert first.adam_step == 0 and not first.exp_avg.any() and not first.exp_avg_sq.any()
    assert second.adam_step == 8 and second.exp_avg.any() and (second.exp_avg_sq > 0).any()
    np.testing.assert_array_equal(second.params, run.flat_params(8))
    v, step = run.adam_state(8)  # the checkpoint's second moment is the same
    np.testing.assert_array_equal(second.exp_avg_sq, v)
    assert step == 8
    with pytest.raises(LandscapeError, match="no intervention start at step 4"):
        interventions.at(run_file, 4)


def test_the_unchanged_arm_reproduces_the_run_bit_for_bit(run_file):
    run = Run.open(run_file)
    c = continue_from(run_file, 8, 8)
    (window,) = run.windows()
    np.testing.assert_array_equal(c.updates, window.updates)
    np.testing.assert_array_equal(c.batch_loss, window.loss)
    np.testing.assert_array_equal(c.lr, window.lr)
    np.testing.assert_array_equal(c.params[-1], run.flat_params(16))
    # from step 0, 24 steps: the checkpoint at 24 again
    np.testing.assert_array_equal(continue_from(run_file, 0, 24).params[-1],
                                  run.flat_params(24))


def test_removing_the_valley_span_removes_the_valley_motion(run_file):
    run = Run.open(run_file)
    p = run.layout.size
    v = orthonormal_rows(np.random.default_rng(0).normal(size=(3, p)))
    c = continue_from(run_file, 8, 8, valley=v)
    free = continue_from(run_file, 8, 8)
    moved = np.abs(free.updates.astype(np.float64) @ v.T).max()
    left = np.abs(c.updates.astype(np.float64) @ v.T).max()
    assert moved > 1e-4 and left < 1e-6 * np.abs(c.updates).max() * np.sqrt(p)
    assert c.removed == 3 and not np.array_equal(c.params[-1], free.params[-1])
    # off the span, the first step is the unchanged one's (same state, same batch)
    d0 = free.updates[0].astype(np.float64)
    np.testing.assert_allclose(c.updates[0], d0 - v.T @ (v @ d0), atol=1e-6)
    with pytest.raises(LandscapeError, match="orthonormal"):
        continue_from(run_file, 8, 2, valley=2 * v)
    with pytest.raises(LandscapeError, match="steps must be in"):
        continue_from(run_file, 8, 100)


def test_a_damaged_start_is_refused_on_opening(run_file, tmp_path):
    import shutil
    copy = tmp_path / "copy.h5"
    shutil.copy(run_file, copy)
    if (run_file.parent / f"{run_file.name}.d").exists():
        shutil.copytree(run_file.parent / f"{run_file.name}.d", tmp_path / "copy.h5.d")
    with h5py.File(copy, "r+") as f:
        del f["interventions/start_8/exp_avg"]
    with pytest.raises(LandscapeError, match="interventions/start_8"):
        Run.open(copy)


def test_intervene_at_is_checked():
    with pytest.raises(LandscapeError, match="intervene_at"):
        tiny_recipe(train={"intervene_at": [8, 4]})
    with pytest.raises(LandscapeError, match="intervene_at"):
        train(tiny_recipe(train={"intervene_at": [40]}), "/nonexistent/never.h5")
    assert torch.get_num_threads() >= 1
