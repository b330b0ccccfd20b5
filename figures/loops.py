"""Ours: loss and lambda_max against the number of loops at fixed weights.

Usage: python figures/loops.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("loops", __doc__)
