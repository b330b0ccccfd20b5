"""``landscape import``: a folder of saved ``state_dict`` files into a run file.

Each file of the folder ending in ``.pt``, ``.pth`` or ``.safetensors`` is one checkpoint;
its optimiser step is the last number in its name (``step_100.pt``, ``ckpt-2000.safetensors``,
``500.pt``), and checkpoints are recorded in the order of those steps. ``.pt`` files are
read with ``torch.load(weights_only=True)`` (tensors only, never arbitrary pickled
objects); a file holding ``{"model": state_dict}`` or ``{"state_dict": ...}`` is
unwrapped. ``.safetensors`` files need the ``safetensors`` package.

The probe set (``--probe DATA``) is a ``.pt`` (read the same way) or ``.npz`` file
holding either ``inputs`` and ``targets`` (the model is called as ``model(inputs)``), or
named arrays passed to the model as keyword arguments, e.g. ``input_ids`` and
``attention_mask`` (see :mod:`landscape.runs.own_models` for the losses over each).

An import is recorded through :class:`~landscape.runs.recorder.Recorder`, one commit per
checkpoint: an interrupted import keeps what it committed, and running the same command
again continues after the last recorded step.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape.errors import LandscapeError
from landscape.runs import own_models as custom
from landscape.runs.recorder import Recorder

SUFFIXES = (".pt", ".pth", ".safetensors")
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def checkpoint_files(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, file)`` of every checkpoint in ``folder``, by step."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LandscapeError(f"{folder} is not a folder of checkpoints")
    files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not files:
        raise LandscapeError(f"{folder} holds no {', '.join(SUFFIXES)} files")
    found: dict[int, Path] = {}
    for p in files:
        m = _LAST_NUMBER.search(p.stem)
        if m is None:
            raise LandscapeError(f"{p.name} has no step in its name (e.g. step_100{p.suffix})")
        step = int(m.group(1))
        if step in found:
            raise LandscapeError(f"{found[step].name} and {p.name} both name step {step}")
        found[step] = p
    return sorted(found.items())


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``.pt``/``.pth`` (weights only) or ``.safetensors``."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise LandscapeError(f"{path.name}: .safetensors files need the safetensors "
                                 "package (pip install 'looped-landscape[hf]')") from None
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file
            raise LandscapeError(f"cannot read {path}: {e}") from None
    obj = _load_pt(path)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping) and len(obj) <= 3:
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        raise LandscapeError(f"{path} does not hold a state_dict (names to tensors)")
    return dict(obj)


def _load_pt(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - not a weights-only torch file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LandscapeError(f"cannot load {path} as tensors only (weights_only=True): "
                             f"{first}") from None


def load_probe_data(path: str | Path) -> Any:
    """The probe set of a DATA file: ``(inputs, targets)`` or a dict of arrays."""
    path = Path(path)
    if not path.is_file():
        raise LandscapeError(f"probe data {path} does not exist")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise LandscapeError(f"cannot read {path}: {e}") from None
    elif path.suffix in (".pt", ".pth"):
        data = _load_pt(path)
        if isinstance(data, (tuple, list)) and len(data) == 2:
            return tuple(data)
    else:
        raise LandscapeError(f"probe data {path}: use a .pt or .npz file")
    if not isinstance(data, Mapping) or not data:
        raise LandscapeError(f"probe data {path} must hold named arrays (inputs and targets, "
                             "or e.g. input_ids and attention_mask)")
    if set(data) == {"inputs", "targets"}:
        return data["inputs"], data["targets"]
    return dict(data)


def fill_tied(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict:
    """Add keys a file leaves out because they share storage with a saved one (tied)."""
    own = model.state_dict()
    by_ptr: dict[int, list[str]] = {}
    for k, v in own.items():
        by_ptr.setdefault(v.data_ptr(), []).append(k)
    out = dict(state)
    for k in own:
        if k not in out:
            twin = next((t for t in by_ptr[own[k].data_ptr()] if t in state), None)
            if twin is not None:
                out[k] = state[twin]
    return out


def import_checkpoints(folder: str | Path, out: str | Path, *, factory: str,
                       kwargs: Mapping[str, Any] | None = None, probe: str | Path,
                       loss: str | None = None,
                       progress: Callable[[int, Path], None] | None = None) -> list[int]:
    """Record the checkpoints of ``folder`` into ``out``; returns the steps recorded now.

    The factory is called here (its name comes from the caller, not from a file).
    ``loss``: as the Recorder's (None: a HuggingFace factory's head's, else next_token).
    """
    files = checkpoint_files(folder)
    kwargs = custom.stored_kwargs(factory, kwargs or {})  # e.g. a config.json read in
    model = custom.build_model(factory, kwargs, trust_code=True, where="--model")
    first_step, first_file = files[0]
    custom.fit_state_dict(model, fill_tied(model, load_state_dict(first_file)), first_file)
    data = load_probe_data(probe)
    done: list[int] = []
    with Recorder(out, model, data, loss=loss, factory=factory, factory_kwargs=kwargs,
                  source="import", keep_optimizer=False) as rec:
        for step, path in files:
            if rec.last_step is not None and step <= rec.last_step:
                continue  # recorded by an earlier, interrupted import
            custom.fit_state_dict(model, fill_tied(model, load_state_dict(path)), path)
            rec.checkpoint(step)
            done.append(step)
            if progress is not None:
                progress(step, path)
    return done
