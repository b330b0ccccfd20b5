"""Ours: kappa(H_valley), small-eigenvalue counts and force; valley width vs river progress.

Usage: python figures/valley.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("valley", __doc__)
