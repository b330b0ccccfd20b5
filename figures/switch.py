"""Ours: the SHIFT switch (loss jump, sharpness, eigenspace overlap).

Usage: python figures/switch.py [reproduce/quick] [--out figures/out] [--format pdf,png]
"""

from _common import draw

draw("switch", __doc__)
