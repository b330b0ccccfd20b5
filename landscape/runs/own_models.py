"""Models of your own: the code a run file names, its probe set, and its loss.

A run recorded from your own training loop (:class:`landscape.Recorder`) or imported from
a folder of checkpoints (``landscape import``) names two pieces of code:

* a **factory** ``"pkg.mod:build"`` called with JSON keyword arguments to rebuild the
  module (its parameters are then replaced by a checkpoint's);
* a **loss**: ``"next_token"``, ``"masked_lm"``, ``"cross_entropy"``, ``"mse"``, or
  ``"pkg.mod:function"``.

and stores the **probe set**, the fixed batch every probe evaluates, in one of two forms:

* ``pair``: ``(inputs, targets)``; the model is called as ``model(inputs)``;
* ``dict``: named tensors, e.g. ``input_ids`` and ``attention_mask``; the model is called
  with them as keyword arguments (all but ``labels`` and ``targets``).

Built-in losses (the mean over the whole probe set, evaluated :data:`CHUNK` examples at a
time in one differentiable graph):

* ``next_token``: token cross-entropy of the logits (the output itself, its ``.logits``,
  or its first element). Pair form: against ``targets`` ``[N, T]`` (``-100``: not
  scored). Dict form: against ``input_ids`` (or ``labels``) shifted by one, where
  ``attention_mask`` is 1; the mean runs over all scored tokens.
* ``masked_lm``: token cross-entropy of the logits ``[N, T, V]`` against ``labels``
  ``[N, T]`` (dict form; pair form: ``targets``) at the same positions, no shift, over
  the tokens whose label is not ``-100`` (a masked LM's masked positions).
* ``cross_entropy``: logits ``[N, C]`` (the output, its ``.logits``, or its first
  element) against class ids ``[N]``: ``targets``, or in dict form ``labels`` (a
  sequence classifier's); the mean runs over the examples whose id is not ``-100``.
* ``mse``: mean squared error of the output against float ``targets``, over all entries.

**Dtypes.** The probe set's floating tensors (images, features, float sequences) are
cast to the floating dtype of the parameters the loss is evaluated at (float32, or
float64 where a probe asks for it); integer tensors (token and class ids, masks) are
used as they are. A custom loss receives the batch so cast.
* ``"pkg.mod:function"``: ``function(model, batch) -> scalar``, the mean loss of the
  batch it is given (a tuple ``(inputs, targets)`` or a dict); the probe loss is the
  example-weighted mean over the chunks. Use it for anything else, e.g. a forward that
  needs other keyword arguments.

**Buffers.** A module's buffers that training may change (BatchNorm's running
statistics, or any buffer your model updates) are stored with every checkpoint, as
:class:`BufferLayout` describes: the persistent ones (those in ``state_dict()``) of a
floating or integer dtype. Non-persistent buffers and those of other dtypes (``bool``
masks, complex) are taken from the module the factory builds.

**Trust.** Importing a factory or a loss runs code that the run file names. A run file
from someone else could name anything, so :func:`load_object` resolves, without trust,
only the exact names of :data:`OWN_CODE` (this package's own factories, by alias), and
refuses everything else, before importing it, unless the caller trusts it
(``--trust-code``, ``trust_code=True``). Their arguments are the JSON stored in the file
(never paths), and :func:`build_model` builds the module on the meta device and compares
it with the stored layout before allocating it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from landscape.curvature.objective import (
    CHUNK,
    LossFn,
    ParamLayout,
    SplitObjective,
    has_tied_tensors,
    with_binding,
)
from landscape.errors import LandscapeError

BUILTIN_LOSSES = ("next_token", "masked_lm", "cross_entropy", "mse")
IGNORE = -100
NOT_MODEL_INPUTS = ("labels", "targets")


# --- code named in a run file -----------------------------------------------------------

HF_FACTORIES = ("causal_lm", "masked_lm", "sequence_classifier")
"""The factories of :mod:`landscape.runs.huggingface`, each aliased ``landscape.hf:NAME``."""

OWN_CODE: dict[str, dict[str, tuple[str, str]]] = {
    "factory": {f"landscape.hf:{f}": ("landscape.runs.huggingface", f) for f in HF_FACTORIES},
    "loss": {},
}
"""The code a run file may name without trust: ``{what: {alias: (module, function)}}``.

Matched by the exact name (``landscape.hf:causal_lm``), never by a prefix, and resolved
to the one function the entry names, never by walking attributes. The aliases are stable
public names: when a function moves, its entry changes here and run files naming the
alias still load. Anything else a run file names needs ``trust_code``.
"""

INLINE: dict[str, tuple[str, str]] = {
    f"landscape.hf:{f}": ("landscape.runs.huggingface", "inline_kwargs") for f in HF_FACTORIES}
"""For an own factory whose caller may give a path (e.g. a ``config.json``): the function
that reads it into the JSON stored in the run file (:func:`stored_kwargs`)."""

MODULE_BUDGET = 16
"""Submodules per stored parameter (plus :data:`MODULE_SLACK`) that an own factory may
create while its module is built on the meta device, before it is refused."""
MODULE_SLACK = 256
BUFFER_BUDGET = 16
"""Buffer entries per stored parameter entry (at least :data:`BUFFER_FLOOR`) that an own
factory's module may hold (e.g. causal masks), checked on the meta device."""
BUFFER_FLOOR = 2**26


def is_own_code(spec: Any, what: str = "factory") -> bool:
    """Whether ``spec`` is one of :data:`OWN_CODE`'s names for ``what`` (needs no trust)."""
    return isinstance(spec, str) and spec in OWN_CODE.get(what, {})


def shown(spec: Any) -> str:
    """``spec`` as one printable line (a name read from a file may hold anything)."""
    return spec if isinstance(spec, str) and spec.isprintable() else repr(spec)


def check_trust(spec: Any, what: str, trust_code: bool, where: Any = "the run file") -> None:
    """Raise unless ``spec`` may be imported: an own alias, or the caller trusts the code."""
    if not trust_code and not is_own_code(spec, what):
        raise LandscapeError(
            f"{where} names code to run ({what} {shown(spec)}); importing it runs that code: "
            "pass --trust-code (Python: trust_code=True) if you trust it")


def load_object(spec: Any, what: str, *, trust_code: bool, where: Any = "the run file"):
    """The function ``spec`` names; trust checked before anything is imported.

    An own alias (:data:`OWN_CODE`) resolves to its entry's function. Other code, only
    with ``trust_code``, is imported as ``"pkg.mod:attr"`` (``attr`` may be dotted).

    Raises:
        LandscapeError: not such a name, not trusted, not importable or not callable.
    """
    check_trust(spec, what, trust_code, where)
    if is_own_code(spec, what):
        module, name = OWN_CODE[what][spec]
        return getattr(importlib.import_module(module), name)
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise LandscapeError(f"{what} {shown(spec)} must be 'package.module:name'")
    mod_name, attr = spec.split(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's input
        raise LandscapeError(f"cannot import {what} {spec}: {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise LandscapeError(f"cannot import {what} {spec}: {mod_name} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise LandscapeError(f"{what} {spec} is not callable")
    return obj


def stored_kwargs(factory: str, kwargs: Mapping[str, Any]) -> dict:
    """The factory's arguments as a run file stores them: inline JSON, never a path.

    For the caller's own arguments (a Recorder's, ``landscape import``'s): a path that
    an own factory's caller may give is read here (:data:`INLINE`); an own factory called
    from a run file takes only the stored values.
    """
    if not isinstance(kwargs, Mapping):
        raise LandscapeError(f"the arguments of factory {shown(factory)} must be a JSON "
                             f"object (a dict), not {type(kwargs).__name__}")
    if not isinstance(factory, str) or factory not in INLINE:
        return dict(kwargs)
    module, name = INLINE[factory]
    return getattr(importlib.import_module(module), name)(kwargs)


def build_model(factory: str, kwargs: Mapping[str, Any], *, trust_code: bool,
                where: Any = "the run file", layout: ParamLayout | None = None) -> nn.Module:
    """Call the factory with ``kwargs`` and check that it returns a module.

    Args:
        factory: ``"pkg.mod:build"`` or an own alias (:data:`OWN_CODE`).
        kwargs: the factory's keyword arguments (a JSON object).
        trust_code: the caller trusts the code ``factory`` names.
        where: what named the factory, for messages.
        layout: the parameters the module must have. Given, the module is first built on
            the meta device (no memory) and compared with it, so that a factory asked for
            another (e.g. a far larger) model is refused before anything is allocated.
            Required of an own alias; a trusted factory that cannot build on the meta
            device is built directly (its module is then compared by the caller).

    Raises:
        LandscapeError: the factory may not or cannot be called, fails, returns no
            module, or builds one whose parameters differ from ``layout``.
    """
    fn = load_object(factory, "factory", trust_code=trust_code, where=where)
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise LandscapeError(f"{where}: the arguments of factory {shown(factory)} must be a "
                             "JSON object")
    if layout is not None:
        _check_on_meta(fn, factory, kwargs, layout, where)
    return _call(fn, factory, kwargs)


def _call(fn: Callable, factory: str, kwargs: Mapping[str, Any]) -> nn.Module:
    try:
        model = fn(**dict(kwargs))
    except (LandscapeError, _TooLarge):
        raise
    except Exception as e:  # noqa: BLE001 - the user's factory failed on its arguments
        raise LandscapeError(f"factory {factory} failed: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(model, nn.Module):
        raise LandscapeError(f"factory {factory} returned {type(model).__name__}, "
                             "not a torch.nn.Module")
    return model


class _TooLarge(Exception):
    """Raised inside a factory building far more submodules than the layout has room for."""


def _check_on_meta(fn: Callable, factory: str, kwargs: Mapping[str, Any],
                   layout: ParamLayout, where: Any) -> None:
    """Build the module on the meta device and compare its parameters with ``layout``."""
    own = is_own_code(factory)
    budget = MODULE_BUDGET * len(layout.names) + MODULE_SLACK
    count = [0]

    def counted(*_):
        count[0] += 1
        if count[0] > budget:
            raise _TooLarge

    hook = (nn.modules.module.register_module_module_registration_hook(counted) if own
            else None)
    try:
        with torch.device("meta"):
            shadow = _call(fn, factory, kwargs)
    except _TooLarge:
        raise LandscapeError(f"{where}: factory {shown(factory)} builds a model of more than "
                             f"{budget} submodules, which the stored {len(layout.names)} "
                             "parameters cannot fill; the file is damaged or hostile") from None
    except LandscapeError:
        if own:
            raise
        return  # trusted code that cannot build on the meta device: built directly
    finally:
        if hook is not None:
            hook.remove()
    misfit = layout_misfit(shadow, layout)
    buffers = sum(b.numel() for b in shadow.buffers())
    if own and not misfit and buffers > max(BUFFER_BUDGET * layout.size, BUFFER_FLOOR):
        misfit = f"{buffers:,} buffer entries beside {layout.size:,} parameters"
    if misfit:
        raise LandscapeError(f"{where}: factory {shown(factory)} builds a model that does "
                             f"not fit the checkpoints ({misfit}); nothing was allocated")


def layout_misfit(model: nn.Module, layout: ParamLayout) -> str:
    """How the module's parameters differ from ``layout`` (names, shapes, count), or ''."""
    have = {n: tuple(p.shape) for n, p in model.named_parameters()}
    want = dict(zip(layout.names, (tuple(s) for s in layout.shapes)))
    wrong = [f"{n} {have[n]} vs {want[n]}" if n in have else f"{n} missing"
             for n in want if have.get(n) != want[n]]
    extra = [f"{n} unexpected" for n in have if n not in want]
    if not wrong and not extra:
        return ""
    size = sum(math.prod(s) for s in have.values())
    return (f"{size:,} parameters vs {layout.size:,} stored; e.g. "
            f"{', '.join((wrong + extra)[:3])}")


def fit_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], where: Any) -> None:
    """Load ``state`` into ``model``, naming missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("mis-shaped (file vs model)", shaped)):
        if items:
            more = f" and {len(items) - 5} more" if len(items) > 5 else ""
            problems.append(f"{label}: {', '.join(items[:5])}{more}")
    if problems:
        raise LandscapeError(f"{where} does not fit the model: {'; '.join(problems)}")
    model.load_state_dict(state)


# --- buffers ----------------------------------------------------------------------------


STORED_AS = {torch.float16: "float16", torch.bfloat16: "float32", torch.float32: "float32",
             torch.float64: "float64", torch.uint8: "uint8", torch.int8: "int8",
             torch.int16: "int16", torch.int32: "int32", torch.int64: "int64"}
"""Buffer dtypes stored per checkpoint, and the array dtype each is stored as (exactly:
bfloat16 has no numpy dtype, and float32 holds every bfloat16 value)."""


@dataclass(frozen=True)
class BufferLayout:
    """The buffers of a module that are stored per checkpoint, and where in a row.

    A checkpoint's buffers are one row per storage dtype (:data:`STORED_AS`): each buffer
    flattened, in layout order, into the row of its dtype. ``BufferLayout.of(model)``
    takes the persistent buffers (in ``state_dict()``) of a floating or integer dtype, in
    ``named_buffers()`` order.

    Attributes:
        names: buffer names, as in ``named_buffers()``.
        shapes: the shape of each.
        dtypes: the torch dtype of each (``"float32"``, ``"int64"``, ``"bfloat16"``, ...).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @classmethod
    def of(cls, model: nn.Module) -> BufferLayout:
        """The stored buffers of ``model``."""
        persistent = set(model.state_dict(keep_vars=True))
        found = [(n, b) for n, b in model.named_buffers()
                 if n in persistent and b.dtype in STORED_AS]
        return cls(tuple(n for n, _ in found), tuple(tuple(b.shape) for _, b in found),
                   tuple(str(b.dtype).removeprefix("torch.") for _, b in found))

    def stored_as(self, i: int) -> str:
        """The array dtype buffer ``i`` is stored in (a row's name)."""
        return STORED_AS[getattr(torch, self.dtypes[i])]

    def _slots(self) -> dict[str, list[tuple[int, int, int]]]:
        """``{row: [(buffer index, start, size)]}``."""
        out: dict[str, list[tuple[int, int, int]]] = {}
        ends: dict[str, int] = {}
        for i, shape in enumerate(self.shapes):
            row, size = self.stored_as(i), math.prod(shape)
            out.setdefault(row, []).append((i, ends.get(row, 0), size))
            ends[row] = ends.get(row, 0) + size
        return out

    @property
    def rows(self) -> tuple[str, ...]:
        """The rows of a checkpoint (storage dtypes), in order."""
        return tuple(self._slots())

    def flatten(self, model: nn.Module) -> dict[str, np.ndarray]:
        """The module's buffers as ``{row: [B_row]}`` arrays (copies, on the CPU).

        Raises:
            LandscapeError: a buffer is missing or has another shape than the layout's.
        """
        have = dict(model.named_buffers())
        bad = [n for n, s in zip(self.names, self.shapes)
               if n not in have or tuple(have[n].shape) != s]
        if bad:
            raise LandscapeError(f"the model's buffers changed since recording began (e.g. "
                                 f"{', '.join(bad[:3])})")
        out = {}
        for row, slots in self._slots().items():
            parts = [have[self.names[i]].detach().reshape(-1).to("cpu", getattr(torch, row))
                     for i, _, _ in slots]
            out[row] = torch.cat(parts).numpy()
        return out

    def unflatten(self, rows: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` in each buffer's own dtype and shape, from :meth:`flatten`'s rows."""
        out = {}
        for row, slots in self._slots().items():
            flat = torch.from_numpy(np.asarray(rows[row]))
            for i, start, size in slots:
                out[self.names[i]] = flat[start : start + size].reshape(self.shapes[i]).to(
                    getattr(torch, self.dtypes[i]))
        return {n: out[n] for n in self.names}

    def fits(self, other: BufferLayout) -> bool:
        """Same names and shapes (dtypes may differ: values are cast on loading)."""
        return (self.names, self.shapes) == (other.names, other.shapes)

    def to_json(self) -> dict:
        """A JSON-serialisable description (names, shapes, dtypes, and each one's row)."""
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes],
                "dtypes": list(self.dtypes),
                "rows": [self.stored_as(i) for i in range(len(self.names))]}

    @classmethod
    def from_json(cls, d: Mapping) -> BufferLayout:
        """Inverse of :meth:`to_json`.

        Raises:
            LandscapeError: ``d`` is not such a description.
        """
        try:
            out = cls(tuple(d["names"]), tuple(tuple(int(n) for n in s) for s in d["shapes"]),
                      tuple(d["dtypes"]))
            for i in range(len(out.names)):
                out.stored_as(i)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LandscapeError(f"not a buffer layout ({type(e).__name__}: {e})") from None
        if not len(out.names) == len(out.shapes) == len(out.dtypes):
            raise LandscapeError("buffer layout: names, shapes and dtypes differ in number")
        return out


def load_buffers(model: nn.Module, buffers: Mapping[str, torch.Tensor], where: Any) -> None:
    """Copy ``buffers`` into the module's buffers of the same names (cast to their dtype).

    Raises:
        LandscapeError: the module lacks one of them or has it in another shape.
    """
    have = dict(model.named_buffers())
    bad = [n for n, t in buffers.items()
           if n not in have or tuple(have[n].shape) != tuple(t.shape)]
    if bad:
        raise LandscapeError(f"{where}: the factory builds a model whose buffers do not fit "
                             f"the stored ones (e.g. {', '.join(bad[:3])})")
    with torch.no_grad():
        for n, t in buffers.items():
            have[n].copy_(t)


# --- the probe set ----------------------------------------------------------------------


def probe_arrays(probe: Any) -> tuple[str, dict[str, np.ndarray]]:
    """``(form, arrays)`` of a probe set given as ``(inputs, targets)`` or a dict."""
    if isinstance(probe, Mapping):
        form, items = "dict", dict(probe)
    elif isinstance(probe, (tuple, list)) and len(probe) == 2:
        form, items = "pair", {"inputs": probe[0], "targets": probe[1]}
    else:
        raise LandscapeError("probe must be (inputs, targets) or a dict of tensors, e.g. "
                             "{'input_ids': ..., 'attention_mask': ...}")
    arrays = {}
    for k, v in items.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        v = np.asarray(v)
        if v.dtype.kind not in "biuf" or v.ndim == 0:
            raise LandscapeError(f"probe set {k!r}: need a numeric array with a batch "
                                 f"dimension, got {v.dtype} of shape {v.shape}")
        arrays[str(k)] = v
    sizes = {k: v.shape[0] for k, v in arrays.items()}
    if not arrays or len(set(sizes.values())) != 1 or min(sizes.values()) < 1:
        raise LandscapeError(f"probe set: every array needs the same number (>= 1) of "
                             f"examples along its first axis, got {sizes}")
    return form, arrays


def check_probe_for_loss(loss: str, form: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Shape and dtype rules of the built-in losses (a custom loss checks its own)."""
    if loss not in BUILTIN_LOSSES:
        return
    if form == "dict":
        if loss == "next_token":
            ids = arrays.get("labels", arrays.get("input_ids"))
            if ids is None:
                raise LandscapeError("probe set: next_token on a dict needs 'input_ids'")
            _need(ids, "input_ids", "iu", 2)
            mask = arrays.get("attention_mask")
            if mask is not None and mask.shape != ids.shape:
                raise LandscapeError(f"probe set: attention_mask {mask.shape} and input_ids "
                                     f"{ids.shape} differ in shape")
        elif "targets" not in arrays and "labels" not in arrays:
            raise LandscapeError(f"probe set: {loss} on a dict needs 'targets' or 'labels'")
        elif loss == "masked_lm":
            _need(arrays.get("targets", arrays.get("labels")), "labels", "iu", 2)
        return
    x, y = arrays["inputs"], arrays["targets"]
    if loss == "next_token":
        _need(y, "targets", "iu", 2)
        if x.shape[:2] != y.shape:
            raise LandscapeError(f"probe set: next_token needs inputs [N, T, ...] and targets "
                                 f"[N, T]; got {x.shape} and {y.shape}")
    elif loss == "masked_lm":
        _need(y, "targets", "iu", 2)
    elif loss == "cross_entropy":
        _need(y, "targets", "iu", None)
    elif loss == "mse":
        _need(y, "targets", "f", None)


def _need(a: np.ndarray, name: str, kinds: str, ndim: int | None) -> None:
    kind = {"iu": "integer", "f": "floating-point"}[kinds]
    if a.dtype.kind not in kinds or (ndim is not None and a.ndim != ndim):
        dims = f" [{', '.join('NTXYZ'[:ndim])}]" if ndim else ""
        raise LandscapeError(f"probe set {name!r}: need {kind}{dims}, got {a.dtype} of "
                             f"shape {a.shape}")


def batches(form: str, arrays: Mapping[str, np.ndarray], device: torch.device | str = "cpu",
            chunk: int = CHUNK) -> list[Any]:
    """The probe set as model batches of at most ``chunk`` examples (tuples or dicts)."""
    tensors = {k: torch.as_tensor(np.asarray(v)).to(device) for k, v in arrays.items()}
    n = next(iter(tensors.values())).shape[0]
    out = []
    for i in range(0, n, chunk):
        part = {k: v[i : i + chunk] for k, v in tensors.items()}
        out.append((part["inputs"], part["targets"]) if form == "pair" else part)
    return out


# --- losses -----------------------------------------------------------------------------


def logits_of(out: Any) -> torch.Tensor:
    """The tensor in a model's output: itself, ``.logits``, ``["logits"]`` or ``[0]``."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise LandscapeError(f"cannot find the output tensor in a {type(out).__name__}; use "
                         "a loss 'pkg.mod:function' that takes (model, batch)")


def _forward(model: nn.Module, batch: Any) -> torch.Tensor:
    if isinstance(batch, tuple):
        return logits_of(model(batch[0]))
    return logits_of(model(**{k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS}))


def _targets(batch: Any) -> torch.Tensor:
    if isinstance(batch, tuple):
        return batch[1]
    return batch["targets"] if "targets" in batch else batch["labels"]


def _next_token_targets(batch: Any) -> torch.Tensor:
    """Targets aligned with the logits: given (pair), or the shifted ids (dict)."""
    if isinstance(batch, tuple):
        return batch[1]
    ids = batch.get("labels", batch["input_ids"])
    nxt = torch.full_like(ids, IGNORE)
    nxt[:, :-1] = ids[:, 1:]
    mask = batch.get("attention_mask")
    if mask is not None:
        nxt[:, :-1] = torch.where(mask[:, 1:].bool(), nxt[:, :-1], IGNORE)
    return nxt


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs in float32 for the loss; float32/float64 as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _builtin_sum(name: str) -> Callable[[nn.Module, Any], torch.Tensor]:
    """``f(model, batch)`` -> the loss summed over what the batch scores."""

    def next_token(model, batch):
        logits = _forward(model, batch)
        y = _next_token_targets(batch)
        return nn.functional.cross_entropy(_wide(logits.reshape(-1, logits.shape[-1])),
                                           y.reshape(-1), ignore_index=IGNORE,
                                           reduction="sum")

    def masked_lm(model, batch):
        logits = _forward(model, batch)
        return nn.functional.cross_entropy(_wide(logits.reshape(-1, logits.shape[-1])),
                                           _targets(batch).reshape(-1), ignore_index=IGNORE,
                                           reduction="sum")

    def cross_entropy(model, batch):
        logits = _forward(model, batch)
        return nn.functional.cross_entropy(_wide(logits), _targets(batch), ignore_index=IGNORE,
                                           reduction="sum")

    def mse(model, batch):
        out = _forward(model, batch)
        return ((_wide(out) - _targets(batch).to(_wide(out).dtype)) ** 2).sum()

    return {"next_token": next_token, "masked_lm": masked_lm, "cross_entropy": cross_entropy,
            "mse": mse}[name]


def _builtin_total(name: str, model: nn.Module, pieces: list[Any]) -> int:
    """How many terms the built-in loss ``name`` sums over the whole probe set (>= 1)."""
    if name == "mse":
        with torch.no_grad():
            return max(sum(_forward(model, b).numel() for b in pieces), 1)
    return max(sum(_count(name, b) for b in pieces), 1)


def _count(name: str, batch: Any) -> int:
    """How many terms the built-in loss ``name`` sums over in ``batch``."""
    if name == "next_token":
        return int((_next_token_targets(batch) != IGNORE).sum())
    if name in ("masked_lm", "cross_entropy"):
        return int((_targets(batch) != IGNORE).sum())
    return -1  # mse: the output's size, known after a forward


class _Objective(nn.Module):
    """``forward(batch)`` = ``loss(model, batch)``.

    Lets ``functional_call`` swap the weights of a model that the loss calls however it
    likes (keyword arguments, several calls).
    """

    def __init__(self, model: nn.Module, loss: Callable):
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, batch):
        return self._loss(self.model, batch)


def floating_dtype(tensors: Iterable[torch.Tensor]) -> torch.dtype | None:
    """The dtype of the first floating-point tensor of ``tensors`` (None if none is)."""
    return next((t.dtype for t in tensors if t.is_floating_point()), None)


def cast_batch(batch: Any, dtype: torch.dtype | None) -> Any:
    """``batch`` (a tuple or a dict) with its floating tensors in ``dtype``.

    Integer and boolean tensors (token ids, class ids, masks) are left as they are; so is
    everything when ``dtype`` is None.
    """
    def cast(t):
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    if isinstance(batch, Mapping):
        return {k: cast(v) for k, v in batch.items()}
    return tuple(cast(v) for v in batch)


class _AtDtype:
    """The probe set's chunks and the module's buffers for parameters of a given dtype.

    Probes evaluate the loss at parameters in float32 or float64 (widths, spread, dense
    spectra), whatever dtype the model was recorded in. Floating inputs always follow the
    parameters (``torch.randn`` images meet float64 weights as float64); floating buffers
    (BatchNorm's statistics) follow them where the parameters' dtype is not the module's
    own. Each dtype's copies are made once.
    """

    def __init__(self, pieces: list[Any], model: nn.Module, prefix: str):
        self.pieces = pieces
        self.buffers = {f"{prefix}{k}": v for k, v in model.named_buffers()}
        self.own = floating_dtype(model.parameters())
        self._cache: dict[torch.dtype | None, tuple[list[Any], dict[str, torch.Tensor]]] = {}

    def __call__(self, dtype: torch.dtype | None) -> tuple[list[Any], dict[str, torch.Tensor]]:
        """``(chunks, buffers)`` for parameters of floating dtype ``dtype``."""
        if dtype not in self._cache:
            bufs = self.buffers if dtype in (None, self.own) else {
                k: v.to(dtype) if v.is_floating_point() else v for k, v in self.buffers.items()}
            self._cache[dtype] = ([cast_batch(b, dtype) for b in self.pieces], bufs)
        return self._cache[dtype]


def make_custom_loss_fn(model: nn.Module, loss: str, form: str,
                        arrays: Mapping[str, np.ndarray], *, trust_code: bool,
                        device: torch.device | str = "cpu", chunk: int = CHUNK,
                        where: Any = "the run file") -> LossFn:
    """``f(params) -> scalar``: the loss ``loss`` of ``model`` on the probe set.

    ``params`` is keyed by ``model.named_parameters()`` names; usable with ``torch.func``
    and the probes, like :func:`landscape.train.split_loss.make_loss_fn`. The probe set's
    floating tensors are cast to the parameters' floating dtype (:class:`_AtDtype`), in
    ``loss_fn(params)`` and in its ``bind`` alike.
    """
    at = _AtDtype(batches(form, arrays, device, chunk), model, prefix="model.")
    own_pieces = at(at.own)[0]
    if loss in BUILTIN_LOSSES:
        per_batch = _builtin_sum(loss)
        total = _builtin_total(loss, model, own_pieces)
    else:
        fn = load_object(loss, "loss", trust_code=trust_code, where=where)
        sizes = [len(b[0]) if isinstance(b, tuple) else len(next(iter(b.values())))
                 for b in own_pieces]

        def per_batch(m, b, _fn=fn):
            return _fn(m, b)

        total = None
    obj = _Objective(model, per_batch)
    tie = has_tied_tensors(model)  # else skip functional_call's per-call walk for ties

    def mean_loss(call: Callable[[Any], torch.Tensor], pieces: list[Any]) -> torch.Tensor:
        acc = 0.0
        for i, b in enumerate(pieces):
            value = call(b)
            if total is None:
                if value.dim() != 0:
                    raise LandscapeError(f"loss {loss} returned a tensor of shape "
                                         f"{tuple(value.shape)}, not a scalar")
                value = value * sizes[i]
            acc = acc + value
        return acc / (total if total is not None else sum(sizes))

    def loss_fn(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        named = {f"model.{k}": v for k, v in params.items()}
        pieces, bufs = at(floating_dtype(params.values()))
        return mean_loss(lambda b: functional_call(obj, (named, bufs), (b,), tie_weights=tie),
                         pieces)

    def bound_loss() -> torch.Tensor:  # inside bind, model.parameters() are the bound ones
        return mean_loss(obj, at(floating_dtype(model.parameters()))[0])

    return with_binding(loss_fn, obj, lambda params: at(floating_dtype(params.values()))[1],
                        tie, bound_loss, prefix="model.")


# --- the loss split at the output (GGN, empirical Fisher) -------------------------------


def _builtin_example_sums(name: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """``f(output, batch) -> [n]``: the built-in loss ``name`` summed per example."""

    def next_token(logits, batch):
        y = _next_token_targets(batch)  # [n, T]
        tokens = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             y.reshape(-1), ignore_index=IGNORE,
                                             reduction="none")
        return tokens.reshape(y.shape).sum(dim=1)

    def cross_entropy(logits, batch):
        y = _targets(batch)
        per = nn.functional.cross_entropy(logits, y, ignore_index=IGNORE,
                                          reduction="none")  # y's shape, 0 where ignored
        return per.reshape(len(y), -1).sum(dim=1)

    def masked_lm(logits, batch):
        y = _targets(batch)  # [n, T], -100 where not scored
        tokens = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             y.reshape(-1), ignore_index=IGNORE,
                                             reduction="none")
        return tokens.reshape(y.shape).sum(dim=1)

    def mse(out, batch):
        return ((out - _targets(batch).to(out.dtype)) ** 2).reshape(len(out), -1).sum(dim=1)

    return {"next_token": next_token, "masked_lm": masked_lm, "cross_entropy": cross_entropy,
            "mse": mse}[name]


def _declared_split(loss: str, fn: Any) -> tuple[Callable, Callable]:
    """A custom loss's ``(output, output_loss)`` attributes, or a one-line refusal."""
    output, per_example = getattr(fn, "output", None), getattr(fn, "output_loss", None)
    if not (callable(output) and callable(per_example)):
        raise LandscapeError(
            f"loss {loss}: the GGN and the Fisher need the model's output and a loss on it; "
            "give the function the attributes output(model, batch) -> Tensor and "
            "output_loss(output, batch) -> [n] per-example losses, or use a built-in loss "
            f"({', '.join(BUILTIN_LOSSES)})")
    return output, per_example


def make_split_objective(model: nn.Module, loss: str, form: str,
                         arrays: Mapping[str, np.ndarray], *, trust_code: bool,
                         device: torch.device | str = "cpu", chunk: int = CHUNK,
                         where: Any = "the run file") -> SplitObjective:
    """The loss of :func:`make_custom_loss_fn` split at the model's output.

    One example per row of the probe set (a sequence for ``next_token``). Built-in losses:
    the output is the model's (:func:`logits_of`, half precision widened), the term of an
    example its summed loss over the probe set's number of scored terms. A custom loss
    ``pkg.mod:function`` qualifies when it declares ``function.output(model, batch)`` (the
    output tensor) and ``function.output_loss(output, batch)`` (``[n]`` per-example losses
    whose mean is ``function(model, batch)``); any other is refused in one line.

    Returns:
        A :class:`~landscape.curvature.objective.SplitObjective` over the probe set.

    Raises:
        LandscapeError: a custom loss without the two declarations (or untrusted).
    """
    at = _AtDtype(batches(form, arrays, device, chunk), model, prefix="model.")
    pieces = at(at.own)[0]
    n = sum(len(b[0]) if isinstance(b, tuple) else len(next(iter(b.values()))) for b in pieces)
    if loss in BUILTIN_LOSSES:
        output = lambda m, b: _wide(_forward(m, b))  # noqa: E731
        per_example, scale = _builtin_example_sums(loss), 1 / _builtin_total(loss, model, pieces)
    else:
        fn = load_object(loss, "loss", trust_code=trust_code, where=where)
        (output, per_example), scale = _declared_split(loss, fn), 1 / n
    obj = _Objective(model, output)
    tie = has_tied_tensors(model)

    def outputs(params: Mapping[str, torch.Tensor], i: int) -> torch.Tensor:
        named = {f"model.{k}": v for k, v in params.items()}
        chunks, bufs = at(floating_dtype(params.values()))
        return functional_call(obj, (named, bufs), (chunks[i],), tie_weights=tie)

    def example_terms(out: torch.Tensor, i: int) -> torch.Tensor:
        return per_example(out, pieces[i]) * scale

    return SplitObjective(outputs, example_terms, len(pieces), n)


def check_loss(loss_fn: LossFn, params: Mapping[str, torch.Tensor], loss: str) -> float:
    """Evaluate once; raise unless it is a finite scalar. Returns its value."""
    try:
        with torch.no_grad():
            value = loss_fn(params)
    except LandscapeError:
        raise
    except Exception as e:  # noqa: BLE001 - the model or loss failed on the probe set
        raise LandscapeError(f"loss {loss} failed on the probe set: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise LandscapeError(f"loss {loss} returned {shape}, not a scalar")
    if not torch.isfinite(value):
        raise LandscapeError(f"loss {loss} is {float(value)} on the probe set")
    return float(value)
