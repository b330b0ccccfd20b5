"""The optimiser's own stability edge: the sharpness above which its step diverges.

On a quadratic ``f(x) = lambda x^2 / 2`` each optimiser is a linear recurrence in the
iterate (and its momentum buffer); the edge is the largest ``lambda`` for which that
recurrence is stable at learning rate ``lr``. Cohen et al. (ICLR 2021) found that
full-batch training drives ``lambda_max`` up to this edge and hovers there (the "edge of
stability"); for Adam the quantity that hovers is the sharpness of the preconditioned
Hessian ``D^-1/2 H D^-1/2`` (Cohen et al., arXiv:2207.14484, 2022).

==============================  ===================================  ===============
optimiser (torch semantics)     edge                                 compared with
==============================  ===================================  ===============
SGD                             ``2 / lr``                           ``H``
SGD, heavy ball ``beta``, ``d``  ``(2 + 2 beta) / ((1 - d) lr)``      ``H``
SGD, Nesterov ``beta``           ``(2 + 2 beta) / ((1 + 2 beta) lr)``  ``H``
Adam / AdamW ``beta1``          ``(2 + 2 beta1) / ((1 - beta1) lr)``  ``D^-1/2 H D^-1/2``
==============================  ===================================  ===============

(``d``: SGD's dampening.) Any other optimiser is recorded by its class name and its edge
is unknown (NaN). The tests simulate each torch optimiser on a 1-D quadratic with
``lambda`` just below and just above its edge.

:class:`OptimizerRecord` is what a run file stores of an optimiser (the Recorder and the
trainer write it, :mod:`landscape.runfile.validate` checks it), without the learning rate,
which a run stores per checkpoint in ``/metrics/lr``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PRECONDITIONED = ("Adam", "AdamW")
"""Optimisers whose edge applies to the preconditioned Hessian."""
KNOWN = ("SGD", *PRECONDITIONED)
"""Optimisers whose edge is known."""
UNKNOWN = ""
"""The kind of a checkpoint recorded without its optimiser."""


def gd_edge(lr: float) -> float:
    """``2 / lr``: gradient descent on ``lambda x^2 / 2`` is ``x <- (1 - lr lambda) x``."""
    return 2.0 / lr


def heavy_ball_edge(lr: float, momentum: float, dampening: float = 0.0) -> float:
    """``(2 + 2 beta) / ((1 - d) lr)``: heavy-ball momentum as torch's SGD runs it.

    With ``b_t = beta b_{t-1} + (1 - d) lambda x_{t-1}`` and ``x_t = x_{t-1} - lr b_t``,
    ``x_t = (1 + beta - h) x_{t-1} - beta x_{t-2}`` with ``h = (1 - d) lr lambda``; by the
    Jury criterion its roots lie inside the unit circle iff ``0 < h < 2 + 2 beta``.
    """
    return (2.0 + 2.0 * momentum) / ((1.0 - dampening) * lr)


def nesterov_edge(lr: float, momentum: float) -> float:
    """``(2 + 2 beta) / ((1 + 2 beta) lr)``: Nesterov momentum as torch's SGD runs it.

    Derivation. torch's Nesterov step is ``b_t = beta b_{t-1} + g_t``,
    ``x_t = x_{t-1} - lr (g_t + beta b_t)`` (dampening 0). On ``lambda x^2 / 2``,
    ``g_t = lambda x_{t-1}``; with ``h = lr lambda`` and ``u_t = lr b_t``::

        u_t = beta u_{t-1} + h x_{t-1}
        x_t = (1 - (1 + beta) h) x_{t-1} - beta^2 u_{t-1}

    a linear map of trace ``T = 1 + beta - (1 + beta) h`` and determinant
    ``D = beta (1 - h)``. Its characteristic polynomial ``z^2 - T z + D`` has both roots
    inside the unit circle iff (Jury) ``|D| < 1``, ``1 - T + D > 0`` and
    ``1 + T + D > 0``. Here ``1 - T + D = h`` (positive for ``h > 0``),
    ``1 + T + D = 2 + 2 beta - (1 + 2 beta) h``, positive iff
    ``h < (2 + 2 beta) / (1 + 2 beta)``, and ``|D| < 1`` holds for ``h < 1 + 1 / beta``,
    which is larger. So the largest stable ``eta lambda`` is ``(2 + 2 beta) / (1 + 2 beta)``
    (``2`` at ``beta = 0``, plain GD; about ``1.36`` at ``beta = 0.9``, well below the
    heavy ball's ``3.8``).
    """
    return (2.0 + 2.0 * momentum) / ((1.0 + 2.0 * momentum) * lr)


def adam_edge(lr: float, beta1: float) -> float:
    """``(2 + 2 beta1) / ((1 - beta1) lr)`` on the preconditioned Hessian (38/lr at 0.9).

    With its preconditioner ``D`` frozen, Adam is heavy-ball momentum ``beta1`` with
    dampening ``beta1`` (``m_t = beta1 m_{t-1} + (1 - beta1) g_t``) on ``D^-1/2 H D^-1/2``,
    so this is :func:`heavy_ball_edge` with ``d = beta1``.
    """
    return heavy_ball_edge(lr, beta1, dampening=beta1)


@dataclass(frozen=True)
class OptimizerRecord:
    """An optimiser's kind and hyperparameters (torch's names), as a run file stores them.

    Attributes:
        kind: torch's class name (``SGD``, ``Adam``, ``AdamW``, or any other class's name),
            or ``""`` for a checkpoint recorded without its optimiser.
        momentum: SGD's momentum.
        dampening: SGD's dampening.
        nesterov: SGD's Nesterov flag.
        beta1: Adam's first-moment decay.
        beta2: Adam's second-moment decay.
        eps: Adam's epsilon.
        weight_decay: the weight decay.
    """

    kind: str
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    beta1: float = 0.0
    beta2: float = 0.0
    eps: float = 0.0
    weight_decay: float = 0.0

    @classmethod
    def of(cls, optimizer: Any) -> OptimizerRecord:
        """The record of a torch optimiser (its first parameter group's settings)."""
        group = optimizer.param_groups[0]
        betas = group.get("betas", (0.0, 0.0))
        return cls(kind=type(optimizer).__name__, momentum=float(group.get("momentum", 0.0)),
                   dampening=float(group.get("dampening", 0.0)),
                   nesterov=bool(group.get("nesterov", False)), beta1=float(betas[0]),
                   beta2=float(betas[1]), eps=float(group.get("eps", 0.0)),
                   weight_decay=float(group.get("weight_decay", 0.0)))

    def to_json(self) -> dict:
        """The stored form (a JSON object)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> OptimizerRecord:
        """The record of a stored object (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def preconditioned(self) -> bool:
        """Whether the edge applies to the preconditioned Hessian (Adam, AdamW)."""
        return self.kind in PRECONDITIONED

    def edge(self, lr: float) -> float:
        """The stability edge at learning rate ``lr`` (NaN where unknown; see the module)."""
        if self.kind not in KNOWN or not (math.isfinite(lr) and lr > 0):
            return math.nan
        if self.preconditioned:
            return adam_edge(lr, self.beta1)
        if self.nesterov:
            return nesterov_edge(lr, self.momentum)
        if self.momentum:
            return heavy_ball_edge(lr, self.momentum, self.dampening)
        return gd_edge(lr)

    def unknown_edge(self, lr: float) -> str:
        """Why :meth:`edge` is NaN (``""`` where it is known)."""
        if self.kind == UNKNOWN:
            return "optimiser not recorded"
        if self.kind not in KNOWN:
            return f"edge of {self.kind} unknown"
        if not (math.isfinite(lr) and lr > 0):
            return "learning rate not recorded"
        return ""

    @property
    def label(self) -> str:
        """A short name, e.g. ``SGD (heavy ball 0.9)`` or ``AdamW (beta1 0.9)``."""
        if self.kind == UNKNOWN:
            return "unknown optimiser"
        if self.preconditioned:
            return f"{self.kind} (beta1 {self.beta1:g})"
        if self.kind == "SGD" and self.momentum:
            how = "Nesterov" if self.nesterov else "heavy ball"
            damp = f", dampening {self.dampening:g}" if self.dampening else ""
            return f"SGD ({how} {self.momentum:g}{damp})"
        return self.kind

    @property
    def formula(self) -> str:
        """The edge's formula in words of ``lr`` (``""`` where unknown)."""
        if self.preconditioned:
            return "(2+2b1)/((1-b1) lr)"
        if self.kind != "SGD":
            return ""
        if self.nesterov and self.momentum:
            return "(2+2b)/((1+2b) lr)"
        if self.momentum:
            return "(2+2b)/((1-d) lr)" if self.dampening else "(2+2b)/lr"
        return "2/lr"
