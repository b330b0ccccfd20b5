"""landscape: loss-landscape analysis of looped transformers.

The names most scripts need, importable from the package itself::

    import landscape
    run = landscape.Run.open("checkpoints/looped.h5")
    recipe = landscape.load_recipe("looped_attn", preset="quick")

Each is imported on first use, so ``import landscape`` stays light (no torch until a name
needs it). To export another name, add it to :data:`EXPORTS` (never a name that is also a
submodule, such as ``train``: importing the submodule would replace it).

>>> import landscape
>>> landscape.Run.__name__, landscape.__version__ == __version__
('Run', True)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"  # the one version: pyproject.toml reads it from here

EXPORTS: dict[str, str] = {
    "LandscapeError": "landscape.errors",
    "Recipe": "landscape.config",
    "load_recipe": "landscape.config",
    "Run": "landscape.run",
    "Recorder": "landscape.recorder",
}
"""Public name -> the module that defines it."""

__all__ = ["__version__", *EXPORTS]


def __getattr__(name: str):
    """A name of :data:`EXPORTS`, imported from its module on first use."""
    if name in EXPORTS:
        value = getattr(importlib.import_module(EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *EXPORTS})
