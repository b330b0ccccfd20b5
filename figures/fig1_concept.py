"""Paper Fig. 1: River-U and River-V valleys with gradient descent, and the SHIFT timeline.

Usage: python figures/fig1_concept.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("concept", __doc__)
