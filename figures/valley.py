"""Ours: kappa(H_valley), small-eigenvalue counts and force over training; valley width vs river progress.

Usage: python figures/valley.py [reproduce/quick] [--out figures/out] [--format pdf,png]
"""

from _common import draw

draw("valley", __doc__)
