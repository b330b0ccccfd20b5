"""Paper Figs. 11-16: SHIFT vs Looped wall-clock and accuracy per algorithmic task, and length generalization.

Usage: python figures/fig11_algorithmic.py [reproduce/quick] [--out figures/out] [--format pdf,png]
"""

from _common import draw

draw("algorithmic", __doc__)
