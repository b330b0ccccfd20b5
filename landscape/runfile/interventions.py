"""Intervention starts in a run file: the full training state at chosen optimiser steps.

An intervention (claim 4: remove each update's valley component and see what river
progress is lost) continues training from a step with the optimiser's full state and the
same batches. ``[train] intervene_at`` names those steps; at each, before that step's
update, the trainer stores::

    /interventions/start_<S>              attrs: start (S), adam_step (AdamW's step count)
    /interventions/start_<S>/state        [bytes] uint8  torch.save of the model, the
                                          optimiser (both moments and the step), the batch
                                          generator and the loop state, as /resume/state
    /interventions/start_<S>/params       [P] f32  the parameters (layout order)
    /interventions/start_<S>/exp_avg      [P] f32  AdamW's first moment (zeros before any step)
    /interventions/start_<S>/exp_avg_sq   [P] f32  its second moment

O(1) per start (one state, three rows of P), written by the same commit as the next
checkpoint, so a run killed before that commit stores it again when resumed. The rules
checked on opening are in :mod:`landscape.runfile.validate` (``/interventions``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landscape.errors import LandscapeError
from landscape.runfile import store

GROUP = "interventions"
ARRAYS = ("state", "params", "exp_avg", "exp_avg_sq")
"""The datasets of a start, each once."""


def group(start: int) -> str:
    """The group of the intervention start at optimiser step ``start``.

    >>> group(32)
    'interventions/start_32'
    """
    return f"{GROUP}/start_{int(start)}"


@dataclass(frozen=True)
class InterventionState:
    """The training state stored at one intervention start.

    Attributes:
        start: the optimiser step whose update comes next (0-based, as ``Recipe.lr_at``).
        state: ``torch.save`` bytes of model, optimiser, batch generator and loop state.
        params: ``[P]`` float32 parameters.
        exp_avg: ``[P]`` float32 AdamW first moment.
        exp_avg_sq: ``[P]`` float32 AdamW second moment.
        adam_step: AdamW's step count behind the moments (0: no step taken yet).
    """

    start: int
    state: bytes
    params: np.ndarray
    exp_avg: np.ndarray
    exp_avg_sq: np.ndarray
    adam_step: int


def put(tx: store.Transaction, s: InterventionState) -> None:
    """Store (or replace) the start ``s`` inside a commit."""
    where = group(s.start)
    tx.delete(where)
    tx.put(where, {"state": np.frombuffer(s.state, dtype=np.uint8),
                   "params": np.asarray(s.params, np.float32),
                   "exp_avg": np.asarray(s.exp_avg, np.float32),
                   "exp_avg_sq": np.asarray(s.exp_avg_sq, np.float32)},
           {"start": int(s.start), "adam_step": int(s.adam_step)})


def read(path: str | Path) -> list[InterventionState]:
    """Every intervention start of the run file ``path``, by step (``[]`` for none).

    The file has been validated on opening (:func:`landscape.runfile.store.check_run_file`).
    """
    got = store.read_group(path, GROUP)
    if got is None:
        return []
    out = []
    for key, g in got.items():
        if key == "attrs":
            continue
        a = g["attrs"]
        out.append(InterventionState(
            start=int(a["start"]), state=np.asarray(g["state"], np.uint8).tobytes(),
            params=np.asarray(g["params"]), exp_avg=np.asarray(g["exp_avg"]),
            exp_avg_sq=np.asarray(g["exp_avg_sq"]), adam_step=int(a["adam_step"])))
    return sorted(out, key=lambda s: s.start)


def at(path: str | Path, start: int) -> InterventionState:
    """The start stored at optimiser step ``start`` (a LandscapeError naming those stored)."""
    found = {s.start: s for s in read(path)}
    if int(start) not in found:
        have = ", ".join(map(str, found)) or "none"
        raise LandscapeError(f"{path} stores no intervention start at step {start} (stored: "
                             f"{have}; set [train] intervene_at before training)")
    return found[int(start)]
