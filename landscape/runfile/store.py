"""The run file: the only module that touches h5py (with its schema, validate).

A run is ``RUN.h5`` (the *index*, a small HDF5 file) and, beside it, the folder
``RUN.h5.d/`` holding its large arrays as ``.npy`` files. Users pass ``RUN.h5`` around;
every command finds the folder from it (copy, move or delete both together). The index
holds the recipe, trajectory steps, metrics, events, the probe index and every small
array; each large one (flat parameters, AdamW's second moment, the resume state,
eigenvectors, slice directions, a large probe set) is one file in the folder, referenced
from the index by name. Layout of the index::

    /                       attrs: format, format_version, recipe (JSON), versions (JSON),
                                   status ("training" | "complete"), created
    /task                   attrs: info (JSON), ceilings (JSON), vocab_size, max_len, name
    /task/<array>           per-sample arrays (e.g. test_ic)
    /trajectory/step        [n] int64      optimiser step of each checkpoint
    /trajectory/loops       [n] int64      loops live at that checkpoint (1 Single, 3 Looped)
    /trajectory/params      [n, P] float32 flat parameters, as segments (below); attr layout
    /trajectory/adam_v      [n, P] float32 AdamW exp_avg_sq at each checkpoint (segments)
    /trajectory/adam_step   [n] int64      AdamW's step count behind adam_v (0: no state yet)
    /trajectory/buffers     (a model of your own) attrs: layout (JSON: the buffers stored,
                            see landscape.runs.own_models.BufferLayout), first (the checkpoint row
                            of the first buffer row: 0, or the rows recorded before buffers
                            were stored); absent in files written before that
    /trajectory/buffers/<dtype>  [n - first, B] the module's buffers at each checkpoint,
                            flattened into one row per storage dtype (float32, int64, ...;
                            segments, appended by the same commit as the parameters)
    /windows/start_<S>/...  per-step dynamics windows: every step's update [n, P] f32 (segments),
                            loss, lr, loops and step [n] (see landscape.runfile.windows)
    /metrics/<name>         [m] float64    one row per evaluation (step, epoch, wall, lr, ...)
    /events                 [e] JSON str   e.g. the SHIFT switch and the criterion that fired it
    /resume/state           [b] uint8      torch.save of optimiser + RNG + loop state; attr step
    /probe_set/<array>                     the fixed inputs every probe evaluates
    /probe/step_<N>/<kind>/<part>          probe results by checkpoint (kind: hessian, geometry)
    /probe/run/<part>                      run-level probe results (river progress, PCA, loops)

A row-appended array of rank >= 2 (``/trajectory/params``) is a group (attr
``segmented``, ``shape`` and ``dtype`` of a row) holding two appendable datasets,
``files`` (file names) and ``rows`` (rows in each): every commit that appends rows adds
one segment file and one entry to each. Any other array of at least
:data:`SIDECAR_MIN_BYTES` is an empty dataset with attr ``sidecar`` naming its file.
Smaller arrays live in the index itself. Reading goes through this module
(:func:`read_params`, :func:`read_group`, ...), which resolves both.

A run file is data, also one from someone else: every file name the index holds must be
a plain name of the store's own pattern, ``<what>-<12 hex digits>.npy``, of a file (not a
link) in ``RUN.h5.d`` (:func:`member_path`), else the run is refused as damaged; so no
name reads, writes or deletes a file outside the folder. Writers delete only files of
that pattern (and their ``.tmp``), never follow a linked folder or lock file, and refuse
to start a new run in a folder that holds files of others.

Crash safety: a commit writes its new arrays to fresh, uniquely named files in the
folder (each written under a ``.tmp`` name, fsynced and renamed), fsyncs the folder,
then replaces the index by **copy-on-write**: it reads ``RUN.h5`` into memory, applies
the change there, writes the result to ``RUN.h5.tmp``, fsyncs it and ``os.replace``-s it
over the original (atomic on POSIX). Until that rename the new files are referenced by
nothing; after it they are. So a process killed at any instant leaves the old or the new
run, both complete, and a commit costs what it adds plus one copy of the small index, not
a copy of the whole run. Every new file is checked against the free space and the
file-size limit (``ulimit -f``) first, and removed if its write fails: a full disk is a
one-line error that leaves the run as it was, and the HDF5 library never writes to the
disk itself (a failed write of its own can crash the interpreter).
Files left behind by a killed commit, or superseded (the previous resume state, a
replaced probe part), are deleted: superseded ones right after the commit, orphans when
the next writer takes the lock. A reader that finds a file gone (superseded between its
opening the index and reading the file) reads the index again.

Older run files (format 1, everything inside the one HDF5 file) are still read, and
written to in their own layout (each commit then copies the whole file; one over
256 MiB is changed on the disk, after a generous estimate of the room it needs).

A writer (training or a probe) holds an exclusive ``fcntl`` lock on ``RUN.h5.lock`` for
its lifetime; the kernel drops it when the process dies, so a killed run never blocks
its own resume, and two writers can never interleave.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import io
import json
import os
import re
import resource
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import h5py
import numpy as np

from landscape.errors import LandscapeError
from landscape.runfile import validate

FORMAT = "landscape-run"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: everything inside the HDF5 file (before the sidecar folder)
SIDECAR_MIN_BYTES = 64 * 1024
"""Arrays at least this large go to a file of their own in ``RUN.h5.d/``."""
_STR = h5py.string_dtype()
_NAME = np.dtype("S160")  # a segment's file name
_OWN_NAME = re.compile(r"[^/\\\x00]{1,200}-[0-9a-f]{12}\.npy")
"""A file the store writes in ``RUN.h5.d``: ``<what>-<12 hex digits>.npy``, no path."""
_IN_MEMORY_MAX = 256 * 2**20
"""A commit edits an index up to this size in memory (format 2's always are far smaller)."""


def sidecar_dir(path: str | Path) -> Path:
    """The folder beside a run file that holds its large arrays (``RUN.h5.d``)."""
    return Path(f"{path}.d")


def run_paths(path: str | Path) -> list[Path]:
    """Every path that belongs to a run: the index and its folder (to copy or delete)."""
    return [Path(path), sidecar_dir(path)]


def copy_run(src: str | Path, dst: str | Path) -> Path:
    """Copy a run (its index and the files it names) to ``dst``; returns ``dst``.

    Consistent while a writer commits to ``src``: the copy holds one committed state.
    ``dst`` and its folder are replaced if they exist; a folder that holds files which are
    not a run's is refused, not emptied.
    """
    src, dst = check_run_file(src), Path(dst)
    if dst.exists() and dst.samefile(src):
        raise LandscapeError(f"cannot copy {src} onto itself")
    for _ in range(3):
        tmp = _tmp_path(dst)
        tmp.unlink(missing_ok=True)  # never write through a link planted there
        try:
            _copy_snapshot(src, dst, tmp)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            continue  # superseded while copying: copy the newer state
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, dst)
        return dst
    raise LandscapeError(f"{src} changed too often while it was being copied; try again")


def _copy_snapshot(src: Path, dst: Path, tmp: Path) -> None:
    """Copy ``src``'s index to ``tmp`` and the files it names into ``dst``'s folder."""
    try:
        shutil.copyfile(src, tmp)
        with h5py.File(tmp, "r") as f:
            names = _referenced(f, src)
        _empty_own_folder(dst)
        for name in names:
            sidecar_dir(dst).mkdir(exist_ok=True)
            shutil.copyfile(member_path(src, name), member_path(dst, name))
    except OSError as e:
        if not _out_of_room(e):
            raise
        raise LandscapeError(f"no space left on device copying {src} to {dst} "
                             f"({shutil.disk_usage(dst.parent).free:,} bytes free)") from None


# --- names are names: the files of a run's folder ---------------------------------------


def is_store_name(name: Any) -> bool:
    """Whether ``name`` is a plain file name of the store's own pattern (not a path)."""
    return isinstance(name, str) and _OWN_NAME.fullmatch(name) is not None


def _is_own_file(name: str) -> bool:
    """A file of the store's: one it writes, or the ``.tmp`` of one a kill left behind."""
    return is_store_name(name.removesuffix(".tmp"))


def checked_folder(path: str | Path) -> Path:
    """The run's folder (``RUN.h5.d``), refused if it is a link or not a folder."""
    folder = sidecar_dir(path)
    if folder.is_symlink():
        raise LandscapeError(f"{folder} is a symbolic link; a run's folder must be a folder "
                             "of its own (move the files into it)")
    if folder.exists() and not folder.is_dir():
        raise LandscapeError(f"{folder} is not a folder; a run keeps its arrays there")
    return folder


def _check_name(path: Path, name: str) -> str:
    """``name`` if it is a plain name of the store's pattern, else a damaged-file error."""
    if not is_store_name(name):
        raise LandscapeError(
            f"{path} is damaged: it names {name!r} as a data file, which is not a plain "
            f"file name in {sidecar_dir(path).name} (a hand-edited or hostile run file)")
    return name


def member_path(path: str | Path, name: str, *, link_ok: bool = False) -> Path:
    """The file ``name`` of run ``path``'s folder, a name read from the index.

    Args:
        path: the run file.
        name: a file name the index holds.
        link_ok: accept a symbolic link (to delete the link itself, never its target).

    Raises:
        LandscapeError: ``name`` is not a plain name of the store's pattern, the folder is
            a link, or the file is not a plain file (a link, unless ``link_ok``; a folder,
            a FIFO that would block its reader, ...).
    """
    path = Path(path)
    where = checked_folder(path) / _check_name(path, name)
    try:
        mode = where.lstat().st_mode
    except FileNotFoundError:
        return where
    if not (stat.S_ISREG(mode) or link_ok and stat.S_ISLNK(mode)):
        kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a plain file"
        raise LandscapeError(f"{path} is damaged: its data file {sidecar_dir(path).name}/"
                             f"{name} is {kind} (a run's files are its own)")
    return where


def _foreign_files(folder: Path) -> list[str]:
    """Entries of ``folder`` that are not the store's files (theirs: never touched)."""
    return sorted(p.name for p in folder.iterdir()
                  if not _is_own_file(p.name) or (p.is_dir() and not p.is_symlink()))


def _refuse_foreign(path: Path, why: str) -> None:
    """Raise if run ``path``'s folder holds files that are not the store's."""
    folder = checked_folder(path)
    foreign = _foreign_files(folder) if folder.is_dir() else []
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise LandscapeError(f"{folder} already holds files that are not a run's ({shown}); "
                             f"{why}: move them away or choose another name")


def _empty_own_folder(path: Path) -> None:
    """Delete the store's files of run ``path``'s folder (to replace the run)."""
    _refuse_foreign(path, f"refusing to replace {path}")
    folder = sidecar_dir(path)
    for item in folder.iterdir() if folder.is_dir() else ():
        item.unlink(missing_ok=True)  # a link goes itself, its target stays


# --- room on the disk -------------------------------------------------------------------


def _out_of_room(e: OSError) -> bool:
    """A write that failed for want of space (a short write carries no errno)."""
    return e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, None)


def _room_error(where: Path, needs: int, shown: str) -> LandscapeError | None:
    """Why a new file of ``needs`` bytes cannot be written at ``where`` (None: it can)."""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and needs > limit:
        return LandscapeError(f"the file-size limit (ulimit -f) of {limit:,} bytes is too "
                              f"small writing {shown} (needs {needs:,} bytes)")
    free = shutil.disk_usage(where.parent).free
    if needs > free:
        return LandscapeError(f"no space left on device writing {shown} "
                              f"(needs {needs:,} bytes, {free:,} free)")
    return None


def _write_new(where: Path, needs: int, write: Callable[[BinaryIO], None], shown: str,
               durable: bool) -> None:
    """Create ``where`` with ``write``, fsynced; out of room: one line and no file left.

    Args:
        where: the new file (a ``.tmp`` name, renamed by the caller).
        needs: bytes it will take, at least (checked against free space and ``ulimit -f``
            first: past that limit the process gets SIGXFSZ, or the HDF5 library crashes).
        write: writes the content to the open file.
        shown: the file as named in messages (``RUN.h5.d/<name>``).
        durable: fsync it.
    """
    if (err := _room_error(where, needs, shown)) is not None:
        raise err
    fd = os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    try:
        with open(fd, "wb") as fh:
            write(fh)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            where.unlink()
        if not isinstance(e, OSError) or not _out_of_room(e):
            raise
        raise _room_error(where, needs, shown) or LandscapeError(
            f"no space left on device writing {shown} (needs {needs:,} bytes, "
            f"{shutil.disk_usage(where.parent).free:,} free: {e})") from None


# --- opening and checking ---------------------------------------------------------------


def check_run_file(path: str | Path) -> Path:
    """Return ``path`` if it is a readable landscape run file, else raise LandscapeError.

    Every attribute and dataset the readers use is checked (:mod:`landscape.runfile.validate`):
    a file that breaks the format is ``RUN.h5 is damaged: <what>``.
    """
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
        validate.validate(f, path, READABLE_VERSIONS)
    return path


@contextlib.contextmanager
def _open_read(path: Path) -> Iterator[h5py.File]:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise LandscapeError(f"cannot read {path}: truncated or corrupted HDF5 ({e})") from None
    with f:
        yield f


class _MissingSidecar(Exception):
    """A file the index names is not in the folder (superseded meanwhile, or not copied)."""


def _retrying(read: Callable) -> Callable:
    """Run a reader; if a file it needs was superseded meanwhile, once more on the new index."""

    @functools.wraps(read)
    def wrapper(path, *args, **kwargs):
        try:
            return read(path, *args, **kwargs)
        except _MissingSidecar:
            pass
        try:
            return read(path, *args, **kwargs)
        except _MissingSidecar as e:
            raise LandscapeError(
                f"{path}: its data file {e} is missing; a run file comes with the folder "
                f"{sidecar_dir(Path(path)).name} beside it (copy or move both)") from None

    return wrapper


def _load(path: Path, name: str) -> np.ndarray:
    """A sidecar array, memory-mapped (read-only)."""
    where = member_path(path, name)
    try:
        return np.load(where, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise _MissingSidecar(f"{sidecar_dir(path).name}/{name}") from None
    except ValueError as e:
        raise LandscapeError(f"{where} is damaged: {e}") from None
    except OSError as e:
        raise LandscapeError(f"cannot read {where}: {e.strerror or e}") from None


def _value(path: Path, d: h5py.Dataset) -> np.ndarray:
    """A dataset's array, wherever it lives."""
    if "sidecar" in d.attrs:
        return np.array(_load(path, _decode_str(d.attrs["sidecar"])))
    if h5py.check_string_dtype(d.dtype) is not None:
        return d.asstr()[()]
    return d[()]


def _segments(g: h5py.Group) -> tuple[list[str], np.ndarray]:
    files = [_decode_str(s) for s in g["files"][()]]
    rows = np.asarray(g["rows"][()], dtype=np.int64)
    return files, rows


def _is_segmented(item: Any) -> bool:
    return isinstance(item, h5py.Group) and "segmented" in item.attrs


def _segment_rows(path: Path, g: h5py.Group, index: int | slice | np.ndarray) -> np.ndarray:
    """Rows of a segmented array by position (an int, a slice or an index array)."""
    files, rows = _segments(g)
    n = int(rows.sum())
    single = isinstance(index, (int, np.integer))
    wanted = np.arange(n)[index]
    wanted = np.atleast_1d(wanted)
    starts = np.concatenate([[0], np.cumsum(rows)])
    which = np.searchsorted(starts, wanted, side="right") - 1
    width = tuple(json.loads(_decode_str(g.attrs["shape"])))
    out = np.empty((len(wanted), *width), dtype=np.dtype(_decode_str(g.attrs["dtype"])))
    for seg in np.unique(which):
        here = which == seg
        arr = _load(path, files[seg])
        if arr.shape != (rows[seg], *width) or arr.dtype != out.dtype:
            raise validate.damaged(path, f"{g.name}: a file holds {arr.dtype} {arr.shape}, "
                                      f"not {out.dtype} {(int(rows[seg]), *width)}")
        out[here] = arr[wanted[here] - starts[seg]]
    return out[0] if single else out


def _referenced(f: h5py.File, path: Path) -> set[str]:
    """Every sidecar file the index of run ``path`` names (plain names, else an error)."""
    names: set[str] = set()

    def visit(_, item):
        if "sidecar" in item.attrs:
            names.add(_check_name(path, _decode_str(item.attrs["sidecar"])))
        if _is_segmented(item):
            names.update(_check_name(path, n) for n in _segments(item)[0])

    visit("/", f)
    f.visititems(visit)
    return names


# --- the writer lock --------------------------------------------------------------------


def lock_path(path: str | Path) -> Path:
    """The lock file that marks ``path`` as being written."""
    return Path(f"{path}.lock")


@contextlib.contextmanager
def writer_lock(path: str | Path, purpose: str) -> Iterator[None]:
    """Hold the exclusive writer lock of a run file, or raise if another process holds it.

    On taking it, removes what a killed writer left behind: the index copy
    ``RUN.h5.tmp`` and files in ``RUN.h5.d`` that the index does not name.
    """
    lp = lock_path(path)
    fd = _open_lock(lp)
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
        try:
            _remove_stale_tmp(path)
            _collect_garbage(Path(path))
            yield
        finally:
            os.ftruncate(fd, 0)
            with contextlib.suppress(FileNotFoundError):
                lp.unlink()
    finally:
        os.close(fd)


def _open_lock(lp: Path) -> int:
    """Open (or create) the lock file; never a link, whose target would be truncated."""
    try:
        fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise LandscapeError(f"{lp} is a symbolic link, not a lock; remove it") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        raise LandscapeError(f"{lp} is not a lock file of its own (a hard link or a special "
                             "file); remove it")
    return fd


def writer_holding(path: str | Path) -> str | None:
    """Who holds the writer lock of ``path`` (e.g. ``"training (pid 12)"``), or None."""
    lp = lock_path(path)
    try:
        fd = os.open(lp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None  # no lock, or a link (which no writer takes)
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


def _collect_garbage(path: Path) -> None:
    """Delete the store's files in ``RUN.h5.d`` that the index does not name.

    The lock is held. A new run's folder that holds files of others is refused.
    """
    folder = checked_folder(path)
    if not folder.is_dir():
        return
    keep: set[str] = set()
    if not path.exists():
        _refuse_foreign(path, f"{path} would be a new run")
    else:
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    return  # not ours: touch nothing
                keep = _referenced(f, path)
        except OSError:
            return  # unreadable index: touch nothing
    for item in folder.iterdir():
        if (item.name not in keep and _is_own_file(item.name)
                and (item.is_symlink() or not item.is_dir())):
            item.unlink(missing_ok=True)  # a link goes itself, its target stays
    with contextlib.suppress(OSError):
        folder.rmdir()  # only if empty


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- transactions -----------------------------------------------------------------------


class Transaction:
    """The write operations allowed inside :func:`commit` (h5py stays in this module).

    Large arrays are written to new files in ``RUN.h5.d`` at once; the index (a copy of
    ``RUN.h5``) names them, and the commit makes that copy the index.
    """

    def __init__(self, f: h5py.File | None, path: Path, durable: bool = True):
        self._f = f
        self._path = path
        self._dir = sidecar_dir(path)
        self._durable = durable
        self.new_files: list[Path] = []  # written by this transaction
        self.old_files: list[str] = []  # named by the old index only, once this commits

    def _write_file(self, name: str, arr: np.ndarray) -> str:
        """Write ``arr`` to a new, uniquely named, fsynced file in the folder."""
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name.strip("/").replace("/", "."))[-120:]
        fname = f"{stem or 'array'}-{secrets.token_hex(6)}.npy"
        final = member_path(self._path, fname)
        self._dir.mkdir(exist_ok=True)
        tmp = self._dir / f"{fname}.tmp"
        arr = np.ascontiguousarray(arr)
        _write_new(tmp, arr.nbytes + 4096,  # and the header, generously
                   lambda fh: np.lib.format.write_array(fh, arr, allow_pickle=False),
                   f"{self._dir.name}/{fname}", self._durable)
        os.replace(tmp, final)
        self.new_files.append(final)
        return fname

    def _forget(self, item: Any) -> None:
        """Note the files of a dataset or group about to be replaced or deleted."""
        self._forget_one(item)
        if isinstance(item, h5py.Group):
            item.visititems(lambda _, sub: self._forget_one(sub))

    def _forget_one(self, item: Any) -> None:
        if "sidecar" in item.attrs:
            self.old_files.append(_check_name(self._path, _decode_str(item.attrs["sidecar"])))
        if _is_segmented(item):
            self.old_files.extend(_check_name(self._path, n) for n in _segments(item)[0])

    def set_attrs(self, attrs: Mapping[str, Any], group: str = "/") -> None:
        """Set attributes of a group (dicts/lists are stored as JSON).

        An attribute that already has the value is left alone: rewriting one leaves its old
        space behind in the index, which would then grow with every commit.
        """
        g = self._f.require_group(group)
        for k, v in attrs.items():
            value = _attr_value(v)
            if k in g.attrs and _same(g.attrs[k], value):
                continue
            g.attrs[k] = value

    def append(self, name: str, rows: np.ndarray) -> None:
        """Append ``rows`` along axis 0 of array ``name``, creating it if new.

        Rows of rank >= 2 (a trajectory) go to one new file per call (a segment); 1-D rows
        (metrics) to a resizable dataset in the index.
        """
        rows = np.asarray(rows)
        item = self._f.get(name)
        if item is None and rows.ndim >= 2:
            item = self._f.create_group(name)
            item.attrs.update({"segmented": 1, "shape": json.dumps(list(rows.shape[1:])),
                               "dtype": rows.dtype.str})
            item.create_dataset("files", shape=(0,), maxshape=(None,), chunks=(256,),
                                dtype=_NAME)  # fixed length: no heap that grows per commit
            item.create_dataset("rows", shape=(0,), maxshape=(None,), chunks=(256,),
                                dtype=np.int64)
        if _is_segmented(item):
            width = tuple(json.loads(_decode_str(item.attrs["shape"])))
            if rows.shape[1:] != width:
                raise LandscapeError(f"{name}: rows of shape {rows.shape[1:]} do not fit "
                                     f"the stored {width}")
            rows = rows.astype(np.dtype(_decode_str(item.attrs["dtype"])), copy=False)
            fname = self._write_file(name, rows)
            for key, value in (("files", fname), ("rows", len(rows))):
                d = item[key]
                d.resize(d.shape[0] + 1, axis=0)
                d[-1] = value
            return
        if item is None:  # chunks of >= 256 rows: appending a row rewrites no metadata
            chunk = (min(max(256, len(rows)), 4096),) + rows.shape[1:]
            self._f.create_dataset(name, data=rows, maxshape=(None,) + rows.shape[1:],
                                   chunks=chunk)
            return
        n = item.shape[0]  # an index dataset (or a format-1 trajectory)
        item.resize(n + len(rows), axis=0)
        item[n:] = rows

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

        Existing datasets of the same name are replaced. Arrays of at least
        :data:`SIDECAR_MIN_BYTES` go to a file of their own.
        """
        g = self._f.require_group(group)
        for k, v in dict(attrs).items():
            g.attrs[k] = _attr_value(v)
        for k, v in dict(arrays).items():
            if isinstance(v, Mapping):
                self.put(f"{group}/{k}", v)
                continue
            if k in g:
                self._forget(g[k])
                del g[k]
            arr = np.asarray(v)
            if arr.dtype.kind in "OU":  # strings: variable-length UTF-8
                arr = arr.astype(object)
                g.create_dataset(k, data=arr, dtype=_STR)
            elif arr.nbytes >= SIDECAR_MIN_BYTES:
                fname = self._write_file(f"{group}/{k}", arr)
                g.create_dataset(k, data=np.zeros(0, arr.dtype)).attrs["sidecar"] = fname
            else:
                g.create_dataset(k, data=arr)

    def delete(self, group: str) -> None:
        """Remove a group or dataset if present (its files go once the commit is done)."""
        if group in self._f:
            self._forget(self._f[group])
            del self._f[group]


def _same(stored: Any, value: Any) -> bool:
    try:
        if isinstance(stored, bytes):
            stored = stored.decode()
        return type(stored) is type(value) and bool(np.all(stored == value))
    except (TypeError, ValueError):
        return False


def _attr_value(v: Any) -> Any:
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True)
    if v is None:
        return "null"
    return v


def commit(path: str | Path, change: Callable[[Transaction], None], *, create: bool = False,
           durable: bool = True) -> None:
    """Apply ``change`` to the run atomically (new files, then the index by copy-on-write).

    Args:
        path: the run file.
        change: receives a :class:`Transaction` on a copy of the index.
        create: start from an empty index instead of a copy of ``path``.
        durable: fsync new files, the index and the folders before and after the rename
            (survives power loss, not only kills).

    The caller must hold :func:`writer_lock`. If ``change`` raises, the run is untouched;
    so it is if the disk is full (one line, no partial file left behind).
    """
    path = Path(path)
    tmp = _tmp_path(path)
    tx = Transaction(None, path, durable)  # the index it edits is opened below
    try:
        tmp.unlink(missing_ok=True)  # never write through a link planted there
        if create or path.stat().st_size <= _IN_MEMORY_MAX:
            _change_in_memory(tx, tmp, change, create)
        else:
            _change_on_disk(tx, tmp, change)
        if durable and tx.new_files:
            _fsync_dir(sidecar_dir(path))
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for p in tx.new_files:
            p.unlink(missing_ok=True)
        raise
    for name in tx.old_files:  # plain names (checked when noted): files of the folder only
        with contextlib.suppress(LandscapeError):  # not a file (a folder planted there): kept
            member_path(path, name, link_ok=True).unlink(missing_ok=True)


def _change_in_memory(tx: Transaction, tmp: Path, change: Callable[[Transaction], None],
                      create: bool) -> None:
    """Apply ``change`` to the index in memory, then write it to ``tmp``.

    The HDF5 library never writes to the disk here (a failed write of its own can crash
    the interpreter); ``tmp`` is written in one go, its size known beforehand.
    """
    image = io.BytesIO() if create else io.BytesIO(tx._path.read_bytes())
    with h5py.File(image, "w" if create else "r+") as f:
        _apply(f, tx, change, create)
    data = image.getbuffer()
    _write_new(tmp, len(data), lambda fh: fh.write(data), tx._path.name, tx._durable)


def _change_on_disk(tx: Transaction, tmp: Path, change: Callable[[Transaction], None]) -> None:
    """Apply ``change`` to a copy ``tmp`` of a large (format 1) index, on the disk."""
    path = tx._path
    size = path.stat().st_size
    needs = size + max(2**20, size // 4)  # the copy and, generously, what a change adds
    if (err := _room_error(tmp, needs, path.name)) is not None:
        raise err
    shutil.copyfile(path, tmp)
    with h5py.File(tmp, "a") as f:
        _apply(f, tx, change, False)
    if tx._durable:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _apply(f: h5py.File, tx: Transaction, change: Callable[[Transaction], None],
           create: bool) -> None:
    """Run ``change`` on the open index ``f``."""
    tx._f = f
    if create:
        tx.set_attrs({"format": FORMAT, "format_version": FORMAT_VERSION})
    change(tx)


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


@_retrying
def read_summary(path: str | Path) -> dict:
    """Everything small about a run: attrs, task, steps, loops, metrics, events, probes."""
    path = check_run_file(path)
    with _open_read(path) as f:
        traj = f["trajectory"]
        out = {
            "attrs": {k: _decode(v) for k, v in f.attrs.items()},
            "task_attrs": {k: _decode(v) for k, v in f["task"].attrs.items()},
            "task_arrays": {k: _value(path, d) for k, d in f["task"].items()},
            "layout": _decode(traj.attrs["layout"]),
            "steps": traj["step"][()] if "step" in traj else np.zeros(0, np.int64),
            "loops": traj["loops"][()] if "loops" in traj else np.zeros(0, np.int64),
            "adam_step": traj["adam_step"][()] if "adam_step" in traj else None,
            "buffers": {k: _decode(v) for k, v in traj["buffers"].attrs.items()}
            if "buffers" in traj else None,
            "metrics": {k: d[()] for k, d in f["metrics"].items()},
            "events": [json.loads(_decode_str(s)) for s in f["events"][()]]
            if "events" in f else [],
            "probes": _probe_index(f),
            "resume_step": int(f["resume"].attrs["step"]) if "resume" in f else None,
            "trajectory": sorted(traj),
        }
    return out


def _decode_str(s: Any) -> str:
    return s.decode() if isinstance(s, bytes) else str(s)


def _probe_index(f: h5py.File) -> dict[int, list[str]]:
    if "probe" not in f:
        return {}
    return {int(k.removeprefix("step_")): sorted(g) for k, g in f["probe"].items()
            if k.startswith("step_")}


@_retrying
def read_params(path: str | Path, index: int | slice | np.ndarray,
                name: str = "params") -> np.ndarray:
    """Rows of ``/trajectory/<name>`` (``params``, ``adam_v``, ``buffers/<dtype>``), a copy."""
    path = Path(path)
    with _open_read(path) as f:
        if name not in f["trajectory"]:
            raise LandscapeError(f"{path} has no trajectory/{name} rows")
        d = f[f"trajectory/{name}"]
        if _is_segmented(d):
            return _segment_rows(path, d, index)
        if isinstance(index, np.ndarray):
            order = np.argsort(index)
            rows = d[np.sort(index)]
            out = np.empty_like(rows)
            out[order] = rows
            return out
        return d[index]


@_retrying
def read_buffer_rows(path: str | Path, index: int) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The buffers stored with checkpoint row ``index``: ``(layout, {dtype: [B] row})``.

    None where that checkpoint carries none (a run recorded before buffers were stored, or
    one of ``landscape train``'s runs). ``layout`` is the JSON description of
    :class:`landscape.runs.own_models.BufferLayout`, which turns the rows into named tensors.
    """
    path = Path(path)
    with _open_read(path) as f:
        traj = f["trajectory"]
        if "buffers" not in traj or "step" not in traj:
            return None
        g = traj["buffers"]
        n = traj["step"].shape[0]
        i = int(index) + n if int(index) < 0 else int(index)
        first = int(g.attrs["first"])
        if not first <= i < n:
            return None
        rows = {name: _segment_rows(path, item, i - first) for name, item in g.items()
                if _is_segmented(item)}
        return _decode(g.attrs["layout"]), rows


@_retrying
def read_probe_set(path: str | Path) -> dict[str, np.ndarray]:
    """The fixed probe set's arrays (``inputs``, ``targets``, ...)."""
    path = Path(path)
    with _open_read(path) as f:
        g = f["probe_set"]
        if not len(g):
            raise LandscapeError(f"{path} has no probe set")
        return {k: _value(path, d) for k, d in g.items()}


@_retrying
def read_resume(path: str | Path) -> tuple[int, bytes] | None:
    """The latest resume state ``(step, bytes)``, or None if there is none.

    Load the bytes with :func:`landscape.validate.load_resume_state` (it refuses
    anything but a ``torch.save`` archive).
    """
    path = Path(path)
    with _open_read(path) as f:
        if "resume" not in f:
            return None
        return int(f["resume"].attrs["step"]), _value(path, f["resume/state"]).tobytes()


@_retrying
def read_group(path: str | Path, group: str) -> dict | None:
    """A group as nested dicts (datasets as arrays, attrs under ``"attrs"``); None if absent."""
    path = Path(path)
    with _open_read(path) as f:
        if group not in f:
            return None
        item = f[group]
        if isinstance(item, h5py.Dataset):
            return {"attrs": {}, group.rsplit("/", 1)[-1]: _value(path, item)}
        return _read(path, item)


def _read(path: Path, g: h5py.Group) -> dict:
    out: dict = {"attrs": {k: _decode(v) for k, v in g.attrs.items()}}
    for k, item in g.items():
        if _is_segmented(item):
            out[k] = _segment_rows(path, item, slice(None))
        elif isinstance(item, h5py.Group):
            out[k] = _read(path, item)
        else:
            out[k] = _value(path, item)
    return out


def probe_group(step: int, kind: str) -> str:
    """Where probe results of ``kind`` at ``step`` live."""
    return f"probe/step_{int(step)}/{kind}"


def software_versions() -> dict[str, str]:
    """Versions of the software that writes a run file (stored in its ``versions`` attr)."""
    import torch

    import landscape

    return {"landscape": landscape.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "h5py": h5py.__version__}
