"""The run file's schema: what the readers use, checked once when a run is opened.

Part of the store: :func:`landscape.runfile.store.check_run_file` opens the index and calls
:func:`validate` on it, so every reader (``Run.open``, ``landscape info``/``probe``,
``train --resume``, a Recorder continuing a run, ``copy_run``) starts from a file whose
every attribute and dataset has the type, shape and range the code after it assumes.
A file that breaks a rule ends in one :class:`LandscapeError`,
``RUN.h5 is damaged: <what>``, instead of a traceback somewhere later.

Kept in a module of its own (beside ``store.py``, which writes the format) so the rules are
in one place and read as a list. Checking is cheap: attributes, dataset shapes and dtypes,
the small index datasets (steps, rows, events) and the header of each ``.npy`` file the
index names; never the parameter data. A file the index names that is absent is not an
error here (an index copied without its folder still shows its summary; the reader that
needs the file says it is missing).

The rules, by place (``n``: checkpoints, ``P``: parameters per checkpoint):

* ``/``: ``format_version`` an integer this version reads; ``recipe`` a JSON object, or
  (a model of your own) ``model`` a JSON object with a ``factory`` string and ``kwargs``
  an object; text attributes are text; ``total_steps``, ``steps_per_epoch`` integers;
  ``optimizer`` an object with numeric ``beta1``/``beta2``; ``optimizers`` a list of
  objects, each a text ``kind`` and an integer ``from`` (increasing, from 0) and numbers.
* ``/task``: ``vocab_size``, ``max_len`` positive integers (required for a recipe's run),
  ``splits`` a list of names, ``ceilings`` ``{split: {"acc", "loss"}}`` of numbers.
* ``/trajectory``: ``layout`` names and shapes of ``P`` parameters; ``step`` ``[n]``
  strictly increasing integers; ``loops`` ``[n]`` integers >= 1; ``params`` ``n`` float
  rows of width ``P``; ``adam_step`` (at most ``n``) integers >= 0 and as many float rows
  of ``adam_v``, width ``P``; ``buffers``: a
  buffer layout, ``first`` in ``[0, n]`` and ``n - first`` rows of the layout's width per
  storage dtype.
* ``/windows/start_<S>``: integer attrs ``start`` (= S, >= 0), ``requested`` >= 1 and
  ``planned`` in ``[1, requested]``; ``step`` ``[n]`` the integers ``S, S+1, ...``
  (``n <= planned``); ``loss``, ``lr`` ``[n]`` floats; ``loops`` ``[n]`` integers >= 1;
  ``updates`` ``n`` float32 rows of width ``P``.
* ``/interventions/start_<S>``: integer attrs ``start`` (= S, >= 0) and ``adam_step``
  >= 0; exactly the datasets ``state`` (bytes), ``params``, ``exp_avg``, ``exp_avg_sq``
  (each ``[P]`` float32).
* ``/metrics/<name>``: ``[m]`` numbers. ``/events``: JSON objects (a ``shift`` event with
  its step, epoch, reason and loops). ``/resume``: an integer ``step`` and a ``state`` of
  bytes. ``/probe``: groups ``run`` and ``step_<N>``.
* Everywhere: hard links only (no soft or external link), no dataset stored outside the
  index (HDF5 external or virtual storage); datasets of numbers, booleans or text; a large
  array's ``sidecar`` a plain file name (no folder, no ``..``) ending in ``.npy``, whose
  header gives the dataset's dtype, and whose data is all there; a segmented array
  (``shape``/``dtype`` attrs, ``files``/``rows``) with one ``.npy`` per entry holding
  exactly its rows of that row shape and dtype.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape.errors import LandscapeError

NUMERIC = "biuf"
"""Array kinds a run file may hold (bool, integers, floats), besides text."""
BUFFER_ROWS = {"float16": "float16", "bfloat16": "float32", "float32": "float32",
               "float64": "float64", "uint8": "uint8", "int8": "int8", "int16": "int16",
               "int32": "int32", "int64": "int64"}
"""A stored buffer's dtype and the row it is stored in (``landscape.runs.own_models.STORED_AS``)."""
_TEXT_ATTRS = ("status", "name", "arch", "loss", "probe_form", "source", "created")
_STEP_GROUP = re.compile(r"step_-?[0-9]+")
_ZIP = b"PK\x03\x04"  # torch.save's archive; a bare pickle starts otherwise


class _Bad(Exception):
    """One broken rule (the message says which); :func:`validate` names the file."""


def damaged(path: str | Path, what: Any) -> LandscapeError:
    """The one error for a run file that breaks the format: ``RUN is damaged: what``."""
    return LandscapeError(f"{path} is damaged: {' '.join(str(what).split())}")


def validate(f: h5py.File, path: str | Path, versions: tuple[int, ...]) -> None:
    """Check every attribute and dataset the readers use (see the module's rules).

    Args:
        f: the open index (its ``format`` attribute already checked).
        path: the run file (its folder ``RUN.h5.d`` holds the ``.npy`` files).
        versions: the format versions this landscape reads.

    Raises:
        LandscapeError: ``RUN.h5 is damaged: <what>``, or a format this version does not read.
    """
    version = f.attrs.get("format_version")
    if not _is_int(version):
        raise damaged(path, f"format_version is {version!r}, not an integer")
    if int(version) not in versions:
        raise LandscapeError(f"{path} has run-file format {int(version)}; this landscape "
                             f"reads {', '.join(map(str, versions))}")
    try:
        _Checker(Path(path)).run(f)
    except _Bad as e:
        raise damaged(path, e) from None


def resume_state(path: str | Path, blob: bytes) -> bytes:
    """``blob`` if it is a ``torch.save`` archive, else the damaged-file error.

    A bare pickle (or anything else) is refused before ``torch.load`` sees it.
    """
    if bytes(blob[:4]) != _ZIP:
        raise damaged(path, "/resume/state is not a torch.save archive")
    return blob


def load_resume_state(path: str | Path, blob: bytes, map_location: Any = "cpu") -> Any:
    """The object in a resume state (tensors and plain data only), or the damaged error."""
    import torch

    try:
        return torch.load(io.BytesIO(resume_state(path, blob)), map_location=map_location,
                          weights_only=True)
    except LandscapeError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever torch says of bytes it cannot read
        raise damaged(path, f"/resume/state cannot be read ({type(e).__name__}: "
                      f"{str(e)[:200]})") from None


# --- small predicates -------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, (float, np.floating))) and not isinstance(v, bool)


def _text(v: Any) -> str | None:
    """``v`` as text if it is text (str or bytes), else None."""
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return None
    return v if isinstance(v, str) else None


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise _Bad(what)


def _json(v: Any, where: str, kind: type | tuple[type, ...] = dict) -> Any:
    """The JSON value of an attribute, which must be of ``kind``."""
    s = _text(v)
    _need(s is not None, f"{where} is not JSON text")
    try:
        out = json.loads(s)
    except (json.JSONDecodeError, RecursionError):
        raise _Bad(f"{where} is not valid JSON") from None
    _need(isinstance(out, kind), f"{where} is not a JSON {getattr(kind, '__name__', kind)}")
    return out


def _int_attr(attrs: Any, key: str, where: str, lo: int | None = None,
              required: bool = False) -> int | None:
    if key not in attrs:
        _need(not required, f"{where} has no attribute {key!r}")
        return None
    v = attrs[key]
    _need(_is_int(v), f"{where} attribute {key!r} is {v!r}, not an integer")
    _need(lo is None or int(v) >= lo, f"{where} attribute {key!r} is {int(v)}, below {lo}")
    return int(v)


def _group(parent: h5py.Group, key: str, where: str, required: bool = True):
    if key not in parent:
        _need(not required, f"it has no {where} group")
        return None
    item = parent[key]
    _need(isinstance(item, h5py.Group), f"{where} is not a group")
    return item



def _start_group(g: h5py.Group, key: str, where: str) -> tuple[h5py.Group, int]:
    """A ``start_<S>`` group (a window, an intervention start) and its ``start`` S."""
    w = _group(g, key, where)
    start = _int_attr(w.attrs, "start", where, lo=0, required=True)
    _need(key == f"start_{start}", f"{where} is named for another step than its start {start}")
    return w, start

def _vector(parent: h5py.Group, key: str, where: str, kinds: str) -> np.ndarray | None:
    """A small 1-D dataset of the index, read (``kinds``: its allowed dtype kinds)."""
    if key not in parent:
        return None
    d = parent[key]
    _need(isinstance(d, h5py.Dataset), f"{where} is not a dataset")
    _need("sidecar" not in d.attrs, f"{where} must be stored in the index")
    _need(d.ndim == 1, f"{where} has shape {d.shape}, not one dimension")
    _need(d.dtype.kind in kinds, f"{where} holds {d.dtype}, not {_KIND_NAMES[kinds]}")
    return d[()]


_KIND_NAMES = {"iu": "integers", NUMERIC: "numbers", "f": "floats", "S": "names", "O": "text"}


def _layout(v: Any, where: str) -> list[tuple[str, tuple[int, ...]]]:
    """``[(name, shape)]`` of a layout attribute ``{"names": [...], "shapes": [[...]]}``."""
    d = _json(v, where)
    names, shapes = d.get("names"), d.get("shapes")
    _need(isinstance(names, list) and all(isinstance(n, str) for n in names),
          f"{where} names are not a list of names")
    _need(isinstance(shapes, list) and len(shapes) == len(names),
          f"{where} has {len(names)} names but not as many shapes")
    _need(len(set(names)) == len(names), f"{where} names a parameter twice")
    for s in shapes:
        _need(isinstance(s, list) and all(isinstance(x, int) and not isinstance(x, bool)
                                          and 0 <= x < 2**40 for x in s),
              f"{where} shape {s!r} is not a list of sizes")
    return list(zip(names, (tuple(s) for s in shapes), strict=True))


def _optimizers(changes: list) -> None:
    """The optimiser change list: ``[{"from": row, "kind": name, hyperparameter: number}]``."""
    rows = [c.get("from") if isinstance(c, dict) else None for c in changes]
    _need(all(_is_int(r) for r in rows) and rows[:1] in ([], [0])
          and all(b > a for a, b in zip(rows, rows[1:])),
          "attribute 'optimizers' is not a list by increasing row 'from', from 0")
    _need(all(isinstance(c.get("kind"), str) and all(
        _is_real(v) or isinstance(v, bool) for k, v in c.items() if k != "kind")
        for c in changes), "attribute 'optimizers' has an entry without a text kind and "
          "numeric settings")


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


# --- the checks -------------------------------------------------------------------------


class _Checker:
    """The rules of the module docstring, applied to one open index."""

    def __init__(self, path: Path):
        self.path = path
        self.folder = Path(f"{path}.d")
        self.seen: dict[str, tuple[int, tuple[int, ...], np.dtype]] = {}  # segmented arrays

    def run(self, f: h5py.File) -> None:
        """Check the whole index (raises :class:`_Bad` at the first broken rule)."""
        self.links(f, "")
        self.root(f)
        self.task(_group(f, "task", "/task"), custom="recipe" not in f.attrs)
        width = self.trajectory(_group(f, "trajectory", "/trajectory"))
        self.windows(_group(f, "windows", "/windows", required=False), width)
        self.interventions(_group(f, "interventions", "/interventions", required=False),
                           width)
        self.metrics(_group(f, "metrics", "/metrics"))
        _group(f, "probe_set", "/probe_set")
        self.events(f)
        self.resume(_group(f, "resume", "/resume", required=False))
        self.probe(_group(f, "probe", "/probe", required=False))

    # structure and every dataset

    def links(self, g: h5py.Group, where: str) -> None:
        """Hard links only, and every dataset of a kind the readers take (recursively)."""
        for key in g:
            here = f"{where}/{key}"
            item = _hard(g, key, here)
            if isinstance(item, h5py.Group):
                if "segmented" in item.attrs:
                    self.seen[item.name] = self.segmented(item, here)
                else:
                    self.links(item, here)
            elif isinstance(item, h5py.Dataset):
                self.dataset(item, here)
            else:
                raise _Bad(f"{here} is neither a group nor a dataset")

    def dataset(self, d: h5py.Dataset, where: str) -> None:
        """A dataset stored in the index, or a large array's ``.npy`` file beside it."""
        _need(not d.is_virtual and d.external is None,
              f"{where} is stored outside the index")
        text = h5py.check_string_dtype(d.dtype) is not None
        _need(text or d.dtype.kind in NUMERIC,
              f"{where} holds {d.dtype}, not numbers or text")
        if "sidecar" not in d.attrs:
            return
        _need(not text and d.shape == (0,), f"{where} names a file but holds data")
        header = self.npy(d.attrs["sidecar"], where)
        if header is not None:
            _need(header[1] == d.dtype, f"{where}: its file holds {header[1]}, not {d.dtype}")

    def segmented(self, g: h5py.Group, where: str) -> tuple[int, tuple[int, ...], np.dtype]:
        """A row-appended array: ``(rows, row shape, dtype)``, each segment's header checked."""
        shape = tuple(_json(g.attrs.get("shape", b""), f"{where} attribute 'shape'", list))
        _need(all(_is_int(x) and 0 <= x < 2**40 for x in shape),
              f"{where} row shape {list(shape)} is not a list of sizes")
        try:
            dtype = np.dtype(_text(g.attrs.get("dtype")) or "")
        except (TypeError, ValueError):
            raise _Bad(f"{where} attribute 'dtype' is not a dtype") from None
        _need(dtype.kind in NUMERIC and dtype.fields is None and not dtype.shape,
              f"{where} rows are {dtype}, not numbers")
        _need(set(g) == {"files", "rows"}, f"{where} holds {sorted(g)}, not files and rows")
        for key in g:
            self.dataset(_hard(g, key, f"{where}/{key}"), f"{where}/{key}")
        files = _vector(g, "files", f"{where}/files", "S")
        rows = _vector(g, "rows", f"{where}/rows", "iu")
        _need(len(files) == len(rows), f"{where} has {len(files)} files for {len(rows)} "
              "row counts")
        _need(bool((rows >= 0).all()), f"{where}/rows has a negative count")
        for name, n in zip(files, rows, strict=True):
            header = self.npy(name, where)
            if header is None:
                continue
            want = (int(n), *shape)
            _need(header[0] == want, f"{where}: a file holds shape {header[0]}, not {want}")
            _need(header[1] == dtype, f"{where}: a file holds {header[1]}, not {dtype}")
        return int(rows.sum()), shape, dtype

    def npy(self, name: Any, where: str) -> tuple[tuple[int, ...], np.dtype] | None:
        """Shape and dtype of a named ``.npy`` in the folder (None: absent); header only."""
        name = _text(name)
        _need(name is not None and _plain(name), f"{where} names {name!r}, not a file of "
              "its folder")
        p = self.folder / name
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _Bad(f"{where}: {p.parent.name}/{name} cannot be opened ({e.strerror})"
                       ) from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)
            _need(stat.S_ISREG(st.st_mode), f"{where}: {name} is not a plain file")
            try:
                shape, dtype = _npy_header(fh)
            except ValueError as e:
                raise _Bad(f"{where}: {name} is not a .npy file ({e})") from None
            _need(dtype.kind in NUMERIC and dtype.fields is None,
                  f"{where}: {name} holds {dtype}, not numbers")
            _need(fh.tell() + _size(shape) * dtype.itemsize <= st.st_size,
                  f"{where}: {name} is truncated")
        return shape, dtype

    # by place

    def root(self, f: h5py.File) -> None:
        a = f.attrs
        for key in _TEXT_ATTRS:
            _need(key not in a or _text(a[key]) is not None, f"attribute {key!r} is not text")
        if "recipe" in a:
            _json(a["recipe"], "attribute 'recipe'")
        elif "model" in a:
            spec = _json(a["model"], "attribute 'model'")
            _need(isinstance(spec.get("factory"), str) and spec["factory"] != "",
                  "attribute 'model' names no factory")
            _need(isinstance(spec.get("kwargs", {}), dict),
                  "attribute 'model' has kwargs that are not a JSON object")
        else:
            raise _Bad("it has neither a recipe nor a model")
        _int_attr(a, "total_steps", "/", lo=0, required="recipe" in a)
        _int_attr(a, "steps_per_epoch", "/", lo=1)
        _need("throughput" not in a or _is_real(a["throughput"]),
              "attribute 'throughput' is not a number")
        if "optimizer" in a:
            opt = _json(a["optimizer"], "attribute 'optimizer'", (dict, type(None)))
            _need(opt is None or all(_is_real(opt.get(k)) for k in ("beta1", "beta2")),
                  "attribute 'optimizer' has no numeric beta1 and beta2")
        if "optimizers" in a:
            _optimizers(_json(a["optimizers"], "attribute 'optimizers'", list))

    def task(self, g: h5py.Group, custom: bool) -> None:
        a = g.attrs
        for key in ("vocab_size", "max_len"):
            _int_attr(a, key, "/task", lo=1, required=not custom)
        _need("name" not in a or _text(a["name"]) is not None, "/task name is not text")
        if "splits" in a:
            splits = _json(a["splits"], "/task attribute 'splits'", list)
            _need(all(isinstance(s, str) for s in splits), "/task splits are not names")
        if "ceilings" in a:
            ceil = _json(a["ceilings"], "/task attribute 'ceilings'")
            _need(all(isinstance(c, dict) and all(_is_real(c.get(k)) for k in c)
                      for c in ceil.values()), "/task ceilings are not numbers by split")
        if "info" in a:
            _json(a["info"], "/task attribute 'info'", (dict, list))

    def trajectory(self, g: h5py.Group) -> int:
        """Check the checkpoints; returns ``P``, the layout's width."""
        _need("layout" in g.attrs, "/trajectory has no layout")
        width = sum(_size(s) for _, s in _layout(g.attrs["layout"], "/trajectory layout"))
        steps = _vector(g, "step", "/trajectory/step", "iu")
        n = 0 if steps is None else len(steps)
        _need(steps is None or bool((np.diff(steps) > 0).all()),
              "/trajectory/step is not strictly increasing")
        loops = _vector(g, "loops", "/trajectory/loops", "iu")
        _need(loops is None or len(loops) == n, "/trajectory/loops has not one row per step")
        _need(loops is None or bool((loops >= 1).all()), "/trajectory/loops is below 1")
        adam = _vector(g, "adam_step", "/trajectory/adam_step", "iu")
        n_adam = 0 if adam is None else len(adam)  # a Recorder's checkpoints without one: none
        _need(n_adam <= n, f"/trajectory/adam_step has {n_adam} rows for {n} steps")
        _need(adam is None or bool((adam >= 0).all()), "/trajectory/adam_step is below 0")
        for key, rows in (("params", n), ("adam_v", n_adam)):
            if key in g:
                dtype = self.rows(g[key], f"/trajectory/{key}", rows, (width,))
                _need(dtype.kind == "f", f"/trajectory/{key} rows are {dtype}, not floats")
        if "buffers" in g:
            self.buffers(_group(g, "buffers", "/trajectory/buffers"), n)
        return width

    def windows(self, g: h5py.Group | None, width: int) -> None:
        """Per-step windows (:mod:`landscape.runfile.windows`), ``width``: the layout's P."""
        for key in g if g is not None else ():
            where = f"/windows/{key}"
            w, start = _start_group(g, key, where)
            requested = _int_attr(w.attrs, "requested", where, lo=1, required=True)
            planned = _int_attr(w.attrs, "planned", where, lo=1, required=True)
            _need(planned <= requested, f"{where} plans {planned} steps of {requested}")
            _need(set(w) == {"step", "updates", "loss", "lr", "loops"},
                  f"{where} holds {sorted(w)}, not step, updates, loss, lr and loops")
            steps = _vector(w, "step", f"{where}/step", "iu")
            n = len(steps)
            _need(n <= planned, f"{where} has {n} rows, more than its {planned} steps")
            _need(bool((steps == start + np.arange(n)).all()),
                  f"{where}/step is not the consecutive steps from {start}")
            for key2, kinds in (("loss", "f"), ("lr", "f"), ("loops", "iu")):
                v = _vector(w, key2, f"{where}/{key2}", kinds)
                _need(v is not None and len(v) == n, f"{where}/{key2} has not one row per step")
            loops = w["loops"][()]
            _need(bool((loops >= 1).all()), f"{where}/loops is below 1")
            dtype = self.rows(w["updates"], f"{where}/updates", n, (width,))
            _need(dtype == np.float32, f"{where}/updates rows are {dtype}, not float32")

    def interventions(self, g: h5py.Group | None, width: int) -> None:
        """Intervention starts (:mod:`landscape.runfile.interventions`), ``width``: P."""
        for key in g if g is not None else ():
            where = f"/interventions/{key}"
            w, _ = _start_group(g, key, where)
            _int_attr(w.attrs, "adam_step", where, lo=0, required=True)
            _need(set(w) == {"state", "params", "exp_avg", "exp_avg_sq"},
                  f"{where} holds {sorted(w)}, not state, params, exp_avg and exp_avg_sq")
            for name in ("state", "params", "exp_avg", "exp_avg_sq"):
                d = w[name]
                _need(isinstance(d, h5py.Dataset), f"{where}/{name} is not a dataset")
                shape, dtype = d.shape, d.dtype
                if "sidecar" in d.attrs:
                    header = self.npy(d.attrs["sidecar"], f"{where}/{name}")
                    _need(header is not None, f"{where}/{name}: its file is missing")
                    shape, dtype = header
                if name == "state":
                    _need(dtype == np.uint8 and len(shape) == 1, f"{where}/state is not bytes")
                else:
                    _need(tuple(shape) == (width,) and dtype == np.float32,
                          f"{where}/{name} is not [{width}] float32")

    def rows(self, item: Any, where: str, n: int, shape: tuple[int, ...]) -> np.dtype:
        """Check ``n`` rows of ``shape`` (segmented, or a format-1 dataset); their dtype."""
        if isinstance(item, h5py.Group) and item.name in self.seen:
            have, row, dtype = self.seen[item.name]
        else:
            _need(isinstance(item, h5py.Dataset) and item.ndim >= 1, f"{where} is not rows")
            have, row, dtype = item.shape[0], item.shape[1:], item.dtype
        _need(have == n, f"{where} has {have} rows, not {n}")
        _need(row == shape, f"{where} rows have shape {row}, not {shape} (the layout's)")
        return dtype

    def buffers(self, g: h5py.Group, n: int) -> None:
        first = _int_attr(g.attrs, "first", "/trajectory/buffers", lo=0, required=True)
        _need(first <= n, f"/trajectory/buffers starts at row {first} of {n}")
        _need("layout" in g.attrs, "/trajectory/buffers has no layout")
        layout = _layout(g.attrs["layout"], "/trajectory/buffers layout")
        dtypes = _json(g.attrs["layout"], "/trajectory/buffers layout").get("dtypes")
        _need(isinstance(dtypes, list) and len(dtypes) == len(layout)
              and all(d in BUFFER_ROWS for d in dtypes if isinstance(d, str))
              and all(isinstance(d, str) for d in dtypes),
              "/trajectory/buffers layout has no storable dtype per buffer")
        widths: dict[str, int] = {}
        for (_, shape), d in zip(layout, dtypes, strict=True):
            widths[BUFFER_ROWS[d]] = widths.get(BUFFER_ROWS[d], 0) + _size(shape)
        _need(set(g) <= set(widths), f"/trajectory/buffers holds rows {sorted(g)} "
              f"its layout does not name")
        for row, width in widths.items():
            if n - first or row in g:
                _need(row in g, f"/trajectory/buffers has no {row} rows")
                dtype = self.rows(g[row], f"/trajectory/buffers/{row}", n - first, (width,))
                _need(dtype == np.dtype(row), f"/trajectory/buffers/{row} rows are {dtype}")

    def metrics(self, g: h5py.Group) -> None:
        for key in g:
            _vector(g, key, f"/metrics/{key}", NUMERIC)

    def events(self, f: h5py.File) -> None:
        if "events" not in f:
            return
        d = f["events"]
        _need(isinstance(d, h5py.Dataset) and d.ndim == 1
              and h5py.check_string_dtype(d.dtype) is not None, "/events is not a list of text")
        for i, s in enumerate(d[()]):
            e = _json(s, f"/events[{i}]")
            _need(_text(e.get("kind", "")) is not None, f"/events[{i}] kind is not text")
            if e.get("kind") == "shift":
                _need(all(_is_int(e.get(k)) for k in ("step", "loops_before", "loops_after"))
                      and _is_real(e.get("epoch")) and isinstance(e.get("reason"), str),
                      f"/events[{i}] is a shift without its step, epoch, reason and loops")
            if e.get("kind") == "stop":  # the trainer's stop at mastery (train.stop_acc)
                _need(_is_int(e.get("step")) and e["step"] >= 0 and _is_real(e.get("acc"))
                      and _is_real(e.get("stop_acc")) and _text(e.get("split", "")) is not None,
                      f"/events[{i}] is a stop without its step, split, acc and stop_acc")

    def resume(self, g: h5py.Group | None) -> None:
        if g is None:
            return
        _int_attr(g.attrs, "step", "/resume", required=True)
        _need("state" in g and isinstance(g["state"], h5py.Dataset),
              "/resume has no state")
        d = g["state"]
        _need(d.dtype == np.uint8 and d.ndim == 1, "/resume/state is not bytes")

    def probe(self, g: h5py.Group | None) -> None:
        if g is None:
            return
        for key in g:
            _need(key == "run" or _STEP_GROUP.fullmatch(key) is not None,
                  f"/probe/{key} is neither run nor step_<N>")
            _need(isinstance(g[key], h5py.Group), f"/probe/{key} is not a group")


def _hard(g: h5py.Group, key: str, where: str) -> Any:
    """``g[key]`` if it is a hard link (a soft or external link may lead out of the file)."""
    _need(isinstance(g.get(key, getlink=True), h5py.HardLink), f"{where} is a link to elsewhere")
    return g[key]


def _plain(name: str) -> bool:
    """A file name of the folder itself: no separator, no ``..``, a ``.npy`` file."""
    return (name == os.path.basename(name) and name not in (".", "..") and "\0" not in name
            and "\\" not in name and name.endswith(".npy"))


def _npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header (raises ValueError for anything else)."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"format version {version}")
    if not all(isinstance(x, int) and x >= 0 for x in shape):
        raise ValueError(f"shape {shape}")
    return tuple(shape), dtype
