"""Figures: arrays in, matplotlib Figures out, and the set of figures of a run.

Takes in the series of :mod:`landscape.analysis.series` and hands on figure files:

* :mod:`landscape.draw.plot` -- one function per figure kind, one style;
* :mod:`landscape.draw.figures` -- which figures a set of runs supports, rendered;
* :mod:`landscape.draw.checks` -- what a reader would find wrong with a drawn figure
  (overlapping or cut-off text, unlabelled axes, empty panels, small fonts).
"""
