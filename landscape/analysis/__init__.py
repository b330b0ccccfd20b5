"""From run files to series, statistics and the claims report.

Takes in probed runs and hands on typed series (what figures draw) and verdicts:

* :mod:`landscape.analysis.series` -- the one reader of runs for figures and claims;
* :mod:`landscape.analysis.stats` -- seed intervals and comparisons;
* :mod:`landscape.analysis.targets` -- time to a target, order of learning;
* :mod:`landscape.analysis.claims` -- each paper claim judged by a rule fixed beforehand.
"""
