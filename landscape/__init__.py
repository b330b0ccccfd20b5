"""landscape: loss-landscape analysis of looped transformers."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``landscape.Recorder``, imported on first use (``import landscape`` stays light)."""
    if name == "Recorder":
        from landscape.recorder import Recorder

        return Recorder
    raise AttributeError(f"module 'landscape' has no attribute {name!r}")
