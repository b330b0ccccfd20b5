"""Tiny fixtures shared by the test modules: small recipes and trained run files."""

from __future__ import annotations

import os

import pytest
import torch

from landscape.config import load_recipe

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to load

TINY = {
    "name": "tiny",
    "task": {"name": "markov", "n_train": 128, "n_test": 64, "seq_len": 12},
    "model": {"d_model": 8, "n_heads": 2},
    "train": {"batch_size": 16, "epochs": 4, "probe_size": 16, "lr": 3e-3},
}


def tiny_recipe(**tables):
    """The tiny Markov recipe with some tables overridden, e.g. model={"loops": 3}."""
    return load_recipe(overrides=[TINY, tables])


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
