"""Probes: the measurements of a run's checkpoints, planned, computed and stored.

Takes in a run (:mod:`landscape.runs`) and its checkpoints, and hands on typed parts
(:mod:`landscape.runfile.schema`) committed to the run file:

* :mod:`landscape.probe.plan` -- what a probe will cost before it runs;
* :mod:`landscape.probe.pyhessian_backend` -- PyHessian as a baseline backend;
* :mod:`landscape.probe.parts` -- each measurement as a public function of a loss or an
  operator, settings and the parts it builds on (callable from a notebook);
* :mod:`landscape.probe.driver` -- ``landscape probe``: step selection, the registry of
  parts, reuse of stored parts computed with the same settings, commits, torchrun ranks.
"""

from landscape.probe.driver import REGISTRY, Driver, ProbeSettings, plan, probe, select_steps
from landscape.probe.parts import GeometrySettings, HessianSettings

__all__ = ["REGISTRY", "Driver", "GeometrySettings", "HessianSettings", "ProbeSettings", "plan",
           "probe", "select_steps"]
