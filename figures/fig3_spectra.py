"""Paper Figs. 3, 7-8: Hessian spectra over training with phases and matrix entropy.

Usage: python figures/fig3_spectra.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("spectra", __doc__)
