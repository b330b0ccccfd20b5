"""What several test modules share: tiny recipes, small CLI arguments, run comparison.

Test modules import from here (``from helpers import tiny_recipe``), never from each other
or from ``conftest``; ``conftest.py`` holds only fixtures.
"""

from __future__ import annotations

import numpy as np

from landscape.config import load_recipe
from landscape.run import Run

TINY = {
    "name": "tiny",
    "task": {"name": "markov", "n_train": 128, "n_test": 64, "seq_len": 12},
    "model": {"d_model": 8, "n_heads": 2},
    "train": {"batch_size": 16, "epochs": 4, "probe_size": 16, "lr": 3e-3},
}

SMALL = ["--set", "task.n_train=64", "--set", "task.n_test=32", "--set", "task.seq_len=8",
         "--set", "model.d_model=8", "--set", "train.batch_size=16", "--set",
         "train.probe_size=8"]
"""``landscape train`` arguments that make any Markov recipe tiny."""


def tiny_recipe(**tables):
    """The tiny Markov recipe with some tables overridden, e.g. model={"loops": 3}."""
    return load_recipe(overrides=[TINY, tables])


def same_run(a, b):
    """Assert that two run files hold the same trajectory and metrics (wall times aside)."""
    ra, rb = Run.open(a), Run.open(b)
    np.testing.assert_array_equal(ra.steps, rb.steps)
    np.testing.assert_array_equal(ra.loops, rb.loops)
    np.testing.assert_array_equal(ra.trajectory(), rb.trajectory())
    for k in ra.metrics:
        if k not in ("wall", "tokens_per_s"):
            np.testing.assert_array_equal(ra.metrics[k], rb.metrics[k], err_msg=k)
