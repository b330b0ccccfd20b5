"""Fixtures shared by the test modules (tiny recipes and trained run files); plain helpers
live in ``helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import tiny_recipe

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to load


HERE = Path(__file__).resolve().parent


@pytest.fixture
def recipe():
    return tiny_recipe()


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    """Tiny Single, Looped and SHIFT run files, trained once per test session."""
    from landscape.train.trainer import train

    root = tmp_path_factory.mktemp("runs")
    runs = {
        "single": tiny_recipe(),
        "looped": tiny_recipe(model={"loops": 3}),
        "shift": tiny_recipe(shift={"enabled": True, "at_step": 16}),
    }
    return {k: train(r, root / f"{k}.h5") for k, r in runs.items()}


def pytest_ignore_collect(collection_path, config):
    """Only ``test_*.py`` files here are test modules: the helper modules beside them (some
    act when imported) are not collected, not even for ``--doctest-modules``."""
    name = collection_path.name
    if (collection_path.parent == HERE and name.endswith(".py")
            and not name.startswith("test_") and name != "conftest.py"):
        return True
    return None
