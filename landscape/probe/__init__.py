"""Probes: the measurements of a run's checkpoints, planned, computed and stored.

Takes in a run (:mod:`landscape.runs`) and its checkpoints, and hands on typed parts
(:mod:`landscape.runfile.schema`) committed to the run file:

* :mod:`landscape.probe.settings` -- what a probe computes, and the defaults;
* :mod:`landscape.probe.costs` -- what a probe will cost before it runs (``--plan``);
* :mod:`landscape.probe.pyhessian_backend` -- PyHessian as a baseline backend;
* :mod:`landscape.probe.parts` -- each measurement as a public function of a loss or an
  operator, settings and the parts it builds on (callable from a notebook);
* :mod:`landscape.probe.driver` -- ``landscape probe``: step selection, the registry of
  parts, reuse of stored parts computed with the same settings, commits, torchrun ranks.
"""

from __future__ import annotations

import importlib

from landscape.probe.settings import GeometrySettings, HessianSettings, ProbeSettings

_LAZY = {"REGISTRY": "landscape.probe.driver", "Driver": "landscape.probe.driver",
         "plan": "landscape.probe.driver", "probe": "landscape.probe.driver",
         "select_steps": "landscape.probe.driver"}
"""Names imported from their module on first use, so that reading the settings (the
CLI does, for its defaults) loads none of the probe's machinery."""

__all__ = ["REGISTRY", "Driver", "GeometrySettings", "HessianSettings", "ProbeSettings", "plan",
           "probe", "select_steps"]


def __getattr__(name: str):
    """A name of :data:`_LAZY`, imported on first use."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'landscape.probe' has no attribute {name!r}")
