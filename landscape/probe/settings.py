"""What a probe computes: its settings, one frozen dataclass per stage, and their defaults.

The one source of the probe's defaults: the library (:mod:`landscape.probe.parts`,
:mod:`landscape.probe.driver`) and the CLI's flags (``landscape probe``) read them from
here. Importing it loads none of the probe's machinery (the CLI reads it before any work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from landscape.errors import LandscapeError
from landscape.train.recipe import GRID_MAX

EXACT_OPTIONS = ("auto", "always", "never")


@dataclass(frozen=True)
class HessianSettings:
    """What the Hessian parts compute. CLI flags of ``landscape probe --hessian``."""

    k_top: int = 10  # top eigenpairs (the sharpest valley directions)
    k_bottom: int = 5  # bottom eigenvalues (negative curvature)
    tol: float = 0.0  # Lanczos relative residual tolerance; 0: 1e-4 float32, 1e-8 float64
    max_steps: int = 300  # Lanczos step cap
    trace_hvps: int = 60  # Hutch++ budget beyond the deflated top-k
    slq_runs: int = 10  # SLQ start vectors
    slq_steps: int = 90  # Lanczos steps per SLQ run
    # full spectrum: "always", "never", or "auto": where P <= exact_max_params and the
    # plan puts it under landscape.probe.costs.EXACT_AUTO_SECONDS (60 s) per checkpoint
    exact: str = "auto"
    exact_max_params: int = 3000  # the "auto" bound (the dense Hessian costs P HVPs)
    # per-block spectra: () none; ("layers",) the architecture's layers; else fnmatch
    # patterns of parameter names, one block each (see landscape.curvature.param_blocks)
    blocks: tuple[str, ...] = ()
    dtype: str = "float32"  # "float32" or "float64" products
    backend: str = "landscape"  # "landscape", or "pyhessian" to add PyHessian's numbers
    seed: int = 0

    def __post_init__(self):
        if self.k_top < 1 or self.k_bottom < 0:
            raise LandscapeError("hessian: k_top must be >= 1 and k_bottom >= 0")
        if self.exact not in EXACT_OPTIONS:
            raise LandscapeError(f"hessian: exact must be one of {EXACT_OPTIONS}")
        if self.dtype not in ("float32", "float64"):
            raise LandscapeError("hessian: dtype must be float32 or float64")
        if self.backend not in ("landscape", "pyhessian"):
            raise LandscapeError("hessian: backend must be landscape or pyhessian")
        if min(self.slq_runs, self.slq_steps, self.trace_hvps, self.max_steps) < 1:
            raise LandscapeError("hessian: slq_runs, slq_steps, trace_hvps, max_steps >= 1")
        if isinstance(self.blocks, (bool, str)):
            raise LandscapeError("hessian: blocks is a tuple of patterns (or ('layers',))")
        if "layers" in self.blocks and len(self.blocks) > 1:
            raise LandscapeError("hessian: blocks 'layers' (the default blocks) cannot be "
                                 "mixed with patterns")

    @property
    def block_patterns(self) -> tuple[str, ...] | None:
        """The patterns of the blocks, or None for the architecture's layers."""
        return None if self.blocks == ("layers",) else tuple(self.blocks)

    @property
    def torch_dtype(self):
        """The dtype of the products (a ``torch.dtype``)."""
        import torch

        return torch.float64 if self.dtype == "float64" else torch.float32


@dataclass(frozen=True)
class GeometrySettings:
    """What the geometry parts compute. CLI flags of ``landscape probe --geometry``."""

    eps_rel: float = 1e-3  # river threshold relative to lambda_max (see valley.py)
    tau_rel: float = 0.1  # small-valley-eigenvalue threshold relative to lambda_max
    delta: float = 0.02  # loss rise (nats) at which valley widths are read
    width_dirs: int = 3  # top valley eigenvectors to measure widths along
    width_points: int = 31  # points per width slice (odd)
    grid: int = 21  # points per axis of 2-D slices (odd)
    span: float = 1.0  # half-extent of the random plane (filter-normalised units)
    loops_max: int = 0  # loop curve up to this many loops; 0: twice the trained loops
    seed: int = 0  # random plane seed
    # A random plane shared between runs ("" for none): "init" normalises it against the
    # run's own first checkpoint (runs started from the same initialisation, e.g. Single-
    # and Looped-Attn with one seed, then get the same directions); "PATH" or "PATH:STEP"
    # against a checkpoint of another run file (default: its first). Stored as slice_shared.
    shared_plane: str = ""
    spread_k: int = 5  # top valley eigenvectors spanning the direction-spread subspace
    spread_dirs: int = 32  # random directions of the direction spread
    # The optimiser's valley (part optimiser_valley, at checkpoints with AdamW's second
    # moment; see landscape.geometry.optimiser_valley): the top valley_k eigenpairs of the
    # Adam-preconditioned Hessian are examined; those >= near_edge x the optimiser's edge
    # span it, or, where none is near, the top fallback_k (also the raw top-k compared).
    valley_k: int = 16
    near_edge: float = 0.5  # = landscape.geometry.optimiser_valley.NEAR_EDGE
    fallback_k: int = 5  # = landscape.geometry.optimiser_valley.FALLBACK_K
    # Claim 4's intervention (part intervention, at [train] intervene_at starts): optimiser
    # steps K continued from the start in each arm (fewer where the run's budget ends first)
    intervention_steps: int = 32

    def __post_init__(self):
        if self.spread_k < 1 or self.spread_dirs < 2:
            raise LandscapeError("geometry: need spread_k >= 1 and spread_dirs >= 2")
        if not (1 <= self.fallback_k <= self.valley_k and 0 < self.near_edge <= 1
                and self.intervention_steps >= 1):
            raise LandscapeError("geometry: need 1 <= fallback_k <= valley_k, 0 < near_edge "
                                 "<= 1 and intervention_steps >= 1")
        for key in ("grid", "width_points"):  # name only the one given wrong
            if getattr(self, key) % 2 == 0:
                raise LandscapeError(f"geometry: {key}={getattr(self, key)} must be odd (the "
                                     "origin must be a grid point)")
        if not (0 < self.delta < math.inf and 0 < self.eps_rel < self.tau_rel < math.inf
                and 0 < self.span < math.inf):
            raise LandscapeError("geometry: need finite delta > 0, span > 0 and "
                                 "0 < eps_rel < tau_rel")
        if not 3 <= self.grid <= GRID_MAX:
            raise LandscapeError(f"geometry: grid={self.grid} must be in 3..{GRID_MAX}")


@dataclass(frozen=True)
class ProbeSettings:
    """A whole probe call."""

    steps: str = "spaced:6"  # "all", "last", "spaced:K" or "N,M,..." (optimiser steps)
    hessian: HessianSettings | None = field(default_factory=HessianSettings)
    geometry: GeometrySettings | None = None
    force: bool = False  # recompute parts already stored
    device: str = "cpu"  # where products and grids are computed ("cuda" on a GPU)
    ignore_memory: bool = False  # run parts whose estimated peak memory exceeds the device's
    curvatures: tuple[str, ...] = ("hessian",)  # whose curvature parts: hessian, ggn, fisher
    valley_curvature: str = "hessian"  # whose top eigenvectors the valley split and slices use
