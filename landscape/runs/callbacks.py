"""Record a HuggingFace ``Trainer`` or a PyTorch Lightning ``Trainer.fit`` into a run file.

Both callbacks wrap :class:`~landscape.runs.recorder.Recorder`: a checkpoint at the start,
every ``every`` optimiser steps and at the end, each with the optimiser's state and the
numbers the trainer logged, and the probe set given or taken from the evaluation data::

    from landscape.runs.callbacks import trainer_callback
    trainer = transformers.Trainer(model, args, train_dataset=..., eval_dataset=...)
    trainer.add_callback(trainer_callback("runs/mine.h5", trainer=trainer, every=50))
    trainer.train()        # then: landscape probe runs/mine.h5

    from landscape.runs.callbacks import lightning_callback
    cb = lightning_callback("runs/mine.h5", factory="mypkg.models:build", loss="cross_entropy",
                            module="net", every=50)
    lightning.Trainer(callbacks=[cb]).fit(pl_module, datamodule=dm)

``transformers`` (the ``hf`` extra) and ``lightning`` (the ``lightning`` extra) are imported
only when a callback is made.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape.errors import LandscapeError
from landscape.runs.recorder import Recorder

RESERVED = frozenset({"step", "epoch", "wall", "lr"})
"""Metric names the run file keeps for itself; a trainer's own are stored as ``trainer_*``."""


# --- the probe set from evaluation batches ----------------------------------------------


def probe_from_batches(batches: Iterable[Any], examples: int) -> Any:
    """The first ``examples`` examples of a loader's batches, as a Recorder's probe set.

    Args:
        batches: batches of ``(inputs, targets)`` or dicts of tensors (e.g. a HuggingFace
            collator's ``input_ids``, ``attention_mask``, ``labels``; ``labels`` is left
            out where ``input_ids`` is there: the next-token loss scores ``input_ids``
            where ``attention_mask`` is 1).
        examples: how many examples to keep (``>= 1``).

    Returns:
        ``(inputs [n, ...], targets [n, ...])`` or ``{name: [n, ...]}`` on the CPU.

    Raises:
        LandscapeError: no batches, or batches of another form.
    """
    if examples < 1:
        raise LandscapeError(f"probe examples must be >= 1, got {examples}")
    taken: list[dict[str, torch.Tensor]] = []
    pair, count = False, 0
    for batch in batches:
        pair = not isinstance(batch, Mapping)
        taken.append(_as_dict(batch))
        count += len(next(iter(taken[-1].values())))
        if count >= examples:
            break
    if not taken:
        raise LandscapeError("the evaluation data has no batches to take the probe set from; "
                             "give probe=(inputs, targets) or a dict of tensors")
    keys = list(taken[0])
    joined = {k: torch.cat([b[k] for b in taken])[:examples].detach().cpu() for k in keys}
    if pair:
        return joined["inputs"], joined["targets"]
    if "input_ids" in joined:
        joined.pop("labels", None)
    return joined


def _as_dict(batch: Any) -> dict[str, torch.Tensor]:
    if isinstance(batch, Mapping):
        out = {str(k): v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        out = {"inputs": batch[0], "targets": batch[1]}
    else:
        raise LandscapeError(f"evaluation batches must be (inputs, targets) or dicts of "
                             f"tensors to take a probe set from, not {type(batch).__name__}")
    if not out or any(not isinstance(v, torch.Tensor) or v.ndim == 0 for v in out.values()):
        raise LandscapeError("evaluation batches must hold tensors with a batch dimension")
    return out


def _numbers(logs: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a trainer's logs, reserved names prefixed with ``trainer_``."""
    out = {}
    for k, v in logs.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[f"trainer_{k}" if k in RESERVED else str(k)] = float(v)
    return out


def _unwrapped(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimiser inside accelerate's or Lightning's wrapper (Adam's state lives there)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class _Recording:
    """What both callbacks share: the Recorder's settings, the steps due, pending logs."""

    def __init__(self, path: str | Path, probe: Any, every: int, examples: int,
                 recorder_kwargs: Mapping[str, Any]):
        if int(every) < 1:
            raise LandscapeError(f"every must be >= 1 optimiser step, got {every}")
        self.path, self.probe, self.every = Path(path), probe, int(every)
        self.examples, self.kwargs = int(examples), dict(recorder_kwargs)
        self.recorder: Recorder | None = None
        self.step: int | None = None  # the optimiser step last finished
        self.due = False  # its checkpoint is to be written
        self.logs: dict[str, float] = {}  # the numbers logged at that step

    def start(self, model: nn.Module, batches: Iterable[Any] | None) -> None:
        if self.probe is None:
            if batches is None:
                raise LandscapeError("no evaluation data to take the probe set from: give "
                                     "probe= (or an eval dataset / val dataloader)")
            self.probe = probe_from_batches(batches, self.examples)
        self.recorder = Recorder(self.path, model, self.probe, **self.kwargs)

    def at(self, step: int, logs: Mapping[str, Any] | None = None) -> None:
        """Optimiser step ``step`` is done; its checkpoint is due every ``every`` steps."""
        self.step, self.due = int(step), int(step) % self.every == 0
        self.logs = _numbers(logs or {})

    def commit(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Write the due checkpoint (if any, and new) with the logs gathered for it."""
        rec = self.recorder
        if self.due and rec is not None and (rec.last_step is None or self.step > rec.last_step):
            rec.checkpoint(self.step, optimizer=_unwrapped(optimizer), metrics=self.logs)
        self.due = False

    def finish(self, step: int, optimizer: torch.optim.Optimizer | None) -> None:
        """Write the last step's checkpoint (with its logs) and close the run file."""
        if self.recorder is None:
            return
        if self.step != step:
            self.at(step)
        self.due = True
        self.commit(optimizer)
        self.recorder.close()


# --- HuggingFace ------------------------------------------------------------------------


def trainer_callback(path: str | Path, *, trainer: Any = None, probe: Any = None,
                     every: int = 50, examples: int = 32, loss: str = "next_token",
                     **recorder_kwargs: Any):
    """A ``transformers.TrainerCallback`` that records the training into ``path``.

    A checkpoint at step 0, every ``every`` optimiser steps and at the last step, with the
    optimiser's state and the numbers logged at that step (``loss``, ``grad_norm``,
    ``eval_loss``, ...). The probe set: ``probe``, else the first ``examples`` of
    ``trainer``'s evaluation data (through its own collator), else of the evaluation loader
    the trainer passes to callbacks.

    Args:
        path: the run file (see :class:`~landscape.runs.recorder.Recorder`).
        trainer: the ``Trainer`` whose ``eval_dataset`` gives the probe set (optional).
        probe: the probe set, as for the Recorder (optional).
        every: optimiser steps between checkpoints.
        examples: probe examples taken from the evaluation data.
        loss: the Recorder's loss (a causal LM: ``next_token``).
        **recorder_kwargs: more :class:`Recorder` arguments (``factory``, ``name``, ...).

    Raises:
        LandscapeError: ``transformers`` is not installed.
    """
    cls = _hf_callback_class()
    if probe is None and trainer is not None and trainer.eval_dataset is not None:
        probe = probe_from_batches(trainer.get_eval_dataloader(), examples)
    return cls(_Recording(path, probe, every, examples, {"loss": loss, **recorder_kwargs}))


@cache
def _hf_callback_class() -> type:
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise LandscapeError("the Trainer callback needs transformers: pip install "
                             "'looped-landscape[hf]'") from None

    class LandscapeTrainerCallback(TrainerCallback):
        """Records a HuggingFace ``Trainer``'s training (see :func:`trainer_callback`)."""

        def __init__(self, recording: _Recording):
            self.recording = recording

        def on_train_begin(self, args, state, control, model=None, eval_dataloader=None,
                           **kwargs):
            self.recording.start(model, eval_dataloader)
            self.recording.at(state.global_step)
            self.recording.due = True
            self.recording.commit(kwargs.get("optimizer"))

        def on_step_end(self, args, state, control, **kwargs):
            self.recording.at(state.global_step)  # its logs follow, then the next step

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.recording.step == state.global_step:
                self.recording.logs.update(_numbers(logs or {}))

        def on_step_begin(self, args, state, control, **kwargs):
            self.recording.commit(kwargs.get("optimizer"))

        def on_train_end(self, args, state, control, **kwargs):
            self.recording.finish(int(state.global_step), kwargs.get("optimizer"))

    return LandscapeTrainerCallback


# --- PyTorch Lightning ------------------------------------------------------------------


def lightning_callback(path: str | Path, *, probe: Any = None, every: int = 50,
                       examples: int = 32, module: str | None = None,
                       loss: str = "cross_entropy", **recorder_kwargs: Any):
    """A ``lightning.pytorch.Callback`` that records ``Trainer.fit`` into ``path``.

    A checkpoint when training starts, every ``every`` optimiser steps and at the end, with
    the first optimiser's state and the training step's loss and the logged metrics. The
    probe set: ``probe``, else the first ``examples`` of the validation data.

    Args:
        path: the run file (see :class:`~landscape.runs.recorder.Recorder`).
        probe: the probe set, as for the Recorder (optional).
        every: optimiser steps between checkpoints.
        examples: probe examples taken from the validation data.
        module: the attribute of the LightningModule holding the model to record (e.g.
            ``"net"``), which ``factory`` rebuilds; None: the LightningModule itself.
        loss: the Recorder's loss.
        **recorder_kwargs: more :class:`Recorder` arguments (``factory`` is needed).

    Raises:
        LandscapeError: ``lightning`` is not installed.
    """
    cls = _lightning_callback_class()
    return cls(_Recording(path, probe, every, examples, {"loss": loss, **recorder_kwargs}),
               module)


def _val_batches(trainer: Any, pl_module: Any) -> Iterable[Any] | None:
    """The validation batches of a Lightning fit: loaded, from the datamodule or module."""
    loaders = trainer.val_dataloaders
    if loaders is None and trainer.datamodule is not None:
        loaders = trainer.datamodule.val_dataloader()
    if loaders is None and type(pl_module).val_dataloader is not _base_val_dataloader():
        loaders = pl_module.val_dataloader()
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    return loaders


@cache
def _base_val_dataloader():
    from lightning.pytorch import LightningModule

    return LightningModule.val_dataloader


@cache
def _lightning_callback_class() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        raise LandscapeError("the Lightning callback needs lightning: pip install "
                             "'looped-landscape[lightning]'") from None

    class LandscapeLightningCallback(Callback):
        """Records a Lightning ``Trainer.fit`` (see :func:`lightning_callback`)."""

        def __init__(self, recording: _Recording, module: str | None):
            self.recording, self.module = recording, module

        def _optimizer(self, trainer):
            return trainer.optimizers[0] if trainer.optimizers else None

        def on_train_start(self, trainer, pl_module):
            model = pl_module if self.module is None else getattr(pl_module, self.module)
            probe_batches = None if self.recording.probe is not None else _val_batches(
                trainer, pl_module)
            self.recording.start(model, probe_batches)
            self.recording.at(trainer.global_step)
            self.recording.due = True
            self.recording.commit(self._optimizer(trainer))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logs = dict(trainer.callback_metrics)
            if isinstance(outputs, Mapping) and "loss" in outputs:
                logs["loss"] = outputs["loss"]
            elif isinstance(outputs, torch.Tensor):
                logs["loss"] = outputs
            self.recording.at(trainer.global_step, logs)
            self.recording.commit(self._optimizer(trainer))

        def on_train_end(self, trainer, pl_module):
            self.recording.finish(int(trainer.global_step), self._optimizer(trainer))

        def on_exception(self, trainer, pl_module, exception):
            if self.recording.recorder is not None:  # keep what was committed
                self.recording.recorder.__exit__(type(exception), exception, None)

    return LandscapeLightningCallback
