"""Paper Figs. 11-16: SHIFT vs Looped per algorithmic task, and length generalization.

Usage: python figures/fig11_algorithmic.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("algorithmic", __doc__)
