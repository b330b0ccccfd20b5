"""Ours: 2-D loss slices (random, river x valley, PCA plane with the trajectory).

Usage: python figures/slices.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("slices", __doc__)
