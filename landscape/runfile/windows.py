"""Per-step dynamics windows in a run file: where they live, how rows are added and read.

A window is a stretch of consecutive optimiser steps recorded step by step (``[train]
window_steps``/``window_at`` for ``landscape train``; :meth:`landscape.Recorder.window_step`
for a loop of your own): checkpoints lie an epoch apart, and an oscillation from one step
to the next is invisible at that spacing. Groups::

    /windows/start_<S>              attrs: start (S), requested (steps asked for), planned
                                    (steps it will hold: requested, or fewer where the
                                    run's budget ends first)
    /windows/start_<S>/step         [n] int64   the optimiser step of each row: S, S+1, ...
    /windows/start_<S>/updates      [n, P] f32  parameters after the step minus before it
                                                (segments, as /trajectory/params)
    /windows/start_<S>/loss         [n] f64     training loss of the step's batch, before
                                                its update
    /windows/start_<S>/lr           [n] f64     the learning rate of the step
    /windows/start_<S>/loops        [n] int64   loops the step trained with

Rows are appended by the same commit as the checkpoints (:func:`append_rows` inside a
:func:`landscape.runfile.store.commit`), so a window is crash-safe like the rest: a run
killed mid-window keeps the rows of its last commit, and a resumed run appends the rest.
Files written before windows existed have no ``/windows`` group and read as no windows.
The rules checked on opening are in :mod:`landscape.runfile.validate` (``/windows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from landscape.runfile import store

GROUP = "windows"
FIELDS = ("step", "updates", "loss", "lr", "loops")
"""The arrays of a window, one row per optimiser step."""


def group(start: int) -> str:
    """The group of the window that starts at optimiser step ``start``.

    >>> group(64)
    'windows/start_64'
    """
    return f"{GROUP}/start_{int(start)}"


@dataclass(frozen=True)
class Window:
    """One stored window: consecutive optimiser steps, one row each.

    Attributes:
        start: the optimiser step of its first row (0-based, as ``Recipe.lr_at``).
        steps: ``[n]`` int64 optimiser step of each row (``start, start+1, ...``).
        updates: ``[n, P]`` float32 parameter update of each step (after minus before,
            in the run's :class:`~landscape.curvature.objective.ParamLayout` order).
        loss: ``[n]`` training loss of each step's batch, before its update.
        lr: ``[n]`` learning rate of each step.
        loops: ``[n]`` loops each step trained with.
        requested: the steps asked for (``train.window_steps``).
        planned: the steps it will hold: ``requested``, or fewer where the run's budget
            ends first (:attr:`cut`).
    """

    start: int
    steps: np.ndarray
    updates: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    loops: np.ndarray
    requested: int
    planned: int

    @property
    def n(self) -> int:
        """Rows stored."""
        return int(self.steps.size)

    @property
    def cut(self) -> bool:
        """The run's budget ends before ``requested`` steps (the window holds fewer)."""
        return self.planned < self.requested

    @property
    def complete(self) -> bool:
        """All ``planned`` rows are stored (False while training, or after an early stop)."""
        return self.n == self.planned


def append_rows(tx: store.Transaction, start: int, requested: int, planned: int,
                rows: list[tuple[int, np.ndarray, float, float, int]]) -> None:
    """Append ``rows`` (``(step, update [P], loss, lr, loops)`` each) to the window at ``start``.

    Called inside a commit; the group is created by its first rows.
    """
    if not rows:
        return
    where = group(start)
    tx.set_attrs({"start": int(start), "requested": int(requested), "planned": int(planned)},
                 group=where)
    tx.append(f"{where}/step", np.array([r[0] for r in rows], dtype=np.int64))
    tx.append(f"{where}/updates", np.stack([np.asarray(r[1], np.float32) for r in rows]))
    tx.append(f"{where}/loss", np.array([r[2] for r in rows], dtype=np.float64))
    tx.append(f"{where}/lr", np.array([r[3] for r in rows], dtype=np.float64))
    tx.append(f"{where}/loops", np.array([r[4] for r in rows], dtype=np.int64))


def read(path: str | Path) -> list[Window]:
    """Every window of the run file ``path``, by start step (``[]`` for a file without).

    The file has been validated on opening (:func:`landscape.runfile.store.check_run_file`),
    so every window's arrays have one row per step and the layout's width.
    """
    got = store.read_group(path, GROUP)
    if got is None:
        return []
    out = []
    for key, g in got.items():
        if key == "attrs":
            continue
        a = g["attrs"]
        out.append(Window(start=int(a["start"]), steps=np.asarray(g["step"], np.int64),
                          updates=np.asarray(g["updates"]), loss=np.asarray(g["loss"]),
                          lr=np.asarray(g["lr"]), loops=np.asarray(g["loops"], np.int64),
                          requested=int(a["requested"]), planned=int(a["planned"])))
    return sorted(out, key=lambda w: w.start)
