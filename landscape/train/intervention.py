"""Continue a recorded run from an intervention start, unchanged or without its valley motion.

Claim 4's mechanism says the valley oscillation drives progress along the river. The test
is an intervention: from a step ``S`` stored with ``[train] intervene_at``
(:mod:`landscape.runfile.interventions`: model, both AdamW moments and its step, batch
generator and loop state), continue ``K`` optimiser steps with the run's own recipe, the
same batches and the same learning-rate schedule, in two arms:

* **unchanged**: the trainer's own step. On CPU it reproduces the recorded trajectory
  bit for bit (tested against the stored window and checkpoints);
* **valley removed**: each step's AdamW *update* (parameters after the step minus before,
  weight decay included), not the gradient, has its component in the valley span ``V``
  (orthonormal rows) removed: ``theta_{t+1} = theta_t + (I - V'V) d_t``. The moments
  are those AdamW computes from the gradients it meets on this path; only the move is
  projected. So the valley coordinates ``V theta`` stay at their start value (to float32
  rounding), and what the run loses is the motion the valley would have driven.

Nothing is written to the run file: the caller (:mod:`landscape.probe`) stores the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from landscape.errors import LandscapeError
from landscape.runfile import interventions, store, validate
from landscape.train.recipe import stored_recipe
from landscape.train.trainer import Trainer


@dataclass(frozen=True)
class Continuation:
    """``K`` steps continued from an intervention start.

    Attributes:
        start: the start step S.
        steps: ``[K]`` optimiser steps taken (S .. S+K-1).
        params: ``[K+1, P]`` float32 parameters before the first step and after each.
        batch_loss: ``[K]`` training loss of each step's batch, before its update.
        lr: ``[K]`` the learning rate of each step.
        removed: the valley span's dimension whose motion was removed (0: unchanged).
    """

    start: int
    steps: np.ndarray
    params: np.ndarray
    batch_loss: np.ndarray
    lr: np.ndarray
    removed: int

    @property
    def updates(self) -> np.ndarray:
        """``[K, P]`` the applied update of each step (float32 differences)."""
        return np.diff(self.params, axis=0)


def continue_from(path: str | Path, start: int, steps: int,
                  valley: np.ndarray | None = None) -> Continuation:
    """Continue the run file ``path`` for ``steps`` steps from its start at step ``start``.

    Args:
        path: a run file of ``landscape train`` with an intervention start at ``start``.
        start: the optimiser step S (one of ``[train] intervene_at``).
        steps: K >= 1, with ``S + K`` at most the run's steps.
        valley: ``[k, P]`` orthonormal rows whose span is removed from every update (the
            valley-removed arm), or None (the unchanged arm).

    Returns:
        See :class:`Continuation`.
    """
    path = Path(path)
    attrs = store.read_summary(path)["attrs"]
    if "recipe" not in attrs:
        raise LandscapeError(f"{path} is a run of your own model: interventions need a run of "
                             "landscape train (its recipe rebuilds model and batches)")
    recipe = stored_recipe(path, attrs)
    found = interventions.at(path, start)
    trainer = Trainer(recipe, path)
    trainer.windows = []  # record nothing: this continuation is not the run
    if not 1 <= steps <= trainer.total - start:
        raise LandscapeError(f"steps must be in 1..{trainer.total - start} from step {start} "
                             f"of a {trainer.total}-step run, got {steps}")
    trainer.restore(validate.load_resume_state(path, found.state, map_location=trainer.device))
    removed = 0
    if valley is not None:
        v = torch.as_tensor(np.asarray(valley, dtype=np.float32), device=trainer.device)
        if v.ndim != 2 or v.shape[1] != trainer.layout.size or not torch.isfinite(v).all():
            raise LandscapeError(f"valley must be a finite [k, P={trainer.layout.size}] "
                                 f"array, got {tuple(v.shape)}")
        off = float((v @ v.T - torch.eye(v.shape[0], device=v.device)).abs().max())
        if off > 1e-4:
            raise LandscapeError(f"valley rows must be orthonormal (V V' - I is {off:.2g} off)")
        trainer.update_projection = lambda d: d - v.T @ (v @ d)
        removed = int(v.shape[0])
    params = [trainer._flat_params().cpu().numpy()]
    losses, lrs = [], []
    for t in range(steps):
        lrs.append(recipe.lr_at(start + t, trainer.total))
        losses.append(trainer._train_step())
        params.append(trainer._flat_params().cpu().numpy())
    return Continuation(start=int(start), steps=np.arange(start, start + steps),
                        params=np.stack(params), batch_loss=np.asarray(losses),
                        lr=np.asarray(lrs), removed=removed)
