"""Ours: the SHIFT switch (loss jump, sharpness, eigenspace overlap).

Usage: python figures/switch.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("switch", __doc__)
