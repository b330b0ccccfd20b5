"""The optimiser_valley and intervention parts on a tiny trained run (AdamW state stored)."""

import math

import numpy as np
import pytest
import torch
from helpers import tiny_recipe

from landscape.curvature.dense_hessian import dense_hessian
from landscape.curvature.hessian import HessianOperator
from landscape.errors import LandscapeError
from landscape.geometry.optimiser_valley import principal_angles
from landscape.geometry.uv_measures import precondition_denominator, preconditioned
from landscape.probe import parts
from landscape.probe.settings import HessianSettings
from landscape.runfile import schema as sc
from landscape.runs.run import Run
from landscape.train.trainer import train


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    r = tiny_recipe(model={"d_model": 4, "n_heads": 1},
                    train={"window_steps": 8, "window_at": [8], "intervene_at": [8]})
    path = train(r, tmp_path_factory.mktemp("ov") / "run.h5")
    run = Run.open(path)
    loss_fn = run.loss_fn(step=8)
    params = {k: v.double() for k, v in run.params(8).items()}
    op = HessianOperator(loss_fn, params)
    return path, run, op, loss_fn, params


def test_optimiser_valley_part_matches_dense_float64(probed):
    path, run, op, loss_fn, params = probed
    top = parts.top(op, HessianSettings(k_top=5, k_bottom=0))
    v, step = run.adam_state(8)
    opt = run.optimizer_at(8)
    (window,) = run.windows()
    part = parts.optimiser_valley(op, top, run.lr_at(8), opt, v, step,
                                  window_updates=window.updates, window_start=8, k=8)
    h = dense_hessian(loss_fn, params).double().numpy()
    d = precondition_denominator(v, step, opt.beta2, opt.eps)
    pre = np.sort(np.linalg.eigvalsh(preconditioned(h, d)))[::-1]
    np.testing.assert_allclose(part.pre_values[:3], pre[:3], rtol=1e-4)
    q = part.basis.astype(np.float64)
    mu = np.sort(np.linalg.eigvalsh(q @ h @ q.T))[::-1]
    np.testing.assert_allclose(part.edge_eigvals, mu, rtol=1e-4, atol=1e-8)
    assert part.edge == pytest.approx(opt.edge(run.lr_at(8)))
    assert part.near_edge == bool(pre[0] >= 0.5 * part.edge)
    assert ("top" in part.note) != part.near_edge
    assert part.alt_basis is not None and part.angles_edge_alt.size >= 1
    assert np.all((part.angles_raw_edge >= 0) & (part.angles_raw_edge <= math.pi / 2 + 1e-9))
    # stored and read back
    sc.write(path, part, 8)
    back = sc.read(path, sc.OptimiserValley, 8)
    np.testing.assert_array_equal(back.basis, part.basis)
    assert back.note == part.note and back.window_start == 8
    with pytest.raises(LandscapeError, match="second moment"):
        parts.optimiser_valley(op, top, run.lr_at(8), opt, v, 0)


def test_intervention_part_removes_the_valley_motion(probed):
    path, run, op, loss_fn, params = probed
    layout = run.layout
    top = parts.top(op, HessianSettings(k_top=3, k_bottom=0))

    def probe_loss(flat):
        p = layout.unflatten(torch.as_tensor(flat, dtype=torch.float32))
        return float(run.loss_fn(step=8)(p))

    part = parts.intervention(path, 8, 8, top.vectors, probe_loss, valley_source="raw")
    assert part.unchanged.loss_end == pytest.approx(probe_loss(run.flat_params(16)), abs=1e-6)
    assert part.unchanged.valley_path > 0 and part.removed.valley < 1e-5
    assert part.removed.valley_path < 1e-4 * part.unchanged.valley_path + 1e-6
    assert part.unchanged.river > 0  # u is the unchanged arm's own river part
    assert part.progress_lost == pytest.approx(part.removed.loss_end - part.unchanged.loss_end)
    sc.write(path, part, 8)
    back = sc.read(path, sc.Intervention, 8)
    assert back.removed.river == part.removed.river and back.projects == "adam_update"
    assert principal_angles(top.vectors, top.vectors).max() < 1e-3
