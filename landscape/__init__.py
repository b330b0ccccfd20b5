"""landscape: loss-landscape analysis of looped transformers."""

__version__ = "0.1.0"
