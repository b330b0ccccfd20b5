"""Paper Fig. 4: SHIFT vs Single vs Looped against epoch and wall-clock.

Usage: python figures/fig4_shift.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("shift", __doc__)
