"""``Run``: a read-only view of a run file for notebooks and for the probes.

For example (``tests/runs/test_run.py`` runs the same calls on real run files)::

    run = Run.open("checkpoints/looped_attn.h5")
    run.steps, run.metrics["complex.acc"]
    model = run.model(step=-1)
    loss = run.loss_fn("probe")
    loss(run.params(-1))

Nothing here keeps the file open: every access opens it, reads, and closes it, so a
``Run`` never holds a handle that a writer's atomic replace would invalidate.

Runs of your own model (recorded with :class:`landscape.Recorder` or ``landscape
import``) name the code that rebuilds the model and, possibly, the loss. Reading their
metrics, parameters and stored probe results needs no code; :meth:`Run.model` and
:meth:`Run.loss_fn` import that code only for a run opened with ``trust_code=True``,
apart from this package's own factories named exactly (see :mod:`landscape.runs.own_models`).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from landscape.curvature.objective import LossFn, ParamLayout, SplitObjective
from landscape.curvature.stability import OptimizerRecord
from landscape.errors import LandscapeError
from landscape.runfile import interventions as intervention_file
from landscape.runfile import schema, store, validate
from landscape.runfile import windows as window_file
from landscape.runs import own_models as custom
from landscape.train.model import LoopedTransformer
from landscape.train.recipe import Recipe, stored_recipe
from landscape.train.split_loss import make_loss_fn, make_split_objective
from landscape.train.tasks import Split, TaskData, generate


class Run:
    """One run file: recipe, trajectory, metrics, events and probe results.

    Attributes:
        path: the run file.
        recipe: the :class:`~landscape.train.recipe.Recipe` it was trained with;
            None for a run of your own model (``custom``).
        custom: a run of your own model (recorded or imported), not of ``landscape train``.
        steps: ``[n]`` optimiser step of each checkpoint.
        loops: ``[n]`` loops live at each checkpoint (1 Single-Attn, >1 Looped-Attn).
        metrics: evaluation metrics by name, each ``[m]`` (``step``, ``epoch``, ``wall``,
            ``lr``, ``train_loss``, ``grad_norm``, ``<split>.loss``, ``<split>.acc``, ...).
        events: e.g. the SHIFT switch with the criterion's values.
        ceilings: Bayes-optimal ``{"acc", "loss"}`` per evaluation split.
        layout: how a trajectory row maps to named parameters.
    """

    def __init__(self, path: Path, summary: dict, trust_code: bool = False):
        self.path = path
        self._summary = summary
        self.trust_code = trust_code
        attrs = summary["attrs"]
        self.attrs = attrs
        self.custom = "recipe" not in attrs and "model" in attrs
        self.recipe: Recipe | None = None if self.custom else stored_recipe(path, attrs)
        self.steps = np.asarray(summary["steps"], dtype=np.int64)
        self.loops = np.asarray(summary["loops"], dtype=np.int64)
        self.metrics: dict[str, np.ndarray] = summary["metrics"]
        self.events: list[dict] = summary["events"]
        self.task_attrs: dict = summary["task_attrs"]
        self.ceilings: dict = self.task_attrs.get("ceilings") or {}
        self.layout = ParamLayout.from_json(summary["layout"])
        self.probes: dict[int, list[str]] = summary["probes"]

    @classmethod
    def open(cls, path: str | Path, trust_code: bool = False) -> Run:
        """Open a run file read-only (raises LandscapeError if it is not a readable run file).

        Args:
            path: the run file.
            trust_code: allow :meth:`model` and :meth:`loss_fn` to import the factory and
                loss that a run of your own model names (any code other than this
                package's own factories, :data:`landscape.runs.own_models.OWN_CODE`).
        """
        path = Path(path)
        return cls(path, store.read_summary(path), trust_code=trust_code)  # checks the file

    def refresh(self) -> Run:
        """A new view with what has been committed since this one was opened."""
        return Run.open(self.path, trust_code=self.trust_code)

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}, {self.arch}, task={self.task_name}, "
                f"{len(self.steps)} checkpoints, status={self.status})")

    @property
    def arch(self) -> str:
        """The architecture (``custom`` for a model of your own)."""
        return self.recipe.arch if self.recipe is not None else str(self.attrs.get("arch"))

    @property
    def task_name(self) -> str:
        """The task's name (``custom`` for a model of your own)."""
        return self.recipe.task.name if self.recipe is not None else "custom"

    @property
    def spec(self) -> dict:
        """A custom run's ``{"factory", "kwargs"}`` and ``loss`` (empty for our runs)."""
        if not self.custom:
            return {}
        return {**self.attrs["model"], "loss": self.attrs.get("loss", "next_token")}

    @property
    def status(self) -> str:
        """``training`` (still being written, or interrupted) or ``complete``."""
        return str(self.attrs.get("status", "unknown"))

    @property
    def name(self) -> str:
        """The recipe's name (a custom run's recorded name)."""
        if self.recipe is not None:
            return self.recipe.name
        return str(self.attrs.get("name") or self.path.stem)

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
        if i >= len(adam_steps):
            raise LandscapeError(f"step {self.step_at(step)} of {self.path} has no Adam state "
                                 "(recorded without the optimiser)")
        return store.read_params(self.path, i, name="adam_v"), int(adam_steps[i])

    def windows(self) -> list[window_file.Window]:
        """The per-step windows stored in the run, by start step (``[]``: none).

        Each holds every optimiser step's parameter update, training loss and learning
        rate over consecutive steps (``[train] window_steps``/``window_at``, or a
        Recorder's :meth:`~landscape.runs.recorder.Recorder.window_step`); see
        :class:`landscape.runfile.windows.Window`. Read afresh at each call.
        """
        return window_file.read(self.path)

    def intervention_starts(self) -> list[int]:
        """The optimiser steps with a stored intervention start, ascending (``[]``: none).

        At each, ``[train] intervene_at`` stored the full training state (model, both AdamW
        moments, batch order; :mod:`landscape.runfile.interventions`) from which
        :func:`landscape.train.intervention.continue_from` continues.
        """
        return [s.start for s in intervention_file.read(self.path)]

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
              device: str | torch.device = "cpu") -> torch.nn.Module:
        """A module with that checkpoint's weights and loops (or ``loops``), in eval mode.

        For a custom run: the factory's module with the checkpoint's parameters and
        buffers (:meth:`buffers`; where the checkpoint carries none, as in files recorded
        before they were stored, the factory's, see :meth:`buffer_note`); needs
        ``trust_code`` for any factory but this package's own (its size is checked
        against the stored layout before the module is allocated).
        """
        i = self.index(step)
        if self.custom:
            return self._custom_model(i, loops, device)
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

    def require_code(self) -> None:
        """Raise unless :meth:`model` and :meth:`loss_fn` may import the code they need.

        Our own runs need none; a custom run's factory and loss other than the names of
        :data:`landscape.runs.own_models.OWN_CODE` need the run opened with ``trust_code=True``.
        Checked before any work (and before anything is imported), so a command that
        needs the code says so before it starts.
        """
        if not self.custom:
            return
        custom.check_trust(self.spec["factory"], "factory", self.trust_code, self.path)
        if self.spec["loss"] not in custom.BUILTIN_LOSSES:
            custom.check_trust(self.spec["loss"], "loss", self.trust_code, self.path)

    def _custom_model(self, i: int, loops: int | None, device) -> torch.nn.Module:
        if loops not in (None, 1):
            raise LandscapeError(f"{self.path} is a model of your own: it has no loops")
        model = self._build()
        misfit = custom.layout_misfit(model, self.layout)
        if misfit:
            raise LandscapeError(f"{self.path}: factory {custom.shown(self.spec['factory'])} "
                                 f"builds a model that does not fit the checkpoints ({misfit})")
        flat = torch.from_numpy(store.read_params(self.path, i))
        have = dict(model.named_parameters())
        with torch.no_grad():
            for n, p in self.layout.unflatten(flat).items():
                have[n].copy_(p)
        buffers = self._buffers_at(i)
        if buffers:
            custom.load_buffers(model, buffers, self.path)
        return model.to(device).eval()

    def _build(self) -> torch.nn.Module:
        """The factory's module, its size checked against the layout before it is built."""
        spec = self.attrs["model"]
        return custom.build_model(spec["factory"], spec.get("kwargs", {}),
                                  trust_code=self.trust_code, where=self.path,
                                  layout=self.layout)

    @property
    def stored_buffers(self) -> tuple[str, ...]:
        """Names of the buffers stored with the checkpoints (empty where none are)."""
        info = self._summary.get("buffers")
        return tuple(info["layout"]["names"]) if info else ()

    def buffers(self, step: int | None = -1) -> dict[str, torch.Tensor] | None:
        """The module's buffers stored with a checkpoint, by name, each in its own dtype.

        None where the checkpoint carries none: a run of ``landscape train`` (its model's
        buffers are fixed), or one recorded before buffers were stored per checkpoint.
        See :class:`~landscape.runs.own_models.BufferLayout` for which buffers are stored.
        """
        return self._buffers_at(self.index(step))

    def _buffers_at(self, i: int) -> dict[str, torch.Tensor] | None:
        found = store.read_buffer_rows(self.path, i)
        if found is None:
            return None
        return custom.BufferLayout.from_json(found[0]).unflatten(found[1])

    def buffer_note(self) -> str | None:
        """A note where checkpoints carry no buffers but the model has some, else None.

        Such checkpoints (recorded before buffers were stored per checkpoint) are probed
        with the buffers the factory builds, e.g. BatchNorm's initial running statistics.
        Which buffers the model has is read from the file where it says so, else from the
        factory's module (``trust_code`` needed), else from the resume state; where none of
        these tells, the note says "if".
        """
        if not self.custom or len(self.steps) == 0:
            return None
        info = self._summary.get("buffers")
        first = len(self.steps) if info is None else min(int(info["first"]), len(self.steps))
        if first == 0:
            return None
        names = None if info is None else list(info["layout"]["names"])
        if names is None and self.trust_code:
            names = list(custom.BufferLayout.of(self._build()).names)
        if names is None:
            names = self._resume_buffer_names()
        which = (f"the checkpoints of {self.path} carry" if first == len(self.steps) else
                 f"the checkpoints of {self.path} before step {int(self.steps[first])} carry")
        if names is None:
            return (f"{which} no buffers (recorded before landscape stored them): if the "
                    "model has buffers (e.g. BatchNorm statistics), probes there use those "
                    "the factory builds")
        if not names:
            return None
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return (f"{which} no buffers (recorded before landscape stored them): probes there "
                f"use those the factory builds ({shown})")

    def _resume_buffer_names(self) -> list[str] | None:
        """Buffer names in the resume state of a Recorder's run (None: no such state)."""
        found = store.read_resume(self.path)
        if found is None:
            return None
        try:
            saved = validate.load_resume_state(self.path, found[1])
        except LandscapeError:  # a state this version cannot read tells nothing
            return None
        bufs = saved.get("buffers") if isinstance(saved, dict) else None
        if not isinstance(bufs, dict):
            return None
        return [n for n, b in bufs.items() if isinstance(b, torch.Tensor)
                and b.dtype in custom.STORED_AS]

    def probe_set(self) -> dict[str, np.ndarray]:
        """The stored probe set's arrays (``inputs``/``targets``, or a dict's names)."""
        return store.read_probe_set(self.path)

    def lr_at(self, step: int | None = -1) -> float:
        """The learning rate in force at a checkpoint (NaN where the run did not record it)."""
        s = self.step_at(step)
        if self.recipe is not None:
            return self.recipe.lr_at(max(s - 1, 0), int(self.attrs["total_steps"]))
        steps, lrs = self.metrics.get("step"), self.metrics.get("lr")
        if steps is None or lrs is None or not (steps == s).any():
            return float("nan")
        return float(lrs[np.flatnonzero(steps == s)[-1]])

    @property
    def has_adam(self) -> bool:
        """Whether checkpoints carry Adam's second moment (see :meth:`adam_state`)."""
        return self._summary.get("adam_step") is not None

    @property
    def adam_betas(self) -> tuple[float, float] | None:
        """``(beta1, beta2)`` of the run's Adam/AdamW optimiser, None if it had none."""
        if self.recipe is not None:
            return self.recipe.train.beta1, self.recipe.train.beta2
        opt = self.attrs.get("optimizer")
        return (float(opt["beta1"]), float(opt["beta2"])) if isinstance(opt, dict) else None

    def optimizer_at(self, step: int | None = -1) -> OptimizerRecord | None:
        """The optimiser that produced a checkpoint (None where the run did not record it).

        From the run's ``optimizers`` (the Recorder's and the trainer's record); a run
        written before it: our own trainer's AdamW from the recipe, and a Recorder's Adam
        or AdamW from the betas it stored; else None (the edge is then unknown).
        """
        changes = self.attrs.get("optimizers")
        if isinstance(changes, list) and changes:
            row = self.index(step)
            found = [c for c in changes if c["from"] <= row]
            return OptimizerRecord.from_json(found[-1]) if found else None
        if self.recipe is not None:
            tc = self.recipe.train
            return OptimizerRecord("AdamW", beta1=tc.beta1, beta2=tc.beta2, eps=1e-8,
                                   weight_decay=tc.weight_decay)
        opt = self.attrs.get("optimizer")
        if isinstance(opt, dict) and opt.get("name") in ("Adam", "AdamW"):
            return OptimizerRecord(opt["name"], beta1=float(opt["beta1"]),
                                   beta2=float(opt["beta2"]), eps=float(opt.get("eps", 1e-8)),
                                   weight_decay=float(opt.get("weight_decay", 0.0)))
        return None

    # --- data and objective -------------------------------------------------------------

    @cached_property
    def task_data(self) -> TaskData:
        """The task's data, regenerated from the recipe (deterministic in it)."""
        return generate(self.recipe.task)

    def split(self, name: str = "probe") -> Split:
        """Sequences by name: ``probe`` (the fixed probe set), ``train``, or an eval split.

        ``probe`` is the set every Hessian and geometry probe evaluates.
        A custom run has only ``probe``, as a Split where it is ``(inputs, targets)`` of
        token ids (see :meth:`probe_set` for any form).
        """
        if self.custom:
            return self._custom_split(name)
        if name == "probe":
            ps = store.read_probe_set(self.path)
            return Split(torch.from_numpy(ps["inputs"]), torch.from_numpy(ps["targets"]))
        if name == "train":
            return self.task_data.train
        if name in self.task_data.evals:
            return self.task_data.evals[name]
        known = ", ".join(["probe", "train", *self.task_data.evals])
        raise LandscapeError(f"unknown split {name!r} (splits: {known})")

    def _custom_split(self, name: str) -> Split:
        if name != "probe":
            raise LandscapeError(f"{self.path} is a model of your own: its only split is "
                                 "'probe'")
        ps = self.probe_set()
        if self.attrs.get("probe_form") != "pair" or ps["inputs"].ndim != 2 or \
                ps["inputs"].shape != ps["targets"].shape:
            raise LandscapeError(f"the probe set of {self.path} is not (inputs, targets) of "
                                 "token ids; use run.probe_set() and run.loss_fn()")
        return Split(torch.from_numpy(ps["inputs"]), torch.from_numpy(ps["targets"]))

    def loss_fn(self, split: str = "probe", step: int | None = -1, loops: int | None = None,
                device: str | torch.device = "cpu") -> LossFn:
        """``f(params) -> scalar``: mean loss over all scored tokens of ``split``.

        The architecture is the one live at checkpoint ``step`` (for Looped-Attn: the loss
        after the final loop), or ``loops`` if given. Usable with ``torch.func.grad``,
        ``jacfwd`` and the probes. For a custom run: its recorded loss on the probe set.
        """
        return self._on_split(custom.make_custom_loss_fn, make_loss_fn, split, step, loops,
                              device)

    def split_objective(self, split: str = "probe", step: int | None = -1,
                        loops: int | None = None, device: str | torch.device = "cpu",
                        ) -> SplitObjective:
        """The loss of :meth:`loss_fn` split at the model's output, for the GGN and the Fisher.

        One example per sequence of ``split`` (our models), or per row of the probe set (a
        model of your own with a built-in loss, or a custom loss declaring ``output`` and
        ``output_loss``, see :func:`landscape.runs.own_models.make_split_objective`)::

            from landscape.curvature.ggn import GGNOperator
            from landscape.curvature.spectral import lanczos

            op = GGNOperator(run.split_objective(step=s), run.params(s, dtype=torch.float64))
            lanczos(op, k_top=5).top_values

        Raises:
            LandscapeError: a custom loss that does not declare its output.
        """
        return self._on_split(custom.make_split_objective, make_split_objective, split, step,
                              loops, device)

    def _on_split(self, own_builder, our_builder, split: str, step: int | None,
                  loops: int | None, device: str | torch.device):
        """A builder's result on checkpoint ``step``'s model and ``split``.

        ``our_builder(model, split)`` for our runs; ``own_builder`` (the recorded loss on the
        probe set) for a model of your own.
        """
        model = self.model(step, loops=loops, device=device)
        if self.custom:
            if split != "probe":
                self._custom_split(split)  # raises
            return own_builder(
                model, self.spec["loss"], self.attrs.get("probe_form", "pair"),
                self.probe_set(), trust_code=self.trust_code, device=device, where=self.path)
        s = self.split(split)
        return our_builder(model, Split(s.inputs.to(device), s.targets.to(device)))

    # --- probe results ------------------------------------------------------------------

    @property
    def probed_steps(self) -> list[int]:
        """Checkpoint steps with any stored probe result, ascending."""
        return sorted(self.probes)

    def part(self, name: str, step: int | None = -1, *, required: bool = False,
             curvature: str = "hessian"):
        """A stored probe part by name (see :mod:`landscape.runfile.schema`), or None.

        ``step``: the checkpoint of a per-checkpoint part (-1: the last); ignored for
        run-level parts (``river_progress``, ``pca``, ``loops``, ``switch``,
        ``qk_alignment``). Returns the part's frozen dataclass, e.g. a
        :class:`~landscape.runfile.schema.Top` with ``values`` and ``vectors``; None where
        it was never computed, unless ``required``. ``curvature``: of a curvature part, the
        matrix (``hessian``, ``ggn`` or ``fisher``; see :meth:`curvature`).

        Raises:
            NotProbed: ``required`` and the part was never computed.
            StaleError: the stored part does not fit this version's schema.
        """
        cls = schema.part_class(name)
        step_arg = None if cls.KIND == schema.RUN else self.step_at(step)
        if required:
            return schema.require(self.path, cls, step_arg, curvature)
        return schema.read(self.path, cls, step_arg, curvature)

    def hessian(self, step: int | None = -1) -> dict:
        """The Hessian parts stored at a checkpoint, ``{name: part}``.

        ``top``, ``trace``, ``slq``, ``exact`` (where computed), ``sharpness``,
        ``overlap``, ``blocks``, ``pyhessian``: dataclasses of
        :mod:`landscape.runfile.schema`, each with ``hvps``, ``seconds`` and ``settings``.

        Raises:
            NotProbed: the checkpoint has no Hessian part.
        """
        return self.curvature(step, schema.HESSIAN)

    def curvature(self, step: int | None = -1, curvature: str = "hessian") -> dict:
        """The parts of one curvature matrix stored at a checkpoint, ``{name: part}``.

        ``curvature``: ``hessian`` (what :meth:`hessian` returns), ``ggn`` (the generalised
        Gauss-Newton matrix) or ``fisher`` (the empirical Fisher), as probed with
        ``landscape probe --curvature hessian,ggn,fisher``; the same parts as
        :meth:`hessian`, each with its ``curvature``::

            run.curvature(-1, "ggn")["top"].values  # the GGN's top eigenvalues

        Raises:
            NotProbed: the checkpoint has no part of that curvature.
            LandscapeError: ``curvature`` is none of the three.
        """
        schema.check_curvature(curvature)
        flag = "--hessian" if curvature == schema.HESSIAN else f"--curvature {curvature}"
        return self._parts_or_raise(step, schema.HESSIAN, flag, curvature)

    def geometry(self, step: int | None = -1) -> dict:
        """The geometry parts at a checkpoint: ``valley``, ``widths``, ``river``, slices.

        Raises:
            NotProbed: the checkpoint has no geometry part.
        """
        return self._parts_or_raise(step, "geometry", "--geometry")

    def valley(self, step: int | None = -1):
        """The river/valley split at a checkpoint (a :class:`~landscape.runfile.schema.Valley`).

        Raises:
            NotProbed: the checkpoint has no valley split.
        """
        found = self.geometry(step).get("valley")
        if found is None:
            raise schema.NotProbed(f"step {self.step_at(step)} of {self.path} has no valley "
                                   "split; probe it with --geometry")
        return found

    def slices(self, step: int | None = -1) -> dict:
        """The stored loss grids at a checkpoint by name.

        ``random`` and ``river_valley``, and ``shared`` where probed with a shared plane
        (``--shared-plane``): :class:`~landscape.runfile.schema.Grid` parts with ``alphas``,
        ``betas``, ``loss``, ``directions`` and the plane's description ``plane``.
        """
        g = self.geometry(step)
        return {k.removeprefix("slice_"): v for k, v in g.items() if k.startswith("slice_")}

    def _parts_or_raise(self, step: int | None, kind: str, flag: str,
                        curvature: str = schema.HESSIAN) -> dict:
        s = self.step_at(step)
        found = {name: schema.read(self.path, cls, s, curvature)
                 for name, cls in schema.PARTS.items() if cls.KIND == kind}
        found = {k: v for k, v in found.items() if v is not None}
        if not found:
            what = curvature if kind == schema.HESSIAN else kind
            raise schema.NotProbed(f"step {s} of {self.path} has no {what} probe; run "
                                   f"`landscape probe {self.path} {flag} --steps {s}`")
        return found


def _describe_steps(steps: np.ndarray) -> str:
    if len(steps) <= 8:
        return ", ".join(str(s) for s in steps)
    return f"{len(steps)} from {steps[0]} to {steps[-1]}, e.g. {', '.join(map(str, steps[:4]))}"
