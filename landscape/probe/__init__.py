"""Hessian and River-Valley probes: what is stored, how it is measured, and the driver.

* :mod:`landscape.probe.schema` -- one frozen dataclass per stored part, its group in the
  run file and its codec (the only module that knows the keys);
* :mod:`landscape.probe.parts` -- each measurement as a public function of a loss or an
  operator, settings and the parts it builds on (callable from a notebook);
* :mod:`landscape.probe.driver` -- ``landscape probe``: step selection, the registry of
  parts, reuse of stored parts computed with the same settings, commits, torchrun ranks.
"""

from landscape.probe.driver import REGISTRY, Driver, ProbeSettings, plan, probe, select_steps
from landscape.probe.parts import GeometrySettings, HessianSettings

__all__ = ["REGISTRY", "Driver", "GeometrySettings", "HessianSettings", "ProbeSettings", "plan",
           "probe", "select_steps"]
