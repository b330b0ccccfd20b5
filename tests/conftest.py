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


@pytest.fixture(scope="session")
def probed_own_run(tmp_path_factory):
    """A run of tests/own_model.py recorded at steps 0, 3, 6 and probed at each: exact
    float64 spectra with Adam's, two blocks, and the geometry (slices, PCA plane)."""
    from own_model import train

    from landscape.probe import GeometrySettings, HessianSettings, ProbeSettings, probe

    path = tmp_path_factory.mktemp("own") / "own.h5"
    train(path, 6, every=3)
    probe(path, ProbeSettings(
        steps="all", geometry=GeometrySettings(grid=5, width_points=5, width_dirs=1),
        hessian=HessianSettings(k_top=3, k_bottom=2, slq_runs=2, slq_steps=10, trace_hvps=10,
                                exact="always", dtype="float64", blocks=("emb.*", "head.*"))),
          trust_code=True)
    return path


def pytest_ignore_collect(collection_path, config):
    """Only ``test_*.py`` files here are test modules: the helper modules beside them (some
    act when imported) are not collected, not even for ``--doctest-modules``."""
    name = collection_path.name
    if (collection_path.parent == HERE and name.endswith(".py")
            and not name.startswith("test_") and name != "conftest.py"):
        return True
    return None
