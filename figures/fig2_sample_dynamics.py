"""Paper Fig. 2: accuracy and loss on simple and complex samples, Single vs Looped.

Usage: python figures/fig2_sample_dynamics.py [FOLDER] [--out DIR] [--format pdf,png]
"""

from _common import draw

draw("sample_dynamics", __doc__)
