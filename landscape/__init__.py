"""landscape: loss-landscape analysis of looped transformers.

The names most scripts need, importable from the package itself::

    import landscape
    run = landscape.Run.open("checkpoints/looped.h5")
    recipe = landscape.load_recipe("looped_attn", preset="quick")

Each is imported on first use, so ``import landscape`` stays light (no torch until a name
needs it). To export another name, add it to :data:`EXPORTS` (never a name that is also a
submodule, such as ``train``: importing the submodule would replace it).

The package reads top to bottom as the data flows, one folder per stage:

==========  ==================================================================
stage       what it holds
==========  ==================================================================
runfile/    the run file's format: the store (the only h5py user), stored parts
curvature/  loss of parameters, Hessian operator, Lanczos, Hutch++, SLQ, exact
geometry/   directions, slices, river/valley split, U/V, hopping, phases
train/      tasks, the looped model, recipes, the trainer, torchrun
runs/       Run (the reader), Recorder, import, own models and trust, HuggingFace
probe/      the probe's parts, driver and plan
analysis/   series (the one reader for figures and claims), stats, claims
draw/       figures: arrays in, Figure out
==========  ==================================================================

with ``errors`` below them all and ``cli``, ``reproduce`` on top. Imports run one way:
a module imports only from its own layer or the layers below it in :data:`LAYERS`
(``tests/test_layers.py`` walks every import and fails on one that goes up).

>>> import landscape
>>> landscape.Run.__name__, landscape.__version__ == __version__
('Run', True)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"  # the one version: pyproject.toml reads it from here

EXPORTS: dict[str, str] = {
    "LandscapeError": "landscape.errors",
    "Recipe": "landscape.train.recipe",
    "load_recipe": "landscape.train.recipe",
    "Run": "landscape.runs.run",
    "Recorder": "landscape.runs.recorder",
    "analyze": "landscape.probe.in_memory",
}
"""Public name -> the module that defines it."""

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("runfile",),
    ("curvature",),
    ("geometry",),
    ("train",),
    ("runs",),
    ("probe",),
    ("analysis",),
    ("draw",),
    ("reproduce", "cli", "__main__"),
)
"""The layers from the bottom up, by top-level module or folder of the package."""

__all__ = ["LAYERS", "__version__", *EXPORTS]


def __getattr__(name: str):
    """A name of :data:`EXPORTS`, imported from its module on first use."""
    if name in EXPORTS:
        value = getattr(importlib.import_module(EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *EXPORTS})
