"""Fixtures shared by the test modules (tiny recipes and trained run files); plain helpers
live in ``helpers.py``."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import tiny_recipe

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to load


@pytest.fixture
def recipe():
    return tiny_recipe()


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    """Tiny Single, Looped and SHIFT run files, trained once per test session."""
    from landscape.train import train

    root = tmp_path_factory.mktemp("runs")
    runs = {
        "single": tiny_recipe(),
        "looped": tiny_recipe(model={"loops": 3}),
        "shift": tiny_recipe(shift={"enabled": True, "at_step": 16}),
    }
    return {k: train(r, root / f"{k}.h5") for k, r in runs.items()}
