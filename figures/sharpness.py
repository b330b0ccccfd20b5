"""Ours: lambda_max against its stability threshold, plain and Adam-preconditioned.

Usage: python figures/sharpness.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("sharpness", __doc__)
