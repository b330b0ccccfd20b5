"""Ours: Single-Attn, Looped-Attn and SHIFT on one random plane, on one colour scale.

Needs the runs probed with ``--shared-plane`` (reproduce does: ``init``, their common
initialisation).

Usage: python figures/shared_plane.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("shared_plane", __doc__)
