"""Record any PyTorch training loop into a run file.

For example::

    rec = Recorder("runs/mine.h5", model, probe=(inputs, targets),
                   loss="next_token", factory="mypkg.models:build",
                   factory_kwargs={"d_model": 64})
    rec.checkpoint(step, optimizer=opt, metrics={"loss": 0.3})
    rec.close()

The file is the same kind of run file that ``landscape train`` writes (see
:mod:`landscape.runfile.store`): ``landscape info``, ``probe`` and ``plot`` and
:class:`~landscape.runs.run.Run` read it. What it records:

* the factory and its JSON keyword arguments, and the loss (see :mod:`landscape.runs.own_models`);
* the probe set, stored once in the file;
* per checkpoint: the step, the flat parameters, and with an Adam/AdamW optimiser its
  second moment (``exp_avg_sq``), step count, betas and learning rate, as for our runs;
* per checkpoint: the module's buffers that training may change (e.g. BatchNorm's running
  statistics; see :class:`~landscape.runs.own_models.BufferLayout`), which probes load into the
  rebuilt module;
* per checkpoint: your metrics (rows of ``/metrics``, NaN where a name is absent) and the
  optimiser's learning rate;
* per checkpoint: the optimiser's kind and hyperparameters (momentum, dampening, Nesterov,
  betas, eps, weight decay; :class:`~landscape.curvature.stability.OptimizerRecord`), as the
  ``optimizers`` attribute: a list of ``{"from": row, ...}`` that grows where they change,
  from which probes take the optimiser's own stability edge;
* the optimiser's state of the last checkpoint (to continue after a crash);
* optionally, per-step windows (:meth:`Recorder.open_window`, :meth:`Recorder.window_step`):
  every optimiser step's parameter update, loss and learning rate over a stretch of
  consecutive steps, as ``landscape train`` records them (:mod:`landscape.runfile.windows`).

Each :meth:`Recorder.checkpoint` is one commit: a process killed at any instant loses
nothing committed, and a commit costs what it adds (BENCHMARKS.md). The Recorder holds the
run file's writer lock from creation to :meth:`Recorder.close`.

**Continuing.** A Recorder on a file that exists continues it, if it names the same
factory, arguments, loss, parameter and buffer names and shapes, and probe set (else it
raises): :attr:`Recorder.last_step` is the last committed step (None if none),
:meth:`Recorder.restore` loads that checkpoint's weights and buffers (and the optimiser's
state) into your model and optimiser, and new checkpoints must have larger steps. A loop
killed with SIGKILL thus continues from its last checkpoint::

    rec = Recorder(path, model, probe=..., factory=...)
    start = 0 if rec.last_step is None else rec.restore(model, optimizer) + 1
    for step in range(start, total): ...
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.curvature.objective import ParamLayout
from landscape.curvature.stability import UNKNOWN, OptimizerRecord
from landscape.errors import LandscapeError
from landscape.runfile import store, validate
from landscape.runfile import windows as window_file
from landscape.runs import own_models as custom

SOURCES = ("recorder", "import")


class Recorder:
    """Writes checkpoints of your model, with its probe set and loss, into a run file.

    Args:
        path: the run file (created, or continued if it exists).
        model: your module; only read (its parameters and buffers at each
            :meth:`checkpoint`).
        probe: the fixed probe set: ``(inputs, targets)`` or a dict of tensors (e.g.
            ``input_ids``, ``attention_mask``); stored in the file.
        loss: ``"next_token"``, ``"masked_lm"``, ``"cross_entropy"``, ``"mse"`` or
            ``"pkg.mod:function"`` taking ``(model, batch)`` (see
            :mod:`landscape.runs.own_models`). Default: the loss of a HuggingFace
            factory's head (:mod:`landscape.runs.huggingface`), else ``next_token``.
        factory: ``"pkg.mod:build"``, importable, returning a module of the same parameter
            names and shapes when called with ``factory_kwargs``. For a HuggingFace causal
            LM, masked LM or sequence classifier it may be omitted: the factory of its
            head is chosen from its class, and its configuration recorded.
        factory_kwargs: JSON-serialisable keyword arguments of the factory, stored in the
            file. A run file holds no paths: for ``landscape.hf:causal_lm`` a ``config``
            given as the path of a ``config.json`` (or its folder) is read here and the
            configuration itself stored.
        name: the run's name (default: the file's stem).
        chunk: examples per forward when the loss is evaluated.
        keep_optimizer: store the optimiser's state of the last checkpoint, so that
            :meth:`restore` can continue a killed loop exactly.
        source: what wrote the file (``recorder``; ``import`` for ``landscape import``).

    Raises:
        LandscapeError: the factory cannot be imported or builds another model, a
            HuggingFace factory is given another built-in loss than its head's, the probe
            set does not fit the loss, the loss is not a finite scalar, or the file exists
            with another model, loss or probe set, or is being written.
    """

    def __init__(self, path: str | Path, model: nn.Module, probe: Any,
                 loss: str | None = None, factory: str | None = None,
                 factory_kwargs: Mapping[str, Any] | None = None, *, name: str | None = None,
                 chunk: int = 64, keep_optimizer: bool = True, source: str = "recorder"):
        self.path = Path(path)
        if not isinstance(model, nn.Module):
            raise LandscapeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        factory, factory_kwargs = _factory_of(model, factory, factory_kwargs)
        loss = _loss_for(factory, loss)
        try:
            kwargs_json = json.loads(json.dumps(dict(factory_kwargs), sort_keys=True))
        except TypeError as e:
            raise LandscapeError(f"factory_kwargs must be JSON-serialisable: {e}") from None
        if not isinstance(loss, str) or (loss not in custom.BUILTIN_LOSSES and ":" not in loss):
            raise LandscapeError(f"loss {loss!r}: one of {', '.join(custom.BUILTIN_LOSSES)} "
                                 "or 'pkg.mod:function'")
        self.model, self.loss, self.chunk = model, loss, chunk
        self.keep_optimizer = keep_optimizer
        self.layout = ParamLayout.of(model)
        if self.layout.size == 0:
            raise LandscapeError("the model has no parameters to record")
        self.buffer_layout = custom.BufferLayout.of(model)
        self.form, self.probe = custom.probe_arrays(probe)
        custom.check_probe_for_loss(loss, self.form, self.probe)
        self.spec = {"factory": factory, "kwargs": kwargs_json}
        self._check_factory(factory, kwargs_json)
        params = {n: p.detach() for n, p in model.named_parameters()}
        device = next(iter(params.values())).device
        loss_fn = custom.make_custom_loss_fn(model, loss, self.form, self.probe,
                                             trust_code=True, device=device, chunk=chunk)
        kept = {n: b.detach().clone() for n, b in model.named_buffers()}
        try:  # a model in training mode updates its buffers (BatchNorm) in a forward
            self.initial_loss = custom.check_loss(loss_fn, params, loss)
        finally:
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.copy_(kept[n])
        self._stack = contextlib.ExitStack()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._stack.enter_context(store.writer_lock(self.path, f"{source} (Recorder)"))
        try:
            if self.path.exists():
                self._continue()
            else:
                self._create(name or self.path.stem, source)
        except BaseException:
            self._stack.close()
            raise
        self._t0 = time.perf_counter()
        self.closed = False

    # --- set-up -------------------------------------------------------------------------

    def _check_factory(self, factory: str, kwargs: dict) -> None:
        """The factory builds a module with the same parameter names and shapes."""
        rebuilt = custom.build_model(factory, kwargs, trust_code=True,
                                     where=f"factory {factory}")
        theirs = ParamLayout.of(rebuilt)
        if theirs != self.layout:
            raise LandscapeError(f"factory {factory} builds a model whose parameters differ "
                                 f"from the recorded model's (e.g. "
                                 f"{_differing(self.layout, theirs)})")
        bufs = custom.BufferLayout.of(rebuilt)
        if not bufs.fits(self.buffer_layout):
            raise LandscapeError(f"factory {factory} builds a model whose buffers differ "
                                 f"from the recorded model's (e.g. "
                                 f"{_differing(self.buffer_layout, bufs)})")

    def _create(self, name: str, source: str) -> None:
        store.create_run(
            self.path,
            attrs={"source": source, "name": name, "arch": "custom",
                   "model": self.spec, "loss": self.loss, "probe_form": self.form,
                   "versions": store.software_versions()},
            task_attrs={"name": "custom", "splits": []},
            task_arrays={}, layout=self.layout.to_json(), probe_set=self.probe,
            then=lambda tx: tx.set_attrs({"layout": self.buffer_layout.to_json(), "first": 0},
                                         group="trajectory/buffers"))
        self._buffers_from: int | None = 0
        self._checkpoints = 0
        self._optimizers: list[dict] = []
        self.last_step: int | None = None
        self._metric_names: list[str] = []
        self._rows = 0
        self._window: dict | None = None
        self._window_end = 0

    def _continue(self) -> None:
        s = store.read_summary(self.path)
        a = s["attrs"]
        if a.get("source") not in SOURCES:
            raise LandscapeError(f"{self.path} exists and was not written by a Recorder; "
                                 "choose another path")
        for key, mine in (("model", self.spec), ("loss", self.loss),
                          ("probe_form", self.form)):
            if a.get(key) != mine:
                raise LandscapeError(f"{self.path} was recorded with {key} {a.get(key)!r}, "
                                     f"not {mine!r}; choose another path")
        if ParamLayout.from_json(s["layout"]) != self.layout:
            raise LandscapeError(f"{self.path} holds a model with other parameter names or "
                                 "shapes; choose another path")
        if s["buffers"] is None:  # recorded before buffers were stored: from the next row
            self._buffers_from = None
        elif not custom.BufferLayout.from_json(s["buffers"]["layout"]).fits(
                self.buffer_layout):
            raise LandscapeError(f"{self.path} holds a model with other buffer names or "
                                 "shapes; choose another path")
        else:
            self._buffers_from = int(s["buffers"]["first"])
        stored = store.read_probe_set(self.path)
        if set(stored) != set(self.probe) or any(
                not np.array_equal(stored[k], self.probe[k]) for k in stored):
            raise LandscapeError(f"{self.path} was recorded with another probe set")
        self.last_step = int(s["steps"][-1]) if len(s["steps"]) else None
        self._checkpoints = len(s["steps"])
        self._optimizers = list(a.get("optimizers") or [])
        self._metric_names = sorted(s["metrics"])
        self._rows = len(s["metrics"]["step"]) if "step" in s["metrics"] else 0
        stored = window_file.read(self.path)
        self._window, self._window_end = None, 0
        if stored:  # an unfinished last window continues where its last commit left it
            w = stored[-1]
            self._window_end = w.start + w.planned
            if not w.complete:
                self._window = {"start": w.start, "planned": w.planned, "next": w.start + w.n,
                                "rows": []}

    # --- recording ----------------------------------------------------------------------

    def open_window(self, start: int, steps: int) -> None:
        """Record a per-step window: ``steps`` consecutive optimiser steps from ``start``.

        Then call :meth:`window_step` once per step, ``start, start+1, ...``; the rows are
        written by the next :meth:`checkpoint` (or :meth:`close`), in the same commit. A
        window must end before the next one starts; a Recorder that continues a file
        continues its unfinished window (from the step after its last commit).
        """
        start, steps = int(start), int(steps)
        if start < 0 or steps < 1:
            raise LandscapeError(f"a window needs start >= 0 and steps >= 1, got {start}, "
                                 f"{steps}")
        if self._window is not None and (self._window["next"] < self._window["start"]
                                         + self._window["planned"]):
            raise LandscapeError(f"the window from step {self._window['start']} is not "
                                 f"finished ({self._window['next'] - self._window['start']} "
                                 f"of {self._window['planned']} steps)")
        if start < self._window_end:
            raise LandscapeError(f"a window from step {start} overlaps the one that ends at "
                                 f"step {self._window_end}")
        self._window = {"start": start, "planned": steps, "next": start, "rows": []}
        self._window_end = start + steps

    def window_step(self, step: int, update: torch.Tensor | np.ndarray | Mapping,
                    loss: float, lr: float) -> None:
        """One optimiser step of the open window (:meth:`open_window`).

        Args:
            step: the step; the window's next (``start``, then one more each call).
            update: the step's parameter update, parameters after the step minus before
                it: a flat ``[P]`` vector in the model's parameter order, or a dict of
                tensors by parameter name.
            loss: the training loss of the step's batch (before its update).
            lr: the learning rate of the step.
        """
        w = self._window
        if w is None or w["next"] == w["start"] + w["planned"]:
            raise LandscapeError("window_step() without an open window: call open_window()"
                                 + ("" if w is None else f" (the window from step "
                                    f"{w['start']} has all its {w['planned']} steps)"))
        if int(step) != w["next"]:
            raise LandscapeError(f"window step {step}: the window from step {w['start']} "
                                 f"expects step {w['next']} next")
        if isinstance(update, Mapping):
            update = self.layout.flatten({n: torch.as_tensor(v) for n, v in update.items()})
        flat = torch.as_tensor(update).detach().to("cpu", torch.float32).reshape(-1).numpy()
        if flat.size != self.layout.size or not np.all(np.isfinite(flat)):
            raise LandscapeError(f"a window's update must be {self.layout.size} finite numbers "
                                 f"(the model's parameters), got {flat.size}")
        try:
            loss, lr = float(loss), float(lr)
        except (TypeError, ValueError):
            raise LandscapeError(f"window step {step}: loss and lr must be numbers") from None
        w["rows"].append((int(step), flat.copy(), loss, lr, 1))
        w["next"] += 1

    def _window_change(self) -> tuple[dict | None, list]:
        """The open window and its rows to commit (taken out of the buffer)."""
        w = self._window
        if w is None or not w["rows"]:
            return None, []
        rows, w["rows"] = w["rows"], []
        return w, rows

    def _window_committed(self) -> None:
        """Close the window once all its steps are committed."""
        w = self._window
        if w is not None and not w["rows"] and w["next"] == w["start"] + w["planned"]:
            self._window = None

    def checkpoint(self, step: int, optimizer: torch.optim.Optimizer | None = None,
                   metrics: Mapping[str, float] | None = None) -> None:
        """Commit the model's parameters at optimiser step ``step`` (and Adam's moments).

        Args:
            step: the optimiser step; larger than every step recorded before.
            optimizer: the optimiser (Adam/AdamW: its second moment and learning rate are
                stored; any other: its learning rate and, for :meth:`restore`, its state).
            metrics: numbers to store at this step, e.g. ``{"loss": loss.item()}``.
        """
        if self.closed:
            raise LandscapeError("checkpoint() after close()")
        step = int(step)
        if self.last_step is not None and step <= self.last_step:
            raise LandscapeError(f"step {step} is not after the last recorded step "
                                 f"{self.last_step} of {self.path}")
        named = dict(self.model.named_parameters())
        flat = self.layout.flatten({n: p.detach() for n, p in named.items()})
        params = flat.to("cpu", torch.float32).numpy()[None]
        buffers = self.buffer_layout.flatten(self.model)
        first, row_no = self._buffers_from, self._checkpoints
        adam = _adam_state(optimizer, self.model, self.layout) if optimizer is not None else None
        row = {"step": float(step), "wall": time.perf_counter() - self._t0}
        if optimizer is not None:
            row["lr"] = float(optimizer.param_groups[0]["lr"])
        for k, v in dict(metrics or {}).items():
            try:
                row[str(k)] = float(v)
            except (TypeError, ValueError):
                raise LandscapeError(f"metric {k!r}: {v!r} is not a number") from None
        optimizers = self._optimizers_with(optimizer, row_no)
        blob = _optimizer_blob(optimizer, self.model) if (
            optimizer is not None and self.keep_optimizer) else None
        names = sorted(set(self._metric_names) | set(row))
        rows_before = self._rows
        window, window_rows = self._window_change()

        def change(tx: store.Transaction) -> None:
            tx.append("trajectory/step", np.array([step], np.int64))
            tx.append("trajectory/loops", np.array([1], np.int64))
            tx.append("trajectory/params", params)
            if first is None:  # the first checkpoint with buffers of a run recorded before
                tx.set_attrs({"layout": self.buffer_layout.to_json(), "first": row_no},
                             group="trajectory/buffers")
            for kind, values in buffers.items():
                tx.append(f"trajectory/buffers/{kind}", values[None])
            if adam is not None:
                v, n_steps, info = adam
                tx.append("trajectory/adam_v", v[None])
                tx.append("trajectory/adam_step", np.array([n_steps], np.int64))
                tx.set_attrs({"optimizer": info})
            for k in names:
                if k not in self._metric_names and rows_before:
                    tx.append(f"metrics/{k}", np.full(rows_before, np.nan))
                tx.append(f"metrics/{k}", np.array([row.get(k, np.nan)], np.float64))
            tx.set_attrs({"optimizers": optimizers})  # left alone where unchanged
            if window is not None:
                window_file.append_rows(tx, window["start"], window["planned"],
                                        window["planned"], window_rows)
            if blob is not None:
                tx.put("resume", {"state": np.frombuffer(blob, np.uint8)}, {"step": step})
            tx.set_attrs({"status": "training"})

        try:
            store.commit(self.path, change)
        except BaseException:
            if window is not None:  # not written: the rows stay buffered
                window["rows"] = window_rows + window["rows"]
            raise
        self._window_committed()
        self.last_step, self._metric_names, self._rows = step, names, rows_before + 1
        self._checkpoints = row_no + 1
        self._optimizers = optimizers
        if first is None:
            self._buffers_from = row_no

    def _optimizers_with(self, optimizer: torch.optim.Optimizer | None, row: int) -> list[dict]:
        """The ``optimizers`` change list with checkpoint ``row``'s optimiser."""
        record = OptimizerRecord(UNKNOWN) if optimizer is None else OptimizerRecord.of(optimizer)
        last = self._optimizers[-1] if self._optimizers else None
        if last is not None and OptimizerRecord.from_json(last) == record:
            return self._optimizers
        return [*self._optimizers, {"from": row, **record.to_json()}]

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
        """Load the last checkpoint into ``model`` (and ``optimizer``); return its step.

        Raises:
            LandscapeError: nothing recorded yet, or an optimiser given but no state stored.
        """
        if self.last_step is None:
            raise LandscapeError(f"{self.path} has no checkpoint to restore")
        flat = torch.from_numpy(store.read_params(self.path, -1))
        params = self.layout.unflatten(flat)
        found = store.read_resume(self.path)
        saved = None
        if found is not None and found[0] == self.last_step:
            saved = validate.load_resume_state(self.path, found[1])
            if not isinstance(saved, dict) or not isinstance(saved.get("buffers", {}), dict):
                raise validate.damaged(self.path, "/resume/state is not a Recorder's state")
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(params[n])
            if saved is not None:
                for n, b in model.named_buffers():
                    if n in saved.get("buffers", {}):
                        b.copy_(saved["buffers"][n])
        found = store.read_buffer_rows(self.path, -1)
        if found is not None:  # the checkpoint's own (also without an optimiser's state)
            custom.load_buffers(model, custom.BufferLayout.from_json(found[0]).unflatten(
                found[1]), self.path)
        if optimizer is not None:
            if saved is None or saved.get("optimizer") is None:
                raise LandscapeError(f"{self.path} holds no optimiser state for step "
                                     f"{self.last_step} (recorded without optimizer=)")
            optimizer.load_state_dict(saved["optimizer"])
        return self.last_step

    def close(self) -> None:
        """Mark the run complete and release the writer lock (idempotent)."""
        if self.closed:
            return
        window, rows = self._window_change()

        def change(tx: store.Transaction) -> None:
            if window is not None:
                window_file.append_rows(tx, window["start"], window["planned"],
                                        window["planned"], rows)
            tx.set_attrs({"status": "complete"})

        try:
            store.commit(self.path, change)
        finally:
            self.closed = True
            self._stack.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # keep what was committed, status stays "training"
            self.closed = True
            self._stack.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            if not getattr(self, "closed", True):
                self._stack.close()


# --- helpers ----------------------------------------------------------------------------


def _factory_of(model: nn.Module, factory: str | None,
                kwargs: Mapping[str, Any] | None) -> tuple[str, Mapping[str, Any]]:
    """The factory to record: the given one, or for a HuggingFace model its config."""
    if factory is not None:  # a path an own factory's caller may give is read in here
        return factory, custom.stored_kwargs(factory, kwargs or {})
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict") and hasattr(model, "from_pretrained"):
        from landscape.runs.huggingface import config_kwargs, factory_for

        return factory_for(model), config_kwargs(model)
    raise LandscapeError("give factory='pkg.mod:build' (and factory_kwargs): the importable "
                         "function that rebuilds the model, so that probes can")


def _loss_for(factory: str, loss: str | None) -> str:
    """The loss to record: ``loss``, or the head's loss of a HuggingFace factory.

    Raises:
        LandscapeError: a HuggingFace factory with another built-in loss than its head's
            (e.g. ``next_token`` on a masked LM scores a bidirectional encoder as a decoder).
    """
    from landscape.runs.huggingface import loss_of

    head_loss = loss_of(factory)
    if loss is None:
        return head_loss or "next_token"
    if head_loss is not None and isinstance(loss, str) and loss in custom.BUILTIN_LOSSES \
            and loss != head_loss:
        raise LandscapeError(f"factory {factory} is scored by loss {head_loss}, not {loss}: "
                             f"pass loss {head_loss!r} (--loss {head_loss}), or a loss "
                             "'pkg.mod:function' of your own")
    return loss


def _adam_state(optimizer: torch.optim.Optimizer, model: nn.Module,
                layout: ParamLayout) -> tuple[np.ndarray, int, dict] | None:
    """``(exp_avg_sq [P], step, info)`` of an Adam/AdamW optimiser, else None."""
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return None
    group = optimizer.param_groups[0]
    by_id = {id(p): n for n, p in model.named_parameters()}
    moments: dict[str, torch.Tensor] = {}
    n_steps = 0
    for p, st in optimizer.state.items():
        name = by_id.get(id(p))
        if name is not None and "exp_avg_sq" in st:
            moments[name] = st["exp_avg_sq"].detach()
            n_steps = max(n_steps, int(st["step"]))
    full = {n: moments.get(n, torch.zeros(s)) for n, s in zip(layout.names, layout.shapes)}
    v = layout.flatten({n: t.to("cpu", torch.float32) for n, t in full.items()})
    info = {"name": type(optimizer).__name__, "beta1": float(group["betas"][0]),
            "beta2": float(group["betas"][1]), "eps": float(group["eps"]),
            "weight_decay": float(group.get("weight_decay", 0.0))}
    return v.numpy(), n_steps, info


def _optimizer_blob(optimizer: torch.optim.Optimizer, model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(),
                "buffers": {n: b.detach().cpu() for n, b in model.named_buffers()}}, buf)
    return buf.getvalue()


def _differing(mine, theirs) -> str:
    """Up to 3 names whose shapes differ between two layouts, or that only one of them has.

    The layouts have ``names`` and ``shapes`` (parameters' or buffers').
    """
    a, b = dict(zip(mine.names, mine.shapes)), dict(zip(theirs.names, theirs.shapes))
    diff = [n for n in a if b.get(n) != a[n]] + [n for n in b if n not in a]
    return ", ".join(diff[:3])
