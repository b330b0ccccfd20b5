"""``Run``: a read-only view of a run file for notebooks and for the probes.

>>> run = Run.open("checkpoints/looped_attn.h5")          # doctest: +SKIP
>>> run.steps, run.metrics["complex.acc"]                 # doctest: +SKIP
>>> model = run.model(step=-1)                            # doctest: +SKIP
>>> loss = run.loss_fn("probe")                           # doctest: +SKIP
>>> loss(run.params(-1))                                  # doctest: +SKIP

Nothing here keeps the file open: every access opens it, reads, and closes it, so a
``Run`` never holds a handle that a writer's atomic replace would invalidate.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from landscape import store
from landscape.config import Recipe, recipe_from_dict
from landscape.errors import LandscapeError
from landscape.model import LoopedTransformer
from landscape.objective import LossFn, ParamLayout, make_loss_fn
from landscape.tasks import Split, TaskData, generate


class Run:
    """One run file: recipe, trajectory, metrics, events and probe results.

    Attributes:
        path: the run file.
        recipe: the :class:`~landscape.config.Recipe` it was trained with (also ``config``).
        steps: ``[n]`` optimiser step of each checkpoint.
        loops: ``[n]`` loops live at each checkpoint (1 Single-Attn, >1 Looped-Attn).
        metrics: evaluation metrics by name, each ``[m]`` (``step``, ``epoch``, ``wall``,
            ``lr``, ``train_loss``, ``grad_norm``, ``<split>.loss``, ``<split>.acc``, ...).
        events: e.g. the SHIFT switch with the criterion's values.
        ceilings: Bayes-optimal ``{"acc", "loss"}`` per evaluation split.
        layout: how a trajectory row maps to named parameters.
    """

    def __init__(self, path: Path, summary: dict):
        self.path = path
        self._summary = summary
        attrs = summary["attrs"]
        self.attrs = attrs
        self.recipe: Recipe = recipe_from_dict(attrs["recipe"])
        self.config = self.recipe
        self.steps = np.asarray(summary["steps"], dtype=np.int64)
        self.loops = np.asarray(summary["loops"], dtype=np.int64)
        self.metrics: dict[str, np.ndarray] = summary["metrics"]
        self.events: list[dict] = summary["events"]
        self.task_attrs: dict = summary["task_attrs"]
        self.ceilings: dict = self.task_attrs.get("ceilings") or {}
        self.layout = ParamLayout.from_json(summary["layout"])
        self.probes: dict[int, list[str]] = summary["probes"]

    @classmethod
    def open(cls, path: str | Path) -> Run:
        """Open a run file read-only (raises LandscapeError if it is not a readable run file)."""
        path = store.check_run_file(path)
        return cls(path, store.read_summary(path))

    def refresh(self) -> Run:
        """A new view with what has been committed since this one was opened."""
        return Run.open(self.path)

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, {self.recipe.arch}, task={self.recipe.task.name}, "
                f"{len(self.steps)} checkpoints, status={self.status})")

    @property
    def status(self) -> str:
        """``training`` (still being written, or interrupted) or ``complete``."""
        return str(self.attrs.get("status", "unknown"))

    @property
    def name(self) -> str:
        """The recipe's name."""
        return self.recipe.name

    @property
    def shift_step(self) -> int | None:
        """The step at which SHIFT switched to Looped-Attn, if it did."""
        for e in self.events:
            if e.get("kind") == "shift":
                return int(e["step"])
        return None

    # --- checkpoints --------------------------------------------------------------------

    def index(self, step: int | None = -1) -> int:
        """Row of the checkpoint at optimiser step ``step`` (-1 or None: the last one)."""
        if len(self.steps) == 0:
            raise LandscapeError(f"{self.path} has no checkpoints yet")
        if step is None or step == -1:
            return len(self.steps) - 1
        hits = np.flatnonzero(self.steps == step)
        if len(hits) == 0:
            raise LandscapeError(
                f"step {step} is not a checkpoint of {self.path} (checkpoints: "
                f"{_describe_steps(self.steps)})"
            )
        return int(hits[0])

    def step_at(self, step: int | None = -1) -> int:
        """The optimiser step of a checkpoint given as a step or -1 (last)."""
        return int(self.steps[self.index(step)])

    def flat_params(self, step: int | None = -1) -> np.ndarray:
        """``[P]`` float32 parameters of one checkpoint."""
        return store.read_params(self.path, self.index(step))

    def adam_state(self, step: int | None = -1) -> tuple[np.ndarray, int]:
        """AdamW's ``exp_avg_sq`` ``[P]`` at a checkpoint and its step count (0: no state)."""
        i = self.index(step)
        adam_steps = self._summary.get("adam_step")
        if adam_steps is None:
            raise LandscapeError(f"{self.path} has no Adam state per checkpoint")
        return store.read_params(self.path, i, name="adam_v"), int(adam_steps[i])

    def trajectory(self, steps=None) -> np.ndarray:
        """``[n, P]`` parameters of several checkpoints (default: all)."""
        if steps is None:
            return store.read_params(self.path, slice(None))
        return store.read_params(self.path, np.array([self.index(s) for s in steps]))

    def params(self, step: int | None = -1, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Named parameters of one checkpoint (fresh tensors)."""
        flat = torch.from_numpy(self.flat_params(step)).to(device=device, dtype=dtype)
        return {k: v.clone() for k, v in self.layout.unflatten(flat).items()}

    def model(self, step: int | None = -1, loops: int | None = None,
              device: str | torch.device = "cpu") -> LoopedTransformer:
        """A module with that checkpoint's weights and loops (or ``loops``), in eval mode."""
        i = self.index(step)
        model = LoopedTransformer(self.recipe.model, int(self.task_attrs["vocab_size"]),
                                  int(self.task_attrs["max_len"]))
        params = self.params(step)
        model.load_state_dict(params, strict=False)
        missing = set(self.layout.names) - set(dict(model.named_parameters()))
        if missing:
            raise LandscapeError(f"{self.path}: checkpoint parameters {sorted(missing)} do not "
                                 "fit the recipe's model")
        model.loops = int(loops if loops is not None else self.loops[i])
        return model.to(device).eval()

    # --- data and objective -------------------------------------------------------------

    @cached_property
    def task_data(self) -> TaskData:
        """The task's data, regenerated from the recipe (deterministic in it)."""
        return generate(self.recipe.task)

    def split(self, name: str = "probe") -> Split:
        """Sequences by name: ``probe`` (the fixed probe set), ``train``, or an eval split.

        ``hessian`` is an alias of ``probe``: the set every Hessian probe evaluates.
        """
        if name in ("probe", "hessian"):
            ps = store.read_probe_set(self.path)
            return Split(torch.from_numpy(ps["inputs"]), torch.from_numpy(ps["targets"]))
        if name == "train":
            return self.task_data.train
        if name in self.task_data.evals:
            return self.task_data.evals[name]
        known = ", ".join(["probe", "train", *self.task_data.evals])
        raise LandscapeError(f"unknown split {name!r} (splits: {known})")

    def loss_fn(self, split: str = "probe", step: int | None = -1, loops: int | None = None,
                device: str | torch.device = "cpu") -> LossFn:
        """``f(params) -> scalar``: mean loss over all scored tokens of ``split``.

        The architecture is the one live at checkpoint ``step`` (for Looped-Attn: the loss
        after the final loop), or ``loops`` if given. Usable with ``torch.func.grad``,
        ``jacfwd`` and the probes.
        """
        model = self.model(step, loops=loops, device=device)
        s = self.split(split)
        return make_loss_fn(model, Split(s.inputs.to(device), s.targets.to(device)))

    # --- probe results ------------------------------------------------------------------

    def probe_result(self, step: int | None, kind: str, part: str | None = None) -> dict | None:
        """Stored results of probe ``kind`` at a checkpoint, or None if not computed.

        With ``part`` (e.g. ``"valley"``), only that part is read: a whole kind also holds
        the ``[k, P]`` eigenvectors and every slice's directions.
        """
        group = store.probe_group(self.step_at(step), kind)
        return store.read_group(self.path, group if part is None else f"{group}/{part}")

    @property
    def probed_steps(self) -> list[int]:
        """Checkpoint steps with any stored probe result, ascending."""
        return sorted(self.probes)

    def hessian(self, step: int | None = -1) -> dict:
        """The Hessian probe at a checkpoint, by part.

        Parts (each a dict of arrays, with ``attrs`` holding ``hvps``, ``seconds``, ``loops``):
        ``top`` (``values``, ``residuals``, ``converged``, ``vectors`` ``[k, P]``,
        ``bottom_values``, ...), ``trace`` (``estimate``, ``stderr``, ``bulk``), ``slq``
        (``nodes``, ``weights`` ``[runs, steps]``), ``exact`` (``eigvals`` ``[P]``, where
        computed), ``sharpness``, ``overlap``, ``blocks``, ``pyhessian``.

        Raises:
            LandscapeError: the checkpoint has not been probed.
        """
        return self._probe_or_raise(step, "hessian", "--hessian")

    def geometry(self, step: int | None = -1) -> dict:
        """The geometry probe at a checkpoint: ``valley``, ``widths``, ``river``, slices."""
        return self._probe_or_raise(step, "geometry", "--geometry")

    def valley(self, step: int | None = -1) -> dict:
        """River/valley split (``attrs``), widths and river direction at a checkpoint."""
        g = self.geometry(step)
        return {k: g[k] for k in ("valley", "widths", "river") if k in g}

    def slices(self, step: int | None = -1) -> dict:
        """The stored loss grids at a checkpoint by name.

        ``random`` and ``river_valley``, and ``shared`` where probed with a shared plane
        (``--shared-plane``). Each holds ``alphas``, ``betas``, ``loss`` and ``directions``
        (``x`` and ``y`` by parameter name), with the plane's description in ``attrs``.
        """
        g = self.geometry(step)
        return {k.removeprefix("slice_"): v for k, v in g.items() if k.startswith("slice_")}

    def run_probe(self, part: str) -> dict | None:
        """A run-level probe result (``river_progress``, ``pca``, ``loops``, ``switch``)."""
        return store.read_group(self.path, f"probe/run/{part}")

    def _probe_or_raise(self, step: int | None, kind: str, flag: str) -> dict:
        found = self.probe_result(step, kind)
        if found is None:
            s = self.step_at(step)
            raise LandscapeError(f"step {s} of {self.path} has no {kind} probe; run "
                                 f"`landscape probe {self.path} {flag} --steps {s}`")
        return found


def _describe_steps(steps: np.ndarray) -> str:
    if len(steps) <= 8:
        return ", ".join(str(s) for s in steps)
    return f"{len(steps)} from {steps[0]} to {steps[-1]}, e.g. {', '.join(map(str, steps[:4]))}"
