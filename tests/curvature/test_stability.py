"""Each optimiser's edge against torch's own optimiser on ``lambda x^2 / 2``."""

from __future__ import annotations

import math

import pytest
import torch

from landscape.curvature.stability import (
    OptimizerRecord,
    adam_edge,
    gd_edge,
    heavy_ball_edge,
    nesterov_edge,
)

LR = 0.1
MARGIN = 0.03  # lambda at (1 -+ MARGIN) times the edge


def _final_size(make, lam: float, steps: int, x0: float = 1.0, warmup: int = 0) -> float:
    """|x| / x0 after ``steps`` steps of ``make(params)`` on ``lam x^2 / 2`` (inf past 1e9).

    The first ``warmup`` of them on a flat loss (zero gradients: the iterate stays put).
    """
    x = torch.tensor([x0], dtype=torch.float64, requires_grad=True)
    opt = make([x])
    for t in range(steps):
        opt.zero_grad()
        (0.5 * (lam if t >= warmup else 0.0) * x.square().sum()).backward()
        opt.step()
        if not float(x.detach().abs().max()) < 1e9 * x0:  # diverged (stop before overflow)
            return math.inf
    return float(x.detach().abs().max()) / x0


SGD_CASES = [  # (torch SGD kwargs, the edge)
    ({}, gd_edge(LR)),
    ({"momentum": 0.9}, heavy_ball_edge(LR, 0.9)),
    ({"momentum": 0.5, "dampening": 0.3}, heavy_ball_edge(LR, 0.5, 0.3)),
    ({"momentum": 0.9, "nesterov": True}, nesterov_edge(LR, 0.9)),
    ({"momentum": 0.5, "nesterov": True}, nesterov_edge(LR, 0.5)),
]


@pytest.mark.parametrize(("kwargs", "edge"), SGD_CASES)
def test_sgd_is_stable_below_its_edge_and_diverges_above(kwargs, edge):
    def make(p):
        return torch.optim.SGD(p, lr=LR, **kwargs)

    record = OptimizerRecord.of(make([torch.zeros(1, requires_grad=True)]))
    assert record.edge(LR) == pytest.approx(edge)
    below = _final_size(make, (1 - MARGIN) * edge, 1500)
    above = _final_size(make, (1 + MARGIN) * edge, 1500)
    assert below < 1e-3, f"{kwargs}: |x| = {below:.3g} just below the edge {edge:.4g}"
    assert above > 1e3, f"{kwargs}: |x| = {above:.3g} just above the edge {edge:.4g}"


def test_nesterov_edge_is_where_its_linear_recurrence_turns_unstable():
    """The derivation's recurrence itself: spectral radius 1 exactly at the edge."""
    beta = 0.9

    def radius(h: float) -> float:
        m = torch.tensor([[1 - (1 + beta) * h, -beta**2], [h, beta]], dtype=torch.float64)
        return float(torch.linalg.eigvals(m).abs().max())

    h_edge = nesterov_edge(1.0, beta)
    assert radius(0.999 * h_edge) < 1 < radius(1.001 * h_edge)
    assert radius(h_edge) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
@pytest.mark.parametrize("beta1", [0.9, 0.5])
def test_adam_edge_on_the_preconditioned_curvature(cls, beta1):
    """A huge eps freezes Adam's preconditioner at 1/eps: the edge is then on lambda/eps.

    The first 500 steps see a flat loss, so that the first moment's bias correction has
    settled (its early steps, up to 1 / (1 - beta1) times larger, are a transient that
    would push the iterate out of the linear regime); the gradients stay below 1e12 << eps.
    """
    eps = 1e16

    def make(p):
        return cls(p, lr=LR, betas=(beta1, 0.999), eps=eps, weight_decay=0.0)

    record = OptimizerRecord.of(make([torch.zeros(1, requires_grad=True)]))
    edge = adam_edge(LR, beta1)
    assert record.edge(LR) == pytest.approx(edge) and record.preconditioned
    below = _final_size(make, (1 - MARGIN) * edge * eps, 2000, x0=1e-16, warmup=500)
    above = _final_size(make, (1 + MARGIN) * edge * eps, 2000, x0=1e-16, warmup=500)
    assert below < 1e-3, f"|x| / x0 = {below:.3g} just below the edge {edge:.4g}"
    assert above > 1e3, f"|x| / x0 = {above:.3g} just above the edge {edge:.4g}"


def test_an_unknown_optimiser_has_no_edge_and_says_why():
    x = [torch.zeros(1, requires_grad=True)]
    rms = OptimizerRecord.of(torch.optim.RMSprop(x, lr=LR))
    assert rms.kind == "RMSprop" and math.isnan(rms.edge(LR))
    assert rms.unknown_edge(LR) == "edge of RMSprop unknown"
    sgd = OptimizerRecord.of(torch.optim.SGD(x, lr=LR))
    assert math.isnan(sgd.edge(float("nan"))) and sgd.unknown_edge(float("nan"))
    assert sgd.unknown_edge(LR) == "" and sgd.label == "SGD"
    assert OptimizerRecord("").unknown_edge(LR) == "optimiser not recorded"


def test_a_record_round_trips_through_json():
    x = [torch.zeros(1, requires_grad=True)]
    r = OptimizerRecord.of(torch.optim.SGD(x, lr=LR, momentum=0.9, nesterov=True))
    assert OptimizerRecord.from_json({**r.to_json(), "extra": 1}) == r
    assert r.label == "SGD (Nesterov 0.9)"
