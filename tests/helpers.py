"""What several test modules share: tiny recipes, small CLI arguments, run comparison.

Test modules import from here (``from helpers import tiny_recipe``), never from each other
or from ``conftest``; ``conftest.py`` holds only fixtures.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from landscape.runs.run import Run
from landscape.train.recipe import load_recipe

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


# --- synthetic spectra and runs for the landscape claims (2-4) ---------------------------


def with_bulk(valley, p=400, seed=0, bulk=1e-7):
    """A valley over a bulk of ``p`` eigenvalues near zero (``|lambda| <= bulk``), shuffled."""
    rng = np.random.default_rng(seed)
    out = np.concatenate([np.asarray(valley, float), rng.uniform(-bulk, bulk, p)])
    return rng.permutation(out)


def u_like(seed=0):
    """Clustered valley eigenvalues (uniformly steep cliffs) over a bulk near zero."""
    return with_bulk(np.random.default_rng(100 + seed).uniform(0.6, 1.0, 20), seed=seed)


def v_like(seed=0):
    """Valley eigenvalues spread over four decades (varied steepness) over a bulk."""
    rng = np.random.default_rng(200 + seed)
    return with_bulk(np.concatenate([[1.0], 10 ** rng.uniform(-3.95, 0, 39)]), seed=seed)


class StoredRun:
    """Just what the landscape claims read from a Run: a seed, a name, stored parts."""

    def __init__(self, arch, seed, probes, steps_per_epoch=10):
        loops = {"looped": 3}.get(arch, 1)
        self.recipe = tiny_recipe(model={"loops": loops}, train={"seed": seed})
        self.name, self.path = f"{arch}_s{seed}", f"{arch}_s{seed}.h5"
        self.probes = probes
        self.probed_steps = sorted({s for s, _ in probes})
        self.attrs = {"steps_per_epoch": steps_per_epoch}
        self.metrics = {}
        self.shift_step = None

    def part(self, name, step=-1):
        """The stored part ``name`` at ``step`` as an attribute namespace, or None."""
        for (s, _), parts in self.probes.items():
            if s == step and name in parts:
                return SimpleNamespace(**parts[name])
        return None


def grouped(**archs):
    """``{"markov": {arch: [runs]}}`` as series.group_runs returns it (a run or a list)."""
    return {"markov": {a: list(r) if isinstance(r, (list, tuple)) else [r]
                       for a, r in archs.items()}}
