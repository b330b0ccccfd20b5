"""The run file: the only module that touches h5py.

One HDF5 file per training run holds its recipe, trajectory, metrics, events, resume
state, the fixed probe set, and every probe computed on it later. Layout::

    /                       attrs: format, format_version, recipe (JSON), versions (JSON),
                                   status ("training" | "complete"), created
    /task                   attrs: info (JSON), ceilings (JSON), vocab_size, max_len, name
    /task/<array>           per-sample arrays (e.g. test_ic)
    /trajectory/step        [n] int64      optimiser step of each checkpoint
    /trajectory/loops       [n] int64      loops live at that checkpoint (1 Single, 3 Looped)
    /trajectory/params      [n, P] float32 flat parameters; attr layout (JSON names/shapes/offsets)
    /trajectory/adam_v      [n, P] float32 AdamW exp_avg_sq at each checkpoint (same layout)
    /trajectory/adam_step   [n] int64      AdamW's step count behind adam_v (0: no state yet)
    /metrics/<name>         [m] float64    one row per evaluation (step, epoch, wall, lr, ...)
    /events                 [e] JSON str   e.g. the SHIFT switch and the criterion that fired it
    /resume/state           [b] uint8      torch.save of optimiser + RNG + loop state; attr step
    /probe_set/ids|inputs|targets          the fixed sequences every probe evaluates
    /probe/step_<N>/<kind>/<part>          probe results by checkpoint (kind: hessian, geometry)
    /probe/run/<part>                      run-level probe results (river progress, PCA, loops)

Crash safety is by **copy-on-write**: the file on disk is never opened for writing.
Every change (a training commit, a probe result) copies the file to ``RUN.h5.tmp``,
applies the change there, flushes and fsyncs it, then ``os.replace``-s it over the
original. POSIX rename is atomic, so a process killed at any instant leaves either the
old or the new file, both complete; a reader holding the old file keeps a consistent
view. The price is one file copy per commit (measured: ~7 ms for a 5 MB run file, see
BENCHMARKS.md); dataset lengths therefore always equal what was committed.

A writer (training or a probe) holds an exclusive ``fcntl`` lock on ``RUN.h5.lock`` for
its lifetime; the kernel drops it when the process dies, so a killed run never blocks
its own resume, and two writers can never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape.errors import LandscapeError

FORMAT = "landscape-run"
FORMAT_VERSION = 1
_STR = h5py.string_dtype()


# --- opening and checking ---------------------------------------------------------------


def check_run_file(path: str | Path) -> Path:
    """Return ``path`` if it is a readable landscape run file, else raise LandscapeError."""
    path = Path(path)
    if not path.exists():
        raise LandscapeError(f"{path} does not exist")
    if path.is_dir():
        raise LandscapeError(f"{path} is a directory, not a run file")
    if not h5py.is_hdf5(path):
        raise LandscapeError(f"{path} is not an HDF5 file (truncated, or not a run file)")
    with _open_read(path) as f:
        if f.attrs.get("format") != FORMAT:
            raise LandscapeError(f"{path} is an HDF5 file but not a landscape run file")
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise LandscapeError(
                f"{path} has run-file format {version}; this landscape reads {FORMAT_VERSION}"
            )
        for group in ("task", "trajectory", "metrics", "probe_set"):
            if group not in f:
                raise LandscapeError(f"{path} is incomplete: it has no /{group} group")
    return path


@contextlib.contextmanager
def _open_read(path: Path) -> Iterator[h5py.File]:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise LandscapeError(f"cannot read {path}: truncated or corrupted HDF5 ({e})") from None
    with f:
        yield f


# --- the writer lock --------------------------------------------------------------------


def lock_path(path: str | Path) -> Path:
    """The lock file that marks ``path`` as being written."""
    return Path(f"{path}.lock")


@contextlib.contextmanager
def writer_lock(path: str | Path, purpose: str) -> Iterator[None]:
    """Hold the exclusive writer lock of a run file, or raise if another process holds it."""
    lp = lock_path(path)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise LandscapeError(
                f"{path} is being written by {holder}; wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{purpose} (pid {os.getpid()})".encode(), 0)
        _remove_stale_tmp(path)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            with contextlib.suppress(FileNotFoundError):
                lp.unlink()
    finally:
        os.close(fd)


def writer_holding(path: str | Path) -> str | None:
    """Who holds the writer lock of ``path`` (e.g. ``"training (pid 12)"``), or None."""
    lp = lock_path(path)
    if not lp.exists():
        return None
    fd = os.open(lp, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _tmp_path(path: Path) -> Path:
    return Path(f"{path}.tmp")


def _remove_stale_tmp(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        _tmp_path(Path(path)).unlink()


# --- transactions -----------------------------------------------------------------------


class Transaction:
    """The write operations allowed inside :func:`commit` (h5py stays in this module)."""

    def __init__(self, f: h5py.File):
        self._f = f

    def set_attrs(self, attrs: Mapping[str, Any], group: str = "/") -> None:
        """Set attributes of a group (dicts/lists are stored as JSON)."""
        g = self._f.require_group(group)
        for k, v in attrs.items():
            g.attrs[k] = _attr_value(v)

    def append(self, name: str, rows: np.ndarray) -> None:
        """Append ``rows`` along axis 0 of dataset ``name``, creating it (resizable) if new."""
        rows = np.asarray(rows)
        if name not in self._f:
            chunk = (max(1, min(len(rows), 1024)),) + rows.shape[1:]
            if rows.ndim == 2:
                chunk = (1,) + rows.shape[1:]  # one checkpoint per chunk: cheap appends
            kwargs = {"compression": "gzip", "compression_opts": 1} if rows.ndim == 2 else {}
            self._f.create_dataset(name, data=rows, maxshape=(None,) + rows.shape[1:],
                                   chunks=chunk, **kwargs)
            return
        d = self._f[name]
        n = d.shape[0]
        d.resize(n + len(rows), axis=0)
        d[n:] = rows

    def append_json(self, name: str, items: list) -> None:
        """Append JSON-encoded items to a string dataset."""
        if not items:
            return
        rows = np.array([json.dumps(x, sort_keys=True) for x in items], dtype=object)
        if name not in self._f:
            self._f.create_dataset(name, data=rows, maxshape=(None,), chunks=True, dtype=_STR)
        else:
            self.append(name, rows)

    def put(self, group: str, arrays: Mapping[str, Any] = (), attrs: Mapping = ()) -> None:
        """Write ``arrays`` (nested dicts become subgroups) and ``attrs`` under ``group``.

        Existing datasets of the same name are replaced.
        """
        g = self._f.require_group(group)
        for k, v in dict(attrs).items():
            g.attrs[k] = _attr_value(v)
        for k, v in dict(arrays).items():
            if isinstance(v, Mapping):
                self.put(f"{group}/{k}", v)
                continue
            if k in g:
                del g[k]
            arr = np.asarray(v)
            if arr.dtype.kind in "OU":  # strings: variable-length UTF-8
                arr = arr.astype(object)
                g.create_dataset(k, data=arr, dtype=_STR)
            else:
                g.create_dataset(k, data=arr)

    def delete(self, group: str) -> None:
        """Remove a group or dataset if present."""
        if group in self._f:
            del self._f[group]


def _attr_value(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True)
    if v is None:
        return "null"
    return v


def commit(path: str | Path, change: Callable[[Transaction], None], *, create: bool = False,
           durable: bool = True) -> None:
    """Apply ``change`` to the run file atomically (copy-on-write, then rename).

    Args:
        path: the run file.
        change: receives a :class:`Transaction` on the copy.
        create: start from an empty file instead of a copy of ``path``.
        durable: fsync the new file before the rename (survives power loss, not only kills).

    The caller must hold :func:`writer_lock`. If ``change`` raises, the run file is untouched.
    """
    path = Path(path)
    tmp = _tmp_path(path)
    if create:
        tmp.unlink(missing_ok=True)
    else:
        shutil.copyfile(path, tmp)
    try:
        with h5py.File(tmp, "a") as f:
            change(Transaction(f))
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_run(path: str | Path, *, attrs: Mapping[str, Any], task_attrs: Mapping[str, Any],
               task_arrays: Mapping[str, np.ndarray], layout: Mapping,
               probe_set: Mapping[str, np.ndarray],
               then: Callable[[Transaction], None] | None = None) -> None:
    """Write a new run file atomically: the skeleton, then ``then``'s first records.

    The caller holds the writer lock. Nothing is visible until everything is written.
    """
    path = Path(path)
    if path.exists():
        raise LandscapeError(f"{path} already exists; use --resume to continue it")

    def change(tx: Transaction) -> None:
        tx.set_attrs({"format": FORMAT, "format_version": FORMAT_VERSION,
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": "training",
                      **attrs})
        tx.put("task", task_arrays, task_attrs)
        tx.put("trajectory", attrs={"layout": dict(layout)})
        tx.put("metrics")
        tx.put("probe_set", probe_set)
        if then is not None:
            then(tx)

    commit(path, change, create=True)


# --- reading ----------------------------------------------------------------------------


def _decode(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str) and v[:1] in "{[" or v == "null":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_summary(path: str | Path) -> dict:
    """Everything small about a run: attrs, task, steps, loops, metrics, events, probes."""
    path = check_run_file(path)
    with _open_read(path) as f:
        traj = f["trajectory"]
        out = {
            "attrs": {k: _decode(v) for k, v in f.attrs.items()},
            "task_attrs": {k: _decode(v) for k, v in f["task"].attrs.items()},
            "task_arrays": {k: d[()] for k, d in f["task"].items()},
            "layout": _decode(traj.attrs["layout"]),
            "steps": traj["step"][()] if "step" in traj else np.zeros(0, np.int64),
            "loops": traj["loops"][()] if "loops" in traj else np.zeros(0, np.int64),
            "adam_step": traj["adam_step"][()] if "adam_step" in traj else None,
            "metrics": {k: d[()] for k, d in f["metrics"].items()},
            "events": [json.loads(_decode_str(s)) for s in f["events"][()]]
            if "events" in f else [],
            "probes": _probe_index(f),
            "resume_step": int(f["resume"].attrs["step"]) if "resume" in f else None,
        }
    return out


def _decode_str(s: Any) -> str:
    return s.decode() if isinstance(s, bytes) else str(s)


def _probe_index(f: h5py.File) -> dict[int, list[str]]:
    if "probe" not in f:
        return {}
    return {int(k.removeprefix("step_")): sorted(g) for k, g in f["probe"].items()
            if k.startswith("step_")}


def read_params(path: str | Path, index: int | slice | np.ndarray,
                name: str = "params") -> np.ndarray:
    """Rows of ``/trajectory/<name>`` (``params`` or ``adam_v``), a copy."""
    with _open_read(Path(path)) as f:
        if name not in f["trajectory"]:
            raise LandscapeError(f"{path} has no trajectory/{name} rows")
        d = f[f"trajectory/{name}"]
        if isinstance(index, np.ndarray):
            order = np.argsort(index)
            rows = d[np.sort(index)]
            out = np.empty_like(rows)
            out[order] = rows
            return out
        return d[index]


def read_probe_set(path: str | Path) -> dict[str, np.ndarray]:
    """The fixed probe sequences: ``ids``, ``inputs``, ``targets``."""
    with _open_read(Path(path)) as f:
        g = f["probe_set"]
        if "inputs" not in g:
            raise LandscapeError(f"{path} has no probe set; it was not written by landscape train")
        return {k: d[()] for k, d in g.items()}


def read_resume(path: str | Path) -> tuple[int, bytes] | None:
    """The latest resume state ``(step, bytes)``, or None if there is none."""
    with _open_read(Path(path)) as f:
        if "resume" not in f:
            return None
        return int(f["resume"].attrs["step"]), f["resume/state"][()].tobytes()


def read_group(path: str | Path, group: str) -> dict | None:
    """A group as nested dicts (datasets as arrays, attrs under ``"attrs"``); None if absent."""
    with _open_read(Path(path)) as f:
        if group not in f:
            return None
        return _read(f[group])


def _read(g: h5py.Group) -> dict:
    out: dict = {"attrs": {k: _decode(v) for k, v in g.attrs.items()}}
    for k, item in g.items():
        if isinstance(item, h5py.Group):
            out[k] = _read(item)
        elif h5py.check_string_dtype(item.dtype) is not None:
            out[k] = item.asstr()[()]
        else:
            out[k] = item[()]
    return out


def probe_group(step: int, kind: str) -> str:
    """Where probe results of ``kind`` at ``step`` live."""
    return f"probe/step_{int(step)}/{kind}"
